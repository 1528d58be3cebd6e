//! Prometheus plumbing every Ferry process shares: the histogram buckets and the `/metrics`
//! endpoint (axum, OpenMetrics text).

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::metrics::family::Family;
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
