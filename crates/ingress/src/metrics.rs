//! Request counters in the Prometheus text format. A handful of fixed
//! labels, so a small lock-free table is enough.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const OUTCOMES: [&str; 4] = ["published", "dead_letter", "unauthorized", "unavailable"];

#[derive(Clone, Default)]
pub struct Metrics {
    counts: Arc<[AtomicU64; 4]>,
}

impl Metrics {
    pub fn count(&self, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, outcome: &str) -> u64 {
        OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP teledrop_webhook_requests_total Webhook requests by outcome.\n\
             # TYPE teledrop_webhook_requests_total counter\n",
        );
        for (i, o) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "teledrop_webhook_requests_total{{outcome=\"{o}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        out
    }
}
