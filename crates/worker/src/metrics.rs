//! The worker's Prometheus metrics: what became of jobs and deliveries,
//! bytes stored, jobs running now and jobs waiting for their owner's turn.

use crate::Outcome;
use teledrop_core::ErrorKind;
use teledrop_metrics::{Counter, CounterVec, Gauge, Render};

/// Shared by a process's pipeline and its delivery loop; served on the
/// worker's (or standalone's) `/metrics`.
#[derive(Debug)]
pub struct WorkerMetrics {
    jobs: CounterVec,
    retries: CounterVec,
    deliveries: CounterVec,
    stored_bytes: Counter,
    in_flight: Gauge,
    waiting: Gauge,
}

const STORED: &str = "stored";
const DEDUPLICATED: &str = "deduplicated";
const FAILED: &str = "failed";

impl Default for WorkerMetrics {
    fn default() -> Self {
        let failures = ErrorKind::ALL.map(|k| [FAILED, k.as_str()]);
        Self {
            jobs: CounterVec::new(
                "teledrop_worker_jobs_total",
                "Jobs finished by this process: stored (uploaded), deduplicated (linked to a blob already \
                 stored) or failed, with the failure's stable error label.",
                &["outcome", "error"],
            )
            .with_series([[STORED, ""], [DEDUPLICATED, ""]].into_iter().chain(failures)),
            retries: CounterVec::new(
                "teledrop_worker_job_retries_total",
                "Job attempts that failed retryably and were put back, by error label.",
                &["error"],
            )
            .with_series(
                ErrorKind::ALL
                    .into_iter()
                    .filter(|k| k.is_retryable())
                    .map(|k| [k.as_str()]),
            ),
            deliveries: CounterVec::new(
                "teledrop_worker_deliveries_total",
                "Bus deliveries handled, by how they were settled: ack (done), retry (redelivery asked \
                 for) or drop (terminated).",
                &["outcome"],
            )
            .with_series([["ack"], ["retry"], ["drop"]]),
            stored_bytes: Counter::new(
                "teledrop_worker_stored_bytes_total",
                "Bytes of new blobs uploaded to object storage and committed.",
            ),
            in_flight: Gauge::new("teledrop_worker_jobs_in_flight", "Jobs this process is running now."),
            waiting: Gauge::new(
                "teledrop_worker_jobs_waiting",
                "Deliveries this process holds while their user has TELEDROP_USER_CONCURRENCY jobs running.",
            ),
        }
    }
}

impl WorkerMetrics {
    /// A job committed as stored. `uploaded` holds the bytes of the blob
    /// this job uploaded; `None` when it linked a blob already stored.
    pub(crate) fn stored(&self, uploaded: Option<u64>) {
        match uploaded {
            Some(bytes) => {
                self.jobs.inc(&[STORED, ""]);
                self.stored_bytes.add(bytes);
            }
            None => self.jobs.inc(&[DEDUPLICATED, ""]),
        }
    }

    pub(crate) fn failed(&self, kind: ErrorKind) {
        self.jobs.inc(&[FAILED, kind.as_str()]);
    }

    pub(crate) fn retried(&self, kind: ErrorKind) {
        self.retries.inc(&[kind.as_str()]);
    }

    pub(crate) fn settled(&self, outcome: Outcome) {
        self.deliveries.inc(&[match outcome {
            Outcome::Done => "ack",
            Outcome::Retry(_) => "retry",
            Outcome::Drop => "drop",
        }]);
    }

    pub(crate) fn running(&self) -> teledrop_metrics::GaugeGuard<'_> {
        self.in_flight.track()
    }

    pub(crate) fn waiting(&self) -> teledrop_metrics::GaugeGuard<'_> {
        self.waiting.track()
    }

    /// Jobs that ended `stored` (with an upload of their own).
    pub fn jobs_stored(&self) -> u64 {
        self.jobs.get(&[STORED, ""])
    }

    /// Jobs that ended `stored` by linking a blob already stored.
    pub fn jobs_deduplicated(&self) -> u64 {
        self.jobs.get(&[DEDUPLICATED, ""])
    }

    pub fn jobs_failed(&self, kind: ErrorKind) -> u64 {
        self.jobs.get(&[FAILED, kind.as_str()])
    }

    pub fn job_retries(&self, kind: ErrorKind) -> u64 {
        self.retries.get(&[kind.as_str()])
    }

    /// Deliveries settled as `"ack"`, `"retry"` or `"drop"`.
    pub fn deliveries(&self, settled: &str) -> u64 {
        self.deliveries.get(&[settled])
    }

    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes.get()
    }

    pub fn jobs_in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    pub fn jobs_waiting(&self) -> i64 {
        self.waiting.get()
    }
}

impl Render for WorkerMetrics {
    fn render(&self, out: &mut String) {
        self.jobs.render(out);
        self.retries.render(out);
        self.deliveries.render(out);
        self.stored_bytes.render(out);
        self.in_flight.render(out);
        self.waiting.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_outcome_and_error_label_is_exported_from_the_start() {
        let m = WorkerMetrics::default();
        let text = teledrop_metrics::render(&[&m]);
        for kind in ErrorKind::ALL {
            let series = format!("teledrop_worker_jobs_total{{outcome=\"failed\",error=\"{kind}\"}} 0\n");
            assert!(text.contains(&series), "{series} missing from\n{text}");
        }
        for line in [
            "teledrop_worker_jobs_total{outcome=\"stored\",error=\"\"} 0\n",
            "teledrop_worker_jobs_total{outcome=\"deduplicated\",error=\"\"} 0\n",
            "teledrop_worker_job_retries_total{error=\"network\"} 0\n",
            "teledrop_worker_deliveries_total{outcome=\"retry\"} 0\n",
            "teledrop_worker_stored_bytes_total 0\n",
            "teledrop_worker_jobs_in_flight 0\n",
            "teledrop_worker_jobs_waiting 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn counts_move_by_what_happened() {
        let m = WorkerMetrics::default();
        m.stored(Some(1000));
        m.stored(None);
        m.failed(ErrorKind::TooBig);
        m.retried(ErrorKind::Network);
        m.settled(Outcome::Retry(Duration::from_secs(1)));
        {
            let _job = m.running();
            assert_eq!(m.jobs_in_flight(), 1);
        }
        assert_eq!((m.jobs_stored(), m.jobs_deduplicated(), m.stored_bytes()), (1, 1, 1000));
        assert_eq!(m.jobs_failed(ErrorKind::TooBig), 1);
        assert_eq!(m.job_retries(ErrorKind::Network), 1);
        assert_eq!((m.deliveries("retry"), m.deliveries("ack")), (1, 0));
        assert_eq!(m.jobs_in_flight(), 0);
    }
}
