//! Carries a trace across the bus: the publisher writes its span's W3C
//! trace context into the [`Envelope`](teledrop_bus::Envelope), the
//! consumer makes its span a child of it, so one update's journey
//! (webhook → queue → worker) is one trace.
//!
//! Both ends go through the global text-map propagator, which the binary
//! sets to W3C TraceContext when it exports traces. Without an
//! OpenTelemetry layer (no exporter configured) spans carry no context:
//! nothing is written and nothing is read, at the cost of a look-up.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use teledrop_bus::TraceContext;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace context of `span`, to send with what it publishes; `None`
/// when `span` is not recorded as part of a trace.
pub fn context_of(span: &tracing::Span) -> Option<TraceContext> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = TraceContext::default();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Carrier(&mut carrier)));
    (!carrier.traceparent.is_empty()).then_some(carrier)
}

/// Makes `span` a child of the remote span `trace` names. Call it before
/// `span` is first entered: OpenTelemetry fixes a span's parent when it
/// starts. A context that does not parse leaves `span` where it was.
pub fn continue_trace(span: &tracing::Span, trace: &TraceContext) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Reader(trace)));
    if !parent.span().span_context().is_valid() {
        return;
    }
    if let Err(e) = span.set_parent(parent) {
        tracing::debug!(error = %e, "the remote trace context could not be attached");
    }
}

struct Carrier<'a>(&'a mut TraceContext);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key.eq_ignore_ascii_case(TraceContext::TRACEPARENT) {
            self.0.traceparent = value;
        } else if key.eq_ignore_ascii_case(TraceContext::TRACESTATE) {
            self.0.tracestate = value;
        }
    }
}

struct Reader<'a>(&'a TraceContext);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = if key.eq_ignore_ascii_case(TraceContext::TRACEPARENT) {
            &self.0.traceparent
        } else if key.eq_ignore_ascii_case(TraceContext::TRACESTATE) {
            &self.0.tracestate
        } else {
            return None;
        };
        (!value.is_empty()).then_some(value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        vec![TraceContext::TRACEPARENT, TraceContext::TRACESTATE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_span_outside_any_trace_sends_nothing() {
        // No OpenTelemetry layer: the span has no context to send.
        let span = tracing::info_span!("plain");
        assert_eq!(context_of(&span), None);
    }

    /// One test owns the process-wide propagator of this test binary.
    #[test]
    fn a_context_written_by_one_span_parents_another() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let sent = tracing::subscriber::with_default(subscriber, || {
            let publisher = tracing::info_span!("publish");
            let sent = context_of(&publisher).expect("a recorded span has a context");
            let consumer = tracing::info_span!("consume");
            continue_trace(&consumer, &sent);
            drop(consumer);
            // Nonsense parents nothing.
            let stray = tracing::info_span!("stray");
            continue_trace(
                &stray,
                &TraceContext {
                    traceparent: "not a traceparent".into(),
                    tracestate: String::new(),
                },
            );
            drop(stray);
            drop(publisher);
            sent
        });
        assert!(sent.traceparent.starts_with("00-"), "{sent:?}");
        let spans = exporter.get_finished_spans().unwrap();
        let find = |name: &str| spans.iter().find(|s| s.name == name).unwrap();
        let (publish, consume, stray) = (find("publish"), find("consume"), find("stray"));
        assert_eq!(consume.span_context.trace_id(), publish.span_context.trace_id());
        assert_eq!(consume.parent_span_id, publish.span_context.span_id());
        assert_ne!(stray.span_context.trace_id(), publish.span_context.trace_id());
    }
}
