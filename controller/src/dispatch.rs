//! Hand-outs: what a pass observes of the workers (live sessions, their assignments, loads), and
//! for one job's phase: shards whose worker vanished are re-queued, due shards are placed
//! (`crate::placement`) and handed out a batch per store transaction, shards nobody can take
//! wait for the unschedulable timeout. Every shard change goes through `crate::shards`.

use std::collections::HashMap;

use ferry_model::layout;
use ferry_model::now_ms;
use ferry_model::storage::StorageLocation;
use ferry_model::task::{ShardOp, ShardTask};

use crate::apps;
use crate::context::Context;
use crate::error::Result;
use crate::keys;
use crate::placement::{Placement, Pool, describe_wanted};
use crate::records::{AssignmentRecord, JobRecord, ShardRecord, ShardState, WorkerRecord};
use crate::shards;
use crate::store::{Condition, Op};
use crate::workers::{Delivery, Workers};

/// What one pass knows about the workers.
pub struct Observed {
    pub pool: Pool,
    /// (job, shard) → (worker, attempt) of every live assignment.
    pub assignments: HashMap<(String, String), (String, u32)>,
    pub locations: HashMap<String, StorageLocation>,
}

/// Reads the live assignments and storage locations beside the live workers.
pub async fn observe(ctx: &Context, workers: Vec<WorkerRecord>) -> Result<Observed> {
    let mut observed = Observed {
        pool: Pool {
            workers,
            ..Default::default()
        },
        assignments: HashMap::new(),
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
        let Ok(record) = kv.decode::<AssignmentRecord>() else {
            tracing::warn!(key = %kv.key, "undecodable assignment skipped");
            continue;
        };
        if !record.stream {
            *observed.pool.load.entry(worker.to_owned()).or_default() += 1;
        }
        observed.assignments.insert(
            (job.to_owned(), shard.to_owned()),
            (worker.to_owned(), record.attempt),
        );
    }
    Ok(observed)
}

/// Writes a shard that was read at `rev`; false when it changed meanwhile.
pub async fn save_shard(ctx: &Context, shard: &ShardRecord, rev: i64) -> Result<bool> {
    let key = keys::shard(&shard.job_id, &shard.id);
    let saved = ctx
        .store
        .txn(
            vec![Condition::ModRevision(key.clone(), rev)],
            vec![Op::put_json(key, shard)],
        )
        .await?;
    if saved {
        ctx.notify();
    }
    Ok(saved)
}

/// Moves the shards of the job's current phase: re-queues lost ones, hands out due ones.
/// Returns what the job waits for when no live worker can take one of them.
pub async fn run(
    ctx: &Context,
    job: &JobRecord,
    current: Vec<(ShardRecord, i64)>,
    observed: &mut Observed,
) -> Result<Option<String>> {
    let now = now_ms();
    let mut waiting_for = None;
    let mut planned = Vec::new();
    for (shard, rev) in current {
        if !job.phase.admits(&shard) {
            continue;
        }
        match shard.state {
            ShardState::Assigned => {
                let held = observed
                    .assignments
                    .get(&(job.id.clone(), shard.id.clone()))
                    .is_some_and(|(w, a)| *w == shard.worker && *a == shard.attempt);
                if !held {
                    tracing::warn!(job = %shard.job_id, shard = %shard.id, attempt = shard.attempt,
                        worker = %shard.worker, "worker lost; shard re-queued");
                    ctx.metrics.lease_expiries.inc();
                    save_shard(ctx, &shards::requeue(&shard, now), rev).await?;
                }
            }
            ShardState::Pending if shards::due(&shard, now) => {
                match observed.pool.place(&job.cluster, &shard) {
                    Placement::Worker(worker) => planned.push((shard, rev, worker)),
                    Placement::Busy => {}
                    Placement::Nobody => {
                        let wanted = describe_wanted(&job.cluster, &shard);
                        let timeout = ctx.settings.unschedulable_timeout.as_millis() as i64;
                        if let Some(next) =
                            shards::unschedulable(&shard, now, timeout, || wanted.clone())
                        {
                            save_shard(ctx, &next, rev).await?;
                        }
                        waiting_for = Some(wanted);
                    }
                }
            }
            _ => {}
        }
    }
    assign_all(ctx, job, planned, observed).await?;
    Ok(waiting_for)
}

/// Shards handed out per store transaction: one transaction per shard bounds a pass by the
/// store's write latency (an etcd commit waits for an fsync); a batch shares one. 32 shards make
/// 64 writes and at most 64 conditions, within etcd's limit of 128 per transaction.
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
        let reason = format!("storage location {:?} no longer exists", job.storage);
        for (shard, rev, _) in planned {
            save_shard(ctx, &shards::skip(&shard, &reason, now_ms()), rev).await?;
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
        let writes_archive = shard.op == ShardOp::Backup && shard.resource.hook().is_none();
        let attempt = shard.attempt + 1;
        let key = writes_archive.then(|| {
            if into_repository(job, shard) {
                layout::index_key(&job.team, &job.app, &job.id, &shard.id, attempt)
            } else {
                let key = layout::shard_key(&job.team, &job.app, &job.id, &shard.id, attempt);
                match job.sealed {
                    Some(_) => format!("{key}{}", layout::SEALED_SUFFIX),
                    None => key,
                }
            }
        });
        let shard = shards::assign(shard, &worker.id, now, key);
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
                stream: shard.op == ShardOp::Stream,
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
    task.traceparent = ferry_telemetry::logging::emit_span(
        "assign",
        None,
        Some(&ferry_telemetry::logging::traceparent(
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

/// Whether a backup shard goes into the location's repository: volumes do, unless the backup
/// asked for self-contained archives (`--full`) or its location encrypts (the repository does
/// not encrypt chunks yet: an encrypted location keeps every volume as one age file).
pub fn into_repository(job: &JobRecord, shard: &ShardRecord) -> bool {
    !job.full
        && job.sealed.is_none()
        && matches!(shard.resource, ferry_model::task::Resource::Volume { .. })
}

/// The task a worker receives for the current attempt of a shard.
pub fn task_for(job: &JobRecord, shard: &ShardRecord, storage: StorageLocation) -> ShardTask {
    let (rewrites, overwrite, numeric_owner) = match &job.restore {
        Some(r) => (r.rewrites.clone(), r.overwrite, r.numeric_owner),
        None => (Vec::new(), false, false),
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
        expected_bytes: shard.expected_bytes,
        overwrite,
        numeric_owner,
        staged: shard.staged.clone(),
        rewrites,
        repo: layout::is_index_key(&shard.object_key)
            .then(|| ferry_model::task::RepoTask::for_index(&shard.object_key))
            .flatten()
            .map(|repo| ferry_model::task::RepoTask {
                parent_index: shard.parent_index.clone(),
                ..repo
            }),
        missing_ok: shard.missing_ok,
        traceparent: None,
        data_only: job.restore.as_ref().is_some_and(|r| r.data_only),
        sealed: job.sealed.clone(),
        pitr: shard.pitr.clone(),
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
