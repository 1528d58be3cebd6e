//! The reconciler: one loop on the leader that moves every active job one step along its
//! procedure. A pass reads the active jobs (through the active index) and what the workers hold,
//! asks `jobs::phase::next` what each job needs, and applies that step with compare-and-swap
//! writes. Storage work (a backup's manifest, a migration's manifest read) runs off the pass, so
//! one slow location never delays another job's hand-outs. Every step is idempotent: a pass that
//! dies half-way, or a new leader, simply decides again.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::dispatch::{self, Observed};
use crate::error::Result;
use crate::jobs::phase::{self, Awaited, Phase, Seen, Step, Which, Work};
use crate::jobs::{self, backup, migrate, persist, restore};
use crate::keys;
use crate::records::{JobKind, JobRecord, JobState, ShardRecord, WorkerRecord};
use crate::store::{Condition, KeyValue, Op, get_json};
use crate::workers::Delivery;

pub use dispatch::tasks_of_worker;

/// Runs passes until cancelled: on every wake-up and at least every reconcile interval.
pub async fn run(ctx: Arc<Context>, cancel: CancellationToken) {
    if let Err(e) = persist::index_active_jobs(&ctx).await {
        tracing::warn!(error = %e, "building the active-job index failed; retrying at the next term");
    }
    loop {
        let started = std::time::Instant::now();
        tokio::select! {
            result = pass(&ctx) => if let Err(e) = result {
                tracing::warn!(error = %e, "reconcile pass failed; retrying");
            },
            _ = cancel.cancelled() => return,
        }
        ctx.metrics
            .reconcile_pass
            .observe(started.elapsed().as_secs_f64());
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

/// A job read for a pass: its record and revision, its shards with theirs.
type Loaded = (JobRecord, i64, Vec<(ShardRecord, i64)>);

/// Reads a job and its shards; a record that does not decode is skipped with a warning, so one
/// bad record never stops the others.
async fn load(ctx: &Context, id: String) -> Result<Option<Loaded>> {
    let Some(kv) = ctx.store.get(&keys::job(&id)).await? else {
        // Its index key outlived it (a delete between two writes): drop it.
        ctx.store.delete(&keys::active_job(&id)).await?;
        return Ok(None);
    };
    let job = match kv.decode::<JobRecord>() {
        Ok(job) => job,
        Err(e) => {
            tracing::warn!(job = %id, error = %e, "undecodable job record skipped");
            return Ok(None);
        }
    };
    let shards = ctx.store.list(&keys::shards_of_job(&id)).await?;
    let decode = |kv: KeyValue| match kv.decode::<ShardRecord>() {
        Ok(s) => Some((s, kv.mod_revision)),
        Err(e) => {
            tracing::warn!(key = %kv.key, error = %e, "undecodable shard record skipped");
            None
        }
    };
    Ok(Some((
        job,
        kv.mod_revision,
        shards.into_iter().filter_map(decode).collect(),
    )))
}

/// One pass over every active job.
pub async fn pass(ctx: &Arc<Context>) -> Result<()> {
    let ids = persist::active_ids(&*ctx.store).await?;
    let workers = ctx.workers.live().await?;
    count_workers(ctx, &workers);
    if ids.is_empty() {
        return Ok(());
    }
    let mut observed = dispatch::observe(ctx, workers).await?;
    // Jobs and their shards, read a few at a time: one read's latency per job in a row made a
    // pass over many jobs slow.
    let loaded: Vec<_> = futures::stream::iter(ids)
        .map(|id| load(ctx, id))
        .buffered(16)
        .collect()
        .await;
    for entry in loaded {
        match entry {
            Ok(Some((job, rev, shards))) => {
                let id = job.id.clone();
                if let Err(e) = advance(ctx, job, rev, shards, &mut observed).await {
                    tracing::warn!(job = %id, error = %e, "could not reconcile job");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not read a job"),
        }
    }
    Ok(())
}

/// The state of the job this one waits for, if it waits for one.
async fn awaited(ctx: &Context, job: &JobRecord) -> Result<Option<Awaited>> {
    let id = match job.phase {
        Phase::AwaitingBackup => job.restore.as_ref().map(|r| r.backup_id.clone()),
        Phase::SafetyBackup => job.safety_backup.clone(),
        _ => None,
    };
    let Some(id) = id else { return Ok(None) };
    Ok(Some(
        match get_json::<JobRecord>(&*ctx.store, &keys::job(&id)).await? {
            Some((j, _)) => Awaited::State(j.state),
            None => Awaited::Gone,
        },
    ))
}

/// Applies the next step of one job.
async fn advance(
    ctx: &Arc<Context>,
    mut job: JobRecord,
    rev: i64,
    current: Vec<(ShardRecord, i64)>,
    observed: &mut Observed,
) -> Result<()> {
    let shards: Vec<ShardRecord> = current.iter().map(|(s, _)| s.clone()).collect();
    let seen = Seen {
        awaited: awaited(ctx, &job).await?,
        busy: ctx.is_busy(&job.id),
    };
    match phase::next(&job, &shards, &seen) {
        Step::Start => {
            job.state = JobState::Running;
            job.started_at_ms = ferry_model::now_ms();
            if persist::save(ctx, &job, rev).await? {
                let kind = crate::metrics::kind_label(job.kind);
                ctx.metrics
                    .jobs_started
                    .get_or_create(&crate::metrics::Kind { kind })
                    .inc();
            }
        }
        Step::Wait(message) => show(ctx, job, rev, message).await?,
        Step::Enter(phase, message) => {
            tracing::info!(job = %job.id, from = ?job.phase, to = ?phase, "job moves on");
            job.phase = phase;
            job.message = message;
            persist::save(ctx, &job, rev).await?;
        }
        Step::Dispatch => {
            let waiting = dispatch::run(ctx, &job, current, observed).await?;
            let message = waiting
                .map(|w| format!("waiting for {w}"))
                .unwrap_or_default();
            show(ctx, job, rev, message).await?;
        }
        Step::Skip(ids, reason) => {
            let now = ferry_model::now_ms();
            for (shard, srev) in current.iter().filter(|(s, _)| ids.contains(&s.id)) {
                dispatch::save_shard(ctx, &crate::shards::skip(shard, &reason, now), *srev).await?;
            }
        }
        Step::Convert => convert(ctx, &job, &current).await?,
        Step::Stop(which) => stop(ctx, &job, &current, which).await?,
        Step::Work(work) => spawn_work(ctx.clone(), job, work),
        Step::Finish(state, message) => {
            persist::save(ctx, &backup::finished(job, state, message), rev).await?;
        }
    }
    Ok(())
}

/// Updates the message a job shows, when it changed.
async fn show(ctx: &Context, mut job: JobRecord, rev: i64, message: String) -> Result<()> {
    if job.message != message {
        job.message = message;
        persist::save(ctx, &job, rev).await?;
    }
    Ok(())
}

/// Moves a restore's checked shards on to the phase's step (staging a volume, or writing), a
/// batch per transaction.
async fn convert(ctx: &Context, job: &JobRecord, current: &[(ShardRecord, i64)]) -> Result<()> {
    use ferry_model::task::ShardOp;
    let staging = job.phase == Phase::Staging;
    let batch: Vec<&(ShardRecord, i64)> = current
        .iter()
        .filter(|(s, _)| match (staging, s.op) {
            (true, ShardOp::Verify { .. }) => job.phase.admits(s),
            (false, ShardOp::Verify { .. } | ShardOp::Stage) => true,
            _ => false,
        })
        .collect();
    for chunk in batch.chunks(persist::WRITE_BATCH / 2) {
        let mut conditions = Vec::new();
        let mut ops = Vec::new();
        for (shard, rev) in chunk {
            let key = keys::shard(&shard.job_id, &shard.id);
            conditions.push(Condition::ModRevision(key.clone(), *rev));
            let next = if staging {
                crate::shards::to_stage(shard)
            } else {
                crate::shards::to_restore(shard)
            };
            ops.push(Op::put_json(key, &next));
        }
        ctx.store.txn(conditions, ops).await?;
    }
    ctx.notify();
    Ok(())
}

/// Cancels unfinished shards (of the phase, or all), telling their workers.
async fn stop(
    ctx: &Context,
    job: &JobRecord,
    current: &[(ShardRecord, i64)],
    which: Which,
) -> Result<()> {
    let now = ferry_model::now_ms();
    for (shard, rev) in current {
        if shard.state.is_final() || (which == Which::Phase && !job.phase.admits(shard)) {
            continue;
        }
        if shard.state == crate::records::ShardState::Assigned {
            ctx.workers.deliver(
                &shard.worker,
                Delivery::Cancel(ferry_proto::model::ShardKey {
                    job_id: shard.job_id.clone(),
                    shard_id: shard.id.clone(),
                    attempt: shard.attempt,
                }),
            );
        }
        let key = keys::shard(&job.id, &shard.id);
        let ops = vec![
            Op::put_json(key.clone(), &crate::shards::cancel(shard, now)),
            Op::delete(keys::assignment(&shard.worker, &shard.job_id, &shard.id)),
        ];
        ctx.store
            .txn(vec![Condition::ModRevision(key, *rev)], ops)
            .await?;
    }
    ctx.notify();
    Ok(())
}

/// Runs storage and catalog work of a job off the pass; the job counts as busy meanwhile. On
/// an error nothing is saved and the next pass tries again.
fn spawn_work(ctx: Arc<Context>, job: JobRecord, work: Work) {
    if !ctx.start_work(&job.id) {
        return;
    }
    tokio::spawn(async move {
        let id = job.id.clone();
        let result = do_work(&ctx, job, work).await;
        if let Err(e) = &result {
            tracing::warn!(job = %id, ?work, error = %e, "job work failed; retrying after a backoff");
        }
        ctx.end_work(&id, result.is_ok());
        ctx.notify();
    });
}

async fn do_work(ctx: &Context, job: JobRecord, work: Work) -> Result<()> {
    let shards = jobs::shards_of(ctx, &job.id).await?;
    let ended = match (work, job.kind) {
        (Work::LoadShards, _) => match migrate::load_shards(ctx, &job).await? {
            Ok(()) => {
                let message = "the backup completed; verifying its archives".to_owned();
                return save_latest(ctx, &job.id, |j| {
                    j.phase = Phase::Verifying;
                    j.message = message.clone();
                })
                .await;
            }
            Err(message) => backup::finished(job, JobState::Failed, message),
        },
        (Work::Commit, JobKind::Backup) => backup::commit(ctx, job, shards).await?,
        (Work::Commit, _) => restore::commit(ctx, job, &shards).await?,
    };
    tracing::info!(job = %ended.id, state = ?ended.state, bytes = ended.source_bytes,
        stored = ended.stored_bytes, "job finished");
    save_latest(ctx, &ended.id.clone(), move |j| *j = ended.clone()).await
}

/// Applies `change` to the job as stored now (work took a while; a cancel may have come).
async fn save_latest(ctx: &Context, id: &str, change: impl Fn(&mut JobRecord)) -> Result<()> {
    for _ in 0..8 {
        let Some((mut job, rev)) = get_json::<JobRecord>(&*ctx.store, &keys::job(id)).await? else {
            return Ok(());
        };
        let cancel = job.cancel_requested;
        change(&mut job);
        job.cancel_requested |= cancel;
        if persist::save(ctx, &job, rev).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Called once when a job ended: its root span (with the ids its children used) and metrics.
pub fn job_ended(ctx: &Context, job: &JobRecord) {
    ctx.metrics
        .jobs_finished
        .get_or_create(&crate::metrics::KindState {
            kind: crate::metrics::kind_label(job.kind),
            state: crate::metrics::state_label(job.state),
        })
        .inc();
    if job.trace_id.is_empty() {
        return;
    }
    let at = |ms: i64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    ferry_telemetry::logging::emit_span(
        job.kind.as_str(),
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
    let mut per_cluster: HashMap<String, i64> = HashMap::new();
    for w in workers {
        *per_cluster.entry(w.cluster.clone()).or_default() += 1;
    }
    if let Ok(mut known) = ctx.metrics.clusters_seen.lock() {
        for c in per_cluster.keys() {
            if !known.contains(c) {
                known.push(c.clone());
            }
        }
        for cluster in known.iter() {
            let n = per_cluster.get(cluster).copied().unwrap_or(0);
            ctx.metrics
                .workers
                .get_or_create(&crate::metrics::Cluster {
                    cluster: cluster.clone(),
                })
                .set(n);
        }
    }
}
