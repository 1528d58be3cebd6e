//! The controller's Prometheus metrics. Counted where things happen (job transitions, shard
//! results, lease expiries, schedule ticks); served by `ferry_telemetry::metrics::serve`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use ferry_telemetry::metrics::{Histograms, duration_histogram, throughput_histogram};

/// `kind` = backup | restore.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

/// `kind`, and `state` = completed | partially_failed | failed | cancelled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindState {
    pub kind: String,
    pub state: String,
}

/// `kind` = volume | config | postgres | …; `op` = backup | verify | restore.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardKind {
    pub kind: String,
    pub op: String,
}

/// `cluster`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Cluster {
    pub cluster: String,
}

/// `schedule` = team/name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Schedule {
    pub schedule: String,
}

/// Everything the controller counts.
#[derive(Clone)]
pub struct Metrics {
    pub jobs_started: Family<Kind, Counter>,
    pub jobs_finished: Family<KindState, Counter>,
    pub shard_duration: Histograms<ShardKind>,
    pub shard_throughput: Histograms<ShardKind>,
    pub source_bytes: Family<ShardKind, Counter>,
    pub stored_bytes: Family<ShardKind, Counter>,
    pub retries: Family<ShardKind, Counter>,
    pub shard_failures: Family<ShardKind, Counter>,
    pub lease_expiries: Counter,
    pub workers: Family<Cluster, Gauge>,
    pub schedule_runs: Family<Schedule, Counter>,
    pub schedule_skips: Family<Schedule, Counter>,
    /// Duration of the reconciler's passes over the active jobs.
    pub reconcile_pass: prometheus_client::metrics::histogram::Histogram,
    /// Clusters that ever had a live worker here, so an emptied one reads 0, not stale.
    pub clusters_seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Metrics {
    /// The metrics and the registry that serves them.
    pub fn new() -> (Metrics, Registry) {
        let mut r = Registry::default();
        let m = Metrics {
            jobs_started: Family::default(),
            jobs_finished: Family::default(),
            shard_duration: Family::new_with_constructor(duration_histogram),
            shard_throughput: Family::new_with_constructor(throughput_histogram),
            source_bytes: Family::default(),
            stored_bytes: Family::default(),
            retries: Family::default(),
            shard_failures: Family::default(),
            lease_expiries: Counter::default(),
            workers: Family::default(),
            schedule_runs: Family::default(),
            schedule_skips: Family::default(),
            reconcile_pass: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
            ),
            clusters_seen: Default::default(),
        };
        r.register(
            "ferry_reconcile_pass_seconds",
            "Duration of one reconciler pass over the active jobs",
            m.reconcile_pass.clone(),
        );
        r.register(
            "ferry_jobs_started",
            "Jobs that started running",
            m.jobs_started.clone(),
        );
        r.register(
            "ferry_jobs_finished",
            "Jobs that ended, by final state",
            m.jobs_finished.clone(),
        );
        r.register(
            "ferry_shard_duration_seconds",
            "Duration of successful shard attempts",
            m.shard_duration.clone(),
        );
        r.register(
            "ferry_shard_throughput_bytes_per_second",
            "Source bytes per second of successful shard attempts",
            m.shard_throughput.clone(),
        );
        r.register(
            "ferry_shard_source_bytes",
            "Bytes read from (backup) or written to (restore) resources",
            m.source_bytes.clone(),
        );
        r.register(
            "ferry_shard_stored_bytes",
            "Archive bytes in storage",
            m.stored_bytes.clone(),
        );
        r.register(
            "ferry_shard_retries",
            "Failed shard attempts that are retried",
            m.retries.clone(),
        );
        r.register(
            "ferry_shard_failures",
            "Shards that failed for good",
            m.shard_failures.clone(),
        );
        r.register(
            "ferry_lease_expiries",
            "Shards re-queued because their worker's session lease expired",
            m.lease_expiries.clone(),
        );
        r.register(
            "ferry_workers",
            "Live workers per cluster",
            m.workers.clone(),
        );
        r.register(
            "ferry_schedule_runs",
            "Scheduled backups started",
            m.schedule_runs.clone(),
        );
        r.register(
            "ferry_schedule_skips",
            "Schedule ticks skipped",
            m.schedule_skips.clone(),
        );
        (m, r)
    }
}

/// A job state as a label value.
pub fn state_label(state: crate::records::JobState) -> String {
    use crate::records::JobState as S;
    match state {
        S::Pending => "pending",
        S::Running => "running",
        S::Completed => "completed",
        S::PartiallyFailed => "partially_failed",
        S::Failed => "failed",
        S::Cancelled => "cancelled",
    }
    .into()
}

/// A job kind as a label value.
pub fn kind_label(kind: crate::records::JobKind) -> String {
    kind.as_str().into()
}
