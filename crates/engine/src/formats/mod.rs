//! Readers for build inputs and query files: `.fvecs`, `.ivecs`, `.npy`
//! (2-D float32, C order), `.jsonl` (`{"id": .., "vector": [..], ..}`),
//! Parquet and id lists. Readers stream through a buffer; they never trust
//! a length field without checking it against what the file actually holds.

pub mod arrow;
pub mod parquet;

pub use self::arrow::Columns;

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::attributes::{AttributeTable, AttributesBuilder};
use crate::distance::Metric;
use crate::error::{Error, Result};

/// Vectors with their external ids and optional attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub dim: usize,
    /// `ids.len() * dim` floats, row-major.
    pub vectors: Vec<f32>,
    pub ids: Vec<String>,
    /// The rows' attributes: the fields of a `.jsonl` other than id and
    /// vector, or an `--attributes` file. `None` when no row has any.
    pub attributes: Option<AttributeTable>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Reject what cannot be indexed: no rows, non-finite values, zero vectors
    /// under cosine, duplicate ids.
    pub fn validate(&self, path: &Path, metric: Metric) -> Result<()> {
        let bad = |reason: String| Err(Error::input(path, reason));
        if self.ids.is_empty() {
            return bad("the input holds no vectors".into());
        }
        for (row, v) in self.vectors.chunks_exact(self.dim).enumerate() {
            if let Some(c) = v.iter().position(|x| !x.is_finite()) {
                return bad(format!(
                    "row {row} component {c} is {} (NaN or infinite values cannot be indexed)",
                    v[c]
                ));
            }
            if metric == Metric::Cosine && v.iter().all(|x| *x == 0.0) {
                return bad(format!(
                    "row {row} is an all-zero vector, which has no cosine direction"
                ));
            }
        }
        let mut sorted: Vec<&str> = self.ids.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return bad(format!("duplicate id {:?}", w[0]));
        }
        Ok(())
    }
}

/// Read a build input by extension, with ids from `ids_path` (one per line)
/// or row numbers. `columns` applies to Parquet, which names its columns.
pub fn read_dataset(
    path: &Path,
    ids_path: Option<&Path>,
    attributes_path: Option<&Path>,
    columns: &Columns,
) -> Result<Dataset> {
    if self::parquet::is_parquet(path) || path.is_dir() {
        if ids_path.is_some() {
            return Err(Error::input(
                path,
                "a Parquet input carries its ids (--id-column), not --ids",
            ));
        }
        let mut columns = columns.clone();
        if attributes_path.is_some() {
            // The attributes file replaces the attribute columns.
            columns.attributes = Some(Vec::new());
        }
        let mut ds = self::parquet::read_dataset(path, &columns)?;
        if let Some(a) = attributes_path {
            ds.attributes = read_attributes(a, &ds.ids)?;
        }
        return Ok(ds);
    }
    let ext = extension(path);
    let mut ds = match ext.as_str() {
        "jsonl" | "ndjson" => {
            if ids_path.is_some() || attributes_path.is_some() {
                return Err(Error::input(
                    path,
                    "--ids and --attributes apply to .fvecs and .npy; a .jsonl carries its own",
                ));
            }
            return read_jsonl(path);
        }
        "fvecs" | "npy" => {
            let (dim, vectors) = read_vectors(path)?;
            let n = vectors.len() / dim;
            Dataset {
                dim,
                vectors,
                ids: (0..n).map(|i| i.to_string()).collect(),
                attributes: None,
            }
        }
        _ => return Err(unknown_type(path)),
    };
    if let Some(ids_path) = ids_path {
        let ids = read_ids(ids_path)?;
        if ids.len() != ds.len() {
            return Err(Error::input(
                ids_path,
                format!(
                    "{} ids for {} vectors in {}",
                    ids.len(),
                    ds.len(),
                    path.display()
                ),
            ));
        }
        ds.ids = ids;
    }
    if let Some(a) = attributes_path {
        ds.attributes = read_attributes(a, &ds.ids)?;
    }
    Ok(ds)
}

/// An attributes file: one JSON object per row, in row order, each carrying
/// that row's `id` (which must equal `ids[row]`) and its attributes.
pub fn read_attributes(path: &Path, ids: &[String]) -> Result<Option<AttributeTable>> {
    let mut b = AttributesBuilder::new();
    for object in json_objects(path)? {
        let (line, mut obj) = object?;
        let at = |reason: String| at_line(path, line, reason);
        let row = b.len();
        let Some(want) = ids.get(row) else {
            return Err(at(format!(
                "more attribute rows than the {} vectors",
                ids.len()
            )));
        };
        match obj.remove("id") {
            Some(serde_json::Value::String(s)) if s == *want => {}
            Some(serde_json::Value::Number(n)) if n.to_string() == *want => {}
            Some(other) => {
                return Err(at(format!(
                    "id {other} does not match row {row}'s id {want:?}"
                )))
            }
            None => return Err(at("missing \"id\"".into())),
        }
        b.push(&obj, line)
            .map_err(|e| Error::input(path, e.to_string()))?;
    }
    if b.len() != ids.len() {
        return Err(Error::input(
            path,
            format!("{} attribute rows for {} vectors", b.len(), ids.len()),
        ));
    }
    Ok(b.has_fields().then(|| b.finish()))
}

/// The objects of a `.jsonl` file, each with its 1-based line number;
/// blank lines are skipped.
fn json_objects(
    path: &Path,
) -> Result<impl Iterator<Item = Result<(usize, serde_json::Map<String, serde_json::Value>)>> + '_>
{
    let lines = open(path)?.lines().enumerate();
    Ok(lines.filter_map(move |(i, line)| {
        let line = match line {
            Ok(l) if l.trim().is_empty() => return None,
            Ok(l) => l,
            Err(e) => return Some(Err(Error::io(path, e))),
        };
        Some(
            serde_json::from_str(&line)
                .map(|obj| (i + 1, obj))
                .map_err(|e| at_line(path, i + 1, format!("not a JSON object: {e}"))),
        )
    }))
}

/// A reader's error at 1-based `line` of `path`.
fn at_line(path: &Path, line: usize, reason: String) -> Error {
    Error::input(path, format!("line {line}: {reason}"))
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

fn unknown_type(path: &Path) -> Error {
    Error::input(
        path,
        "unknown file type (expected .fvecs, .npy, .jsonl or .parquet)",
    )
}

fn open(path: &Path) -> Result<BufReader<File>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(BufReader::with_capacity(1 << 20, f))
}

/// Read `.fvecs`, `.npy` or Parquet vectors: `(dim, rows)`. A Parquet
/// file's vectors are its one column of lists of floats.
pub fn read_vectors(path: &Path) -> Result<(usize, Vec<f32>)> {
    read_vectors_in(path, None)
}

/// [`read_vectors`], with a Parquet file's vector column named.
pub fn read_vectors_in(path: &Path, vector_column: Option<&str>) -> Result<(usize, Vec<f32>)> {
    match extension(path).as_str() {
        "fvecs" => read_fvecs(path),
        "npy" => read_npy(path),
        "parquet" => self::parquet::read_vectors(
            path,
            &Columns {
                vector: vector_column.map(str::to_string),
                ..Columns::default()
            },
        ),
        _ => Err(Error::input(
            path,
            "unknown vector file type (expected .fvecs, .npy or .parquet)",
        )),
    }
}

/// Fill `buf` completely, or report how many bytes were there (0 = clean EOF).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            k => got += k,
        }
    }
    Ok(got)
}

/// TEXMEX `.fvecs`: each row is a little-endian i32 dimension and then that
/// many f32s. Every row must have the same dimension.
pub fn read_fvecs(path: &Path) -> Result<(usize, Vec<f32>)> {
    let (dim, words) = read_xvecs(path)?;
    Ok((dim, words.into_iter().map(f32::from_bits).collect()))
}

/// `.ivecs`: as `.fvecs` with i32 values. Returns rows of u32 (negative
/// values are rejected).
pub fn read_ivecs(path: &Path) -> Result<Vec<Vec<u32>>> {
    let (dim, words) = read_xvecs(path)?;
    if let Some(p) = words.iter().position(|w| (*w as i32) < 0) {
        return Err(Error::input(
            path,
            format!("row {} holds a negative value", p / dim),
        ));
    }
    Ok(words.chunks_exact(dim).map(|r| r.to_vec()).collect())
}

fn read_xvecs(path: &Path) -> Result<(usize, Vec<u32>)> {
    let mut r = open(path)?;
    let io = |e| Error::io(path, e);
    let mut dim = 0usize;
    let mut out: Vec<u32> = Vec::new();
    let mut head = [0u8; 4];
    let mut row_bytes: Vec<u8> = Vec::new();
    let mut row = 0usize;
    loop {
        let got = read_full(&mut r, &mut head).map_err(io)?;
        if got == 0 {
            break;
        }
        if got < 4 {
            return Err(Error::input(
                path,
                format!("truncated: row {row} has a partial dimension field"),
            ));
        }
        let d = i32::from_le_bytes(head);
        if d <= 0 || d > 1 << 16 {
            return Err(Error::input(
                path,
                format!("row {row} has an invalid dimension {d}"),
            ));
        }
        let d = d as usize;
        if row == 0 {
            dim = d;
        } else if d != dim {
            return Err(Error::input(
                path,
                format!("row {row} has dimension {d}, but row 0 has {dim}"),
            ));
        }
        row_bytes.resize(d * 4, 0);
        let got = read_full(&mut r, &mut row_bytes).map_err(io)?;
        if got < row_bytes.len() {
            return Err(Error::input(
                path,
                format!(
                    "truncated: row {row} has {got} of {} bytes",
                    row_bytes.len()
                ),
            ));
        }
        out.extend(
            row_bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        row += 1;
    }
    if row == 0 {
        return Err(Error::input(path, "the file holds no vectors"));
    }
    Ok((dim, out))
}

/// The float width of a 2-D `.npy` array: 2, 4 or 8 bytes.
fn npy_float_width(path: &Path, dtype: &npyz::DType) -> Result<u64> {
    match dtype {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float => match t.size_field() {
            w @ (2 | 4 | 8) => Ok(w),
            w => Err(Error::input(
                path,
                format!(
                    "dtype {} (float of {w} bytes) is not supported; save float32",
                    dtype.descr()
                ),
            )),
        },
        other => Err(Error::input(
            path,
            format!(
                "dtype must be a float (float32, float64 or float16), found {}",
                other.descr()
            ),
        )),
    }
}

/// What reading a `.npy` file converts: `Some("float64")` (or
/// `"float16"`) when its values are not float32, `None` otherwise or for
/// other files. For a caller that says so once.
pub fn npy_conversion(path: &Path) -> Result<Option<&'static str>> {
    if extension(path) != "npy" {
        return Ok(None);
    }
    let npy = npyz::NpyFile::new(open(path)?)
        .map_err(|e| Error::input(path, format!("not a readable .npy file: {e}")))?;
    Ok(match npy_float_width(path, &npy.dtype())? {
        8 => Some("float64"),
        2 => Some("float16"),
        _ => None,
    })
}

/// NumPy `.npy`, 2-D, of float32, float64 or float16 (converted to
/// float32), in C or Fortran order, either byte order.
pub fn read_npy(path: &Path) -> Result<(usize, Vec<f32>)> {
    let bad = |reason: String| Error::input(path, reason);
    let npy = npyz::NpyFile::new(open(path)?)
        .map_err(|e| bad(format!("not a readable .npy file: {e}")))?;
    let shape = npy.shape().to_vec();
    let [n, dim] = shape[..] else {
        return Err(bad(format!("expected a 2-D array, found shape {shape:?}")));
    };
    if n == 0 || dim == 0 {
        return Err(bad("the array is empty".into()));
    }
    if dim > 1 << 16 {
        return Err(bad(format!("dimension {dim} is too large")));
    }
    let total = n
        .checked_mul(dim)
        .filter(|t| *t < 1 << 36)
        .ok_or_else(|| bad("shape is implausibly large".into()))? as usize;
    let (n, dim) = (n as usize, dim as usize);
    let fortran = npy.order() == npyz::Order::Fortran;
    let width = npy_float_width(path, &npy.dtype())?;
    let mut out = Vec::with_capacity(total.min(1 << 28));
    let truncated = |got: usize| bad(format!("truncated: data holds {got} of {total} values"));
    // Values stream in, converted one by one, so memory stays near the output.
    macro_rules! stream {
        ($t:ty, $to_f32:expr) => {{
            let data = npy
                .data::<$t>()
                .map_err(|e| bad(format!("cannot read the data: {e}")))?;
            for v in data {
                let v: $t = v.map_err(|_| truncated(out.len()))?;
                out.push($to_f32(v));
            }
        }};
    }
    match width {
        4 => stream!(f32, |v: f32| v),
        8 => stream!(f64, |v: f64| v as f32),
        _ => stream!(half::f16, |v: half::f16| v.to_f32()),
    }
    if out.len() < total {
        return Err(truncated(out.len()));
    }
    if fortran {
        // Column-major: element (row, col) is at col * n + row.
        let mut rows = vec![0f32; total];
        for (i, v) in out.iter().enumerate() {
            let (col, row) = (i / n, i % n);
            rows[row * dim + col] = *v;
        }
        out = rows;
    }
    Ok((dim, out))
}

/// `.jsonl`: one object a line with `id` (string or number) and `vector`;
/// every other field is kept as the item's attributes.
pub fn read_jsonl(path: &Path) -> Result<Dataset> {
    let mut ds = Dataset {
        dim: 0,
        vectors: Vec::new(),
        ids: Vec::new(),
        attributes: None,
    };
    let mut attrs = AttributesBuilder::new();
    for object in json_objects(path)? {
        let (line, mut obj) = object?;
        let at = |reason: String| at_line(path, line, reason);
        let id = match obj.remove("id") {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => return Err(at("\"id\" must be a string or a number".into())),
            None => return Err(at("missing \"id\"".into())),
        };
        let vector = match obj.remove("vector") {
            Some(serde_json::Value::Array(a)) => a,
            _ => return Err(at("missing \"vector\" array".into())),
        };
        if ds.ids.is_empty() {
            ds.dim = vector.len();
            if ds.dim == 0 {
                return Err(at("empty vector".into()));
            }
        } else if vector.len() != ds.dim {
            return Err(at(format!(
                "vector has dimension {}, but the first line has {}",
                vector.len(),
                ds.dim
            )));
        }
        for (i, v) in vector.iter().enumerate() {
            // serde_json cannot represent NaN; a null or string is not a number.
            let x = v
                .as_f64()
                .ok_or_else(|| at(format!("vector component {i} is not a number")))?;
            ds.vectors.push(x as f32);
        }
        ds.ids.push(id);
        attrs
            .push(&obj, line)
            .map_err(|e| Error::input(path, e.to_string()))?;
    }
    if attrs.has_fields() {
        ds.attributes = Some(attrs.finish());
    }
    Ok(ds)
}

/// One id a line; a trailing newline is optional, `\r\n` is accepted.
pub fn read_ids(path: &Path) -> Result<Vec<String>> {
    let r = open(path)?;
    r.lines()
        .map(|l| {
            l.map(|s| s.trim_end_matches('\r').to_string())
                .map_err(|e| Error::io(path, e))
        })
        .collect()
}

/// Write rows as `.fvecs`.
pub fn write_fvecs(path: &Path, dim: usize, vectors: &[f32]) -> Result<()> {
    write_xvecs(path, dim, vectors.iter().map(|x| x.to_bits()))
}

/// Write rows as `.ivecs`.
pub fn write_ivecs(path: &Path, rows: &[Vec<u32>]) -> Result<()> {
    let dim = rows.first().map(Vec::len).unwrap_or(0);
    write_xvecs(path, dim, rows.iter().flatten().copied())
}

fn write_xvecs(path: &Path, dim: usize, words: impl Iterator<Item = u32>) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::new(f);
    let io = |e| Error::io(path, e);
    for (i, word) in words.enumerate() {
        if i % dim.max(1) == 0 {
            w.write_all(&(dim as i32).to_le_bytes()).map_err(io)?;
        }
        w.write_all(&word.to_le_bytes()).map_err(io)?;
    }
    w.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `.npy` file of an `n` × `dim` array of type `descr`, whose values
    /// (in that type, in that order) are `body`.
    fn npy_file(descr: &str, fortran: bool, n: usize, dim: usize, body: &[u8]) -> Vec<u8> {
        let order = if fortran { "True" } else { "False" };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': ({n}, {dim}), }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(body);
        b
    }

    fn npy_bytes(n: usize, dim: usize, data: &[f32]) -> Vec<u8> {
        let body: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        npy_file("<f4", false, n, dim, &body)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn fvecs_round_trip(dim in 1usize..40, rows in 1usize..20, seed in any::<u64>()) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("x.fvecs");
            let data: Vec<f32> = (0..dim * rows).map(|i| ((i as u64 ^ seed) % 1000) as f32 * 0.37 - 100.0).collect();
            write_fvecs(&p, dim, &data).unwrap();
            let (d, back) = read_fvecs(&p).unwrap();
            prop_assert_eq!(d, dim);
            prop_assert_eq!(back, data);
        }

        #[test]
        fn fvecs_truncation_is_an_error(dim in 1usize..20, rows in 1usize..10, cut in 1usize..80) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("x.fvecs");
            write_fvecs(&p, dim, &vec![1.5; dim * rows]).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            let cut = cut.min(bytes.len() - 1);
            std::fs::write(&p, &bytes[..bytes.len() - cut]).unwrap();
            let row_len = 4 + 4 * dim;
            let r = read_fvecs(&p);
            if (bytes.len() - cut).is_multiple_of(row_len) {
                prop_assert!(r.is_ok() || (bytes.len() - cut) == 0);
            } else {
                prop_assert!(r.is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let dir = tempfile::tempdir().unwrap();
            for name in ["x.fvecs", "x.npy", "x.jsonl"] {
                let p = dir.path().join(name);
                std::fs::write(&p, &bytes).unwrap();
                let _ = read_dataset(&p, None, None, &Columns::default());
            }
        }

        #[test]
        fn npy_round_trip(dim in 1usize..40, rows in 1usize..20) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("x.npy");
            let data: Vec<f32> = (0..dim * rows).map(|i| i as f32 * 0.5 - 3.0).collect();
            std::fs::write(&p, npy_bytes(rows, dim, &data)).unwrap();
            let (d, back) = read_npy(&p).unwrap();
            prop_assert_eq!(d, dim);
            prop_assert_eq!(back, data);
        }

        #[test]
        fn npy_truncation_is_an_error(dim in 1usize..20, rows in 1usize..10, cut in 1usize..40) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("x.npy");
            let data = vec![0.25f32; dim * rows];
            let b = npy_bytes(rows, dim, &data);
            std::fs::write(&p, &b[..b.len() - cut.min(4 * dim * rows)]).unwrap();
            prop_assert!(read_npy(&p).is_err());
        }
    }

    #[test]
    fn npy_rejects_other_dtypes_and_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let b = npy_bytes(2, 2, &[1.0; 4]);
        let replace = |from: &[u8], to: &[u8]| {
            let mut v = b.clone();
            let at = v.windows(from.len()).position(|w| w == from).unwrap();
            v[at..at + from.len()].copy_from_slice(to);
            v
        };
        std::fs::write(&p, replace(b"<f4", b"<i4")).unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("must be a float"), "{e}");
        std::fs::write(&p, replace(b"(2, 2)", b"(4,)  ")).unwrap();
        assert!(read_npy(&p).unwrap_err().to_string().contains("2-D"));
    }

    /// What `np.save` writes for float64, float16 and Fortran-order
    /// arrays reads as the same float32 rows.
    #[test]
    fn npy_of_other_floats_and_orders_converts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let (n, dim) = (3, 2);
        let rows: Vec<f32> = vec![1.0, 2.5, -3.0, 4.0, 0.5, 6.0];
        let write = |descr: &str, fortran: bool, body: Vec<u8>| {
            std::fs::write(&p, npy_file(descr, fortran, n, dim, &body)).unwrap();
        };
        let f64s: Vec<u8> = rows
            .iter()
            .flat_map(|x| (*x as f64).to_le_bytes())
            .collect();
        write("<f8", false, f64s);
        assert_eq!(read_npy(&p).unwrap(), (dim, rows.clone()));
        assert_eq!(npy_conversion(&p).unwrap(), Some("float64"));
        let f16s: Vec<u8> = rows
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        write("<f2", false, f16s);
        assert_eq!(read_npy(&p).unwrap(), (dim, rows.clone()));
        // Fortran order: columns one after the other.
        let cols: Vec<u8> = (0..dim)
            .flat_map(|c| (0..n).map(move |r| (r, c)))
            .flat_map(|(r, c)| rows[r * dim + c].to_le_bytes())
            .collect();
        write("<f4", true, cols);
        assert_eq!(read_npy(&p).unwrap(), (dim, rows.clone()));
        assert_eq!(npy_conversion(&p).unwrap(), None);
    }

    #[test]
    fn jsonl_keeps_other_fields_as_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(
            &p,
            "{\"id\": \"track:1\", \"vector\": [1, 0], \"genre\": \"jazz\"}\n{\"id\": 2, \"vector\": [0, 1]}\n",
        )
        .unwrap();
        let ds = read_jsonl(&p).unwrap();
        assert_eq!(ds.ids, vec!["track:1", "2"]);
        assert_eq!(ds.vectors, vec![1.0, 0.0, 0.0, 1.0]);
        let attrs = ds.attributes.unwrap();
        assert_eq!(attrs.json, ["{\"genre\":\"jazz\"}", "{}"]);
        assert_eq!(attrs.fields[0].name, "genre");
        assert_eq!(attrs.values, ["jazz"]);
    }

    #[test]
    fn attributes_file_must_match_ids_row_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let ids = vec!["a".to_string(), "b".to_string()];
        std::fs::write(&p, "{\"id\":\"a\",\"x\":1}\n{\"id\":\"b\",\"x\":2}\n").unwrap();
        let t = read_attributes(&p, &ids).unwrap().unwrap();
        assert_eq!(t.fields[0].name, "x");
        std::fs::write(&p, "{\"id\":\"a\",\"x\":1}\n{\"id\":\"c\",\"x\":2}\n").unwrap();
        let e = read_attributes(&p, &ids).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("\"b\""), "{e}");
        std::fs::write(&p, "{\"id\":\"a\",\"x\":1}\n").unwrap();
        let e = read_attributes(&p, &ids).unwrap_err().to_string();
        assert!(e.contains("1 attribute rows for 2 vectors"), "{e}");
        std::fs::write(&p, "{\"id\":\"a\",\"x\":1}\n{\"id\":\"b\",\"x\":\"two\"}\n").unwrap();
        let e = read_attributes(&p, &ids).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("\"x\""), "{e}");
    }
}
