//! A build's input that carries its own ids and attributes: a table handed
//! over through Arrow's C stream interface (pyarrow, polars, pandas), or
//! the path of an input file.

use std::path::PathBuf;

use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::RecordBatchReader;
use fathom_engine::builder::Dataset;
use fathom_engine::formats::{arrow::read_batches, read_dataset, Columns};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyCapsuleMethods, PyString};

use crate::dataset::dataset;
use crate::errors::{engine, invalid};

/// A build's input, whatever form it takes: a table or file carrying its
/// own ids and attributes (named by `columns`), or an array with `ids` and
/// `attributes` beside it.
pub fn input(
    vectors: &Bound<'_, PyAny>,
    ids: Option<&Bound<'_, PyAny>>,
    attributes: Option<&Bound<'_, PyAny>>,
    columns: &Columns,
) -> PyResult<Dataset> {
    match of(vectors, columns)? {
        Some(_) if ids.is_some() || attributes.is_some() => Err(invalid(
            "a table or file carries its own ids and attributes: name their columns instead",
        )),
        Some(ds) => Ok(ds),
        None => dataset(vectors, ids, attributes),
    }
}

/// The dataset `obj` holds when it is a path or an Arrow stream; `None`
/// for anything else (numpy arrays and the like).
pub fn of(obj: &Bound<'_, PyAny>, columns: &Columns) -> PyResult<Option<Dataset>> {
    let py = obj.py();
    let is_path = obj.is_instance_of::<PyString>()
        || obj.is_instance(&py.import("os")?.getattr("PathLike")?)?;
    if is_path {
        let path: PathBuf = obj.extract()?;
        let ds = py
            .detach(|| read_dataset(&path, None, None, columns))
            .map_err(engine)?;
        return Ok(Some(ds));
    }
    if !obj.hasattr("__arrow_c_stream__")? {
        return Ok(None);
    }
    let capsule = obj.call_method0("__arrow_c_stream__")?;
    let capsule = capsule.cast::<PyCapsule>().map_err(|_| {
        invalid("__arrow_c_stream__ did not return a capsule (Arrow's PyCapsule interface)")
    })?;
    let stream = capsule.pointer_checked(Some(c"arrow_array_stream"))?;
    // SAFETY: the capsule's pointer is an initialized ArrowArrayStream (its
    // name says so, as the PyCapsule interface requires). `from_raw` moves
    // the stream out and leaves a released one behind, which the capsule's
    // destructor then leaves alone.
    let reader = unsafe {
        RecordBatchStreamReader::from_raw(stream.as_ptr().cast::<FFI_ArrowArrayStream>())
    }
    .map_err(|e| invalid(format!("reading the table: {e}")))?;
    let schema = reader.schema();
    // Read with the GIL held: the producer may be Python code.
    read_batches(&schema, reader, columns)
        .map(Some)
        .map_err(invalid)
}
