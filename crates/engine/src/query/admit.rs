//! The admit-check: which nodes a search may return. One check serves every
//! reason a node is turned away: a filter, a caller's exclusions (listening
//! history, the current playlist), deletions. Traversal walks through
//! non-admitted nodes but returns only admitted ones, and the exact plan
//! scans exactly the admitted set, so "k hits when k admitted items exist"
//! holds for all of them at once.

use std::borrow::Cow;

use fixedbitset::FixedBitSet;
use roaring::RoaringBitmap;

use crate::error::Result;
use crate::filter::FilterPlan;
use crate::search::Cancel;

/// Decides which nodes may be returned.
pub trait Admit {
    /// True only for [`AdmitAll`]: lets search keep its unfiltered loop,
    /// decided at compile time.
    const ADMITS_ALL: bool = false;
    fn admit(&self, node: u32) -> bool;
}

/// Admits everything; the unfiltered path.
pub struct AdmitAll;

impl Admit for AdmitAll {
    const ADMITS_ALL: bool = true;
    #[inline(always)]
    fn admit(&self, _node: u32) -> bool {
        true
    }
}

impl Admit for RoaringBitmap {
    #[inline(always)]
    fn admit(&self, node: u32) -> bool {
        self.contains(node)
    }
}

/// Everything that restricts one search. Membership tests are bitmap probes,
/// so the cost of a check does not grow with the number of exclusions.
#[derive(Default, Clone, Copy)]
pub struct Admission<'f, 'a> {
    /// Only items matching this filter.
    pub filter: Option<&'f FilterPlan<'a>>,
    /// Never these nodes (a caller's exclusions, seed items).
    pub excluded: Option<&'f RoaringBitmap>,
    /// Never these nodes either (deleted items).
    pub deleted: Option<&'f RoaringBitmap>,
}

impl<'f, 'a> Admission<'f, 'a> {
    pub fn filter(filter: Option<&'f FilterPlan<'a>>) -> Self {
        Admission {
            filter,
            ..Admission::default()
        }
    }

    /// Nothing restricts the search.
    pub fn admits_all(&self) -> bool {
        self.filter.is_none()
            && self.excluded.is_none_or(RoaringBitmap::is_empty)
            && self.deleted.is_none_or(RoaringBitmap::is_empty)
    }

    /// About how many of `n` items are admitted: exact for a filter known
    /// exactly, less every exclusion and deletion (which may not all match
    /// it, so this may undercount; it is used only to plan).
    pub fn estimate(&self, n: usize) -> u64 {
        let base = self.filter.map_or(n as u64, |f| f.count());
        let minus = self.excluded.map_or(0, |e| e.len()) + self.deleted.map_or(0, |d| d.len());
        base.saturating_sub(minus)
    }

    /// Whether nothing at all is admitted, known without listing.
    pub fn admits_none(&self) -> bool {
        self.filter.is_some_and(|f| f.is_exact() && f.count() == 0)
    }

    /// This admission as a traversal should probe it ([`Probe`]).
    pub fn probe(&self) -> Probe<'f, 'a> {
        match self.filter.and_then(|f| f.dense()) {
            Some(bits) => Probe {
                bits: Some(bits),
                rest: Admission {
                    filter: None,
                    ..*self
                },
            },
            None => Probe {
                bits: None,
                rest: *self,
            },
        }
    }

    /// Exactly the admitted nodes among `0..n`; listing a filter's matches
    /// stops with `cancel`'s error once it says so.
    pub fn admitted(&self, n: usize, cancel: &dyn Cancel) -> Result<Cow<'f, RoaringBitmap>> {
        let mut set = match self.filter {
            Some(f) => Cow::Borrowed(f.matches_within(cancel)?),
            None => {
                let mut all = RoaringBitmap::new();
                all.insert_range(0..n as u32);
                Cow::Owned(all)
            }
        };
        for away in [self.excluded, self.deleted].into_iter().flatten() {
            if !away.is_empty() {
                set = Cow::Owned(set.as_ref() - away);
            }
        }
        Ok(set)
    }
}

impl Admit for Admission<'_, '_> {
    #[inline]
    fn admit(&self, node: u32) -> bool {
        self.filter.is_none_or(|f| f.admit(node))
            && !self.excluded.is_some_and(|e| e.contains(node))
            && !self.deleted.is_some_and(|d| d.contains(node))
    }
}

/// An [`Admission`] as a traversal probes it, once per neighbour met: a
/// filter known exactly is a bit test, done first because it turns most
/// candidates away; exclusions and deletions, usually few, stay bitmaps.
pub struct Probe<'f, 'a> {
    bits: Option<&'f FixedBitSet>,
    rest: Admission<'f, 'a>,
}

impl Admit for Probe<'_, '_> {
    #[inline]
    fn admit(&self, node: u32) -> bool {
        self.bits.is_none_or(|b| b.contains(node as usize)) && self.rest.admit(node)
    }
}
