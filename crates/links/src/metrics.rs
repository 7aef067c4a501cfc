//! The link server's Prometheus metrics: downloads answered by status,
//! bytes streamed, and how long requests took to be answered.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;
use teledrop_metrics::{FAST_SECONDS, HistogramFamily, Register};

/// The statuses a download is commonly answered with, exported as 0 from
/// the start (a rate over a series that appears late misses its first
/// increment); others appear when first answered.
const COMMON_CODES: [u16; 9] = [200, 206, 304, 404, 410, 416, 429, 500, 503];

/// The route a request matched, as the router names it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the variant is the label value
pub(crate) enum Route {
    /// `/download/{token}`.
    download,
    /// No route: answered 404 by the router.
    unmatched,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    code: u16,
}

#[derive(Debug)]
pub(crate) struct LinksMetrics {
    responses: Family<CodeLabels, Counter>,
    served_bytes: Counter,
    latency: HistogramFamily<RequestLabels>,
}

impl Default for LinksMetrics {
    fn default() -> Self {
        let responses = Family::default();
        for code in COMMON_CODES {
            drop(responses.get_or_create(&CodeLabels { code }));
        }
        Self {
            responses,
            served_bytes: Counter::default(),
            latency: HistogramFamily::new_with_constructor(|| Histogram::new(FAST_SECONDS)),
        }
    }
}

impl LinksMetrics {
    /// One request answered on the public router, `took` after it arrived
    /// (its response head; a body streams on afterwards).
    pub(crate) fn answered(&self, route: Route, status: http::StatusCode, took: Duration) {
        let code = status.as_u16();
        if route == Route::download {
            self.responses.get_or_create(&CodeLabels { code }).inc();
        }
        self.latency
            .get_or_create(&RequestLabels { route, code })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn served(&self, bytes: usize) {
        self.served_bytes.inc_by(bytes as u64);
    }
}

impl Register for LinksMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "teledrop_links_download_responses",
            "Answers to GET and HEAD /download/{token}, by status code",
            self.responses.clone(),
        );
        r.register_with_unit(
            "teledrop_links_served",
            "Bytes of files streamed to downloaders (bodies of 200 and 206 answers)",
            Unit::Bytes,
            self.served_bytes.clone(),
        );
        r.register_with_unit(
            "teledrop_links_request_duration",
            "Time from a request's arrival to its response head on the public listener, by route \
             and status code (a body streams on afterwards)",
            Unit::Seconds,
            self.latency.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn renders_answers_bytes_and_latency() {
        let m = LinksMetrics::default();
        m.answered(Route::download, StatusCode::OK, Duration::from_millis(3));
        m.answered(Route::unmatched, StatusCode::NOT_FOUND, Duration::from_millis(1));
        m.served(10);
        let text = teledrop_metrics::render(&[&m]);
        for line in [
            "teledrop_links_download_responses_total{code=\"200\"} 1\n",
            "teledrop_links_download_responses_total{code=\"503\"} 0\n",
            "teledrop_links_served_bytes_total 10\n",
            "teledrop_links_request_duration_seconds_bucket{route=\"download\",code=\"200\",le=\"0.005\"} 1\n",
            "teledrop_links_request_duration_seconds_count{route=\"unmatched\",code=\"404\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        // Only downloads are counted as download responses.
        assert!(!text.contains("download_responses_total{code=\"404\"} 1"), "{text}");
    }
}
