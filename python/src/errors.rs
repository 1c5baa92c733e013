//! Engine and client errors as Python exceptions, with the same messages:
//! bad arguments are `ValueError`, files that cannot be read are
//! `fathom.SnapshotError` (an `OSError`), an unknown id is
//! `fathom.UnknownItemError` (a `KeyError` and a `ValueError`).

use fathom_engine::Error;
use fathom_server::client::ClientError;
use pyo3::exceptions::{
    PyConnectionError, PyPermissionError, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use tonic::Code;

/// One of the exception classes defined in `fathom/_errors.py`.
fn class<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = MODULE.get_or_try_init(py, || py.import("fathom._errors").map(Bound::unbind))?;
    module
        .bind(py)
        .getattr(name)?
        .cast_into()
        .map_err(Into::into)
}

fn raise(py: Python<'_>, name: &'static str, message: String) -> PyErr {
    match class(py, name) {
        Ok(t) => PyErr::from_type(t, (message,)),
        Err(e) => e,
    }
}

/// The exception of an engine error.
pub fn engine(e: Error) -> PyErr {
    engine_at(e, None)
}

/// The exception of an engine error met by query `q` of a batch, which
/// its message names.
pub fn engine_at(e: Error, q: Option<usize>) -> PyErr {
    let message = match q {
        Some(q) => format!("query {q}: {e}"),
        None => e.to_string(),
    };
    match e {
        Error::Io { .. }
        | Error::Corrupt { .. }
        | Error::NotRegularFile { .. }
        | Error::Incompatible { .. } => Python::attach(|py| raise(py, "SnapshotError", message)),
        Error::UnknownItem(_) => Python::attach(|py| raise(py, "UnknownItemError", message)),
        Error::DeadlineExceeded => PyTimeoutError::new_err(message),
        Error::Cancelled => PyRuntimeError::new_err(message),
        Error::Input { .. } | Error::InvalidArgument(_) | Error::Filter(_) => {
            PyValueError::new_err(message)
        }
    }
}

/// The exception of a client error, by its gRPC status code.
pub fn client(e: ClientError) -> PyErr {
    let message = e.to_string();
    match e.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            PyValueError::new_err(message)
        }
        Code::NotFound => Python::attach(|py| raise(py, "UnknownItemError", message)),
        Code::Unavailable => PyConnectionError::new_err(message),
        Code::DeadlineExceeded => PyTimeoutError::new_err(message),
        Code::Unauthenticated | Code::PermissionDenied => PyPermissionError::new_err(message),
        code => Python::attach(|py| match class(py, "ServerError") {
            Ok(t) => PyErr::from_type(t, (message, fathom_server::status::code_name(code))),
            Err(e) => e,
        }),
    }
}

/// A `ValueError` with this message.
pub fn invalid(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}
