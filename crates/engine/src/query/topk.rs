//! The one top-k merge. Every call that draws hits from more than one list
//! ends here: federated indexes, and the candidates that per-group caps and
//! diversity choose among. Hits are merged by distance, then picked greedily
//! under three optional constraints:
//!
//! - **per-source minimums:** each source gets at least `min_per_source`
//!   hits when it has them (a search page that must show some episodes);
//! - **per-group caps:** at most `group_size` hits share a group value (at
//!   most two tracks per artist); hits without a value are not capped;
//! - **maximal marginal relevance:** each pick minimizes
//!   `λ·d(q, c) − (1 − λ)·min over picked s of d(c, s)`, with λ = 1 − diversity,
//!   so a candidate close to one already picked loses to a slightly farther
//!   one unlike anything picked.
//!
//! Without diversity the picks come back nearest first; with it, in the
//! order they were picked.

/// One hit of a call: which source (index) it came from, its node there and
/// its distance (lower is closer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub source: u32,
    pub node: u32,
    pub distance: f32,
}

/// All hits of `lists` in one list, nearest first; ties by source, then node,
/// so the order is deterministic.
pub fn merge<L: AsRef<[Hit]>>(lists: &[L]) -> Vec<Hit> {
    let mut all: Vec<Hit> = lists.iter().flat_map(|l| l.as_ref()).copied().collect();
    all.sort_unstable_by(nearest_first);
    all
}

/// Distance, then source, then node: a total, deterministic order.
fn nearest_first(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    a.distance
        .total_cmp(&b.distance)
        .then(a.source.cmp(&b.source))
        .then(a.node.cmp(&b.node))
}

/// The constraints of one pick.
pub struct Pick<'o, D> {
    pub k: usize,
    /// How many owners hits may come from: each source belongs to one
    /// (`owners[source]`, or itself when `owners` is empty). An index made
    /// of layers is one owner with a source per layer.
    pub sources: usize,
    pub owners: &'o [u32],
    /// Each owner gets at least this many hits when it has them.
    pub min_per_source: usize,
    /// Per candidate (by position), its group as a number below the number
    /// of candidates, or [`UNCAPPED`]; with `group_size`. Callers number the
    /// values (cheaper than comparing strings in the greedy loop, which
    /// checks groups several times per pick under MMR).
    pub group: Option<(&'o [u32], usize)>,
    /// λ and the distance between the items of two candidates (by their
    /// positions in the candidate list), for MMR.
    pub mmr: Option<(f32, D)>,
}

/// A candidate's MMR score as last computed, as one heap key: the score's
/// bits in an order that sorts like `f32::total_cmp`, then the candidate's
/// position (the nearer first on equal scores). Scores only grow as picks
/// are added (the distance to the nearest pick only shrinks), so a stale
/// score is a lower bound and only the candidate at the top of the heap
/// needs bringing up to date. A `u64` sifts faster than a struct compared
/// field by field, and the heap is popped about once per distance.
fn stale_key(score: f32, at: usize) -> std::cmp::Reverse<u64> {
    let bits = score.to_bits();
    // Negative scores flip entirely, positive ones get the sign bit set.
    let ordered = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    std::cmp::Reverse(u64::from(ordered) << 32 | at as u64)
}

/// The candidate position of a [`stale_key`].
fn stale_at(key: std::cmp::Reverse<u64>) -> usize {
    (key.0 & u64::from(u32::MAX)) as usize
}

/// A candidate without a group value: never capped.
pub const UNCAPPED: u32 = u32::MAX;

/// Pick up to `k` of `candidates` (nearest first, as [`merge`] leaves them)
/// under `pick`'s constraints. Returns the picks: nearest first, or in pick
/// order under MMR.
pub fn pick<D>(candidates: &[Hit], pick: &Pick<'_, D>) -> Vec<Hit>
where
    D: Fn(usize, usize) -> f32,
{
    // Heap keys hold a candidate's position in 32 bits (`stale_key`).
    debug_assert!(candidates.len() <= u32::MAX as usize);
    let k = pick.k.min(candidates.len());
    let owner = |c: &Hit| match pick.owners.get(c.source as usize) {
        Some(&o) => o as usize,
        None => c.source as usize,
    };
    let mut taken = vec![false; candidates.len()];
    let mut picked: Vec<usize> = Vec::with_capacity(k);
    // What each source is still owed: the minimum, or what it has.
    let mut owed = vec![0usize; pick.sources];
    for c in candidates {
        let o = &mut owed[owner(c)];
        *o = (*o + 1).min(pick.min_per_source);
    }
    let groups: &[u32] = pick.group.map_or(&[], |g| g.0);
    debug_assert!(groups.is_empty() || groups.len() == candidates.len());
    // Numbers lie below the number of candidates (see `Pick::group`).
    let mut per_group = vec![0usize; candidates.len()];
    let cap = pick.group.map_or(usize::MAX, |g| g.1);
    let group_full = |i: usize, per_group: &[usize]| {
        groups
            .get(i)
            .is_some_and(|&g| g != UNCAPPED && per_group[g as usize] >= cap)
    };
    // MMR, once the first pick is made: each candidate's distance to the
    // nearest pick it has seen, and the heap of stale scores.
    let mut nearest = vec![f32::INFINITY; candidates.len()];
    // How many picks each candidate's `nearest` has seen.
    let mut seen = vec![0usize; candidates.len()];
    let mut heap = std::collections::BinaryHeap::new();
    while picked.len() < k {
        let left = k - picked.len();
        let unmet: usize = owed.iter().sum();
        // Once the remaining slots are all owed, only owed sources may fill.
        let owed_only = unmet >= left;
        let eligible = |i: usize, per_group: &[usize]| {
            let turned_away = owed_only && owed[owner(&candidates[i])] == 0;
            !turned_away && !group_full(i, per_group)
        };
        let chosen = match &pick.mmr {
            Some((lambda, dist)) if !picked.is_empty() => {
                let mut set_aside = Vec::new();
                let mut chosen = None;
                while let Some(top) = heap.pop() {
                    let at = stale_at(top);
                    if group_full(at, &per_group) {
                        continue; // for good: a full group stays full
                    }
                    if !eligible(at, &per_group) {
                        set_aside.push(top);
                        continue;
                    }
                    if seen[at] < picked.len() {
                        for &p in &picked[seen[at]..] {
                            nearest[at] = nearest[at].min(dist(at, p));
                        }
                        seen[at] = picked.len();
                        let score = lambda * candidates[at].distance - (1.0 - lambda) * nearest[at];
                        heap.push(stale_key(score, at));
                        continue;
                    }
                    chosen = Some(at);
                    break;
                }
                heap.extend(set_aside);
                chosen
            }
            // The nearest eligible: candidates are sorted.
            _ => (0..candidates.len()).find(|&i| !taken[i] && eligible(i, &per_group)),
        };
        let Some(i) = chosen else {
            if owed_only && unmet > 0 {
                // The owed sources have nothing eligible left (their groups
                // are full): forgive the debt and let anyone fill.
                owed.iter_mut().for_each(|o| *o = 0);
                continue;
            }
            break;
        };
        taken[i] = true;
        let s = owner(&candidates[i]);
        owed[s] = owed[s].saturating_sub(1);
        if let Some(&g) = groups.get(i).filter(|&&g| g != UNCAPPED) {
            per_group[g as usize] += 1;
        }
        if picked.is_empty() && pick.mmr.is_some() {
            // From here on scores only grow; seed the heap with every other
            // candidate, to be scored against this first pick.
            heap.extend(
                (0..candidates.len())
                    .filter(|&j| j != i)
                    .map(|j| stale_key(f32::NEG_INFINITY, j)),
            );
        }
        picked.push(i);
    }
    let mut out: Vec<Hit> = picked.iter().map(|&i| candidates[i]).collect();
    if pick.mmr.is_none() {
        // Forced picks of owed sources may be farther than later free ones.
        out.sort_by(nearest_first);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type NoDist = fn(usize, usize) -> f32;

    fn h(source: u32, node: u32, distance: f32) -> Hit {
        Hit {
            source,
            node,
            distance,
        }
    }

    fn plain(k: usize, sources: usize, min: usize) -> Pick<'static, NoDist> {
        Pick {
            k,
            sources,
            owners: &[],
            min_per_source: min,
            group: None,
            mmr: None,
        }
    }

    #[test]
    fn merge_orders_by_distance_then_source() {
        let m = merge(&[
            vec![h(0, 1, 0.1), h(0, 2, 0.5)],
            vec![h(1, 7, 0.1), h(1, 3, 0.2)],
        ]);
        let order: Vec<(u32, u32)> = m.iter().map(|x| (x.source, x.node)).collect();
        assert_eq!(order, [(0, 1), (1, 7), (1, 3), (0, 2)]);
    }

    #[test]
    fn min_per_source_reserves_slots_and_keeps_distance_order() {
        let c = merge(&[
            (0..10).map(|i| h(0, i, i as f32)).collect(),
            vec![h(1, 0, 50.0), h(1, 1, 60.0), h(1, 2, 70.0)],
        ]);
        let got = pick(&c, &plain(5, 2, 2));
        let want = [
            h(0, 0, 0.),
            h(0, 1, 1.),
            h(0, 2, 2.),
            h(1, 0, 50.),
            h(1, 1, 60.),
        ];
        assert_eq!(got, want);
        // A source with fewer than the minimum gives what it has.
        let c = merge(&[
            (0..10).map(|i| h(0, i, i as f32)).collect(),
            vec![h(1, 0, 50.0)],
        ]);
        let got = pick(&c, &plain(4, 2, 3));
        assert_eq!(got.iter().filter(|x| x.source == 1).count(), 1);
        assert_eq!(got.len(), 4);
        // Without a minimum it is the plain top-k.
        assert_eq!(pick(&c, &plain(3, 2, 0)), c[..3]);
    }

    #[test]
    fn group_caps_skip_full_groups() {
        let c: Vec<Hit> = (0..8).map(|i| h(0, i, i as f32)).collect();
        // Artists a, a, a, b, a, b, b, c.
        let artist = [0, 0, 0, 1, 0, 1, 1, 2];
        let p = Pick {
            k: 5,
            sources: 1,
            owners: &[],
            min_per_source: 0,
            group: Some((&artist[..], 2)),
            mmr: None::<(f32, NoDist)>,
        };
        let nodes: Vec<u32> = pick(&c, &p).iter().map(|x| x.node).collect();
        assert_eq!(nodes, [0, 1, 3, 5, 7]);
        // Candidates without a value are never capped.
        let artist = [0, UNCAPPED, UNCAPPED, 0, UNCAPPED, 0, 1, 1];
        let p = Pick {
            group: Some((&artist[..], 1)),
            ..p
        };
        let nodes: Vec<u32> = pick(&c, &p).iter().map(|x| x.node).collect();
        assert_eq!(nodes, [0, 1, 2, 4, 6]);
    }

    #[test]
    fn stale_keys_sort_like_total_cmp_then_position() {
        let scores = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            0.25,
            7.0,
            f32::INFINITY,
        ];
        let mut keyed: Vec<(f32, usize)> = scores
            .iter()
            .rev()
            .flat_map(|&s| [(s, 9), (s, 2)])
            .collect();
        // The heap (of `Reverse` keys) pops the smallest inner key first.
        keyed.sort_by_key(|&(s, at)| stale_key(s, at).0);
        let mut want = keyed.clone();
        want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        assert_eq!(
            keyed
                .iter()
                .map(|x| (x.0.to_bits(), x.1))
                .collect::<Vec<_>>(),
            want.iter()
                .map(|x| (x.0.to_bits(), x.1))
                .collect::<Vec<_>>()
        );
        for &(s, at) in &keyed {
            assert_eq!(stale_at(stale_key(s, at)), at);
        }
    }

    #[test]
    fn mmr_follows_the_formula() {
        // Points on a line: the query at 0, candidates at 1.0, 1.1, 3.0.
        let pos = [1.0f32, 1.1, 3.0];
        let c: Vec<Hit> = pos
            .iter()
            .enumerate()
            .map(|(i, &p)| h(0, i as u32, p))
            .collect();
        let dist = |a: usize, b: usize| (pos[a] - pos[b]).abs();
        let with = |lambda: f32| Pick {
            k: 2,
            sources: 1,
            owners: &[],
            min_per_source: 0,
            group: None,
            mmr: Some((lambda, dist)),
        };
        // λ = 1: pure relevance.
        let nodes: Vec<u32> = pick(&c, &with(1.0)).iter().map(|x| x.node).collect();
        assert_eq!(nodes, [0, 1]);
        // λ = 0.5: 1.1 scores .5·1.1 − .5·0.1 = .5, 3.0 scores .5·3 − .5·2 = .5;
        // λ = 0.4 tips it: 1.1 → .44 − .06 = .38, 3.0 → 1.2 − 1.2 = 0.
        let nodes: Vec<u32> = pick(&c, &with(0.4)).iter().map(|x| x.node).collect();
        assert_eq!(nodes, [0, 2]);
    }
}
