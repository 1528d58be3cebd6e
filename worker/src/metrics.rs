//! Prometheus metrics: the worker's own, and the `/metrics` HTTP endpoint the controller uses too.
//! Names follow Prometheus conventions (`ferry_…_total`, `_seconds`, `_bytes`); the text is
//! OpenMetrics, which Prometheus scrapes natively.

use ferry_telemetry::metrics::{Histograms, duration_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

pub use ferry_telemetry::metrics::serve;
