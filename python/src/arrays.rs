//! numpy in and out: queries and vectors as float32 (read in place when
//! C-contiguous float32, converted otherwise), hits as an object array of
//! ids and a float32 array of distances, padded to k.

use std::borrow::Cow;

use numpy::ndarray::Array2;
use numpy::prelude::*;
use numpy::{AllowTypeChange, PyArrayLikeDyn, PyReadonlyArrayDyn};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::errors::invalid;

/// float32 rows from anything numpy converts: one query (1-D) or several
/// (2-D).
pub struct Rows<'py> {
    array: PyReadonlyArrayDyn<'py, f32>,
    /// The input was one vector: answers are flat.
    pub single: bool,
    pub n: usize,
    pub dim: usize,
}

impl<'py> Rows<'py> {
    pub fn extract(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Rows<'py>> {
        let like: PyArrayLikeDyn<'py, f32, AllowTypeChange> = obj.extract().map_err(|e| {
            invalid(format!(
                "{what} must be float32 numbers (or convertible to them): {e}"
            ))
        })?;
        let array: PyReadonlyArrayDyn<'py, f32> = (*like).clone();
        let shape = array.shape().to_vec();
        let (single, n, dim) = match shape.as_slice() {
            [d] => (true, 1, *d),
            [n, d] => (false, *n, *d),
            _ => {
                return Err(invalid(format!(
                    "{what} must be 1-D (one vector) or 2-D (one per row), got {} dimensions",
                    shape.len()
                )))
            }
        };
        Ok(Rows {
            array,
            single,
            n,
            dim,
        })
    }

    /// The rows as one row-major slice: borrowed when the array is
    /// C-contiguous, copied otherwise.
    pub fn values(&self) -> Cow<'_, [f32]> {
        // `as_slice` also takes Fortran order, whose memory is not
        // row-major: only a C-contiguous array is read in place.
        match self.array.as_slice() {
            Ok(s) if self.array.is_c_contiguous() => Cow::Borrowed(s),
            _ => Cow::Owned(self.array.as_array().iter().copied().collect()),
        }
    }
}

/// The hits of a batch, `k` slots per query: a slot holds the source (an
/// index of the call, [`EMPTY`] for padding), the node and the distance.
pub struct Hits {
    pub k: usize,
    pub source: Vec<u32>,
    pub node: Vec<u32>,
    pub distance: Vec<f32>,
}

/// A padding slot's source.
pub const EMPTY: u32 = u32::MAX;

impl Hits {
    pub fn new(n: usize, k: usize) -> Hits {
        Hits {
            k,
            source: vec![EMPTY; n * k],
            node: vec![0; n * k],
            distance: vec![f32::INFINITY; n * k],
        }
    }

    /// Split into per-query chunks of `per` queries, for threads to fill.
    pub fn chunks_mut(&mut self, per: usize) -> impl Iterator<Item = HitsMut<'_>> {
        let k = self.k;
        let size = per * k;
        self.source
            .chunks_mut(size)
            .zip(self.node.chunks_mut(size))
            .zip(self.distance.chunks_mut(size))
            .map(move |((source, node), distance)| HitsMut {
                k,
                source,
                node,
                distance,
            })
    }

    /// As Python values (see [`answer`]); `id` names a slot's node of its
    /// source.
    pub fn into_python<'py, 'a>(
        self,
        py: Python<'py>,
        single: bool,
        id: impl Fn(u32, u32) -> &'a str,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let ids = self
            .source
            .iter()
            .zip(&self.node)
            .map(|(s, node)| (*s != EMPTY).then(|| id(*s, *node)));
        answer(py, self.k, single, ids, self.distance)
    }
}

/// Hits as Python values, `k` slots per query (`None` and `inf` where
/// padded): for a single query, a list of its ids and a 1-D float32 array;
/// else an `(n, k)` object array of ids and an `(n, k)` float32 array.
pub fn answer<'py, 'a>(
    py: Python<'py>,
    k: usize,
    single: bool,
    ids: impl Iterator<Item = Option<&'a str>>,
    mut distance: Vec<f32>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if single {
        let list = PyList::empty(py);
        for id in ids.map_while(|id| id) {
            list.append(PyString::new(py, id))?;
        }
        distance.truncate(list.len());
        return Ok((list.into_any(), distance.into_pyarray(py).into_any()));
    }
    let n = distance.len() / k.max(1);
    let objects: Vec<Py<PyAny>> = ids
        .map(|id| match id {
            None => py.None(),
            Some(id) => PyString::new(py, id).into_any().unbind(),
        })
        .collect();
    let shape = (n, k);
    let objects = Array2::from_shape_vec(shape, objects).map_err(|e| invalid(e.to_string()))?;
    let distance = Array2::from_shape_vec(shape, distance).map_err(|e| invalid(e.to_string()))?;
    Ok((
        numpy::PyArray2::from_owned_object_array(py, objects).into_any(),
        distance.into_pyarray(py).into_any(),
    ))
}

/// The slots of some consecutive queries.
pub struct HitsMut<'a> {
    pub k: usize,
    pub source: &'a mut [u32],
    pub node: &'a mut [u32],
    pub distance: &'a mut [f32],
}

impl HitsMut<'_> {
    /// Fill query `q`'s slots (relative to this chunk) from `found`, at most
    /// k of them.
    pub fn set(&mut self, q: usize, found: impl Iterator<Item = (u32, u32, f32)>) {
        let at = q * self.k;
        for (slot, (s, node, d)) in (at..at + self.k).zip(found) {
            self.source[slot] = s;
            self.node[slot] = node;
            self.distance[slot] = d;
        }
    }
}

/// Ids from a sequence of `str` (or `int`, named by its decimal digits).
pub fn ids(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if obj.is_instance_of::<PyString>() {
        return Err(invalid(format!(
            "{what} must be a sequence of ids, not one string"
        )));
    }
    let mut out = Vec::new();
    for (i, item) in obj
        .try_iter()
        .map_err(|_| invalid(format!("{what} must be a sequence of ids")))?
        .enumerate()
    {
        out.push(id(&item?, || format!("{what}[{i}]"))?);
    }
    Ok(out)
}

/// One id: a `str`, or an `int` (not a bool) as its decimal digits.
pub fn id(item: &Bound<'_, PyAny>, at: impl Fn() -> String) -> PyResult<String> {
    if let Ok(s) = item.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    if !item.is_instance_of::<pyo3::types::PyBool>() {
        if let Ok(i) = item.extract::<i128>() {
            return Ok(i.to_string());
        }
    }
    Err(invalid(format!(
        "{} must be a str (or an int), got {}",
        at(),
        item.get_type().name()?
    )))
}
