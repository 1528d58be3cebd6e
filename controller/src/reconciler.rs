//! The reconciler: one loop on the leader that moves every active job forward. Each pass reads
//! the intent (jobs, shards) and the observed state (live workers, assignments) from the store
//! and closes the gap: hands pending shards to workers, re-queues shards whose worker vanished,
//! fails shards nobody can take, switches restores from verify to write, and commits finished
//! jobs (for a backup: `manifest.json`, written last). Every step is idempotent, so a pass that
//! dies half-way is simply repeated by the next one.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::StreamExt;
use std::sync::Arc;

use ferry_model::layout;
use ferry_model::manifest::{BackupManifest, MANIFEST_FORMAT, MANIFEST_VERSION, ManifestShard};
use ferry_model::now_ms;
use ferry_model::storage::StorageLocation;
use ferry_model::task::{ShardOp, ShardTask, required_tools};
use tokio_util::sync::CancellationToken;

use crate::apps;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys;
use crate::records::{
    AssignmentRecord, JobKind, JobRecord, JobState, ShardRecord, ShardState, WorkerRecord,
};
use crate::store::{Condition, Op, list_json};
use crate::workers::{Delivery, Workers};

/// A shard handed out this many times without finishing fails, whatever the reason: a shard
/// that kills every worker it lands on must not loop forever.
const MAX_ATTEMPTS: u32 = 25;

/// Runs passes until cancelled: on every wake-up and at least every reconcile interval.
pub async fn run(ctx: Arc<Context>, cancel: CancellationToken) {
    loop {
        // A pass dropped half-way is safe: every step is a compare-and-swap on its own.
        tokio::select! {
            result = pass(&ctx) => if let Err(e) = result {
                tracing::warn!(error = %e, "reconcile pass failed; retrying");
            },
            _ = cancel.cancelled() => return,
        }
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(ctx.timings.reconcile_interval()) => {}
            _ = cancel.cancelled() => return,
        }
        // Whatever else arrives meanwhile is handled by the same pass.
        tokio::select! {
            _ = tokio::time::sleep(ctx.timings.pass_gap()) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// What one pass knows about the workers.
struct Observed {
    workers: Vec<WorkerRecord>,
    /// (job, shard) → (worker, attempt) of every live assignment.
    assignments: HashMap<(String, String), (String, u32)>,
    /// Shards currently held per worker.
    load: HashMap<String, u32>,
    locations: HashMap<String, StorageLocation>,
    /// Kinds of shard (cluster, node, kind, op) every capable worker of which is busy: later
    /// shards of the same kind wait without a search (loads only grow within a pass).
    saturated: HashSet<(String, Option<String>, String, &'static str)>,
}

/// One pass over every active job.
pub async fn pass(ctx: &Context) -> Result<()> {
    let jobs: Vec<(JobRecord, i64)> = list_json::<JobRecord>(&*ctx.store, &keys::jobs())
        .await?
        .into_iter()
        .filter(|(j, _)| !j.state.is_final())
        .collect();
    let workers = ctx.workers.live().await?;
    count_workers(ctx, &workers);
    if jobs.is_empty() {
        return Ok(());
    }
    let mut observed = Observed {
        workers,
        assignments: HashMap::new(),
        load: HashMap::new(),
        saturated: HashSet::new(),
        locations: apps::list_storage(&*ctx.store)
            .await?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect(),
    };
    for kv in ctx.store.list(&keys::assignments()).await? {
        let Some((worker, job, shard)) = keys::parse_assignment(&kv.key) else {
            continue;
        };
        let attempt = kv.decode::<AssignmentRecord>()?.attempt;
        *observed.load.entry(worker.to_owned()).or_default() += 1;
        observed.assignments.insert(
            (job.to_owned(), shard.to_owned()),
            (worker.to_owned(), attempt),
        );
    }
    // The shards of every active job, read a few jobs at a time: one read's latency per job in a
    // row made a pass over a hundred jobs slow.
    let ids: Vec<String> = jobs.iter().map(|(job, _)| job.id.clone()).collect();
    let store = ctx.store.clone();
    let shard_lists: Vec<_> = futures::stream::iter(ids)
        .map(move |id| {
            let store = store.clone();
            async move { list_json::<ShardRecord>(&*store, &keys::shards_of_job(&id)).await }
        })
        .buffered(16)
        .collect()
        .await;
    for ((job, rev), shards) in jobs.into_iter().zip(shard_lists) {
        let id = job.id.clone();
        let result = match shards {
            Ok(shards) => reconcile_job(ctx, job, rev, shards, &mut observed).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            tracing::warn!(job = %id, error = %e, "could not reconcile job");
        }
    }
    Ok(())
}

/// Emits the job's root span, now that it has ended, with the ids its children used.
fn emit_root_span(job: &JobRecord) {
    if job.trace_id.is_empty() {
        return;
    }
    let at = |ms: i64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let name = job.kind.as_str();
    ferry_worker::logging::emit_span(
        name,
        Some((&job.trace_id, &job.root_span_id)),
        None,
        at(job.created_at_ms),
        at(job.finished_at_ms.max(job.created_at_ms)),
        vec![
            opentelemetry::KeyValue::new("ferry.job", job.id.clone()),
            opentelemetry::KeyValue::new("ferry.team", job.team.clone()),
            opentelemetry::KeyValue::new("ferry.app", job.app.clone()),
            opentelemetry::KeyValue::new("ferry.state", format!("{:?}", job.state)),
            opentelemetry::KeyValue::new("ferry.source_bytes", job.source_bytes as i64),
            opentelemetry::KeyValue::new("ferry.stored_bytes", job.stored_bytes as i64),
        ],
    );
}

/// Sets the live-workers gauge of every cluster (to 0 for clusters that lost all theirs).
fn count_workers(ctx: &Context, workers: &[WorkerRecord]) {
    let mut per_cluster: HashMap<&str, i64> = HashMap::new();
    for w in workers {
        *per_cluster.entry(w.cluster.as_str()).or_default() += 1;
    }
    // Clusters seen before but now empty keep their series, at 0.
    let gauge = &ctx.metrics.workers;
    let mut seen: Vec<String> = Vec::new();
    for (cluster, n) in &per_cluster {
        gauge
            .get_or_create(&crate::metrics::Cluster {
                cluster: (*cluster).to_owned(),
            })
            .set(*n);
        seen.push((*cluster).to_owned());
    }
    if let Ok(mut known) = ctx.metrics.clusters_seen.lock() {
        for cluster in known.iter() {
            if !seen.contains(cluster) {
                gauge
                    .get_or_create(&crate::metrics::Cluster {
                        cluster: cluster.clone(),
                    })
                    .set(0);
            }
        }
        for c in seen {
            if !known.contains(&c) {
                known.push(c);
            }
        }
    }
}

async fn save_shard(ctx: &Context, shard: &ShardRecord, rev: i64) -> Result<bool> {
    let key = keys::shard(&shard.job_id, &shard.id);
    Ok(ctx
        .store
        .txn(
            vec![Condition::ModRevision(key.clone(), rev)],
            vec![Op::put_json(key, shard)],
        )
        .await?)
}

async fn save_job(ctx: &Context, job: &JobRecord, rev: i64) -> Result<bool> {
    let key = keys::job(&job.id);
    let saved = ctx
        .store
        .txn(
            vec![Condition::ModRevision(key.clone(), rev)],
            vec![Op::put_json(key, job)],
        )
        .await?;
    if saved {
        ctx.notify();
        if job.state.is_final() {
            emit_root_span(job);
            ctx.metrics
                .jobs_finished
                .get_or_create(&crate::metrics::KindState {
                    kind: crate::metrics::kind_label(job.kind),
                    state: crate::metrics::state_label(job.state),
                })
                .inc();
        }
    }
    Ok(saved)
}

async fn reconcile_job(
    ctx: &Context,
    mut job: JobRecord,
    mut rev: i64,
    current: Vec<(ShardRecord, i64)>,
    observed: &mut Observed,
) -> Result<()> {
    if job.state == JobState::Pending {
        job.state = JobState::Running;
        job.started_at_ms = now_ms();
        if !save_job(ctx, &job, rev).await? {
            return Ok(());
        }
        ctx.metrics
            .jobs_started
            .get_or_create(&crate::metrics::Kind {
                kind: crate::metrics::kind_label(job.kind),
            })
            .inc();
        rev = ctx
            .store
            .get(&keys::job(&job.id))
            .await?
            .map(|kv| kv.mod_revision)
            .unwrap_or(rev);
    }
    if job.cancel_requested {
        let message = match job.kind {
            JobKind::Backup => "cancelled; nothing was kept",
            JobKind::Restore => "cancelled; the target may hold part of the restored data",
            JobKind::Verify => "cancelled",
        };
        return stop_job(ctx, job, rev, JobState::Cancelled, message.into()).await;
    }
    if job.restore.as_ref().is_some_and(|p| p.awaits_backup) {
        // A migration's restore: nothing to do until its backup completed.
        return match crate::jobs::start_awaited_restore(ctx, &mut job, rev).await? {
            Ok(Some(message)) if job.message != message => {
                job.message = message;
                save_job(ctx, &job, rev).await.map(|_| ())
            }
            Ok(_) => Ok(()),
            Err(message) => stop_job(ctx, job, rev, JobState::Failed, message).await,
        };
    }
    if let (Some(sid), false) = (job.safety_backup.clone(), job.safety_done) {
        // An in-place restore writes nothing until its safety backup is complete.
        let safety = crate::store::get_json::<JobRecord>(&*ctx.store, &keys::job(&sid))
            .await?
            .map(|(j, _)| j);
        match safety.map(|s| s.state) {
            Some(JobState::Completed) => {
                job.safety_done = true;
                save_job(ctx, &job, rev).await?;
                return Ok(()); // the next pass starts the restore proper
            }
            Some(state) if !state.is_final() => {
                let message = format!("waiting for the safety backup {sid} of the target");
                if job.message != message {
                    job.message = message;
                    save_job(ctx, &job, rev).await?;
                }
                return Ok(());
            }
            other => {
                let message = format!(
                    "the safety backup {sid} ended {}; nothing was restored",
                    other
                        .map(|s| format!("{s:?}"))
                        .unwrap_or_else(|| "missing".into())
                );
                return stop_job(ctx, job, rev, JobState::Failed, message).await;
            }
        }
    }
    let now = now_ms();
    let mut waiting_for = None;
    let mut shards = Vec::new();
    let mut planned = Vec::new();
    for (mut shard, srev) in current {
        match shard.state {
            ShardState::Assigned => {
                let held = observed
                    .assignments
                    .get(&(job.id.clone(), shard.id.clone()))
                    .is_some_and(|(w, a)| *w == shard.worker && *a == shard.attempt);
                if !held {
                    requeue_lost(ctx, &mut shard, srev).await?;
                }
            }
            ShardState::Pending if now >= shard.not_before_ms => {
                let kind = (
                    job.cluster.clone(),
                    shard.node.clone(),
                    shard.kind.clone(),
                    shard.op.as_str(),
                );
                if observed.saturated.contains(&kind) {
                    shards.push(shard);
                    continue;
                }
                match pick_worker(&job, &shard, observed) {
                    Some(worker) => {
                        // Counted now, so that the next pick spreads the load.
                        *observed.load.entry(worker.id.clone()).or_default() += 1;
                        planned.push((shard.clone(), srev, worker));
                    }
                    // Every worker that could run it is busy: it simply waits its turn (nothing
                    // is written, so a long queue costs no store traffic).
                    None if observed.workers.iter().any(|w| eligible(&job, &shard, w)) => {
                        observed.saturated.insert(kind);
                    }
                    // No live worker could run it at all: that is what the unschedulable
                    // timeout is for.
                    None => {
                        waiting_for = Some(describe_wanted(&job, &shard));
                        wait_for_worker(ctx, &mut shard, srev, &job).await?;
                    }
                }
            }
            _ => {}
        }
        shards.push(shard);
    }
    assign_all(ctx, &job, planned, observed).await?;
    let message = match &waiting_for {
        Some(w) => format!("waiting for {w}"),
        None => String::new(),
    };
    if shards.iter().all(|s| s.state.is_final()) {
        return finish(ctx, job, rev, shards).await;
    }
    if job.message != message {
        job.message = message;
        save_job(ctx, &job, rev).await?;
    }
    Ok(())
}

async fn requeue_lost(ctx: &Context, shard: &mut ShardRecord, rev: i64) -> Result<()> {
    let lost = shard.worker.clone();
    if shard.attempt >= MAX_ATTEMPTS {
        shard.state = ShardState::Failed;
        shard.finished_at_ms = now_ms();
        shard.error = format!(
            "handed out {MAX_ATTEMPTS} times without finishing; the last worker ({lost}) vanished"
        );
    } else {
        shard.state = ShardState::Pending;
        shard.error = format!(
            "worker {lost} stopped responding during attempt {}",
            shard.attempt
        );
    }
    tracing::warn!(job = %shard.job_id, shard = %shard.id, attempt = shard.attempt,
        worker = %lost, "worker lost; shard re-queued");
    ctx.metrics.lease_expiries.inc();
    if save_shard(ctx, shard, rev).await? {
        ctx.notify();
    }
    Ok(())
}

fn describe_wanted(job: &JobRecord, shard: &ShardRecord) -> String {
    let mut wanted = format!("a worker of cluster {:?}", job.cluster);
    if let Some(node) = &shard.node {
        wanted.push_str(&format!(" on node {node:?}"));
    }
    let tools: Vec<String> = required_tools(&shard.resource, shard.op)
        .iter()
        .map(|any| any.join(" or "))
        .collect();
    if !tools.is_empty() {
        wanted.push_str(&format!(" with {}", tools.join(" and ")));
    }
    wanted
}

async fn wait_for_worker(
    ctx: &Context,
    shard: &mut ShardRecord,
    rev: i64,
    job: &JobRecord,
) -> Result<()> {
    let now = now_ms();
    if shard.waiting_since_ms == 0 {
        shard.waiting_since_ms = now;
    } else if now - shard.waiting_since_ms >= ctx.settings.unschedulable_timeout.as_millis() as i64
    {
        shard.state = ShardState::Failed;
        shard.finished_at_ms = now;
        shard.error = format!(
            "no live worker could take this shard for {} (it needs {})",
            humantime::format_duration(ctx.settings.unschedulable_timeout),
            describe_wanted(job, shard)
        );
    } else {
        return Ok(());
    }
    save_shard(ctx, shard, rev).await?;
    Ok(())
}

/// Whether a worker could run the shard at all (its cluster, node and tools), busy or not.
fn eligible(job: &JobRecord, shard: &ShardRecord, w: &WorkerRecord) -> bool {
    w.cluster == job.cluster
        && shard.node.as_ref().is_none_or(|n| *n == w.node)
        && required_tools(&shard.resource, shard.op)
            .iter()
            .all(|any| any.iter().any(|t| w.tools.contains_key(*t)))
}

/// The least loaded live worker that may run the shard, preferring one other than the worker
/// that ran its previous attempt.
fn pick_worker(job: &JobRecord, shard: &ShardRecord, observed: &Observed) -> Option<WorkerRecord> {
    observed
        .workers
        .iter()
        .filter(|w| eligible(job, shard, w))
        .filter(|w| observed.load.get(&w.id).copied().unwrap_or(0) < w.max_shards)
        .min_by_key(|w| {
            (
                w.id == shard.worker,
                observed.load.get(&w.id).copied().unwrap_or(0),
            )
        })
        .cloned()
}

/// Shards handed out per store transaction: one transaction per shard bounds a pass by the
/// store's write latency (an etcd commit waits for an fsync); a batch shares one. 32 shards make
/// 64 writes and at most 64 conditions, within etcd's default limit of 128 per transaction.
const ASSIGN_BATCH: usize = 32;

/// A shard about to be handed to a worker: the shard as read (and its revision), the worker.
type Planned = (ShardRecord, i64, WorkerRecord);

/// Hands out planned shards, a batch per transaction. When a batch is refused (a worker's lease
/// ended or a shard changed meanwhile), its shards are tried one by one, so one stale shard
/// does not hold the others back; what is refused then waits for the next pass.
async fn assign_all(
    ctx: &Context,
    job: &JobRecord,
    planned: Vec<Planned>,
    observed: &mut Observed,
) -> Result<()> {
    let Some(location) = observed.locations.get(&job.storage).cloned() else {
        for (mut shard, rev, _) in planned {
            shard.state = ShardState::Failed;
            shard.error = format!("storage location {:?} no longer exists", job.storage);
            save_shard(ctx, &shard, rev).await?;
        }
        return Ok(());
    };
    for batch in planned.chunks(ASSIGN_BATCH) {
        if try_assign(ctx, job, batch, &location, observed).await? || batch.len() == 1 {
            continue;
        }
        for one in batch {
            try_assign(ctx, job, std::slice::from_ref(one), &location, observed).await?;
        }
    }
    Ok(())
}

/// One transaction assigning `batch` (each shard's next attempt, on the worker's lease); on
/// success the tasks are delivered. False when the store refused it.
async fn try_assign(
    ctx: &Context,
    job: &JobRecord,
    batch: &[Planned],
    location: &StorageLocation,
    observed: &mut Observed,
) -> Result<bool> {
    let now = now_ms();
    let mut conditions = Vec::with_capacity(batch.len() * 2);
    let mut ops = Vec::with_capacity(batch.len() * 2);
    let mut assigned = Vec::with_capacity(batch.len());
    for (shard, rev, worker) in batch {
        let mut shard = shard.clone();
        shard.attempt += 1;
        shard.attempt_started_ms = now;
        shard.state = ShardState::Assigned;
        shard.worker = worker.id.clone();
        shard.waiting_since_ms = 0;
        if shard.started_at_ms == 0 {
            shard.started_at_ms = now;
        }
        if shard.op == ShardOp::Backup {
            shard.object_key =
                layout::shard_key(&job.team, &job.app, &job.id, &shard.id, shard.attempt);
        }
        let shard_key = keys::shard(&job.id, &shard.id);
        let alive = Workers::alive_condition(&worker.id);
        if !conditions.contains(&alive) {
            conditions.push(alive);
        }
        conditions.push(Condition::ModRevision(shard_key.clone(), *rev));
        ops.push(Op::put_json(shard_key, &shard));
        ops.push(Op::Put {
            key: keys::assignment(&worker.id, &job.id, &shard.id),
            value: serde_json::to_vec(&AssignmentRecord {
                attempt: shard.attempt,
            })
            .unwrap_or_default(),
            lease: worker.lease,
        });
        assigned.push((shard, worker));
    }
    match ctx.store.txn(conditions, ops).await {
        Ok(true) => {}
        // A worker's lease ended in between, or someone else changed a shard.
        Ok(false) | Err(crate::store::StoreError::LeaseNotFound(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    for (shard, worker) in assigned {
        deliver(ctx, job, &shard, worker, location.clone(), observed);
    }
    ctx.notify();
    Ok(true)
}

/// Sends an assigned shard's task to its worker, with the trace context of its hand-out span.
fn deliver(
    ctx: &Context,
    job: &JobRecord,
    shard: &ShardRecord,
    worker: &WorkerRecord,
    location: StorageLocation,
    observed: &mut Observed,
) {
    observed.assignments.insert(
        (job.id.clone(), shard.id.clone()),
        (worker.id.clone(), shard.attempt),
    );
    tracing::info!(job = %job.id, shard = %shard.id, attempt = shard.attempt, op = shard.op.as_str(),
        worker = %worker.id, "shard assigned");
    let mut task = task_for(job, shard, location);
    let now = std::time::SystemTime::now();
    task.traceparent = ferry_worker::logging::emit_span(
        "assign",
        None,
        Some(&ferry_worker::logging::traceparent(
            &job.trace_id,
            &job.root_span_id,
        )),
        now,
        now,
        vec![
            opentelemetry::KeyValue::new("ferry.job", job.id.clone()),
            opentelemetry::KeyValue::new("ferry.shard", shard.id.clone()),
            opentelemetry::KeyValue::new("ferry.attempt", i64::from(shard.attempt)),
            opentelemetry::KeyValue::new("ferry.worker", worker.id.clone()),
            opentelemetry::KeyValue::new("ferry.op", shard.op.as_str()),
        ],
    );
    ctx.workers
        .deliver(&worker.id, Delivery::Assign(Box::new(task)));
}

/// The task a worker receives for the current attempt of a shard.
pub fn task_for(job: &JobRecord, shard: &ShardRecord, storage: StorageLocation) -> ShardTask {
    let (rewrites, overwrite) = match &job.restore {
        Some(r) => (r.rewrites.clone(), r.overwrite),
        None => (Vec::new(), false),
    };
    let hooks = match (job.kind, job.spec.component(&shard.component)) {
        (JobKind::Backup, Some(c)) => c.hooks.clone(),
        _ => Default::default(),
    };
    ShardTask {
        job_id: job.id.clone(),
        shard_id: shard.id.clone(),
        attempt: shard.attempt,
        op: shard.op,
        component: shard.component.clone(),
        resource: shard.resource.clone(),
        storage,
        object_key: shard.object_key.clone(),
        expected_sha256: shard.expected_sha256.clone(),
        overwrite,
        rewrites,
        hooks,
        missing_ok: shard.missing_ok,
        traceparent: None,
    }
}

/// The tasks a worker holds, to re-send when its stream (re)opens.
pub async fn tasks_of_worker(ctx: &Context, worker: &str) -> Result<Vec<ShardTask>> {
    let mut out = Vec::new();
    for kv in ctx.store.list(&keys::assignments_of_worker(worker)).await? {
        let Some((_, job_id, shard_id)) = keys::parse_assignment(&kv.key) else {
            continue;
        };
        let Some((job, _)) =
            crate::store::get_json::<JobRecord>(&*ctx.store, &keys::job(job_id)).await?
        else {
            continue;
        };
        let Some((shard, _)) =
            crate::store::get_json::<ShardRecord>(&*ctx.store, &keys::shard(job_id, shard_id))
                .await?
        else {
            continue;
        };
        let Some(location) = apps::find_storage(&*ctx.store, &job.storage).await? else {
            continue;
        };
        if shard.state == ShardState::Assigned && shard.worker == worker {
            out.push(task_for(&job, &shard, location));
        }
    }
    Ok(out)
}

/// Stops every unfinished shard of a job (telling its worker), then ends the job in `state`:
/// a stopped backup leaves nothing in storage.
async fn stop_job(
    ctx: &Context,
    mut job: JobRecord,
    rev: i64,
    state: JobState,
    message: String,
) -> Result<()> {
    let now = now_ms();
    for (mut shard, srev) in
        list_json::<ShardRecord>(&*ctx.store, &keys::shards_of_job(&job.id)).await?
    {
        if shard.state.is_final() {
            continue;
        }
        if shard.state == ShardState::Assigned {
            ctx.workers.deliver(
                &shard.worker,
                Delivery::Cancel(ferry_proto::model::ShardKey {
                    job_id: shard.job_id.clone(),
                    shard_id: shard.id.clone(),
                    attempt: shard.attempt,
                }),
            );
        }
        shard.state = ShardState::Cancelled;
        shard.error = "cancelled".into();
        shard.finished_at_ms = now;
        let key = keys::shard(&job.id, &shard.id);
        let ops = vec![
            Op::put_json(key.clone(), &shard),
            Op::delete(keys::assignment(&shard.worker, &shard.job_id, &shard.id)),
        ];
        ctx.store
            .txn(vec![Condition::ModRevision(key, srev)], ops)
            .await?;
    }
    if job.kind == JobKind::Backup {
        crate::jobs::delete_objects(ctx, &job).await?;
    }
    job.state = state;
    job.finished_at_ms = now;
    job.message = message;
    if save_job(ctx, &job, rev).await? {
        tracing::info!(job = %job.id, state = ?job.state, message = %job.message, "job stopped");
    }
    Ok(())
}

fn shard_errors(shards: &[ShardRecord]) -> String {
    shards
        .iter()
        .filter(|s| s.state != ShardState::Succeeded)
        .map(|s| format!("{}: {}", s.id, s.error))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn finish(ctx: &Context, job: JobRecord, rev: i64, shards: Vec<ShardRecord>) -> Result<()> {
    match job.kind {
        JobKind::Backup => commit_backup(ctx, job, rev, shards).await,
        JobKind::Restore => finish_restore(ctx, job, rev, shards).await,
        JobKind::Verify => finish_verify(ctx, job, rev, shards).await,
    }
}

/// Writes the manifest (the commit point) and closes the backup. Objects of attempts that lost
/// are removed, so the backup's directory holds exactly what the manifest names.
async fn commit_backup(
    ctx: &Context,
    mut job: JobRecord,
    rev: i64,
    shards: Vec<ShardRecord>,
) -> Result<()> {
    let location = apps::find_storage(&*ctx.store, &job.storage)
        .await?
        .ok_or_else(|| Error::FailedPrecondition(format!("storage {:?} is gone", job.storage)))?;
    let store = ferry_storage::open(&location)?;
    let ok: Vec<&ShardRecord> = shards
        .iter()
        .filter(|s| s.state == ShardState::Succeeded)
        .collect();
    let now = now_ms();
    job.source_bytes = ok
        .iter()
        .filter_map(|s| s.outcome.as_ref())
        .map(|o| o.source_bytes)
        .sum();
    job.stored_bytes = ok
        .iter()
        .filter_map(|s| s.outcome.as_ref())
        .map(|o| o.stored_bytes)
        .sum();
    job.finished_at_ms = now;
    if ok.is_empty() {
        job.state = JobState::Failed;
        job.message = format!("every shard failed: {}", shard_errors(&shards));
    } else {
        job.state = if ok.len() == shards.len() {
            JobState::Completed
        } else {
            JobState::PartiallyFailed
        };
        job.message = shard_errors(&shards);
        let manifest = build_manifest(&job, &shards);
        let key = layout::manifest_key(&job.team, &job.app, &job.id);
        store.put_bytes(&key, manifest.to_json()).await?;
    }
    // Remove what no manifest names: uploads of lost attempts that never finished (their writer
    // can no longer commit them), archives of attempts that lost, everything of a failed backup.
    let keep: Vec<&str> = ok
        .iter()
        .filter(|s| !is_absent(s))
        .map(|s| s.object_key.as_str())
        .collect();
    let dir = format!(
        "{}shards/",
        layout::backup_dir(&job.team, &job.app, &job.id)
    );
    if let Err(e) = store.abort_incomplete(&dir).await {
        tracing::warn!(job = %job.id, error = %e, "could not abort unfinished uploads");
    }
    for object in store.list(&dir).await? {
        if !keep.contains(&object.key.as_str())
            && let Err(e) = store.delete(&object.key).await
        {
            tracing::warn!(job = %job.id, key = %object.key, error = %e, "could not remove a stray archive");
        }
    }
    if save_job(ctx, &job, rev).await? {
        tracing::info!(job = %job.id, state = ?job.state, bytes = job.source_bytes, stored = job.stored_bytes, "backup finished");
    }
    Ok(())
}

/// A shard whose resource held nothing (a safety backup of a target that did not exist).
fn is_absent(shard: &ShardRecord) -> bool {
    shard.outcome.as_ref().is_some_and(|o| o.absent)
}

fn build_manifest(job: &JobRecord, shards: &[ShardRecord]) -> BackupManifest {
    BackupManifest {
        format: MANIFEST_FORMAT.to_owned(),
        version: MANIFEST_VERSION,
        id: job.id.clone(),
        team: job.team.clone(),
        app: job.app.clone(),
        cluster: job.cluster.clone(),
        storage: job.storage.clone(),
        state: format!("{:?}", job.state),
        created_at_ms: job.created_at_ms,
        completed_at_ms: job.finished_at_ms,
        expires_at_ms: job.expires_at_ms,
        labels: job.labels.clone(),
        trigger: job.trigger.clone(),
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
        app_spec: job.spec.clone(),
        shards: shards
            .iter()
            .filter(|s| !is_absent(s))
            .map(|s| {
                let outcome = s.outcome.clone().unwrap_or_default();
                let ok = s.state == ShardState::Succeeded;
                ManifestShard {
                    id: s.id.clone(),
                    component: s.component.clone(),
                    kind: s.kind.clone(),
                    slot: s.slot.clone(),
                    resource: s.resource.describe(),
                    tool_version: outcome.tool_version,
                    attempt: s.attempt,
                    object_key: if ok {
                        s.object_key.clone()
                    } else {
                        String::new()
                    },
                    source_bytes: outcome.source_bytes,
                    stored_bytes: outcome.stored_bytes,
                    sha256: outcome.sha256,
                    worker: s.worker.clone(),
                    started_at_ms: s.started_at_ms,
                    finished_at_ms: s.finished_at_ms,
                    error: if ok { String::new() } else { s.error.clone() },
                }
            })
            .collect(),
    }
}

/// Ends a verify job: completed when every archive matched its checksum, failed naming the bad
/// ones otherwise.
async fn finish_verify(
    ctx: &Context,
    mut job: JobRecord,
    rev: i64,
    shards: Vec<ShardRecord>,
) -> Result<()> {
    let bad = shards
        .iter()
        .filter(|s| s.state != ShardState::Succeeded)
        .count();
    job.finished_at_ms = now_ms();
    job.stored_bytes = shards
        .iter()
        .filter_map(|s| s.outcome.as_ref())
        .map(|o| o.stored_bytes)
        .sum();
    if bad == 0 {
        job.state = JobState::Completed;
        job.message = format!("all {} archives match their checksums", shards.len());
    } else {
        job.state = JobState::Failed;
        job.message = format!(
            "{bad} of {} archives are bad: {}",
            shards.len(),
            shard_errors(&shards)
        );
    }
    save_job(ctx, &job, rev).await?;
    Ok(())
}

/// Ends the verify step (moving on to writing, or failing with nothing written), or ends the
/// restore and registers the target app.
async fn finish_restore(
    ctx: &Context,
    mut job: JobRecord,
    rev: i64,
    shards: Vec<ShardRecord>,
) -> Result<()> {
    let verifying = shards
        .iter()
        .any(|s| matches!(s.op, ShardOp::Verify { .. }));
    let all_ok = shards.iter().all(|s| s.state == ShardState::Succeeded);
    let now = now_ms();
    if verifying && all_ok {
        let mut ops = Vec::new();
        for s in &shards {
            let mut s = s.clone();
            s.op = ShardOp::Restore;
            s.state = ShardState::Pending;
            s.failures = 0;
            s.outcome = None;
            s.finished_at_ms = 0;
            ops.push(Op::put_json(keys::shard(&s.job_id, &s.id), &s));
        }
        job.message = "every archive verified; restoring".into();
        ops.push(Op::put_json(keys::job(&job.id), &job));
        let applied = ctx
            .store
            .txn(vec![Condition::ModRevision(keys::job(&job.id), rev)], ops)
            .await?;
        if applied {
            ctx.notify();
        }
        return Ok(());
    }
    job.finished_at_ms = now;
    if verifying {
        job.state = JobState::Failed;
        job.message = format!(
            "nothing was restored: the check before writing failed: {}",
            shard_errors(&shards)
        );
        save_job(ctx, &job, rev).await?;
        return Ok(());
    }
    let ok: Vec<&ShardRecord> = shards
        .iter()
        .filter(|s| s.state == ShardState::Succeeded)
        .collect();
    job.source_bytes = ok
        .iter()
        .filter_map(|s| s.outcome.as_ref())
        .map(|o| o.source_bytes)
        .sum();
    job.state = if all_ok {
        JobState::Completed
    } else if ok.is_empty() {
        JobState::Failed
    } else {
        JobState::PartiallyFailed
    };
    job.message = shard_errors(&shards);
    if !ok.is_empty() {
        // Restored config replaces the target's config, component by component.
        let mut spec = job.spec.clone();
        let configs: BTreeMap<&str, &serde_json::Value> = ok
            .iter()
            .filter_map(|s| Some((s.component.as_str(), s.outcome.as_ref()?.config.as_ref()?)))
            .collect();
        for c in &mut spec.components {
            if let Some(cfg) = configs.get(c.name.as_str()) {
                c.config = Some((*cfg).clone());
            }
        }
        apps::apply(&*ctx.store, &job.team, spec).await?;
    }
    if save_job(ctx, &job, rev).await? {
        tracing::info!(job = %job.id, state = ?job.state, "restore finished");
    }
    Ok(())
}
