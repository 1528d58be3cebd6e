//! Prometheus metrics: the worker's own, and the `/metrics` HTTP endpoint the controller uses too.
//! Names follow Prometheus conventions (`ferry_…_total`, `_seconds`, `_bytes`); the text is
//! OpenMetrics, which Prometheus scrapes natively.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// A histogram family with the duration buckets every Ferry histogram uses: 50 ms … ~14 h.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Duration buckets, in seconds.
pub fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 20))
}

/// Throughput buckets, in bytes per second: 64 KiB/s … ~32 GiB/s.
pub fn throughput_histogram() -> Histogram {
    Histogram::new(exponential_buckets(65536.0, 2.0, 20))
}

/// `op` = backup | verify | restore; `result` = ok | failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpResult {
    pub op: String,
    pub result: String,
}

/// `op` = backup | verify | restore.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: String,
}

/// What a worker counts.
#[derive(Clone)]
pub struct WorkerMetrics {
    pub shards: Family<OpResult, Counter>,
    pub shard_duration: Histograms<Op>,
    pub source_bytes: Family<Op, Counter>,
    pub stored_bytes: Family<Op, Counter>,
    pub running: Gauge,
}

impl WorkerMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> WorkerMetrics {
        let m = WorkerMetrics {
            shards: Family::default(),
            shard_duration: Family::new_with_constructor(duration_histogram),
            source_bytes: Family::default(),
            stored_bytes: Family::default(),
            running: Gauge::default(),
        };
        registry.register(
            "ferry_worker_shards",
            "Shard attempts finished by this worker",
            m.shards.clone(),
        );
        registry.register(
            "ferry_worker_shard_duration_seconds",
            "Duration of shard attempts on this worker",
            m.shard_duration.clone(),
        );
        registry.register(
            "ferry_worker_source_bytes",
            "Bytes read from (backup) or written to (restore) resources",
            m.source_bytes.clone(),
        );
        registry.register(
            "ferry_worker_stored_bytes",
            "Archive bytes written to storage",
            m.stored_bytes.clone(),
        );
        registry.register(
            "ferry_worker_running_shards",
            "Shards running now",
            m.running.clone(),
        );
        m
    }
}

/// Serves `GET /metrics` on `addr` until `cancel`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    ),
                    Err(_) => (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; charset=utf-8",
                        )],
                        "encoding the metrics failed\n".to_owned(),
                    ),
                }
            }
        }),
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "metrics on /metrics");
    Ok(bound)
}
