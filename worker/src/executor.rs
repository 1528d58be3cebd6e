//! Runs assignments: at most `max_shards` at once, each with a progress reporter, its own
//! cancellation token, and a result report that is retried until the controller answers.
//! An attempt that was already started is never started twice; a newer attempt of the same
//! shard cancels the older one.

use ferry_crypto::seal::Identities;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_model::task::{Resource, ShardOp, ShardOutcome, ShardTask};
use ferry_proto::model::ShardKey;
use ferry_proto::v1;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::controllers::Controllers;
use crate::engines::{self, Counters, Run, ShardError};
use crate::metrics::{Op, OpResult, WorkerMetrics};
use crate::policy::Policy;

/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How long a result report is retried before the attempt is given up (the controller will
/// have re-queued the shard by then anyway).
const REPORT_PATIENCE: Duration = Duration::from_secs(120);

/// Running attempts by (job, shard): the attempt number and its cancellation token.
type Running = HashMap<(String, String), (u32, CancellationToken)>;

/// Runs shards for one worker process.
#[derive(Clone)]
pub struct Executor {
    controllers: Controllers,
    heartbeat: Arc<Mutex<Duration>>,
    slots: Arc<Semaphore>,
    running: Arc<Mutex<Running>>,
    worker_id: Arc<Mutex<String>>,
    tools: Arc<BTreeMap<String, String>>,
    metrics: WorkerMetrics,
    policy: Arc<Policy>,
    identities: Arc<Identities>,
    work_dir: std::path::PathBuf,
}

impl Executor {
    /// An executor reporting through `client`, running what `policy` allows.
    pub fn new(
        controllers: Controllers,
        max_shards: u32,
        tools: BTreeMap<String, String>,
        metrics: WorkerMetrics,
        policy: Policy,
        identities: Arc<Identities>,
        work_dir: std::path::PathBuf,
    ) -> Self {
        Executor {
            identities,
            work_dir,
            metrics,
            policy: Arc::new(policy),
            tools: Arc::new(tools),
            controllers,
            heartbeat: Arc::new(Mutex::new(Duration::from_secs(2))),
            slots: Arc::new(Semaphore::new(max_shards as usize)),
            running: Arc::new(Mutex::new(Running::new())),
            worker_id: Arc::new(Mutex::new(String::new())),
        }
    }

    /// The session id reports carry.
    pub fn set_worker_id(&self, id: &str) {
        if let Ok(mut w) = self.worker_id.lock() {
            *w = id.to_owned();
        }
    }

    /// The heartbeat interval the controller asked for.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat
            .lock()
            .map(|h| *h)
            .unwrap_or(Duration::from_secs(2))
    }

    /// Remembers the heartbeat interval (kept across sessions).
    pub fn set_heartbeat_interval(&self, interval: Duration) {
        if let Ok(mut h) = self.heartbeat.lock() {
            *h = interval;
        }
    }

    fn worker_id(&self) -> String {
        self.worker_id.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Shards running now.
    pub fn running(&self) -> u32 {
        self.running.lock().map(|r| r.len() as u32).unwrap_or(0)
    }

    /// Starts a task unless this attempt already runs.
    pub fn start(&self, task: ShardTask) {
        let slot = (task.job_id.clone(), task.shard_id.clone());
        let cancel = CancellationToken::new();
        {
            let Ok(mut running) = self.running.lock() else {
                return;
            };
            if let Some((attempt, old)) = running.get(&slot) {
                if *attempt >= task.attempt {
                    return; // re-sent after a reconnect: already running
                }
                old.cancel();
            }
            running.insert(slot.clone(), (task.attempt, cancel.clone()));
        }
        let this = self.clone();
        tokio::spawn(async move {
            let key = ShardKey {
                job_id: task.job_id.clone(),
                shard_id: task.shard_id.clone(),
                attempt: task.attempt,
            };
            // One span per shard attempt, child of the controller's hand-out: every stage span and
            // every log line of the shard sits under it (job and shard ids included).
            let span = tracing::info_span!(
                "shard",
                job = %task.job_id,
                shard = %task.shard_id,
                attempt = task.attempt,
                op = task.op.as_str(),
                kind = task.resource.kind(),
            );
            if let Some(parent) = &task.traceparent {
                crate::logging::set_parent(&span, parent);
            }
            let result = this
                .execute(task, cancel.clone())
                .instrument(span.clone())
                .await;
            if !cancel.is_cancelled() || result.is_ok() {
                this.report(&key, result).instrument(span).await;
            }
            if let Ok(mut running) = this.running.lock()
                && running.get(&slot).is_some_and(|(a, _)| *a == key.attempt)
            {
                running.remove(&slot);
            }
        });
    }

    /// Cancels every running attempt (the controller no longer accepts this worker).
    pub fn cancel_all(&self) {
        if let Ok(running) = self.running.lock() {
            for (_, token) in running.values() {
                token.cancel();
            }
        }
    }

    /// Cancels an attempt if it runs here.
    pub fn cancel(&self, key: &ShardKey) {
        if let Ok(running) = self.running.lock()
            && let Some((attempt, token)) = running.get(&(key.job_id.clone(), key.shard_id.clone()))
            && *attempt == key.attempt
        {
            token.cancel();
        }
    }

    async fn execute(
        &self,
        task: ShardTask,
        cancel: CancellationToken,
    ) -> Result<ShardOutcome, ShardError> {
        // A log stream runs until cancelled and is light: it takes no `--max-shards` slot (the
        // controller does not count it either), so backups keep running beside it.
        let _permit = if task.op == ShardOp::Stream {
            None
        } else {
            Some(
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ShardError::transient("worker shutting down"))?,
            )
        };
        let key = format!("{}/{}#{}", task.job_id, task.shard_id, task.attempt);
        tracing::info!(job = %task.job_id, shard = %task.shard_id, attempt = task.attempt,
            op = task.op.as_str(), "shard started");
        let started = std::time::Instant::now();
        let op = task.op.as_str().to_owned();
        // Whatever the controller sends, this worker's own policy decides first.
        self.policy.check(&task).map_err(|e| {
            tracing::warn!(shard = %key, error = %e, "shard refused by this worker's policy");
            ShardError::permanent(e)
        })?;
        self.metrics.running.inc();
        let store =
            ferry_storage::open(&task.storage).map_err(|e| ShardError::permanent(e.to_string()))?;
        let counters = Arc::new(Counters::default());
        let reporter = tokio::spawn(report_progress(
            self.controllers.clone(),
            self.worker_id(),
            ShardKey {
                job_id: task.job_id.clone(),
                shard_id: task.shard_id.clone(),
                attempt: task.attempt,
            },
            counters.clone(),
        ));
        // An exec shard's command may not run forever; its own token stops it.
        let limit = match task.resource {
            Resource::Exec { .. } => self.policy.exec_timeout,
            _ => Duration::MAX,
        };
        let run_cancel = cancel.child_token();
        let run = Run {
            task,
            store,
            counters,
            cancel: run_cancel.clone(),
            tools: self.tools.clone(),
            policy: self.policy.clone(),
            identities: self.identities.clone(),
            work_dir: self.work_dir.clone(),
            metrics: Some(self.metrics.clone()),
        };
        let work = engines::run(run);
        let result = tokio::select! {
            r = work => r,
            _ = cancel.cancelled() => Err(ShardError::cancelled()),
            _ = sleep_at_most(limit) => {
                run_cancel.cancel();
                Err(ShardError::permanent(format!(
                    "the exec command ran longer than {} (--exec-timeout) and was stopped",
                    humantime::format_duration(limit)
                )))
            }
        };
        reporter.abort();
        self.metrics.running.dec();
        let label = Op { op: op.clone() };
        self.metrics
            .shards
            .get_or_create(&OpResult {
                op,
                result: if result.is_ok() { "ok" } else { "failed" }.into(),
            })
            .inc();
        self.metrics
            .shard_duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if let Ok(o) = &result {
            self.metrics
                .source_bytes
                .get_or_create(&label)
                .inc_by(o.source_bytes);
            self.metrics
                .stored_bytes
                .get_or_create(&label)
                .inc_by(o.stored_bytes);
        }
        match &result {
            Ok(o) => tracing::info!(shard = %key, bytes = o.source_bytes, stored = o.stored_bytes,
                secs = started.elapsed().as_secs_f64(), "shard done"),
            Err(e) => {
                tracing::warn!(shard = %key, error = %e.message, permanent = e.permanent, "shard failed")
            }
        }
        result
    }

    async fn report(&self, key: &ShardKey, result: Result<ShardOutcome, ShardError>) {
        let (ok, error, permanent, outcome_json) = match result {
            Ok(o) => (
                true,
                String::new(),
                false,
                serde_json::to_string(&o).unwrap_or_default(),
            ),
            Err(e) => (false, e.message, e.permanent, String::new()),
        };
        let message = v1::ShardResult {
            worker_id: self.worker_id(),
            shard: Some(key.into()),
            ok,
            error,
            outcome_json,
            permanent,
        };
        let deadline = tokio::time::Instant::now() + REPORT_PATIENCE;
        let mut delay = Duration::from_millis(200);
        loop {
            let mut request = tonic::Request::new(message.clone());
            // The trace travels back in W3C form, in gRPC metadata.
            if let Some(tp) = crate::logging::traceparent_of(&tracing::Span::current())
                && let Ok(v) = tp.parse()
            {
                request.metadata_mut().insert("traceparent", v);
            }
            match self.controllers.client().report_result(request).await {
                Ok(ack) => {
                    if !ack.into_inner().accepted {
                        tracing::warn!(shard = %key, "result refused: a newer attempt owns the shard");
                    }
                    return;
                }
                Err(status) if tokio::time::Instant::now() < deadline => {
                    self.controllers.failed(&status);
                    tracing::warn!(shard = %key, error = %status.message(), "reporting result failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(status) => {
                    tracing::error!(shard = %key, error = %status.message(), "giving up reporting result");
                    return;
                }
            }
        }
    }
}

async fn report_progress(
    controllers: Controllers,
    worker_id: String,
    key: ShardKey,
    counters: Arc<Counters>,
) {
    let mut last = None;
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let now = (
            counters.done.load(Ordering::Relaxed),
            counters.total.load(Ordering::Relaxed),
        );
        if last == Some(now) {
            continue;
        }
        last = Some(now);
        let report = v1::ProgressReport {
            worker_id: worker_id.clone(),
            shard: Some((&key).into()),
            bytes_done: now.0,
            bytes_total: now.1,
        };
        if let Err(status) = controllers.client().report_progress(report).await {
            controllers.failed(&status);
        }
    }
}

/// Sleeps `d`, or forever when `d` is too long to represent.
async fn sleep_at_most(d: Duration) {
    match tokio::time::Instant::now().checked_add(d) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The last few hundred bytes of a command's stderr, for error messages.
pub fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let start = text.len().saturating_sub(500);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_owned()
}
