//! The online recall and shadow gauges, read from their windows at scrape
//! time.

use std::sync::Arc;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use super::Metrics;
use crate::recall::Recall;
use crate::shadow::Shadow;

struct Samples {
    recall: Arc<Recall>,
    shadow: Arc<Shadow>,
    estimate: GaugeVec,
    low: GaugeVec,
    high: GaugeVec,
    samples: IntGaugeVec,
    dropped: IntCounterVec,
    overlap: GaugeVec,
    delta: GaugeVec,
    shadow_samples: IntGaugeVec,
    shadow_dropped: IntCounterVec,
}

impl Metrics {
    /// Export `recall`'s estimates and `shadow`'s comparisons.
    pub(crate) fn watch_samples(&self, recall: Arc<Recall>, shadow: Arc<Shadow>) {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let count = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let by_kind = ["index", "kind"];
        let by_shadow = ["name", "shadow"];
        let samples = Samples {
            recall,
            shadow,
            estimate: gauge(
                "fathom_recall_estimate",
                "Online recall@k of sampled calls against their exact answers, over the latest samples.",
                &by_kind,
            ),
            low: gauge(
                "fathom_recall_estimate_low",
                "Lower end of the online recall estimate's 95% interval.",
                &by_kind,
            ),
            high: gauge(
                "fathom_recall_estimate_high",
                "Upper end of the online recall estimate's 95% interval.",
                &by_kind,
            ),
            samples: count(
                "fathom_recall_samples",
                "Samples the online recall estimate covers.",
                &by_kind,
            ),
            dropped: IntCounterVec::new(
                Opts::new(
                    "fathom_recall_samples_dropped_total",
                    "Sampled calls dropped because the exact re-runs were behind.",
                ),
                &["index"],
            )
            .expect("valid metric"),
            overlap: gauge(
                "fathom_shadow_overlap",
                "Mean overlap@k of shadow searches with the served hits, over the latest.",
                &by_shadow,
            ),
            delta: gauge(
                "fathom_shadow_latency_delta_seconds",
                "Mean search time of the shadow minus that of the served index, over the latest.",
                &by_shadow,
            ),
            shadow_samples: count(
                "fathom_shadow_samples",
                "Shadow searches the shadow means cover.",
                &by_shadow,
            ),
            shadow_dropped: IntCounterVec::new(
                Opts::new(
                    "fathom_shadow_dropped_total",
                    "Shadow searches dropped because the shadow lane was behind.",
                ),
                &[],
            )
            .expect("valid metric"),
        };
        if let Err(e) = self.registry.register(Box::new(samples)) {
            tracing::error!(error = %e, "registering the sampling metrics");
        }
    }
}

impl prometheus::core::Collector for Samples {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = Vec::new();
        for g in [
            &self.estimate,
            &self.low,
            &self.high,
            &self.overlap,
            &self.delta,
        ] {
            d.extend(g.desc());
        }
        d.extend(self.samples.desc());
        d.extend(self.shadow_samples.desc());
        d.extend(self.dropped.desc());
        d.extend(self.shadow_dropped.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        for g in [
            &self.estimate,
            &self.low,
            &self.high,
            &self.overlap,
            &self.delta,
        ] {
            g.reset();
        }
        self.samples.reset();
        self.shadow_samples.reset();
        self.dropped.reset();
        self.shadow_dropped.reset();
        for (index, e) in self.recall.all() {
            let labels = [index.as_str(), e.kind.name()];
            self.estimate.with_label_values(&labels).set(e.recall.mean);
            self.low.with_label_values(&labels).set(e.recall.low);
            self.high.with_label_values(&labels).set(e.recall.high);
            self.samples
                .with_label_values(&labels)
                .set(e.recall.samples as i64);
        }
        for (index, n) in self.recall.all_dropped() {
            self.dropped.with_label_values(&[index.as_str()]).inc_by(n);
        }
        for ((name, shadow), overlap, delta) in self.shadow.means() {
            let labels = [name.as_str(), shadow.as_str()];
            self.overlap.with_label_values(&labels).set(overlap.mean);
            self.delta.with_label_values(&labels).set(delta.mean);
            self.shadow_samples
                .with_label_values(&labels)
                .set(overlap.samples as i64);
        }
        self.shadow_dropped
            .with_label_values::<&str>(&[])
            .inc_by(self.shadow.dropped());
        let mut out = Vec::new();
        for g in [
            &self.estimate,
            &self.low,
            &self.high,
            &self.overlap,
            &self.delta,
        ] {
            out.extend(g.collect());
        }
        out.extend(self.samples.collect());
        out.extend(self.shadow_samples.collect());
        out.extend(self.dropped.collect());
        out.extend(self.shadow_dropped.collect());
        out
    }
}
