//! Logs and traces, shared by the three binaries. Logs: human lines by default, JSON on request,
//! level from `RUST_LOG` (default chosen by the binary), to stderr so command output stays clean.
//! Traces: with an OTLP endpoint (`--otlp-endpoint` or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), spans are exported over OTLP/gRPC with the service name and
//! version as resource attributes. One trace per job: its context travels from the controller to
//! workers in W3C `traceparent` form (in assignments and in gRPC metadata).

use std::cell::Cell;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the trace exporter alive; flushes it when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber; `default` is the filter when `RUST_LOG` is unset. With an OTLP
/// endpoint (argument or `OTEL_EXPORTER_OTLP_ENDPOINT`), spans are exported as `service`.
pub fn init(json: bool, default: &str) -> Telemetry {
    init_with(json, default, None, "ferry")
}

/// [`init`] with tracing.
pub fn init_with(json: bool, default: &str, otlp: Option<&str>, service: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let endpoint = otlp
        .map(str::to_owned)
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty());
    let provider = endpoint.and_then(|e| match provider(&e, service) {
        Ok(p) => Some(p),
        Err(err) => {
            eprintln!("{service}: traces disabled: {err}");
            None
        }
    });
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_tracer_provider(p.clone());
        tracing_opentelemetry::layer().with_tracer(p.tracer("ferry"))
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    Telemetry { provider }
}

fn provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new(
            "service.instance.id",
            crate::default_node_name(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(Ids::default())
        .with_resource(resource)
        .build())
}

thread_local! {
    static NEXT_SPAN: Cell<Option<SpanId>> = const { Cell::new(None) };
    static NEXT_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, except when [`emit_span`] asks for given ones (a job's root span is emitted when
/// the job ends, with the ids its children have referred to all along).
#[derive(Debug, Default)]
struct Ids(RandomIdGenerator);

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_SPAN
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_span_id())
    }
}

/// New random (trace id, span id) for a job's root span, as hex.
pub fn new_root_ids() -> (String, String) {
    let ids = RandomIdGenerator::default();
    (
        ids.new_trace_id().to_string(),
        ids.new_span_id().to_string(),
    )
}

/// W3C `traceparent` of a span.
pub fn traceparent(trace_id: &str, span_id: &str) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

/// The remote parent a `traceparent` names, as an OpenTelemetry context.
pub fn parent_context(traceparent: &str) -> Option<Context> {
    let parts: Vec<&str> = traceparent.split('-').collect();
    let [_, trace, span, _] = parts.as_slice() else {
        return None;
    };
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    let sc = SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Some(Context::new().with_remote_span_context(sc))
}

/// Emits a finished span with given times; with `ids`, it gets exactly those (trace, span) ids
/// (a job's root); with `parent`, it is that span's child. Returns its `traceparent`.
pub fn emit_span(
    name: &'static str,
    ids: Option<(&str, &str)>,
    parent: Option<&str>,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
) -> Option<String> {
    let tracer = opentelemetry::global::tracer("ferry");
    let parent_cx = parent.and_then(parent_context).unwrap_or_default();
    if let Some((trace, span)) = ids {
        NEXT_TRACE.with(|c| c.set(TraceId::from_hex(trace).ok()));
        NEXT_SPAN.with(|c| c.set(SpanId::from_hex(span).ok()));
    }
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent_cx);
    NEXT_TRACE.with(|c| c.set(None));
    NEXT_SPAN.with(|c| c.set(None));
    let sc = opentelemetry::trace::Span::span_context(&span).clone();
    opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
    sc.is_valid()
        .then(|| traceparent(&sc.trace_id().to_string(), &sc.span_id().to_string()))
}

/// Makes a `tracing` span the child of a remote `traceparent`.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(cx) = parent_context(traceparent) {
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` of a `tracing` span (when traces are exported).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| traceparent(&sc.trace_id().to_string(), &sc.span_id().to_string()))
}
