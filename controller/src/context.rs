//! The controller's shared state: the store, the timings, the live worker streams, observed
//! progress, and the signals that wake the reconciler and the job watchers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::election::{ControllerInfo, Role};
use crate::store::Store;
use crate::timing::Timings;
use crate::workers::Workers;

/// Policies an operator may tune.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Failed attempts after which a shard fails for good.
    pub max_shard_failures: u32,
    /// How long a shard may wait for a worker of its cluster before it fails.
    pub unschedulable_timeout: Duration,
    /// How often storage locations are synced into the catalog (zero: never).
    pub sync_interval: Duration,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
    /// Longest a unary call may take.
    pub request_timeout: Duration,
    /// How long finished restore and verify jobs are kept.
    pub job_history: Duration,
    /// Unreferenced repository packs younger than this are kept (a backup of another
    /// installation sharing the location may still be writing them).
    pub gc_grace: Duration,
    /// How often repository packs are collected (zero: only on `ferry storage gc`).
    pub gc_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_shard_failures: 3,
            unschedulable_timeout: Duration::from_secs(600),
            sync_interval: Duration::from_secs(60),
            audit_retention: crate::config::DEFAULT_AUDIT_RETENTION,
            request_timeout: crate::config::DEFAULT_REQUEST_TIMEOUT,
            job_history: Duration::from_secs(30 * 24 * 3600),
            gc_grace: Duration::from_secs(6 * 3600),
            gc_interval: Duration::from_secs(24 * 3600),
        }
    }
}

/// Bytes a worker reported for the current attempt of a shard (observed state: never persisted,
/// rebuilt from the next report after a restart).
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardProgress {
    pub attempt: u32,
    pub done: u64,
    pub total: Option<u64>,
}

/// Everything the handlers and the reconciler share.
pub struct Context {
    pub store: Arc<dyn Store>,
    pub timings: Timings,
    pub settings: Settings,
    pub workers: Workers,
    pub progress: Mutex<HashMap<(String, String), ShardProgress>>,
    /// Wakes the reconciler early.
    pub wake: Notify,
    /// Bumped whenever a job may have changed (progress included); job watchers listen.
    pub changed: watch::Sender<u64>,
    /// Bumped when a job or shard record changed (not for progress alone): a watcher that
    /// holds back progress updates sends these at once.
    pub states: watch::Sender<u64>,
    /// This controller's current role (leader or follower).
    pub role: watch::Receiver<Role>,
    pub metrics: crate::metrics::Metrics,
    /// Rate limit of stored audit entries for calls without a valid token.
    pub audit_budget: crate::audit::AnonymousBudget,
    /// This installation's id (`keys::installation`), set at start.
    pub installation: std::sync::OnceLock<String>,
    /// This installation's signing key (`trust::signing_key`), set at start.
    pub signing: std::sync::OnceLock<ferry_crypto::sign::SigningKey>,
    /// Jobs whose storage or catalog work runs off the reconciler's pass now, or failed and
    /// waits for its retry.
    work: Mutex<HashMap<String, WorkSlot>>,
}

/// Off-pass work of one job.
#[derive(Debug, Clone, Copy)]
struct WorkSlot {
    running: bool,
    failures: u32,
    retry_at: std::time::Instant,
}

/// gRPC metadata key naming the leader's URL when a follower refuses a call.
pub use ferry_proto::LEADER_HEADER;

impl Context {
    /// A context over a store.
    pub fn new(
        store: Arc<dyn Store>,
        timings: Timings,
        settings: Settings,
        role: watch::Receiver<Role>,
        metrics: crate::metrics::Metrics,
    ) -> Arc<Context> {
        Arc::new(Context {
            role,
            metrics,
            workers: Workers::new(store.clone(), timings),
            store,
            timings,
            settings,
            progress: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            changed: watch::Sender::new(0),
            states: watch::Sender::new(0),
            audit_budget: Default::default(),
            work: Mutex::new(HashMap::new()),
            installation: std::sync::OnceLock::new(),
            signing: std::sync::OnceLock::new(),
        })
    }

    /// Refuses a call that only the leader may take, pointing the caller at the leader.
    pub fn require_leader(&self) -> Result<(), tonic::Status> {
        let role = self.role.borrow().clone();
        match role {
            Role::Leader => Ok(()),
            Role::Follower(Some(ControllerInfo { url, .. })) => {
                let mut status = tonic::Status::unavailable(format!(
                    "this controller is a follower; the leader is {url}"
                ));
                if let Ok(v) = url.parse() {
                    status.metadata_mut().insert(LEADER_HEADER, v);
                }
                Err(status)
            }
            Role::Follower(None) => Err(tonic::Status::unavailable(
                "no controller is leading right now (election in progress or store unavailable); retry",
            )),
        }
    }

    /// Says that jobs changed: wakes the reconciler and every watcher.
    pub fn notify(&self) {
        self.wake.notify_one();
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.states.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// This installation's id (empty before start-up set it).
    pub fn installation(&self) -> &str {
        self.installation
            .get()
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// Whether work of a job runs off the pass now, or waits to be retried after a failure.
    pub fn is_busy(&self, job: &str) -> bool {
        let Ok(work) = self.work.lock() else {
            return true;
        };
        work.get(job)
            .is_some_and(|w| w.running || std::time::Instant::now() < w.retry_at)
    }

    /// Marks a job's off-pass work started; false when it runs already or waits for a retry.
    pub fn start_work(&self, job: &str) -> bool {
        let Ok(mut work) = self.work.lock() else {
            return false;
        };
        let now = std::time::Instant::now();
        let slot = work.entry(job.to_owned()).or_insert(WorkSlot {
            running: false,
            failures: 0,
            retry_at: now,
        });
        if slot.running || now < slot.retry_at {
            return false;
        }
        slot.running = true;
        true
    }

    /// Marks a job's off-pass work ended; a failure is retried after a backoff (one
    /// heartbeat, doubling, at most 16).
    pub fn end_work(&self, job: &str, ok: bool) {
        let Ok(mut work) = self.work.lock() else {
            return;
        };
        if ok {
            work.remove(job);
        } else if let Some(slot) = work.get_mut(job) {
            slot.running = false;
            slot.failures += 1;
            slot.retry_at = std::time::Instant::now() + self.timings.retry_backoff(slot.failures);
        }
    }

    /// Progress of a shard's current attempt.
    pub fn progress_of(&self, job: &str, shard: &str, attempt: u32) -> Option<ShardProgress> {
        let map = self.progress.lock().ok()?;
        map.get(&(job.to_owned(), shard.to_owned()))
            .filter(|p| p.attempt == attempt)
            .copied()
    }
}
