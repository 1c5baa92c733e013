//! Putting a build into a layered folder: as the base of a new folder, or
//! as a delta of an existing one (which takes its settings and i8
//! quantizer from the base). `fathom build` and the Python package share
//! these steps.

use std::path::{Path, PathBuf};

use crate::builder::{build, BuildOptions, Dataset};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::vectors::Quantizer;

use super::{add_delta, create, is_layered, merge_deltas, next_layer_path, options_like};

/// How the next delta of a folder is built, and where it is written.
pub struct DeltaPlan {
    /// The base's metric, storage, graph settings and value-graph fields.
    pub options: BuildOptions,
    /// The base's i8 quantizer, which every layer encodes with.
    pub quantizer: Option<Quantizer>,
    /// The temporary file [`publish_delta`] moves into the folder.
    pub path: PathBuf,
}

/// Plan a delta of the layered folder `dir`, built on `threads` threads.
pub fn plan_delta(dir: &Path, threads: usize) -> Result<DeltaPlan> {
    let m = super::read_manifest(dir)?;
    let base = Index::open(dir.join(&m.layers[0]))?;
    Ok(DeltaPlan {
        options: options_like(&base, threads),
        quantizer: base.snapshot().quantizer().cloned(),
        path: next_layer_path(dir)?,
    })
}

/// Where the base of a new layered folder `dir` is written before
/// [`create`] moves it in: the folder is made, and must not be an index.
pub fn plan_new_folder(dir: &Path) -> Result<PathBuf> {
    if is_layered(dir) {
        return Err(Error::invalid(format!(
            "{} is already a layered index; add to it as a delta",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    Ok(dir.join(format!(".base.new-{}", std::process::id())))
}

/// What adding a delta did.
pub struct DeltaAdded {
    /// The new layer's file name.
    pub name: String,
    /// The newest deltas merged into one (their file name and how many),
    /// if they were. A failed merge is not the addition's failure: the
    /// items are served either way, and the error is kept here.
    pub merged: Result<Option<(String, usize)>>,
}

/// Add the snapshot written at `written` (a [`DeltaPlan::path`]) to `dir`
/// as its newest layer, then merge the newest small deltas into one.
pub fn publish_delta(dir: &Path, written: &Path, threads: usize) -> Result<DeltaAdded> {
    let name = add_delta(dir, written)?;
    Ok(DeltaAdded {
        name,
        merged: merge_deltas(dir, threads),
    })
}

/// Build `ds` as a delta of `dir` and add it: [`plan_delta`], build, write,
/// [`publish_delta`]. The written file is removed when a step fails.
pub fn build_delta(dir: &Path, ds: Dataset, threads: usize) -> Result<DeltaAdded> {
    let plan = plan_delta(dir, threads)?;
    let input = format!("a delta of {}", dir.display());
    let mut built = build(ds, Path::new(&input), &plan.options, &|_, _| {})?;
    built.quantizer = plan.quantizer;
    if let Err(e) = built.write(&plan.path, &input) {
        let _ = std::fs::remove_file(&plan.path);
        return Err(e);
    }
    publish_delta(dir, &plan.path, threads)
}

/// Build `ds` with `options` as the base of a new layered folder `dir`.
pub fn build_new_folder(dir: &Path, ds: Dataset, options: &BuildOptions) -> Result<()> {
    let path = plan_new_folder(dir)?;
    let input = format!("the base of {}", dir.display());
    let built = build(ds, Path::new(&input), options, &|_, _| {})?;
    let written = built.write(&path, &input).and_then(|_| create(dir, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    written
}
