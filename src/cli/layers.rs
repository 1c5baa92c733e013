//! `fathom delete` and `fathom compact`: change a layered index folder
//! (docs/layers.md). A running server picks the change up like a reload.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use fathom_engine::formats::read_ids;
use fathom_engine::layers;

use super::default_threads;

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The layered index folder.
    index_dir: PathBuf,
    /// Ids to delete, one a line.
    #[arg(long)]
    ids: PathBuf,
}

#[derive(clap::Args)]
pub struct CompactArgs {
    /// The layered index folder.
    index_dir: PathBuf,
    /// Build threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run_delete(a: DeleteArgs) -> Result<ExitCode> {
    let ids = crate::cli::about_path(read_ids(&a.ids), "reading", &a.ids)?;
    let deleted = if fathom_engine::shards::is_sharded(&a.index_dir) {
        fathom_engine::shards::delete(&a.index_dir, &ids, None)
    } else {
        layers::delete(&a.index_dir, &ids, None)
    };
    let report = crate::cli::about_path(deleted, "deleting from", &a.index_dir)?;
    println!(
        "deleted {} of {} ids from {} (durable: on disk before this line)",
        report.deleted.len(),
        ids.len(),
        a.index_dir.display()
    );
    report_unknown(&report.unknown);
    Ok(ExitCode::SUCCESS)
}

pub fn run_compact(a: CompactArgs) -> Result<ExitCode> {
    let start = std::time::Instant::now();
    let threads = a.threads.unwrap_or_else(default_threads);
    let compacted = if fathom_engine::shards::is_sharded(&a.index_dir) {
        // Each shard on its own: a sharded folder has no single base.
        fathom_engine::shards::read_manifest(&a.index_dir).and_then(|m| {
            let names = m
                .items
                .iter()
                .map(|e| layers::compact_build(&a.index_dir.join(&e.dir), threads))
                .collect::<fathom_engine::Result<Vec<String>>>()?;
            Ok(format!("{} shards ({})", names.len(), names.join(", ")))
        })
    } else {
        layers::compact_build(&a.index_dir, threads)
    };
    let name = crate::cli::about_path(compacted, "compacting", &a.index_dir)?;
    println!(
        "compacted {} into {name} in {:.1}s",
        a.index_dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Tell (on stderr, not as an error) which ids of a delete had no live copy:
/// `fathom delete` and `fathom query delete` say it the same way.
pub(crate) fn report_unknown(unknown: &[String]) {
    if unknown.is_empty() {
        return;
    }
    let shown: Vec<&str> = unknown.iter().take(5).map(String::as_str).collect();
    eprintln!(
        "{} ids had no live copy (unknown or already deleted), e.g. {shown:?}",
        unknown.len()
    );
}
