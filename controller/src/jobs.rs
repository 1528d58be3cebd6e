//! Jobs as procedures: one module per kind (backup, restore, verify, migrate) that plans and
//! ends it, a persisted phase and the pure decision of what to do next (`phase`), and writes of
//! any size (`persist`). Here: reading jobs for the API, taking workers' reports under fencing
//! (through the shard transitions of `crate::shards`), cancel and delete.

pub mod backup;
pub mod migrate;
pub mod persist;
pub mod phase;
pub mod pitr;
pub mod restore;
pub mod verify;

use std::collections::BTreeMap;

use ferry_model::layout;
use ferry_model::manifest::BackupManifest;
use ferry_model::task::{PlannedShard, ShardOp, plan_shards};
use ferry_proto::model::{Progress, ShardReport};

pub use backup::{create_backup, new_backup};
pub use migrate::create_migration;
pub use restore::create_restore;
pub use verify::create_verify;

use crate::apps;
use crate::context::{Context, ShardProgress};
use crate::error::{Error, Result};
use crate::keys;
use crate::records::{AssignmentRecord, JobKind, JobRecord, ShardRecord, ShardState};
use crate::shards;
use crate::store::{Condition, Op, get_json, list_json};

/// Largest manifest the controller will read.
pub const MANIFEST_LIMIT: u64 = 64 << 20;

/// A job with its shards, as the API shows it.
#[derive(Debug, Clone)]
pub struct JobView {
    pub job: JobRecord,
    pub shards: Vec<ShardRecord>,
}

pub fn new_shard(job_id: &str, planned: &PlannedShard, op: ShardOp) -> ShardRecord {
    ShardRecord {
        job_id: job_id.to_owned(),
        id: planned.id.clone(),
        component: planned.component.clone(),
        slot: planned.slot.clone(),
        kind: planned.resource.kind().to_owned(),
        resource: planned.resource.clone(),
        node: planned.node.clone(),
        op,
        state: ShardState::Pending,
        attempt: 0,
        worker: String::new(),
        failures: 0,
        not_before_ms: 0,
        waiting_since_ms: 0,
        object_key: String::new(),
        expected_sha256: None,
        expected_bytes: None,
        outcome: None,
        error: String::new(),
        started_at_ms: 0,
        finished_at_ms: 0,
        missing_ok: false,
        attempt_started_ms: 0,
        staged: None,
        parent_index: None,
        pitr: None,
    }
}

pub(crate) async fn refuse_if_busy(
    ctx: &Context,
    team: &str,
    app: &str,
    kind: JobKind,
) -> Result<()> {
    let busy = active_jobs(ctx)
        .await?
        .into_iter()
        .find(|j| j.team == team && j.app == app && !j.state.is_final() && j.kind == kind);
    if let Some(j) = busy {
        let what = kind.as_str();
        return Err(Error::FailedPrecondition(format!(
            "a {what} of app {app:?} is already running ({}); wait for it to finish",
            j.id
        )));
    }
    Ok(())
}

/// Reads the committed manifest of a backup from its storage.
pub async fn read_manifest(ctx: &Context, backup: &JobRecord) -> Result<BackupManifest> {
    let location = apps::find_storage(&*ctx.store, &backup.storage)
        .await?
        .ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "backup {} is in storage location {:?}, which no longer exists",
                backup.id, backup.storage
            ))
        })?;
    let store = ferry_storage::open(&location)?;
    let key = layout::manifest_key(&backup.team, &backup.app, &backup.id);
    let bytes = store
        .get_bytes(&key, MANIFEST_LIMIT)
        .await
        .map_err(|e| match e {
            ferry_storage::StorageError::NotFound { .. } => Error::FailedPrecondition(format!(
                "backup {} has no manifest in storage {:?} (it was deleted or never committed)",
                backup.id, backup.storage
            )),
            other => other.into(),
        })?;
    let manifest = BackupManifest::from_json(&bytes)?;
    // The manifest found under a backup's key must be that backup's.
    if (&manifest.team, &manifest.app, &manifest.id) != (&backup.team, &backup.app, &backup.id) {
        return Err(Error::FailedPrecondition(format!(
            "the manifest stored for backup {} names backup {} of app {} in team {}; refusing it",
            backup.id, manifest.id, manifest.app, manifest.team
        )));
    }
    Ok(manifest)
}

/// The keys of an encrypted backup, from its manifest: what a job reading it hands to workers.
pub fn sealed_of(manifest: &BackupManifest) -> Option<ferry_model::task::Sealed> {
    manifest
        .encrypted_to
        .as_ref()
        .map(|recipient| ferry_model::task::Sealed {
            recipient: recipient.clone(),
            key_file: layout::key_file(&manifest.team, &manifest.app, &manifest.id),
        })
}

/// The verify-step shards of a job reading a backup: each good shard of the manifest, paired by
/// slot with where it goes in `spec`. `missing` says why a shard has no counterpart.
pub fn shards_from_manifest(
    job_id: &str,
    manifest: &BackupManifest,
    spec: &ferry_model::app::AppSpec,
    step: FirstStep,
    missing: impl Fn(&ferry_model::manifest::ManifestShard) -> String,
) -> Result<Vec<ShardRecord>> {
    let targets: BTreeMap<String, PlannedShard> = plan_shards(spec)
        .into_iter()
        .map(|p| (p.slot.clone(), p))
        .collect();
    let own_dir = format!(
        "{}shards/",
        layout::backup_dir(&manifest.team, &manifest.app, &manifest.id)
    );
    // A PostgreSQL base is read only by a point-in-time restore of the databases (their shards
    // name it); it is never restored itself.
    let restoring = matches!(step, FirstStep::Restore | FirstStep::RestoreInPlace);
    manifest
        .shards
        .iter()
        .filter(|m| m.error.is_empty())
        .filter(|m| !(restoring && m.kind == "postgres-base"))
        .map(|m| {
            // Whoever can write the bucket can edit a manifest: it may only name archives of
            // its own backup (not another team's, not a path that climbs out).
            if !layout::names_shard_in(&m.object_key, &own_dir) {
                return Err(Error::FailedPrecondition(format!(
                    "manifest of {}: archive {:?} of shard {} is not in the backup's directory; \
                     refusing to read it",
                    manifest.id, m.object_key, m.id
                )));
            }
            let planned = targets
                .get(&m.slot)
                .ok_or_else(|| Error::FailedPrecondition(missing(m)))?;
            // A restore checks a volume's archive while staging it (one read, not two).
            let verify_job = matches!(step, FirstStep::Verify | FirstStep::VerifyData);
            let staged_later = !verify_job
                && matches!(planned.resource, ferry_model::task::Resource::Volume { .. });
            let op = ShardOp::Verify {
                check_target: step == FirstStep::Restore,
                archive: !staged_later,
                read_data: step == FirstStep::VerifyData,
            };
            let mut shard = new_shard(job_id, planned, op);
            shard.id = m.id.clone();
            shard.object_key = m.object_key.clone();
            shard.expected_sha256 = Some(m.sha256.clone());
            shard.expected_bytes = Some(m.source_bytes);
            Ok(shard)
        })
        .collect()
}

/// What the first step of a job reading a backup checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstStep {
    /// A verify job: every archive (a repository volume: its index, and that its packs exist).
    Verify,
    /// A verify job that also reads every chunk a repository volume references.
    VerifyData,
    /// A restore: every target empty; archives of databases, config and exec (volumes' are
    /// checked while staged).
    Restore,
    /// An in-place restore: the same, without the emptiness check.
    RestoreInPlace,
}

/// Every active job (through the active index).
pub async fn active_jobs(ctx: &Context) -> Result<Vec<JobRecord>> {
    let mut out = Vec::new();
    for id in persist::active_ids(&*ctx.store).await? {
        if let Some((job, _)) = get_json::<JobRecord>(&*ctx.store, &keys::job(&id)).await? {
            out.push(job);
        }
    }
    Ok(out)
}

/// Every job record.
pub async fn list_jobs(ctx: &Context) -> Result<Vec<JobRecord>> {
    Ok(list_json::<JobRecord>(&*ctx.store, &keys::jobs())
        .await?
        .into_iter()
        .map(|(j, _)| j)
        .collect())
}

/// A job of a team, or NotFound (another team's job is not found either).
pub async fn get_job(ctx: &Context, team: &str, id: &str) -> Result<JobRecord> {
    match get_json::<JobRecord>(&*ctx.store, &keys::job(id)).await? {
        Some((job, _)) if job.team == team => Ok(job),
        _ => Err(Error::NotFound(format!(
            "job {id:?} not found in team {team:?}"
        ))),
    }
}

/// A job's shards.
pub async fn shards_of(ctx: &Context, id: &str) -> Result<Vec<ShardRecord>> {
    Ok(
        list_json::<ShardRecord>(&*ctx.store, &keys::shards_of_job(id))
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
    )
}

/// A job and its shards.
pub async fn view(ctx: &Context, team: &str, id: &str) -> Result<JobView> {
    let job = get_job(ctx, team, id).await?;
    let shards = shards_of(ctx, id).await?;
    Ok(JobView { job, shards })
}

/// One page of the jobs of one kind for a team (optionally one app), newest first, and the
/// token of the next page (empty on the last). The token is the last job's `created_at/id`, so
/// pages stay consistent while jobs come and go; shards are read for the page's jobs only.
pub async fn list_views(
    ctx: &Context,
    team: &str,
    app: Option<&str>,
    kind: JobKind,
    page: &ferry_proto::model::Page,
) -> Result<(Vec<JobView>, String)> {
    let mut jobs: Vec<_> = list_jobs(ctx)
        .await?
        .into_iter()
        .filter(|j| j.team == team && j.kind == kind && app.is_none_or(|a| j.app == a))
        .collect();
    jobs.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.id.cmp(&a.id)));
    let (start, size) = (page_start(&jobs, &page.token)?, page.size.max(1));
    let end = (start + size).min(jobs.len());
    let next = if end < jobs.len() {
        cursor(&jobs[end - 1])
    } else {
        String::new()
    };
    let mut out = Vec::with_capacity(end - start);
    for job in jobs.drain(start..end) {
        let shards = shards_of(ctx, &job.id).await?;
        out.push(JobView { job, shards });
    }
    Ok((out, next))
}

fn cursor(job: &JobRecord) -> String {
    format!("{}/{}", job.created_at_ms, job.id)
}

/// Where the page after `token` starts in `jobs` (sorted newest first).
fn page_start(jobs: &[JobRecord], token: &str) -> Result<usize> {
    if token.is_empty() {
        return Ok(0);
    }
    let (at, id) = token
        .split_once('/')
        .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id)))
        .ok_or_else(|| Error::InvalidArgument(format!("invalid page token {token:?}")))?;
    Ok(jobs
        .iter()
        .position(|j| (j.created_at_ms, j.id.as_str()) < (at, id))
        .unwrap_or(jobs.len()))
}

/// Records a worker's progress for a shard attempt it holds (anything else is ignored, so the
/// map holds only shards that are handed out).
pub async fn record_progress(ctx: &Context, worker: &str, p: Progress) -> Result<()> {
    let held = keys::assignment(worker, &p.shard.job_id, &p.shard.shard_id);
    match get_json::<AssignmentRecord>(&*ctx.store, &held).await? {
        Some((a, _)) if a.attempt == p.shard.attempt => {}
        _ => return Ok(()),
    }
    if let Ok(mut map) = ctx.progress.lock() {
        map.insert(
            (p.shard.job_id.clone(), p.shard.shard_id.clone()),
            ShardProgress {
                attempt: p.shard.attempt,
                done: p.done,
                total: p.total,
            },
        );
    }
    ctx.changed.send_modify(|n| *n = n.wrapping_add(1));
    Ok(())
}

/// Takes a worker's final report for a shard attempt. Returns false when the attempt is stale
/// (fenced off): its result is ignored and the worker must drop it. A report for a shard handed
/// to another worker is refused.
pub async fn record_result(ctx: &Context, worker: &str, report: ShardReport) -> Result<bool> {
    let key = keys::shard(&report.shard.job_id, &report.shard.shard_id);
    for _ in 0..8 {
        let Some((current, rev)) = get_json::<ShardRecord>(&*ctx.store, &key).await? else {
            return Ok(false);
        };
        if current.attempt != report.shard.attempt || current.state != ShardState::Assigned {
            tracing::warn!(shard = %report.shard, current = current.attempt, state = ?current.state,
                "stale report refused");
            return Ok(false);
        }
        if current.worker != worker {
            tracing::warn!(shard = %report.shard, holder = %current.worker, reporter = %worker,
                "report from a worker that does not hold the shard refused");
            return Err(Error::Access(tonic::Status::permission_denied(format!(
                "shard {} is not handed to worker {worker}",
                report.shard
            ))));
        }
        let labels = crate::metrics::ShardKind {
            kind: current.kind.clone(),
            op: current.op.as_str().to_owned(),
        };
        let shard = match &report.result {
            Ok(outcome) => {
                let secs = ((report.at_ms - current.attempt_started_ms).max(1) as f64) / 1000.0;
                let m = &ctx.metrics;
                m.shard_duration.get_or_create(&labels).observe(secs);
                m.shard_throughput
                    .get_or_create(&labels)
                    .observe(outcome.source_bytes as f64 / secs);
                m.source_bytes
                    .get_or_create(&labels)
                    .inc_by(outcome.source_bytes);
                m.stored_bytes
                    .get_or_create(&labels)
                    .inc_by(outcome.stored_bytes);
                shards::succeed(&current, outcome.clone(), report.at_ms)
            }
            Err(message) => {
                let backoff = |n: u32| ctx.timings.retry_backoff(n).as_millis() as i64;
                let next = shards::fail(
                    &current,
                    message,
                    report.permanent,
                    ctx.settings.max_shard_failures,
                    backoff,
                    report.at_ms,
                );
                if next.state == ShardState::Failed {
                    ctx.metrics.shard_failures.get_or_create(&labels).inc();
                } else {
                    ctx.metrics.retries.get_or_create(&labels).inc();
                }
                tracing::warn!(shard = %report.shard, worker = %worker,
                    failures = next.failures, permanent = report.permanent, error = %message,
                    "shard attempt failed");
                next
            }
        };
        let ops = vec![
            Op::put_json(key.clone(), &shard),
            Op::delete(keys::assignment(&shard.worker, &shard.job_id, &shard.id)),
        ];
        if ctx
            .store
            .txn(vec![Condition::ModRevision(key.clone(), rev)], ops)
            .await?
        {
            if let Ok(mut map) = ctx.progress.lock() {
                map.remove(&(shard.job_id.clone(), shard.id.clone()));
            }
            ctx.notify();
            return Ok(true);
        }
    }
    Err(Error::FailedPrecondition(format!(
        "shard {} changed too often to record its result; retry",
        report.shard
    )))
}

/// Asks a running job to stop; the reconciler stops its shards and ends it `Cancelled`.
/// Cancelling a finished job is refused; cancelling twice is fine.
pub async fn cancel(ctx: &Context, team: &str, id: &str, kind: JobKind) -> Result<JobRecord> {
    loop {
        let (mut job, rev) = match get_json::<JobRecord>(&*ctx.store, &keys::job(id)).await? {
            Some((job, rev)) if job.team == team && job.kind == kind => (job, rev),
            _ => {
                let what = kind.as_str();
                return Err(Error::NotFound(format!(
                    "{what} {id:?} not found in team {team:?}"
                )));
            }
        };
        if job.state.is_final() {
            return Err(Error::FailedPrecondition(format!(
                "{id} already ended {:?}; nothing to cancel",
                job.state
            )));
        }
        if job.cancel_requested {
            return Ok(job);
        }
        job.cancel_requested = true;
        job.message = "cancelling".into();
        let key = keys::job(id);
        if ctx
            .store
            .txn(
                vec![Condition::ModRevision(key.clone(), rev)],
                vec![Op::put_json(key, &job)],
            )
            .await?
        {
            tracing::info!(job = %id, "cancel requested");
            ctx.notify();
            return Ok(job);
        }
    }
}

/// Deletes a finished backup: the manifest first (so that nothing can mistake what is left for
/// a backup), then its archives and any unfinished upload, then the catalog entry. When storage
/// refuses, the entry stays so that the delete can be retried — nothing is forgotten silently.
pub async fn delete_backup(ctx: &Context, team: &str, id: &str) -> Result<u64> {
    let job = get_job(ctx, team, id).await?;
    if job.kind != JobKind::Backup {
        return Err(Error::NotFound(format!(
            "backup {id:?} not found in team {team:?}"
        )));
    }
    if !job.state.is_final() {
        return Err(Error::FailedPrecondition(format!(
            "backup {id} is still {:?}; cancel it first (ferry backup cancel {id})",
            job.state
        )));
    }
    let deleted = delete_objects(ctx, &job).await?;
    persist::remove(&*ctx.store, id).await?;
    backup::forget_heads_of(ctx, &job).await?;
    tracing::info!(job = %id, objects = deleted, "backup deleted");
    ctx.notify();
    Ok(deleted)
}

/// Removes every object of a backup from its storage (manifest first); returns how many.
pub async fn delete_objects(ctx: &Context, job: &JobRecord) -> Result<u64> {
    let Some(location) = apps::find_storage(&*ctx.store, &job.storage).await? else {
        return Ok(0); // the location is gone, and its objects with it as far as Ferry knows
    };
    let store = ferry_storage::open(&location)?;
    let dir = layout::backup_dir(&job.team, &job.app, &job.id);
    let manifest = layout::manifest_key(&job.team, &job.app, &job.id);
    let mut deleted = 0;
    if store.head(&manifest).await?.is_some() {
        store.delete(&manifest).await?;
        deleted += 1;
    }
    store.abort_incomplete(&dir).await?;
    for object in store.list(&dir).await? {
        store.delete(&object.key).await?;
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, at: i64) -> JobRecord {
        let spec = ferry_model::app::AppSpec::from_yaml("name: app\ncomponents:\n  - name: web\n")
            .unwrap();
        JobRecord {
            created_at_ms: at,
            ..JobRecord::pending(
                id.into(),
                JobKind::Backup,
                "t".into(),
                "app".into(),
                "c".into(),
                "s".into(),
                spec,
                "manual".into(),
            )
        }
    }

    #[test]
    fn pages_continue_after_their_cursor_even_when_jobs_come_and_go() {
        // Newest first.
        let jobs = vec![
            job("e", 5),
            job("d", 4),
            job("c", 3),
            job("b", 3),
            job("a", 1),
        ];
        assert_eq!(page_start(&jobs, "").unwrap(), 0);
        let after_c = cursor(&jobs[2]);
        assert_eq!(
            page_start(&jobs, &after_c).unwrap(),
            3,
            "b has the same time, a lower id"
        );
        // A newer job arrived and the cursor's job was deleted: the next page still starts after it.
        let later = vec![
            job("f", 6),
            job("e", 5),
            job("d", 4),
            job("b", 3),
            job("a", 1),
        ];
        assert_eq!(later[page_start(&later, &after_c).unwrap()].id, "b");
        assert_eq!(page_start(&jobs, &cursor(&jobs[4])).unwrap(), 5);
        assert!(page_start(&jobs, "garbage").is_err());
    }
}
