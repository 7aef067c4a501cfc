//! Prometheus counters of the controller, rendered in the text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use teledrop_retention::SweepReport;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter per stable error label.
#[derive(Debug, Default)]
pub struct LabelledCounter(Mutex<BTreeMap<&'static str, u64>>);

impl LabelledCounter {
    pub fn inc(&self, label: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label)
            .or_default() += 1;
    }
    pub fn get(&self, label: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: Counter,
    pub errors: LabelledCounter,
    pub sweeps: Counter,
    pub files_deleted: Counter,
    pub bytes_freed: Counter,
    pub orphans_deleted: Counter,
    pub leader: AtomicBool,
}

impl Metrics {
    pub fn record_sweep(&self, report: &SweepReport) {
        self.sweeps.inc();
        if !report.dry_run {
            self.files_deleted.add(report.deleted.files);
            self.bytes_freed.add(report.deleted.bytes);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "teledrop_controller_reconciles_total",
            "Reconciles started.",
            self.reconciles.get(),
        );
        counter(
            "teledrop_controller_sweeps_total",
            "Policy sweeps run.",
            self.sweeps.get(),
        );
        counter(
            "teledrop_controller_files_deleted_total",
            "Files deleted by sweeps.",
            self.files_deleted.get(),
        );
        counter(
            "teledrop_controller_bytes_freed_total",
            "Bytes of files deleted by sweeps.",
            self.bytes_freed.get(),
        );
        counter(
            "teledrop_controller_orphans_deleted_total",
            "Orphaned objects removed.",
            self.orphans_deleted.get(),
        );
        let _ = writeln!(
            out,
            "# HELP teledrop_controller_errors_total Reconcile and collection errors by kind.\n# TYPE teledrop_controller_errors_total counter"
        );
        for (label, v) in self.errors.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "teledrop_controller_errors_total{{error=\"{label}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP teledrop_controller_leader Whether this replica holds the lease.\n# TYPE teledrop_controller_leader gauge\nteledrop_controller_leader {}",
            u8::from(self.leader.load(Ordering::Relaxed))
        );
        out
    }
}
