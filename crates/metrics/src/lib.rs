//! Every role's ops surface: `/healthz`, `/readyz` and `/metrics` on the
//! admin listener (`TELEDROP_ADMIN_LISTEN`), built by one function,
//! [`ops_router`], so every role answers them alike.
//!
//! Metrics are `prometheus-client` metrics. A role keeps its metrics in a
//! struct (clones of a metric share its value) that implements
//! [`Register`]; the process registers each such group it runs in one
//! [`Registry`], which `/metrics` renders in the Prometheus text format
//! (version 0.0.4, [`CONTENT_TYPE`]). Label values come from closed sets
//! (outcomes, stable error labels, status codes), typed as label-set
//! structs and enums, so no caller can grow a metric's series.
//!
//! Names follow Prometheus conventions: a `teledrop_` prefix, base units
//! (bytes, seconds). Counters are registered without their `_total`,
//! which the encoder appends; units are given with
//! [`Registry::register_with_unit`], which appends them too.

mod ops;

pub use ops::{READY_TIMEOUT, Readiness, ops_router};
pub use prometheus_client;
pub use prometheus_client::registry::Registry;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// The `Content-Type` of `/metrics`: the Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) for answers that take milliseconds, up to a
/// minute: HTTP requests, catalog calls.
pub const FAST_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Upper bounds (seconds) for work that takes seconds to an hour: jobs,
/// their steps (a 2 GB transfer), the wait in the queue.
pub const SLOW_SECONDS: [f64; 15] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// A histogram per label set, all with the same buckets.
pub type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// A group of metrics that adds itself to a registry. The registry holds
/// clones: what the group counts afterwards shows in it.
pub trait Register: Send + Sync {
    fn register(&self, registry: &mut Registry);
}

/// A registry holding every group of `sources`.
pub fn registry(sources: &[&dyn Register]) -> Registry {
    let mut registry = Registry::default();
    for source in sources {
        source.register(&mut registry);
    }
    registry
}

/// The text of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in
    // a metric, and a partial text is still worth serving.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// The text of every group of `sources`, as `/metrics` would render it.
pub fn render(sources: &[&dyn Register]) -> String {
    encode(&registry(sources))
}

/// Adds one to `gauge` until the guard is dropped, so an early return or
/// a cancelled future cannot leave it counting something gone.
pub fn track(gauge: &Gauge) -> GaugeGuard<'_> {
    gauge.inc();
    GaugeGuard(gauge)
}

/// See [`track`].
#[must_use = "the gauge goes down again when the guard is dropped"]
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::registry::Unit;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
    #[allow(non_camel_case_types)]
    enum Outcome {
        stored,
        failed,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Labels {
        outcome: Outcome,
        error: Option<String>,
    }

    #[derive(Debug)]
    struct Things {
        done: Counter,
        bytes: Counter,
        busy: Gauge,
        jobs: Family<Labels, Counter>,
        took: HistogramFamily<Labels>,
    }

    impl Default for Things {
        fn default() -> Self {
            Self {
                done: Counter::default(),
                bytes: Counter::default(),
                busy: Gauge::default(),
                jobs: Family::default(),
                took: Family::new_with_constructor(|| Histogram::new([0.5, 1.0])),
            }
        }
    }

    impl Register for Things {
        fn register(&self, r: &mut Registry) {
            r.register("teledrop_things", "Things done", self.done.clone());
            r.register_with_unit("teledrop_moved", "Bytes moved", Unit::Bytes, self.bytes.clone());
            r.register("teledrop_busy", "Work under way", self.busy.clone());
            r.register("teledrop_jobs", "Jobs, with a \\ and a\nbreak", self.jobs.clone());
            r.register_with_unit("teledrop_took", "Time taken", Unit::Seconds, self.took.clone());
        }
    }

    #[test]
    fn renders_the_names_of_today_with_histograms() {
        let t = Things::default();
        t.done.inc_by(3);
        t.bytes.inc_by(10);
        {
            let _a = track(&t.busy);
            let _b = track(&t.busy);
            assert_eq!(t.busy.get(), 2);
        }
        t.busy.inc();
        let stored = Labels {
            outcome: Outcome::stored,
            error: None,
        };
        let failed = Labels {
            outcome: Outcome::failed,
            error: Some("a \"b\"".into()),
        };
        t.jobs.get_or_create(&stored).inc();
        t.jobs.get_or_create(&failed).inc_by(2);
        t.took.get_or_create(&stored).observe(0.7);
        let text = render(&[&t]);
        for line in [
            "# HELP teledrop_things_total Things done.\n# TYPE teledrop_things_total counter\nteledrop_things_total 3\n",
            "teledrop_moved_bytes_total 10\n",
            "# TYPE teledrop_busy gauge\nteledrop_busy 1\n",
            "# HELP teledrop_jobs_total Jobs, with a \\\\ and a\\nbreak.\n",
            "teledrop_jobs_total{outcome=\"stored\",error=\"\"} 1\n",
            "teledrop_jobs_total{outcome=\"failed\",error=\"a \\\"b\\\"\"} 2\n",
            "# TYPE teledrop_took_seconds histogram\n",
            "teledrop_took_seconds_bucket{outcome=\"stored\",error=\"\",le=\"0.5\"} 0\n",
            "teledrop_took_seconds_bucket{outcome=\"stored\",error=\"\",le=\"1\"} 1\n",
            "teledrop_took_seconds_bucket{outcome=\"stored\",error=\"\",le=\"+Inf\"} 1\n",
            "teledrop_took_seconds_count{outcome=\"stored\",error=\"\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
