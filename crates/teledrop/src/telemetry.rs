//! Logging, and traces when an OTLP endpoint is configured.
//!
//! Logs: `RUST_LOG` filters (default `info`); JSON lines by default.
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans that pass `RUST_LOG`
//! are exported over OTLP/gRPC in batches, and the W3C trace context
//! becomes the process's propagator, so an update's trace continues from
//! the ingress through the bus into the worker. The SDK reads the other
//! standard variables itself: `OTEL_SERVICE_NAME` (default here
//! `teledrop-<role>`), `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`. `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` turn export off. Without an endpoint
//! nothing is exported and nothing else changes.

use crate::config::LogFormat;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use teledrop_core::report;
use teledrop_core::tls::CaBundle;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// What [`init`] set up. Call [`Telemetry::shutdown`] once the roles have
/// ended, so the spans still in the batch are sent.
#[must_use = "spans not yet exported are lost unless shutdown is called"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans not sent yet and stops the exporter, waiting at
    /// most the SDK's shutdown timeout.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks until its export thread is done, and
        // that export needs this runtime's I/O: block a thread of the
        // blocking pool, not a runtime worker.
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %report(&e), "flushing the last spans failed"),
            Err(e) => tracing::warn!(error = %report(&e), "flushing the last spans failed"),
        }
    }
}

/// Installs the global subscriber: logs, plus the span exporter when an
/// OTLP endpoint is configured. `role` names the service by default.
/// Call it inside the Tokio runtime: the gRPC exporter lives on it.
pub fn init(format: LogFormat, role: &str, ca: Option<&CaBundle>) -> Telemetry {
    let var = |name: &str| std::env::var(name).ok();
    let exporter = otlp_endpoint(var).map(|endpoint| tracer_provider(&endpoint, role, ca));
    let (provider, failed) = match exporter {
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("teledrop"))
            .with_filter(exporter_noise())
    });

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: log files and collectors
    // would keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let logs = match format {
        LogFormat::Json => logs.json().with_current_span(false).boxed(),
        LogFormat::Text => logs.boxed(),
    };
    tracing_subscriber::registry().with(filter).with(logs).with(otel).init();

    if let Some(e) = failed {
        // Serving files matters more than traces: go on without them.
        tracing::error!(error = %report(&e), "the OTLP exporter cannot be set up; traces are not exported");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP/gRPC");
    }
    Telemetry { provider }
}

/// The endpoint spans go to, when export is on.
fn otlp_endpoint(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// `teledrop-<role>`, unless `OTEL_SERVICE_NAME` or a `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` names the service (the SDK reads those).
fn default_service_name(var: impl Fn(&str) -> Option<String>, role: &str) -> Option<String> {
    let named = var("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
        || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| {
            attrs
                .split(',')
                .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k.trim() == "service.name"))
        });
    (!named).then(|| format!("teledrop-{role}"))
}

pub(crate) fn tracer_provider(
    endpoint: &str,
    role: &str,
    ca: Option<&CaBundle>,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    // Without roots of its own the exporter's TLS trusts nothing.
    if endpoint.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")) {
        let tls = ClientTlsConfig::new().with_native_roots();
        let tls = match ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca.pem())),
            None => tls,
        };
        exporter = exporter.with_tls_config(tls);
    }
    let exporter = exporter.build()?;
    let resource = match default_service_name(|name| std::env::var(name).ok(), role) {
        Some(name) => Resource::builder().with_service_name(name).build(),
        None => Resource::builder().build(),
    };
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// The exporter's own transport and the SDK's logs, kept out of the
/// traces: exporting them would make spans about exporting spans.
fn exporter_noise() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(["opentelemetry", "tonic", "h2", "hyper", "hyper_util", "tower"].map(|t| (t, LevelFilter::OFF)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn export_is_on_only_with_an_endpoint() {
        assert_eq!(otlp_endpoint(env(&[])), None);
        assert_eq!(otlp_endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])), None);
        assert_eq!(
            otlp_endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4317")])).as_deref(),
            Some("http://otel-collector:4317")
        );
        assert_eq!(
            otlp_endpoint(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317"),
            ]))
            .as_deref(),
            Some("http://b:4317")
        );
        for off in [("OTEL_SDK_DISABLED", "TRUE"), ("OTEL_TRACES_EXPORTER", "none")] {
            assert_eq!(
                otlp_endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"), off])),
                None,
                "{off:?}"
            );
        }
    }

    /// The exporter's TLS is tonic's rustls: it builds with the one
    /// provider, trusting the system's roots and `TELEDROP_CA_FILE`.
    #[tokio::test]
    async fn an_https_exporter_builds_with_the_extra_ca() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        let ca = CaBundle::load("TELEDROP_CA_FILE", &path).unwrap();
        let provider = tracer_provider("https://localhost:4317", "worker", Some(&ca)).expect("an exporter");
        let _ = provider.shutdown();
    }

    #[test]
    fn the_service_is_named_after_the_role_unless_configured() {
        assert_eq!(
            default_service_name(env(&[]), "worker").as_deref(),
            Some("teledrop-worker")
        );
        assert_eq!(
            default_service_name(
                env(&[("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")]),
                "links"
            )
            .as_deref(),
            Some("teledrop-links")
        );
        assert_eq!(
            default_service_name(env(&[("OTEL_SERVICE_NAME", "files")]), "worker"),
            None
        );
        assert_eq!(
            default_service_name(
                env(&[("OTEL_RESOURCE_ATTRIBUTES", "team=a, service.name=files")]),
                "worker"
            ),
            None
        );
    }
}
