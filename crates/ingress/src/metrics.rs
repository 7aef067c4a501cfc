//! Webhook requests by outcome, for `/metrics`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use teledrop_metrics::Register;

/// What became of a webhook request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the variant is the label value
pub enum Outcome {
    /// The bus holds the update (200).
    published,
    /// Not an update: kept on the dead-letter subject (200).
    dead_letter,
    too_large,
    unreadable,
    unauthorized,
    /// The bus did not take it in time (503).
    unavailable,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Self::published,
        Self::dead_letter,
        Self::too_large,
        Self::unreadable,
        Self::unauthorized,
        Self::unavailable,
    ];

    /// The label value, for logs and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::published => "published",
            Self::dead_letter => "dead_letter",
            Self::too_large => "too_large",
            Self::unreadable => "unreadable",
            Self::unauthorized => "unauthorized",
            Self::unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    outcome: Outcome,
}

/// Webhook requests by outcome. Clones share the counts.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::default();
        // Every outcome is exported from the start.
        for outcome in Outcome::ALL {
            drop(requests.get_or_create(&Labels { outcome }));
        }
        Self { requests }
    }
}

impl Metrics {
    pub fn count(&self, outcome: Outcome) {
        self.requests.get_or_create(&Labels { outcome }).inc();
    }

    /// The count of the outcome labelled `outcome` (0 for no such label).
    pub fn get(&self, outcome: &str) -> u64 {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == outcome)
            .map_or(0, |outcome| self.requests.get_or_create(&Labels { outcome }).get())
    }

    pub fn render(&self) -> String {
        teledrop_metrics::render(&[self])
    }
}

impl Register for Metrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "teledrop_webhook_requests",
            "Webhook requests by outcome",
            self.requests.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_exported_under_its_label() {
        let m = Metrics::default();
        m.count(Outcome::too_large);
        let text = m.render();
        for o in Outcome::ALL {
            let n = u64::from(o == Outcome::too_large);
            let line = format!("teledrop_webhook_requests_total{{outcome=\"{}\"}} {n}\n", o.as_str());
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        assert_eq!((m.get("too_large"), m.get("published"), m.get("other")), (1, 0, 0));
    }
}
