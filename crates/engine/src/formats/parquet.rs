//! Parquet input: a file, or a folder of `.parquet` files read in name
//! order as one table. Row groups are read as a stream of batches of only
//! the columns used, so memory stays near the vectors' own size.

use std::fs::File;
use std::path::{Path, PathBuf};

use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use ::parquet::arrow::ProjectionMask;

use super::arrow::{plan, Columns, Gather};
use super::Dataset;
use crate::error::{Error, Result};

/// Rows per batch: a few MB of vectors at a time.
const BATCH_ROWS: usize = 1024;

/// The files of a Parquet input: `path` itself, or a folder's `.parquet`
/// files in name order.
pub fn files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_parquet(p) && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::input(path, "the folder holds no .parquet files"));
    }
    Ok(files)
}

pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// A build input: ids, vectors and attributes.
pub fn read_dataset(path: &Path, columns: &Columns) -> Result<Dataset> {
    Ok(read(path, columns, true)?.finish())
}

/// Query vectors: `(dim, rows)`.
pub fn read_vectors(path: &Path, columns: &Columns) -> Result<(usize, Vec<f32>)> {
    Ok(read(path, columns, false)?.into_vectors())
}

fn read(path: &Path, columns: &Columns, with_ids: bool) -> Result<Gather> {
    let mut gather: Option<Gather> = None;
    let mut schema_of_first = None;
    let files = files(path)?;
    let mut rows = 0usize;
    for file in &files {
        let bad = |reason: String| Error::input(file, reason);
        let f = File::open(file).map_err(|e| Error::io(file, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
        let schema = builder.schema().clone();
        let p = plan(&schema, columns, with_ids).map_err(bad)?;
        match &schema_of_first {
            None => schema_of_first = Some(schema.clone()),
            // The fields, not the metadata: pandas keeps each file's own
            // row range there.
            Some(first) if first.fields() != schema.fields() => {
                return Err(bad(format!(
                    "its columns differ from the first file's in {}",
                    path.display()
                )))
            }
            Some(_) => {}
        }
        let g = gather.get_or_insert_with(|| Gather::new(&schema, p.clone()));
        if rows == 0 {
            // Every file's row count, from the footers, before any rows.
            for f in &files {
                rows = rows.saturating_add(footer_rows(f)?);
            }
            g.expect(rows);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), p.columns());
        let reader = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| bad(format!("reading: {e}")))?;
            g.push(&batch, true).map_err(bad)?;
        }
    }
    let g = gather.expect("at least one file");
    if g.rows() == 0 {
        return Err(Error::input(path, "the input holds no rows"));
    }
    Ok(g)
}

/// The rows a Parquet file's footer counts.
fn footer_rows(file: &Path) -> Result<usize> {
    let f = File::open(file).map_err(|e| Error::io(file, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| Error::input(file, format!("not a readable Parquet file: {e}")))?;
    Ok(usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ::parquet::arrow::ArrowWriter;
    use arrow_array::builder::{
        FixedSizeListBuilder, Float32Builder, Float64Builder, ListBuilder, StringBuilder,
    };
    use arrow_array::{ArrayRef, BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray};

    use super::*;

    fn write(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut w =
            ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
        // Two row groups, to read across their boundary.
        let half = batch.num_rows() / 2;
        w.write(&batch.slice(0, half)).unwrap();
        w.flush().unwrap();
        w.write(&batch.slice(half, batch.num_rows() - half))
            .unwrap();
        w.close().unwrap();
    }

    fn fixed(rows: &[Vec<f32>]) -> ArrayRef {
        let dim = rows[0].len() as i32;
        let mut b = FixedSizeListBuilder::new(Float32Builder::new(), dim);
        for r in rows {
            b.values().append_slice(r);
            b.append(true);
        }
        Arc::new(b.finish())
    }

    /// Lists of float64; `None` is a null vector, a NaN a null element.
    fn lists(rows: &[Option<Vec<f64>>]) -> ArrayRef {
        let mut b = ListBuilder::new(Float64Builder::new());
        for r in rows {
            match r {
                Some(v) => {
                    for x in v {
                        if x.is_nan() {
                            b.values().append_null();
                        } else {
                            b.values().append_value(*x);
                        }
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        Arc::new(b.finish())
    }

    fn strs(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    fn rows(n: usize, dim: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| (0..dim).map(|j| (i * dim + j) as f32 * 0.5 - 3.0).collect())
            .collect()
    }

    #[test]
    fn reads_ids_vectors_and_attributes_across_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("emb.parquet");
        let v = rows(6, 3);
        let mut genres = ListBuilder::new(StringBuilder::new());
        for i in 0..6 {
            if i % 3 != 2 {
                genres.values().append_value("rock");
                genres.values().append_value(format!("g{i}"));
                genres.append(true);
            } else {
                genres.append(false);
            }
        }
        write(
            &p,
            vec![
                (
                    "id",
                    strs(&[
                        Some("a"),
                        Some("b"),
                        Some("c"),
                        Some("d"),
                        Some("e"),
                        Some("f"),
                    ]),
                ),
                ("embedding", fixed(&v)),
                (
                    "market",
                    strs(&[
                        Some("SE"),
                        None,
                        Some("US"),
                        Some("SE"),
                        Some("US"),
                        Some("SE"),
                    ]),
                ),
                (
                    "explicit",
                    Arc::new(BooleanArray::from(vec![
                        true, false, false, true, false, false,
                    ])),
                ),
                (
                    "year",
                    Arc::new(Int64Array::from(vec![2020, 2021, 2022, 2023, 2024, 2025])),
                ),
                ("genres", Arc::new(genres.finish())),
            ],
        );
        let ds = read_dataset(&p, &Columns::default()).unwrap();
        assert_eq!(ds.dim, 3);
        assert_eq!(ds.ids, ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(ds.vectors, v.concat());
        let t = ds.attributes.expect("attributes");
        let names: Vec<&str> = t.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        // The same rows from .jsonl give the same attribute table.
        let jsonl = dir.path().join("emb.jsonl");
        let lines: Vec<String> = (0..6)
            .map(|i| {
                let id = ["a", "b", "c", "d", "e", "f"][i];
                let explicit = [true, false, false, true, false, false][i];
                let mut o = serde_json::json!({
                    "id": id,
                    "vector": v[i],
                    "explicit": explicit,
                    "year": 2020 + i,
                });
                if i != 1 {
                    o["market"] = ["SE", "", "US", "SE", "US", "SE"][i].into();
                }
                if i % 3 != 2 {
                    o["genres"] = serde_json::json!(["rock", format!("g{i}")]);
                }
                o.to_string()
            })
            .collect();
        std::fs::write(&jsonl, lines.join("\n")).unwrap();
        let j = super::super::read_jsonl(&jsonl)
            .unwrap()
            .attributes
            .unwrap();
        let mut fields = t.fields.clone();
        fields.sort_by(|a, b| a.name.cmp(&b.name));
        let mut j_fields = j.fields.clone();
        j_fields.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(fields, j_fields);
        let mut values = t.values.clone();
        values.sort();
        let mut j_values = j.values.clone();
        j_values.sort();
        assert_eq!(values, j_values);
        assert!(values.contains(&"SE".to_string()) && values.contains(&"rock".to_string()));
    }

    #[test]
    fn float64_lists_integer_ids_a_named_column_and_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let v: Vec<Option<Vec<f64>>> = (0..4).map(|i| Some(vec![i as f64, 1.0])).collect();
        for (name, first) in [("part-1.parquet", 2i64), ("part-0.parquet", 0)] {
            write(
                &dir.path().join(name),
                vec![
                    (
                        "track",
                        Arc::new(Int64Array::from(vec![first, first + 1])) as ArrayRef,
                    ),
                    ("emb", lists(&v[first as usize..first as usize + 2])),
                    ("other", lists(&v[..2])),
                ],
            );
        }
        let columns = Columns {
            vector: Some("emb".into()),
            id: Some("track".into()),
            attributes: Some(Vec::new()),
        };
        let ds = read_dataset(dir.path(), &columns).unwrap();
        assert_eq!(ds.ids, ["0", "1", "2", "3"]);
        assert_eq!(ds.vectors, [0.0, 1.0, 1.0, 1.0, 2.0, 1.0, 3.0, 1.0]);
        assert!(ds.attributes.is_none());
        let (dim, q) = read_vectors(&dir.path().join("part-0.parquet"), &columns).unwrap();
        assert_eq!((dim, q), (2, vec![0.0, 1.0, 1.0, 1.0]));
    }

    fn error_of(columns: Vec<(&str, ArrayRef)>, how: &Columns) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.parquet");
        write(&p, columns);
        match read_dataset(&p, how) {
            Ok(_) => panic!("read"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let ids = || strs(&[Some("a"), Some("b")]);
        let ok = || lists(&[Some(vec![1.0, 2.0]), Some(vec![3.0, 4.0])]);
        let all = Columns::default();
        let e = error_of(vec![("key", ids()), ("v", ok())], &all);
        assert!(e.contains("no column \"id\""), "{e}");
        let e = error_of(vec![("id", ids())], &all);
        assert!(e.contains("no column of lists of floats"), "{e}");
        let e = error_of(vec![("id", ids()), ("v", ok()), ("w", ok())], &all);
        assert!(e.contains("--vector-column"), "{e}");
        let e = error_of(
            vec![
                ("id", ids()),
                ("v", lists(&[Some(vec![1.0, 2.0]), Some(vec![3.0])])),
            ],
            &all,
        );
        assert!(
            e.contains("row 1: the vector has dimension 1, but row 0 has 2"),
            "{e}"
        );
        let e = error_of(
            vec![("id", ids()), ("v", lists(&[Some(vec![1.0]), None]))],
            &all,
        );
        assert!(e.contains("row 1: the vector is null"), "{e}");
        let e = error_of(
            vec![
                ("id", ids()),
                (
                    "v",
                    lists(&[Some(vec![1.0, f64::NAN]), Some(vec![1.0, 2.0])]),
                ),
            ],
            &all,
        );
        assert!(e.contains("row 0: the vector holds a null"), "{e}");
        let e = error_of(vec![("id", strs(&[Some("a"), None])), ("v", ok())], &all);
        assert!(e.contains("row 1: the id is null"), "{e}");
        let e = error_of(
            vec![("id", ids()), ("v", ids())],
            &Columns {
                vector: Some("v".into()),
                ..Columns::default()
            },
        );
        assert!(
            e.contains("must be a list or fixed-size list of float32 or float64"),
            "{e}"
        );
        let e = error_of(
            vec![
                ("id", ids()),
                ("v", ok()),
                ("day", Arc::new(Date32Array::from(vec![1, 2]))),
            ],
            &all,
        );
        assert!(
            e.contains("\"day\"") && e.contains("--attribute-columns"),
            "{e}"
        );
        // Naming the attribute columns leaves the others out.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ok.parquet");
        write(
            &p,
            vec![
                ("id", ids()),
                ("v", ok()),
                ("day", Arc::new(Date32Array::from(vec![1, 2]))),
            ],
        );
        let none = Columns {
            attributes: Some(Vec::new()),
            ..Columns::default()
        };
        assert_eq!(read_dataset(&p, &none).unwrap().len(), 2);
        let twice = Columns {
            attributes: Some(vec!["day".into(), "day".into()]),
            ..Columns::default()
        };
        let e = read_dataset(&p, &twice).unwrap_err().to_string();
        assert!(e.contains("\"day\" is named twice"), "{e}");
        // Not Parquet at all.
        std::fs::write(&p, b"PAR1 but not really").unwrap();
        let e = read_dataset(&p, &all).unwrap_err().to_string();
        assert!(e.contains("not a readable Parquet file"), "{e}");
    }
}
