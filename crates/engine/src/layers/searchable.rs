//! What one index name stands for: a single snapshot, a layered folder (a
//! base, deltas and deletions; see [`crate::layers`]), or a sharded folder
//! of layered folders ([`crate::shards`]). The CLI and the server open
//! paths through this, so both serve every kind the same way: a sharded
//! folder is searched as one index whose parts are every shard's layers.

use std::path::Path;

use roaring::RoaringBitmap;

use crate::error::Result;
use crate::filter::FilterPlan;
use crate::index::Index;
use crate::layers::{self, Layered};
use crate::retrieve::Source;
use crate::shards::probe::Probe;
use crate::shards::{self, Sharded};
use crate::snapshot::OpenOptions;

pub enum Searchable {
    /// Boxed: an `Index` is several times the size of a `Layered`.
    Snapshot(Box<Index>),
    Layered(Layered),
    Sharded(Sharded),
}

impl Searchable {
    /// A layered folder when `path` is one, else a snapshot file; layers
    /// open as `options` says.
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Searchable> {
        Ok(if shards::is_sharded(path) {
            Searchable::Sharded(Sharded::open_with(path, None, &|p| {
                Index::open_with(p, options)
            })?)
        } else if layers::is_layered(path) {
            Searchable::Layered(Layered::open_reusing_with(path, None, &|p| {
                Index::open_with(p, options)
            })?)
        } else {
            Searchable::Snapshot(Box::new(Index::open_with(path, options)?))
        })
    }

    /// Every index searched, with the nodes it must never return (deleted,
    /// or replaced by a later layer). An iterator, not a list: every call
    /// walks it (the intact check, its sources), and need not allocate.
    pub fn parts(&self) -> impl Iterator<Item = (&Index, Option<&RoaringBitmap>)> + '_ {
        let (one, layered): (_, &[Layered]) = match self {
            Searchable::Snapshot(index) => (Some((&**index, None)), &[]),
            Searchable::Layered(l) => (None, std::slice::from_ref(l)),
            Searchable::Sharded(s) => (None, s.shards()),
        };
        one.into_iter().chain(layered.iter().flat_map(|l| {
            l.layers()
                .iter()
                .enumerate()
                .map(move |(i, layer)| (&**layer, Some(l.dead(i))))
        }))
    }

    /// The snapshot that defines the dimension, metric, storage and schema
    /// (every layer of a folder matches its base).
    pub fn base(&self) -> &Index {
        match self {
            Searchable::Snapshot(index) => index,
            Searchable::Layered(l) => &l.layers()[0],
            Searchable::Sharded(s) => &s.shards()[0].layers()[0],
        }
    }

    /// The layered folder, when this is one (not a sharded folder).
    pub fn layered(&self) -> Option<&Layered> {
        match self {
            Searchable::Layered(l) => Some(l),
            _ => None,
        }
    }

    /// Whether two parts may hold copies of one id (a sharded folder placed
    /// with a closure): a call over them keeps one hit per id.
    pub fn holds_copies(&self) -> bool {
        self.sharded().is_some_and(Sharded::holds_copies)
    }

    pub fn sharded(&self) -> Option<&Sharded> {
        match self {
            Searchable::Sharded(s) => Some(s),
            _ => None,
        }
    }

    /// Items a search can return.
    pub fn live(&self) -> u64 {
        match self {
            Searchable::Snapshot(index) => index.snapshot().len() as u64,
            Searchable::Layered(l) => l.live(),
            Searchable::Sharded(s) => s.live(),
        }
    }

    /// Bytes of every file served.
    pub fn file_bytes(&self) -> u64 {
        self.parts()
            .map(|(index, _)| index.snapshot().file_len())
            .sum()
    }

    /// The live copy of `id`: the index holding it, and its node there.
    pub fn find(&self, id: &str) -> Option<(&Index, u32)> {
        match self {
            Searchable::Snapshot(index) => Some((index, index.find(id)?)),
            Searchable::Layered(l) => {
                let (layer, node) = l.find(id)?;
                Some((&*l.layers()[layer], node))
            }
            Searchable::Sharded(s) => {
                let (shard, layer, node) = s.find(id)?;
                Some((&*s.shards()[shard as usize].layers()[layer], node))
            }
        }
    }

    /// Fails with `Corrupt` when any file served was found cut or written
    /// in place while mapped.
    pub fn check_intact(&self) -> Result<()> {
        self.parts()
            .try_for_each(|(index, _)| index.snapshot().check_intact())
    }

    /// `expr` bound to each part, in the order of [`Self::parts`].
    pub fn filter(&self, expr: &str) -> Result<Vec<FilterPlan<'_>>> {
        self.parts().map(|(index, _)| index.filter(expr)).collect()
    }

    /// As [`Self::filter`], stopping with `cancel`'s error once it says so
    /// (the deadline or cancel flag of the call the plans are for).
    pub fn filter_within(
        &self,
        expr: &str,
        cancel: &dyn crate::search::Cancel,
    ) -> Result<Vec<FilterPlan<'_>>> {
        self.parts()
            .map(|(index, _)| index.filter_within(expr, cancel))
            .collect()
    }

    /// Which shards a call searches first, for a folder placed by
    /// similarity and `probe` fewer than its shards; `None` (every shard)
    /// otherwise. In the order of [`Self::parts`].
    pub fn probe(&self, probe: usize) -> Option<Probe<'_>> {
        let s = self.sharded()?;
        let centroids = s.centroids()?;
        if probe == 0 || probe >= s.shards().len() {
            return None;
        }
        let shard_of_source = s
            .shards()
            .iter()
            .enumerate()
            .flat_map(|(i, l)| std::iter::repeat_n(i as u32, l.layers().len()))
            .collect();
        Some(Probe {
            centroids,
            shard_of_source,
            probe,
        })
    }

    /// The sources of one call: one per part, each with its plan from
    /// `plans` (as [`Self::filter`] made them) and `owner` as the index's
    /// number in the call.
    pub fn sources<'s, 'i>(
        &'s self,
        name: &'s str,
        plans: Option<&'s [FilterPlan<'i>]>,
        owner: u32,
    ) -> impl Iterator<Item = Source<'s, 'i>> + 's {
        self.parts()
            .enumerate()
            .map(move |(i, (index, deleted))| Source {
                name,
                index,
                filter: plans.map(|p| &p[i]),
                deleted,
                owner,
            })
    }
}
