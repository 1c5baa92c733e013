//! Arrow record batches as build input, whatever carries them (a Parquet
//! file, or a table handed over through Arrow's C stream interface): an id
//! column, a vector column, and attribute columns typed as a `.jsonl`'s
//! fields are.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema};
use serde_json::{Map, Value};

use super::Dataset;
use crate::attributes::AttributesBuilder;

/// Which columns hold what. Unset, the id column is `id` and the vector
/// column is the one column of lists of floats; every other column is an
/// attribute unless `attributes` names the ones to keep.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub vector: Option<String>,
    pub id: Option<String>,
    pub attributes: Option<Vec<String>>,
}

/// Positions of the columns in the schema.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub id: Option<usize>,
    pub vector: usize,
    pub attributes: Vec<usize>,
}

impl Plan {
    /// Every column the plan reads, in schema order.
    pub fn columns(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self.id.into_iter().chain([self.vector]).collect();
        all.extend(&self.attributes);
        all.sort_unstable();
        all
    }
}

fn is_float_list(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            matches!(f.data_type(), DataType::Float32 | DataType::Float64)
        }
        _ => false,
    }
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

fn is_attribute_type(t: &DataType) -> bool {
    match t {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64 => true,
        DataType::List(f) | DataType::LargeList(f) => is_string(f.data_type()),
        t => is_string(t),
    }
}

/// Match `columns` against `schema`. `with_ids`: an id column is required
/// (a build's input); queries need only vectors.
pub(crate) fn plan(schema: &Schema, columns: &Columns, with_ids: bool) -> Result<Plan, String> {
    let find = |name: &str| {
        schema
            .index_of(name)
            .map_err(|_| format!("no column {name:?} (it has {})", names(schema)))
    };
    let vector = match &columns.vector {
        Some(name) => find(name)?,
        None => {
            let lists: Vec<usize> = (0..schema.fields().len())
                .filter(|&i| is_float_list(schema.field(i).data_type()))
                .collect();
            match lists[..] {
                [one] => one,
                [] => {
                    return Err(format!(
                        "no column of lists of floats to take vectors from (it has {})",
                        names(schema)
                    ))
                }
                _ => {
                    return Err(format!(
                        "several columns of lists of floats ({}): name the vectors' with --vector-column",
                        lists
                            .iter()
                            .map(|&i| schema.field(i).name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
        }
    };
    let t = schema.field(vector).data_type();
    if !is_float_list(t) {
        return Err(format!(
            "vector column {:?} is {t}; it must be a list or fixed-size list of float32 or float64",
            schema.field(vector).name()
        ));
    }
    if !with_ids {
        return Ok(Plan {
            id: None,
            vector,
            attributes: Vec::new(),
        });
    }
    let id = find(columns.id.as_deref().unwrap_or("id"))?;
    let t = schema.field(id).data_type();
    if !(is_string(t) || t.is_integer()) {
        return Err(format!(
            "id column {:?} is {t}; it must hold strings or integers",
            schema.field(id).name()
        ));
    }
    let attributes = match &columns.attributes {
        Some(wanted) => wanted.iter().map(|n| find(n)).collect::<Result<_, _>>()?,
        None => (0..schema.fields().len())
            .filter(|&i| i != id && i != vector)
            .collect::<Vec<_>>(),
    };
    for (i, &a) in attributes.iter().enumerate() {
        if attributes[..i].contains(&a) {
            return Err(format!(
                "attribute column {:?} is named twice",
                schema.field(a).name()
            ));
        }
    }
    for &a in &attributes {
        let f = schema.field(a);
        if a == id || a == vector {
            return Err(format!(
                "column {:?} cannot be both an attribute and the ids or vectors",
                f.name()
            ));
        }
        if !is_attribute_type(f.data_type()) {
            return Err(format!(
                "column {:?} is {}, which cannot be an attribute (numbers, booleans, strings and lists of strings can); choose the attribute columns with --attribute-columns",
                f.name(),
                f.data_type()
            ));
        }
    }
    Ok(Plan {
        id: Some(id),
        vector,
        attributes,
    })
}

fn names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{:?}", f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A build input from record batches of one `schema`, as any Arrow source
/// yields them (a table handed over through Arrow's C stream interface).
pub fn read_batches<E: std::fmt::Display>(
    schema: &Schema,
    batches: impl IntoIterator<Item = Result<RecordBatch, E>>,
    columns: &Columns,
) -> Result<Dataset, String> {
    let mut g = Gather::new(schema, plan(schema, columns, true)?);
    for batch in batches {
        g.push(&batch.map_err(|e| format!("reading: {e}"))?, false)?;
    }
    if g.rows() == 0 {
        return Err("the input holds no rows".into());
    }
    Ok(g.finish())
}

/// Rows gathered batch by batch into a [`Dataset`].
pub(crate) struct Gather {
    plan: Plan,
    names: Vec<String>,
    dim: usize,
    vectors: Vec<f32>,
    ids: Vec<String>,
    attributes: AttributesBuilder,
    /// Rows expected in all, when the source says (Parquet's footer):
    /// the vectors are allocated once rather than grown by doubling.
    expected_rows: usize,
}

impl Gather {
    pub fn new(schema: &Schema, plan: Plan) -> Gather {
        let names = plan
            .attributes
            .iter()
            .map(|&i| schema.field(i).name().clone())
            .collect();
        Gather {
            plan,
            names,
            dim: 0,
            vectors: Vec::new(),
            ids: Vec::new(),
            attributes: AttributesBuilder::new(),
            expected_rows: 0,
        }
    }

    /// Expect `rows` more rows in all (a capacity hint, which a forged
    /// footer may inflate: a hint too large to allocate is dropped, and
    /// the columns grow as rows arrive).
    pub fn expect(&mut self, rows: usize) {
        self.expected_rows = self.expected_rows.saturating_add(rows);
        if self.plan.id.is_some() {
            let _ = self.ids.try_reserve(rows);
        }
    }

    pub fn rows(&self) -> usize {
        self.vectors.len() / self.dim.max(1)
    }

    /// Take one batch, whose columns are the schema's (or, `projected`,
    /// only [`Plan::columns`], in that order).
    pub fn push(&mut self, batch: &RecordBatch, projected: bool) -> Result<(), String> {
        let order = self.plan.columns();
        let column = |i: usize| -> &ArrayRef {
            if projected {
                batch.column(order.binary_search(&i).expect("a planned column"))
            } else {
                batch.column(i)
            }
        };
        let first = self.rows();
        self.push_vectors(column(self.plan.vector), first)?;
        if let Some(id) = self.plan.id {
            push_ids(column(id), first, &mut self.ids)?;
        }
        if self.plan.id.is_some() {
            let columns: Vec<&ArrayRef> = self.plan.attributes.iter().map(|&i| column(i)).collect();
            let mut obj = Map::new();
            for row in 0..batch.num_rows() {
                obj.clear();
                for (name, col) in self.names.iter().zip(&columns) {
                    let v = cell(col.as_ref(), row)
                        .map_err(|e| format!("row {}: column {name:?}: {e}", first + row))?;
                    if !v.is_null() {
                        obj.insert(name.clone(), v);
                    }
                }
                self.attributes.push(&obj, first + row + 1).map_err(|e| {
                    format!("row {}: column {:?}: {}", first + row, e.field, e.reason)
                })?;
            }
        }
        Ok(())
    }

    fn push_vectors(&mut self, col: &ArrayRef, first: usize) -> Result<(), String> {
        let (values, offsets): (&ArrayRef, Vec<usize>) = match col.data_type() {
            DataType::List(_) => {
                let l = col.as_list::<i32>();
                (
                    l.values(),
                    l.value_offsets().iter().map(|&o| o as usize).collect(),
                )
            }
            DataType::LargeList(_) => {
                let l = col.as_list::<i64>();
                (
                    l.values(),
                    l.value_offsets().iter().map(|&o| o as usize).collect(),
                )
            }
            DataType::FixedSizeList(_, n) => {
                let l = col.as_fixed_size_list();
                let n = *n as usize;
                let start = l.offset() * n;
                (l.values(), (0..=l.len()).map(|i| start + i * n).collect())
            }
            t => return Err(format!("the vector column is {t}")),
        };
        for row in 0..col.len() {
            let at = first + row;
            if col.is_null(row) {
                return Err(format!("row {at}: the vector is null"));
            }
            let (a, b) = (offsets[row], offsets[row + 1]);
            let len = b - a;
            if at == 0 {
                if len == 0 {
                    return Err("row 0: the vector is empty".into());
                }
                self.dim = len;
                let _ = self
                    .vectors
                    .try_reserve(self.expected_rows.saturating_mul(len));
            } else if len != self.dim {
                return Err(format!(
                    "row {at}: the vector has dimension {len}, but row 0 has {}",
                    self.dim
                ));
            }
            if values.null_count() > 0 && (a..b).any(|i| values.is_null(i)) {
                return Err(format!("row {at}: the vector holds a null"));
            }
        }
        let (a, b) = (offsets[0], offsets[col.len()]);
        match values.data_type() {
            DataType::Float32 => {
                let v = values.as_primitive::<Float32Type>();
                self.vectors.extend_from_slice(&v.values()[a..b]);
            }
            DataType::Float64 => {
                let v = values.as_primitive::<Float64Type>();
                self.vectors
                    .extend(v.values()[a..b].iter().map(|&x| x as f32));
            }
            t => return Err(format!("the vectors hold {t}, not float32 or float64")),
        }
        // Rows after a null vector were refused above; a list whose null
        // rows still span values would misalign, so check the count.
        debug_assert_eq!(self.vectors.len(), (first + col.len()) * self.dim);
        Ok(())
    }

    pub fn finish(self) -> Dataset {
        let attributes = self
            .attributes
            .has_fields()
            .then(|| self.attributes.finish());
        Dataset {
            dim: self.dim,
            vectors: self.vectors,
            ids: self.ids,
            attributes,
        }
    }

    /// The vectors alone (for query files).
    pub fn into_vectors(self) -> (usize, Vec<f32>) {
        (self.dim, self.vectors)
    }
}

fn push_ids(col: &ArrayRef, first: usize, ids: &mut Vec<String>) -> Result<(), String> {
    for row in 0..col.len() {
        match cell(col.as_ref(), row)? {
            Value::String(s) => ids.push(s),
            Value::Number(n) => ids.push(n.to_string()),
            Value::Null => return Err(format!("row {}: the id is null", first + row)),
            v => return Err(format!("row {}: the id {v} is not a string", first + row)),
        }
    }
    Ok(())
}

/// One cell as the JSON value a `.jsonl` would carry (null when missing).
fn cell(col: &dyn Array, row: usize) -> Result<Value, String> {
    if col.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match col.data_type() {
        DataType::Boolean => Value::Bool(col.as_boolean().value(row)),
        DataType::Int8 => col.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => col.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => col.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => col.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => col.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => col.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 => float(col.as_primitive::<Float32Type>().value(row) as f64)?,
        DataType::Float64 => float(col.as_primitive::<Float64Type>().value(row))?,
        DataType::Utf8 => col.as_string::<i32>().value(row).into(),
        DataType::LargeUtf8 => col.as_string::<i64>().value(row).into(),
        DataType::Utf8View => col.as_string_view().value(row).into(),
        DataType::Dictionary(_, _) => {
            let d = col.as_any_dictionary();
            match cell(d.keys(), row)?.as_u64() {
                Some(key) if (key as usize) < d.values().len() => {
                    cell(d.values().as_ref(), key as usize)?
                }
                _ => return Err("a dictionary key out of range".into()),
            }
        }
        DataType::List(_) => strings(col.as_list::<i32>().value(row).as_ref())?,
        DataType::LargeList(_) => strings(col.as_list::<i64>().value(row).as_ref())?,
        t => return Err(format!("{t} cannot be an attribute")),
    })
}

fn float(x: f64) -> Result<Value, String> {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .ok_or_else(|| format!("{x} is not a finite number"))
}

/// A list cell of strings (nulls inside it are left out).
fn strings(list: &dyn Array) -> Result<Value, String> {
    (0..list.len())
        .filter(|&i| !list.is_null(i))
        .map(|i| cell(list, i))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::{ArrayRef, StringArray};

    use super::*;

    #[test]
    fn a_row_count_too_large_to_allocate_is_only_a_hint() {
        let mut v = FixedSizeListBuilder::new(Float32Builder::new(), 2);
        v.values().append_slice(&[1.0, 2.0]);
        v.append(true);
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
            ("v", Arc::new(v.finish()) as ArrayRef),
        ])
        .unwrap();
        let schema = batch.schema();
        let mut g = Gather::new(&schema, plan(&schema, &Columns::default(), true).unwrap());
        // As a forged footer would claim: far more rows than memory holds.
        g.expect(usize::MAX / 4);
        g.push(&batch, false).unwrap();
        let ds = g.finish();
        assert_eq!(
            (ds.ids, ds.vectors),
            (vec!["a".to_string()], vec![1.0, 2.0])
        );
    }
}
