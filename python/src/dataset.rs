//! A build's input from Python: vectors (numpy), ids and attribute dicts,
//! as the engine's `Dataset`.

use fathom_engine::attributes::AttributesBuilder;
use fathom_engine::builder::Dataset;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use crate::arrays::{self, Rows};
use crate::errors::invalid;

/// `vectors` (2-D), `ids` (`None`: "0".."n-1") and `attributes` (`None`,
/// or one dict per row, `None` for a row without any).
pub fn dataset(
    vectors: &Bound<'_, PyAny>,
    ids: Option<&Bound<'_, PyAny>>,
    attributes: Option<&Bound<'_, PyAny>>,
) -> PyResult<Dataset> {
    let rows = Rows::extract(vectors, "vectors")?;
    if rows.single {
        return Err(invalid(
            "vectors must be 2-D, one row per item (reshape one vector with v[None, :])",
        ));
    }
    let n = rows.n;
    let ids = match ids {
        None => (0..n).map(|i| i.to_string()).collect(),
        Some(ids) => arrays::ids(ids, "ids")?,
    };
    if ids.len() != n {
        return Err(invalid(format!(
            "{} ids for {n} vectors: give one id per row",
            ids.len()
        )));
    }
    let attributes = match attributes {
        None => None,
        Some(a) => table(a, n)?,
    };
    Ok(Dataset {
        dim: rows.dim,
        vectors: rows.values().into_owned(),
        ids,
        attributes,
    })
}

/// The attribute table of one dict per row.
fn table(
    obj: &Bound<'_, PyAny>,
    n: usize,
) -> PyResult<Option<fathom_engine::attributes::AttributeTable>> {
    let mut builder = AttributesBuilder::new();
    let mut rows = 0;
    let items = obj
        .try_iter()
        .map_err(|_| invalid("attributes must be a sequence of dicts, one per row"))?;
    for (row, item) in items.enumerate() {
        let item = item?;
        let map = if item.is_none() {
            Map::new()
        } else {
            let dict = item.cast::<PyDict>().map_err(|_| {
                invalid(format!(
                    "attributes[{row}] must be a dict (or None), got {}",
                    item.get_type()
                        .name()
                        .map_or_else(|_| "?".into(), |n| n.to_string())
                ))
            })?;
            object(dict, &format!("attributes[{row}]"))?
        };
        builder.push(&map, row + 1).map_err(|e| {
            invalid(format!(
                "attributes[{row}]: field {:?}: {}",
                e.field, e.reason
            ))
        })?;
        rows += 1;
    }
    if rows != n {
        return Err(invalid(format!(
            "{rows} attribute rows for {n} vectors: give one per row (None for none)"
        )));
    }
    Ok(builder.has_fields().then(|| builder.finish()))
}

fn object(dict: &Bound<'_, PyDict>, at: &str) -> PyResult<Map<String, Value>> {
    let mut map = Map::new();
    for (key, value) in dict.iter() {
        let key: String = key
            .cast::<PyString>()
            .map_err(|_| invalid(format!("{at}: attribute names must be str")))?
            .to_cow()?
            .into_owned();
        let value = json(&value, &format!("{at}[{key:?}]"))?;
        map.insert(key, value);
    }
    Ok(map)
}

/// A Python value as JSON, as `json.dumps` would write it (numpy scalars
/// included, through their `int`/`float` conversions).
fn json(v: &Bound<'_, PyAny>, at: &str) -> PyResult<Value> {
    if v.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = v.extract::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        return Err(invalid(format!("{at}: the integer {v} is out of range")));
    }
    if v.is_instance_of::<PyFloat>() {
        let f: f64 = v.extract()?;
        return Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| invalid(format!("{at}: {f} is not a finite number")));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let mut out = Vec::new();
        for (i, x) in v.try_iter()?.enumerate() {
            out.push(json(&x?, &format!("{at}[{i}]"))?);
        }
        return Ok(Value::Array(out));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        return Ok(Value::Object(object(d, at)?));
    }
    // numpy scalars and other numbers: through their own conversions.
    let name = v.get_type().name()?.to_string();
    if v.hasattr("dtype")? {
        if let Ok(item) = v.call_method0("item") {
            if !item.hasattr("dtype")? {
                return json(&item, at);
            }
        }
    }
    Err(invalid(format!(
        "{at}: a {name} is not an attribute value (str, bool, int, float, a list of str, or None)"
    )))
}
