//! What a served call leaves for the background lanes: its exact re-run,
//! when it is sampled for online recall, and its search on a shadow index.
//! Both own what they need (the call, its indexes by `Arc`) and run after
//! the answer has gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checks::{Checked, Targets};
use super::search::search_one;
use super::Shared;
use crate::capture::CapturedRequest;
use crate::catalog::Loaded;
use crate::proto as pb;
use crate::recall::{recall_of, Kind};
use crate::shadow::{overlap, Compared};
use fathom_engine::index::{Plan, SearchParams};

/// What was drawn for one query before it ran.
#[derive(Default)]
pub(super) struct Draw {
    recall: bool,
    capture: bool,
    /// The name called, the shadow index, and its snapshot now.
    shadow: Option<(String, String, Arc<Loaded>)>,
}

impl Draw {
    /// Whether anything was drawn.
    pub(super) fn wanted(&self) -> bool {
        self.recall || self.capture || self.shadow.is_some()
    }
}

impl Shared {
    /// Draw whether a Search is sampled for recall (always when a router
    /// `asked`), and whether it is shadowed. Federated calls are neither;
    /// calls served by a variant are not shadowed (the shadow compares
    /// with the base).
    pub(super) fn draw(&self, req: &pb::SearchRequest, asked: bool) -> Draw {
        let index = req.index.as_str();
        if !req.indexes.is_empty() || index.is_empty() {
            return Draw::default();
        }
        let on_base = self
            .experiments
            .variant(index, &req.experiment_key)
            .is_none();
        let shadow = on_base
            .then(|| self.experiments.shadow(index))
            .flatten()
            .and_then(|s| {
                let loaded = self.catalog.serving(s).ok()?;
                Some((index.to_string(), s.to_string(), loaded))
            });
        Draw {
            recall: self.recall.roll(asked),
            capture: self.capture.as_ref().is_some_and(|c| c.roll()),
            shadow,
        }
    }

    /// As [`Self::draw`] for a query of a BatchSearch: sampled for recall,
    /// never shadowed (its time is the whole batch's).
    pub(super) fn draw_in_batch(&self, index: &str, indexes: &[String]) -> Draw {
        let one = indexes.is_empty() && !index.is_empty();
        Draw {
            recall: one && self.recall.roll(false),
            capture: one && self.capture.as_ref().is_some_and(|c| c.roll()),
            shadow: None,
        }
    }

    /// Hand a query's follow-ups to their lanes (dropped when a lane is
    /// behind; never waited for).
    pub(super) fn follow_up(&self, f: FollowUps) {
        if let Some(r) = f.recall {
            self.recall.offer(&r.index, r.kind, r.run);
        }
        if let Some(s) = f.shadow {
            self.shadow.offer(&s.name, &s.shadow, s.run);
        }
        if let (Some((index, vector, request)), Some(c)) = (f.capture, &self.capture) {
            c.offer(&index, vector, request);
        }
    }
}

type RecallRun = Box<dyn FnOnce() -> Option<f64> + Send>;
type ShadowRun = Box<dyn FnOnce() -> Option<Compared> + Send>;

struct RecallJob {
    index: String,
    kind: Kind,
    run: RecallRun,
}

struct ShadowJob {
    name: String,
    shadow: String,
    run: ShadowRun,
}

/// A query's follow-ups, built on the search thread after it answered.
#[derive(Default)]
pub(super) struct FollowUps {
    recall: Option<RecallJob>,
    shadow: Option<ShadowJob>,
    /// The served index, the query vector and the rest of the request.
    capture: Option<(String, Vec<f32>, CapturedRequest)>,
}

/// The follow-ups `draw` asked for, of the query `req` answered by
/// `resp` in `took`.
pub(super) fn follow_ups(
    draw: Draw,
    checked: &Checked,
    req: &pb::SearchRequest,
    resp: &pb::SearchResponse,
    took: Duration,
) -> FollowUps {
    let mut out = FollowUps::default();
    if !draw.wanted() {
        return out;
    }
    // Calls with a vector only: a capture is replayed from its row.
    if draw.capture && !req.vector.is_empty() {
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let request = CapturedRequest {
            k: req.k,
            ef: req.ef,
            filter: req.filter.clone(),
            exclude_ids: req.exclude_ids.clone(),
            exclude_keys: req.exclude_keys.clone(),
            at_unix_ms,
        };
        out.capture = Some((checked.targets.served.clone(), req.vector.clone(), request));
    }
    if !draw.recall && draw.shadow.is_none() {
        return out;
    }
    let served: Vec<String> = resp.hits.iter().map(|h| h.id.clone()).collect();
    // Recall is of the nearest items: an answer diversified or capped per
    // group is not meant to be them.
    if draw.recall && req.diversity <= 0.0 && req.group_by.is_empty() {
        let exact = Checked {
            params: SearchParams {
                plan: Plan::Exact,
                ..SearchParams::new(checked.params.k, 0)
            },
            ..checked.clone()
        };
        let (call, served) = (req.clone(), served.clone());
        out.recall = Some(RecallJob {
            index: checked.targets.served.clone(),
            kind: kind_of(req),
            run: Box::new(move || {
                let (truth, _) = search_one(&exact, &call).ok()?;
                recall_of(&served, truth.hits.iter().map(|h| h.id.as_str()))
            }),
        });
    }
    if let Some((name, shadow, loaded)) = draw.shadow {
        let on_shadow = Checked {
            targets: Targets {
                indexes: vec![(name.clone(), loaded)],
                federated: false,
                served: shadow.clone(),
            },
            params: SearchParams {
                deadline: None,
                cancel: None,
                ..checked.params.clone()
            },
            strategy: checked.strategy,
        };
        let call = req.clone();
        out.shadow = Some(ShadowJob {
            name,
            shadow,
            run: Box::new(move || {
                let started = Instant::now();
                let (found, _) = search_one(&on_shadow, &call).ok()?;
                let shadow_took = started.elapsed();
                let served: Vec<&str> = served.iter().map(String::as_str).collect();
                let found: Vec<&str> = found.hits.iter().map(|h| h.id.as_str()).collect();
                Some(Compared {
                    overlap: overlap(&served, &found),
                    delta_seconds: shadow_took.as_secs_f64() - took.as_secs_f64(),
                })
            }),
        });
    }
    out
}

fn kind_of(req: &pb::SearchRequest) -> Kind {
    if req.vector.is_empty() {
        Kind::Examples
    } else if req.filter.is_empty() {
        Kind::Plain
    } else {
        Kind::Filtered
    }
}
