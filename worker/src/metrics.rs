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

/// `stream` = TEAM/APP/COMPONENT.ENTRY
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Stream {
    pub stream: String,
}

impl Stream {
    /// The label of a stream from its prefix (`teams/T/apps/A/logs/STREAM/`).
    pub fn of_prefix(prefix: &str) -> Stream {
        let parts: Vec<&str> = prefix.trim_end_matches('/').split('/').collect();
        let stream = match parts.as_slice() {
            ["teams", team, "apps", app, "logs", stream] => format!("{team}/{app}/{stream}"),
            _ => prefix.to_owned(),
        };
        Stream { stream }
    }
}

/// A stream and the log file its archive has reached.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamFile {
    pub stream: String,
    pub file: String,
}

/// What a worker counts.
#[derive(Clone)]
pub struct WorkerMetrics {
    pub shards: Family<OpResult, Counter>,
    pub shard_duration: Histograms<Op>,
    pub source_bytes: Family<Op, Counter>,
    pub stored_bytes: Family<Op, Counter>,
    pub running: Gauge,
    /// Log streams this worker runs: seconds since the archive last caught up with the local
    /// copy of the log (0 when idle), and bytes archived.
    pub stream_lag: Family<Stream, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub stream_archived: Family<Stream, Counter>,
    /// Bytes of log the server has written past the archive's end.
    pub stream_lag_bytes: Family<Stream, Gauge>,
    /// The archive's end: the file (a label) and the offset in it.
    pub stream_position: Family<StreamFile, Gauge>,
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
            stream_lag: Family::default(),
            stream_archived: Family::default(),
            stream_lag_bytes: Family::default(),
            stream_position: Family::default(),
        };
        registry.register(
            "ferry_worker_stream_lag_seconds",
            "Log streams: seconds since the archive last held everything the worker had received",
            m.stream_lag.clone(),
        );
        registry.register(
            "ferry_worker_stream_lag_bytes",
            "Log streams: bytes the server has written past the end of the archive",
            m.stream_lag_bytes.clone(),
        );
        registry.register(
            "ferry_worker_stream_archived_position",
            "Log streams: the end of the archive, as the offset in the log file labelled",
            m.stream_position.clone(),
        );
        registry.register(
            "ferry_worker_stream_archived_bytes",
            "Log streams: bytes of log archived",
            m.stream_archived.clone(),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_labelled_team_app_stream() {
        assert_eq!(
            Stream::of_prefix("teams/t/apps/shop/logs/db.main/").stream,
            "t/shop/db.main"
        );
        assert_eq!(Stream::of_prefix("odd/").stream, "odd/");
    }
}
