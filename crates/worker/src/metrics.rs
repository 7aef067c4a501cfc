//! The worker's Prometheus metrics: what became of jobs and deliveries,
//! bytes stored, jobs running now and jobs waiting for their owner's turn,
//! and how long jobs, their steps and their wait in the queue took.

use crate::Outcome;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;
use teledrop_core::ErrorKind;
use teledrop_metrics::{GaugeGuard, HistogramFamily, Register, SLOW_SECONDS};

/// How a job (one attempt of it) ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the variant is the label value
pub enum JobOutcome {
    /// Committed with a blob this job uploaded.
    stored,
    /// Committed by linking a blob already stored.
    deduplicated,
    /// Failed for good.
    failed,
    /// Failed retryably and put back for another attempt.
    retried,
}

/// A step of a job, timed on its own.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the variant is the label value
pub enum Step {
    /// Bot API `getFile`: where the file is.
    get_file,
    /// Reading the file from the Bot API (with `upload`, when streamed
    /// through, the two overlap).
    download,
    /// Writing the blob to object storage.
    upload,
    /// Recording the file, blob and link in the catalog.
    commit,
    /// Answering the user in the chat.
    reply,
}

/// How a delivery was settled with the bus.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the variant is the label value
enum Settlement {
    ack,
    retry,
    drop,
}

impl Settlement {
    const ALL: [Settlement; 3] = [Self::ack, Self::retry, Self::drop];

    fn as_str(self) -> &'static str {
        match self {
            Self::ack => "ack",
            Self::retry => "retry",
            Self::drop => "drop",
        }
    }
}

/// An error kind as a label value: its stable label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct ErrorLabel(ErrorKind);

impl EncodeLabelValue for ErrorLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    outcome: JobOutcome,
    /// Empty unless failed.
    error: Option<ErrorLabel>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: ErrorLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettledLabels {
    outcome: Settlement,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: JobOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: Step,
}

fn slow_histogram() -> Histogram {
    Histogram::new(SLOW_SECONDS)
}

/// Shared by a process's pipeline and its delivery loop; served on the
/// worker's (or standalone's) `/metrics`.
#[derive(Debug)]
pub struct WorkerMetrics {
    jobs: Family<JobLabels, Counter>,
    retries: Family<ErrorLabels, Counter>,
    deliveries: Family<SettledLabels, Counter>,
    stored_bytes: Counter,
    in_flight: Gauge,
    waiting: Gauge,
    job_duration: HistogramFamily<OutcomeLabels>,
    steps: HistogramFamily<StepLabels>,
    queue_wait: Histogram,
}

fn job(outcome: JobOutcome) -> JobLabels {
    JobLabels { outcome, error: None }
}

fn failure(kind: ErrorKind) -> JobLabels {
    JobLabels {
        outcome: JobOutcome::failed,
        error: Some(ErrorLabel(kind)),
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let m = Self {
            jobs: Family::default(),
            retries: Family::default(),
            deliveries: Family::default(),
            stored_bytes: Counter::default(),
            in_flight: Gauge::default(),
            waiting: Gauge::default(),
            job_duration: HistogramFamily::new_with_constructor(slow_histogram),
            steps: HistogramFamily::new_with_constructor(slow_histogram),
            queue_wait: slow_histogram(),
        };
        // Every series that can move is exported from the start: a rate
        // over a series that appears late misses its first increment.
        let jobs = [job(JobOutcome::stored), job(JobOutcome::deduplicated)]
            .into_iter()
            .chain(ErrorKind::ALL.map(failure));
        for labels in jobs {
            drop(m.jobs.get_or_create(&labels));
        }
        for kind in ErrorKind::ALL.into_iter().filter(|k| k.is_retryable()) {
            drop(m.retries.get_or_create(&ErrorLabels {
                error: ErrorLabel(kind),
            }));
        }
        for outcome in Settlement::ALL {
            drop(m.deliveries.get_or_create(&SettledLabels { outcome }));
        }
        m
    }
}

impl WorkerMetrics {
    /// A job committed as stored. `uploaded` holds the bytes of the blob
    /// this job uploaded; `None` when it linked a blob already stored.
    pub(crate) fn stored(&self, uploaded: Option<u64>) {
        match uploaded {
            Some(bytes) => {
                self.jobs.get_or_create(&job(JobOutcome::stored)).inc();
                self.stored_bytes.inc_by(bytes);
            }
            None => {
                self.jobs.get_or_create(&job(JobOutcome::deduplicated)).inc();
            }
        }
    }

    pub(crate) fn failed(&self, kind: ErrorKind) {
        self.jobs.get_or_create(&failure(kind)).inc();
    }

    pub(crate) fn retried(&self, kind: ErrorKind) {
        self.retries
            .get_or_create(&ErrorLabels {
                error: ErrorLabel(kind),
            })
            .inc();
    }

    pub(crate) fn settled(&self, outcome: Outcome) {
        let outcome = match outcome {
            Outcome::Done => Settlement::ack,
            Outcome::Retry(_) => Settlement::retry,
            Outcome::Drop => Settlement::drop,
        };
        self.deliveries.get_or_create(&SettledLabels { outcome }).inc();
    }

    pub(crate) fn running(&self) -> GaugeGuard<'_> {
        teledrop_metrics::track(&self.in_flight)
    }

    pub(crate) fn waiting(&self) -> GaugeGuard<'_> {
        teledrop_metrics::track(&self.waiting)
    }

    /// One attempt of a job ended `outcome`, `took` after it started
    /// running (claimed; the wait in the queue before is [`Self::queue_wait`]).
    pub fn job_finished(&self, outcome: JobOutcome, took: Duration) {
        self.job_duration
            .get_or_create(&OutcomeLabels { outcome })
            .observe(took.as_secs_f64());
    }

    /// A job was claimed to run `waited` after it was accepted (recorded
    /// from its update).
    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// One step of a job took `took`, whether it succeeded or not.
    pub fn observe_step(&self, step: Step, took: Duration) {
        self.steps
            .get_or_create(&StepLabels { step })
            .observe(took.as_secs_f64());
    }

    /// Jobs that ended `stored` (with an upload of their own).
    pub fn jobs_stored(&self) -> u64 {
        self.jobs.get_or_create(&job(JobOutcome::stored)).get()
    }

    /// Jobs that ended `stored` by linking a blob already stored.
    pub fn jobs_deduplicated(&self) -> u64 {
        self.jobs.get_or_create(&job(JobOutcome::deduplicated)).get()
    }

    pub fn jobs_failed(&self, kind: ErrorKind) -> u64 {
        self.jobs.get_or_create(&failure(kind)).get()
    }

    pub fn job_retries(&self, kind: ErrorKind) -> u64 {
        self.retries
            .get(&ErrorLabels {
                error: ErrorLabel(kind),
            })
            .map_or(0, |c| c.get())
    }

    /// Deliveries settled as `"ack"`, `"retry"` or `"drop"`.
    pub fn deliveries(&self, settled: &str) -> u64 {
        Settlement::ALL
            .into_iter()
            .find(|s| s.as_str() == settled)
            .map_or(0, |outcome| {
                self.deliveries.get_or_create(&SettledLabels { outcome }).get()
            })
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

impl Register for WorkerMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "teledrop_worker_jobs",
            "Jobs finished by this process: stored (uploaded), deduplicated (linked to a blob already \
             stored) or failed, with the failure's stable error label",
            self.jobs.clone(),
        );
        r.register(
            "teledrop_worker_job_retries",
            "Job attempts that failed retryably and were put back, by error label",
            self.retries.clone(),
        );
        r.register(
            "teledrop_worker_deliveries",
            "Bus deliveries handled, by how they were settled: ack (done), retry (redelivery asked \
             for) or drop (terminated)",
            self.deliveries.clone(),
        );
        r.register_with_unit(
            "teledrop_worker_stored",
            "Bytes of new blobs uploaded to object storage and committed",
            Unit::Bytes,
            self.stored_bytes.clone(),
        );
        r.register(
            "teledrop_worker_jobs_in_flight",
            "Jobs this process is running now",
            self.in_flight.clone(),
        );
        r.register(
            "teledrop_worker_jobs_waiting",
            "Deliveries this process holds while their user has TELEDROP_USER_CONCURRENCY jobs running",
            self.waiting.clone(),
        );
        r.register_with_unit(
            "teledrop_worker_job_duration",
            "Time from a job's claim to the end of the attempt, by outcome (stored, deduplicated, \
             failed, retried)",
            Unit::Seconds,
            self.job_duration.clone(),
        );
        r.register_with_unit(
            "teledrop_worker_queue_wait",
            "Time from a job's acceptance (its update recorded) to its claim by a worker",
            Unit::Seconds,
            self.queue_wait.clone(),
        );
        r.register_with_unit(
            "teledrop_worker_step_duration",
            "Time one step of a job took (get_file, download, upload, commit, reply), failed or not",
            Unit::Seconds,
            self.steps.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "teledrop_worker_queue_wait_seconds_count 0\n",
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

    #[test]
    fn durations_render_as_histograms_by_outcome_and_step() {
        let m = WorkerMetrics::default();
        m.job_finished(JobOutcome::stored, Duration::from_millis(700));
        m.job_finished(JobOutcome::retried, Duration::from_secs(20));
        m.queue_wait(Duration::from_millis(30));
        m.observe_step(Step::get_file, Duration::from_millis(40));
        m.observe_step(Step::upload, Duration::from_secs(4));
        let text = teledrop_metrics::render(&[&m]);
        for line in [
            "# TYPE teledrop_worker_job_duration_seconds histogram\n",
            "teledrop_worker_job_duration_seconds_bucket{outcome=\"stored\",le=\"0.5\"} 0\n",
            "teledrop_worker_job_duration_seconds_bucket{outcome=\"stored\",le=\"1\"} 1\n",
            "teledrop_worker_job_duration_seconds_sum{outcome=\"stored\"} 0.7\n",
            "teledrop_worker_job_duration_seconds_count{outcome=\"retried\"} 1\n",
            "teledrop_worker_queue_wait_seconds_bucket{le=\"0.05\"} 1\n",
            "teledrop_worker_queue_wait_seconds_count 1\n",
            "teledrop_worker_step_duration_seconds_bucket{step=\"get_file\",le=\"0.05\"} 1\n",
            "teledrop_worker_step_duration_seconds_bucket{step=\"upload\",le=\"2.5\"} 0\n",
            "teledrop_worker_step_duration_seconds_bucket{step=\"upload\",le=\"5\"} 1\n",
            "teledrop_worker_step_duration_seconds_bucket{step=\"upload\",le=\"+Inf\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
