//! Request counters in the Prometheus text format.

use std::sync::Arc;
use teledrop_metrics::{CounterVec, Render};

const OUTCOMES: [&str; 6] = [
    "published",
    "dead_letter",
    "too_large",
    "unreadable",
    "unauthorized",
    "unavailable",
];

/// Webhook requests by outcome. Clones share the counts.
#[derive(Clone)]
pub struct Metrics {
    requests: Arc<CounterVec>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Arc::new(
                CounterVec::new(
                    "teledrop_webhook_requests_total",
                    "Webhook requests by outcome.",
                    &["outcome"],
                )
                .with_series(OUTCOMES.map(|o| [o])),
            ),
        }
    }
}

impl Metrics {
    /// Counts one request; an outcome outside the fixed set is ignored,
    /// so no caller can grow the series.
    pub fn count(&self, outcome: &str) {
        if OUTCOMES.contains(&outcome) {
            self.requests.inc(&[outcome]);
        }
    }

    pub fn get(&self, outcome: &str) -> u64 {
        self.requests.get(&[outcome])
    }

    pub fn render(&self) -> String {
        teledrop_metrics::render(&[self])
    }
}

impl Render for Metrics {
    fn render(&self, out: &mut String) {
        self.requests.render(out);
    }
}
