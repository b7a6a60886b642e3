//! The one place logging and tracing are set up. Logs carry pseudonymous ids only (visit,
//! participant, connection); tokens, secrets, display names and SDP are never logged at any
//! level, and the spans exported over OTLP carry the same fields.
//!
//! With `otlp_endpoint` (`BEDSIDE_OTLP_ENDPOINT`, e.g. `http://collector:4318`) set, spans
//! also go to an OpenTelemetry collector over OTLP/HTTP (protobuf), through the `tracing`
//! bridge: the HTTP requests, each join, each admission and each webhook delivery, one
//! trace per participant from the call that minted their link (`bedside_signaling::trace_links`).

use crate::config::LogFormat;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Libraries whose debug and trace events carry what Bedside must never log: tungstenite
/// logs every WebSocket frame (join tokens, names, chat, SDP with candidate addresses),
/// the HTTP stack request lines and headers (identities in API paths, credentials), sqlx
/// statements. They log at `info` at most, whatever `RUST_LOG` asks for.
const CLAMPED: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "axum",
    "hyper",
    "hyper_util",
    "h2",
    "http",
    "reqwest",
    "rustls",
    "tokio_rustls",
    "tower",
    "tower_http",
    "sqlx",
    "redis",
    "webrtc",
    "turn",
    "stun",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
];

/// The log filter under `RUST_LOG`: everything it lets through except the clamped
/// libraries' debug and trace events.
fn clamp() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(CLAMPED.iter().map(|t| (*t, LevelFilter::INFO)))
}

/// Keeps the trace exporter running; dropping it sends what is still buffered.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("bedside: flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` filters logs (default `info`; see
/// [`CLAMPED`] for what no filter opens), `format` is
/// `text` or `json`; spans go to `otlp_endpoint` when it is set.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    let fmt = if format == LogFormat::Json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let traces = otlp_endpoint.map(provider).transpose()?;
    // Only Bedside's own spans at `info` and above, whatever RUST_LOG says: the HTTP
    // requests, joins, admissions and deliveries, never a dependency's internals.
    let otel = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("bedside"))
            .with_location(false)
            .with_threads(false)
            .with_filter(EnvFilter::new(
                "bedside=info,bedside_server=info,bedside_signaling=info",
            ))
    });
    let result = tracing_subscriber::registry()
        .with(fmt.with_filter(filter.and(clamp())))
        .with(otel)
        .try_init();
    if result.is_err() {
        eprintln!("logging was already initialised");
    }
    if traces.is_some() {
        bedside_signaling::trace_links::enable();
    }
    Ok(Telemetry { traces })
}

fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("bedside")
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build())
}
