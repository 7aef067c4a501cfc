//! The link server's Prometheus metrics.

use teledrop_metrics::{Counter, CounterVec, Render};

/// The statuses a download is commonly answered with, exported as 0 from
/// the start; others appear when first answered.
const COMMON_CODES: [&str; 9] = ["200", "206", "304", "404", "410", "416", "429", "500", "503"];

#[derive(Debug)]
pub(crate) struct LinksMetrics {
    responses: CounterVec,
    served_bytes: Counter,
}

impl Default for LinksMetrics {
    fn default() -> Self {
        Self {
            responses: CounterVec::new(
                "teledrop_links_download_responses_total",
                "Answers to GET and HEAD /download/{token}, by status code.",
                &["code"],
            )
            .with_series(COMMON_CODES.map(|c| [c])),
            served_bytes: Counter::new(
                "teledrop_links_served_bytes_total",
                "Bytes of files streamed to downloaders (bodies of 200 and 206 answers).",
            ),
        }
    }
}

impl LinksMetrics {
    pub(crate) fn answered(&self, status: http::StatusCode) {
        self.responses.inc(&[status.as_str()]);
    }

    pub(crate) fn served(&self, bytes: usize) {
        self.served_bytes.add(bytes as u64);
    }
}

impl Render for LinksMetrics {
    fn render(&self, out: &mut String) {
        self.responses.render(out);
        self.served_bytes.render(out);
    }
}
