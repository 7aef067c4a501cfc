//! The controller's ops surface: its Prometheus metrics, and the admin
//! router that serves them with its probes.

use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use teledrop_catalog::Catalog;
use teledrop_metrics::{Readiness, Register};
use teledrop_retention::SweepReport;
use teledrop_storage::Storage;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    /// A stable error label (`Error::label`, `SweepError::label`).
    error: &'static str,
}

/// Reconcile and collection errors, by stable error label.
#[derive(Debug, Default)]
pub struct ErrorCounts(Family<ErrorLabels, Counter>);

impl ErrorCounts {
    pub fn inc(&self, error: &'static str) {
        self.0.get_or_create(&ErrorLabels { error }).inc();
    }

    pub fn get(&self, error: &'static str) -> u64 {
        self.0.get(&ErrorLabels { error }).map_or(0, |c| c.get())
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: Counter,
    pub errors: ErrorCounts,
    pub sweeps: Counter,
    pub files_deleted: Counter,
    pub bytes_freed: Counter,
    pub orphans_deleted: Counter,
    leader: Gauge,
}

impl Metrics {
    pub fn record_sweep(&self, report: &SweepReport) {
        self.sweeps.inc();
        if !report.dry_run {
            self.files_deleted.inc_by(report.deleted.files);
            self.bytes_freed.inc_by(report.deleted.bytes);
        }
    }

    /// Whether this replica holds the lease (and so does the work).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    pub fn render(&self) -> String {
        teledrop_metrics::render(&[self])
    }
}

impl Register for Metrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "teledrop_controller_reconciles",
            "Reconciles started",
            self.reconciles.clone(),
        );
        r.register("teledrop_controller_sweeps", "Policy sweeps run", self.sweeps.clone());
        r.register(
            "teledrop_controller_files_deleted",
            "Files deleted by sweeps",
            self.files_deleted.clone(),
        );
        // Named before units were given to the registry: the unit stays
        // in the name, as dashboards know it.
        r.register(
            "teledrop_controller_bytes_freed",
            "Bytes of files deleted by sweeps",
            self.bytes_freed.clone(),
        );
        r.register(
            "teledrop_controller_orphans_deleted",
            "Orphaned objects removed",
            self.orphans_deleted.clone(),
        );
        r.register(
            "teledrop_controller_errors",
            "Reconcile and collection errors by kind",
            self.errors.0.clone(),
        );
        r.register(
            "teledrop_controller_leader",
            "Whether this replica holds the lease",
            self.leader.clone(),
        );
    }
}

/// `/healthz`, `/readyz` and `/metrics` of the controller. A replica
/// waiting for the lease is ready: it serves metrics and takes over as
/// soon as the leader goes.
pub fn admin_router(catalog: Arc<dyn Catalog>, storage: Storage, metrics: &Metrics) -> Router {
    let readiness = Readiness::new()
        .check("catalog", move || {
            let catalog = catalog.clone();
            async move { catalog.ping().await }
        })
        .check("storage", move || {
            let storage = storage.clone();
            async move { storage.ping().await }
        });
    teledrop_metrics::ops_router(teledrop_metrics::registry(&[metrics]), readiness)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_todays_names() {
        let m = Metrics::default();
        m.reconciles.inc();
        m.errors.inc("kube_api");
        m.set_leader(true);
        let text = m.render();
        for line in [
            "teledrop_controller_reconciles_total 1\n",
            "teledrop_controller_sweeps_total 0\n",
            "teledrop_controller_files_deleted_total 0\n",
            "teledrop_controller_bytes_freed_total 0\n",
            "teledrop_controller_orphans_deleted_total 0\n",
            "teledrop_controller_errors_total{error=\"kube_api\"} 1\n",
            "# TYPE teledrop_controller_leader gauge\nteledrop_controller_leader 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert_eq!((m.errors.get("kube_api"), m.errors.get("catalog")), (1, 0));
        assert!(m.is_leader());
    }
}
