//! Jobs: creating backups and restores (intent persisted before anything runs), taking workers'
//! reports under fencing, and reading jobs back for the API. The reconciler drives them.

use std::collections::BTreeMap;

use ferry_model::layout;
use ferry_model::manifest::BackupManifest;
use ferry_model::names::new_job_id;
use ferry_model::now_ms;
use ferry_model::rewrite::rewrite_spec;
use ferry_model::task::{PlannedShard, ShardOp, plan_shards};
use ferry_proto::model::{CreateBackup, CreateRestore, Migrate, Progress, ShardReport};

use crate::apps;
use crate::context::{Context, ShardProgress};
use crate::error::{Error, Result};
use crate::keys;
use crate::records::{
    AssignmentRecord, JobKind, JobRecord, JobState, RestorePlan, ShardRecord, ShardState,
};
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
        outcome: None,
        error: String::new(),
        started_at_ms: 0,
        finished_at_ms: 0,
        missing_ok: false,
        attempt_started_ms: 0,
    }
}

async fn persist_new(ctx: &Context, job: &JobRecord, shards: &[ShardRecord]) -> Result<()> {
    let ops = creation_ops(job, shards);
    let created = ctx
        .store
        .txn(vec![Condition::Absent(keys::job(&job.id))], ops)
        .await?;
    if !created {
        return Err(Error::AlreadyExists(format!(
            "job {} already exists",
            job.id
        )));
    }
    tracing::info!(job = %job.id, kind = ?job.kind, app = %job.app, shards = shards.len(), "job created");
    ctx.notify();
    Ok(())
}

async fn refuse_if_busy(ctx: &Context, team: &str, app: &str, kind: JobKind) -> Result<()> {
    let busy = list_jobs(ctx)
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

/// Starts a backup of an app: one shard per volume, config, database and exec.
pub async fn create_backup(ctx: &Context, req: CreateBackup) -> Result<JobRecord> {
    let (job, shards) = new_backup(ctx, req, "manual").await?;
    persist_new(ctx, &job, &shards).await?;
    Ok(job)
}

/// Plans a backup (job and shard records) without persisting it. Refuses an app that already has
/// a backup running: one backup at a time per app.
pub async fn new_backup(
    ctx: &Context,
    req: CreateBackup,
    trigger: &str,
) -> Result<(JobRecord, Vec<ShardRecord>)> {
    let app = apps::get(&*ctx.store, &req.team, &req.app).await?;
    let location =
        apps::choose_storage(&*ctx.store, req.storage.as_deref(), &app.spec.cluster).await?;
    refuse_if_busy(ctx, &req.team, &req.app, JobKind::Backup).await?;
    let planned = plan_shards(&app.spec);
    if planned.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "app {:?} declares nothing to back up (no volume, config, database or exec)",
            req.app
        )));
    }
    let now = now_ms();
    let job = JobRecord {
        labels: req.labels,
        expires_at_ms: req.ttl.map(|t| now + t.as_millis() as i64),
        ..JobRecord::pending(
            new_job_id(&req.app),
            JobKind::Backup,
            req.team,
            req.app,
            app.spec.cluster.clone(),
            location.name,
            app.spec,
            trigger.into(),
        )
    };
    let shards: Vec<_> = planned
        .iter()
        .map(|p| new_shard(&job.id, p, ShardOp::Backup))
        .collect();
    Ok((job, shards))
}

/// The store writes that create a job and its shards.
pub fn creation_ops(job: &JobRecord, shards: &[ShardRecord]) -> Vec<Op> {
    let mut ops = vec![Op::put_json(keys::job(&job.id), job)];
    ops.extend(
        shards
            .iter()
            .map(|s| Op::put_json(keys::shard(&job.id, &s.id), s)),
    );
    ops
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
    Ok(BackupManifest::from_json(&bytes)?)
}

/// The verify-step shards of a job reading a backup: each good shard of the manifest, paired by
/// slot with where it goes in `spec`. `missing` says why a shard has no counterpart.
pub fn shards_from_manifest(
    job_id: &str,
    manifest: &BackupManifest,
    spec: &ferry_model::app::AppSpec,
    check_target: bool,
    missing: impl Fn(&ferry_model::manifest::ManifestShard) -> String,
) -> Result<Vec<ShardRecord>> {
    let targets: BTreeMap<String, PlannedShard> = plan_shards(spec)
        .into_iter()
        .map(|p| (p.slot.clone(), p))
        .collect();
    manifest
        .shards
        .iter()
        .filter(|m| m.error.is_empty())
        .map(|m| {
            let planned = targets
                .get(&m.slot)
                .ok_or_else(|| Error::FailedPrecondition(missing(m)))?;
            let mut shard = new_shard(job_id, planned, ShardOp::Verify { check_target });
            shard.id = m.id.clone();
            shard.object_key = m.object_key.clone();
            shard.expected_sha256 = Some(m.sha256.clone());
            Ok(shard)
        })
        .collect()
}

/// Starts a restore: first every archive is verified (and every target checked empty unless
/// `overwrite`), then, only if all of that passed, the data is written.
pub async fn create_restore(ctx: &Context, req: CreateRestore) -> Result<JobRecord> {
    let backup = get_job(ctx, &req.team, &req.backup_id).await?;
    if backup.kind != JobKind::Backup {
        return Err(Error::InvalidArgument(format!(
            "{} is not a backup",
            backup.id
        )));
    }
    if !matches!(
        backup.state,
        JobState::Completed | JobState::PartiallyFailed
    ) {
        return Err(Error::FailedPrecondition(format!(
            "backup {} is {:?}; only completed backups can be restored",
            backup.id, backup.state
        )));
    }
    let manifest = read_manifest(ctx, &backup).await?;
    let target = req.to_app.clone().unwrap_or_else(|| manifest.app.clone());
    let existing = apps::find(&*ctx.store, &req.team, &target).await?;
    let (spec, creates_app) = match existing {
        Some(app) => {
            if let Some(c) = &req.to_cluster
                && *c != app.spec.cluster
            {
                return Err(Error::InvalidArgument(format!(
                    "app {target:?} is registered in cluster {:?}, not {c:?}",
                    app.spec.cluster
                )));
            }
            (app.spec, false)
        }
        None => {
            let cluster = req.to_cluster.as_deref().unwrap_or(&manifest.cluster);
            let spec = rewrite_spec(&manifest.app_spec, &target, cluster, &req.rewrites);
            spec.validate()?;
            (spec, true)
        }
    };
    let location = apps::find_storage(&*ctx.store, &backup.storage)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!("storage location {:?} not found", backup.storage))
        })?;
    apps::check_reachable(&location, &spec.cluster)?;
    refuse_if_busy(ctx, &req.team, &target, JobKind::Restore).await?;
    refuse_if_busy(ctx, &req.team, &target, JobKind::Backup).await?;

    let id = new_job_id(&format!("restore-{target}"));
    let check_target = !req.overwrite;
    let shards = shards_from_manifest(&id, &manifest, &spec, check_target, |m| {
        format!(
            "app {target:?} has nothing to receive shard {} ({}); declare it or restore into a \
             new app with --to-app",
            m.id, m.slot
        )
    })?;
    if shards.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "backup {} holds no restorable shard",
            backup.id
        )));
    }
    // In place (--overwrite): first a backup of what the target holds now, to roll back to.
    let safety = if req.overwrite {
        let sid = new_job_id(&target);
        let backup_job = JobRecord {
            labels: [("ferry.restore".to_owned(), id.clone())].into(),
            ..JobRecord::pending(
                sid.clone(),
                JobKind::Backup,
                req.team.clone(),
                target.clone(),
                spec.cluster.clone(),
                backup.storage.clone(),
                spec.clone(),
                format!("safety/{id}"),
            )
        };
        let shards: Vec<ShardRecord> = plan_shards(&spec)
            .iter()
            .map(|p| ShardRecord {
                missing_ok: true,
                ..new_shard(&sid, p, ShardOp::Backup)
            })
            .collect();
        Some((backup_job, shards))
    } else {
        None
    };
    let job = JobRecord {
        restore: Some(RestorePlan {
            backup_id: backup.id,
            source_app: manifest.app,
            overwrite: req.overwrite,
            rewrites: req.rewrites,
            creates_app,
            awaits_backup: false,
        }),
        safety_backup: safety.as_ref().map(|(s, _)| s.id.clone()),
        ..JobRecord::pending(
            id,
            JobKind::Restore,
            req.team,
            target,
            spec.cluster.clone(),
            backup.storage.clone(),
            spec,
            "manual".into(),
        )
    };
    if let Some((safety_job, safety_shards)) = &safety {
        let mut ops = creation_ops(safety_job, safety_shards);
        ops.extend(creation_ops(&job, &shards));
        let conditions = vec![
            Condition::Absent(keys::job(&job.id)),
            Condition::Absent(keys::job(&safety_job.id)),
        ];
        if !ctx.store.txn(conditions, ops).await? {
            return Err(Error::AlreadyExists(format!(
                "job {} already exists",
                job.id
            )));
        }
        tracing::info!(job = %job.id, safety = %safety_job.id, "in-place restore created with a safety backup");
        ctx.notify();
        return Ok(job);
    }
    persist_new(ctx, &job, &shards).await?;
    Ok(job)
}

/// Starts a migration: a backup of the app by its cluster's workers into storage both clusters
/// reach, and a restore by the target cluster's workers that waits for it, then registers the
/// app in the target cluster and team with the rewrites applied. Both are persisted at once, so
/// a restarted controller carries the migration on. Returns (backup, restore).
pub async fn create_migration(ctx: &Context, req: Migrate) -> Result<(JobRecord, JobRecord)> {
    let app = apps::get(&*ctx.store, &req.team, &req.app).await?;
    let from = app.spec.cluster.clone();
    if req.to_cluster == from && req.to_team == req.team {
        return Err(Error::InvalidArgument(format!(
            "app {:?} is already in cluster {from:?} and team {:?}; nothing to migrate",
            req.app, req.team
        )));
    }
    let location = apps::choose_migration_storage(&*ctx.store, req.storage.as_deref()).await?;
    // The target: the source app's spec, moved and rewritten. Another app of that name in the
    // target team is never overwritten by a migration.
    if req.to_team != req.team
        && let Some(existing) = apps::find(&*ctx.store, &req.to_team, &req.app).await?
    {
        return Err(Error::AlreadyExists(format!(
            "team {:?} already has an app {:?} (in cluster {:?}); delete it first or migrate \
             into another team",
            req.to_team, req.app, existing.spec.cluster
        )));
    }
    let spec = rewrite_spec(&app.spec, &req.app, &req.to_cluster, &req.rewrites);
    spec.validate()?;
    refuse_if_busy(ctx, &req.to_team, &req.app, JobKind::Restore).await?;

    let restore_id = new_job_id(&format!("migrate-{}", req.app));
    // The first half is an ordinary backup, labelled with the restore it feeds.
    let backup_req = CreateBackup {
        team: req.team.clone(),
        app: req.app.clone(),
        storage: Some(location.name.clone()),
        labels: [("ferry.migration".to_owned(), restore_id.clone())].into(),
        ttl: None,
    };
    let (backup, backup_shards) =
        new_backup(ctx, backup_req, &format!("migrate/{restore_id}")).await?;
    let backup_id = backup.id.clone();
    let restore = JobRecord {
        restore: Some(RestorePlan {
            backup_id: backup_id.clone(),
            source_app: req.app.clone(),
            overwrite: false,
            rewrites: req.rewrites,
            creates_app: true,
            awaits_backup: true,
        }),
        message: format!("waiting for backup {backup_id} in cluster {from}"),
        ..JobRecord::pending(
            restore_id.clone(),
            JobKind::Restore,
            req.to_team.clone(),
            req.app.clone(),
            req.to_cluster.clone(),
            location.name.clone(),
            spec,
            "migrate".into(),
        )
    };
    let mut ops = creation_ops(&backup, &backup_shards);
    ops.push(Op::put_json(keys::job(&restore.id), &restore));
    let conditions = vec![
        Condition::Absent(keys::job(&backup.id)),
        Condition::Absent(keys::job(&restore.id)),
    ];
    if !ctx.store.txn(conditions, ops).await? {
        return Err(Error::AlreadyExists(format!(
            "job {restore_id} already exists"
        )));
    }
    tracing::info!(backup = %backup.id, restore = %restore.id, from = %from,
        to = %req.to_cluster, team = %req.to_team, "migration created");
    ctx.notify();
    Ok((backup, restore))
}

/// Gives a migration's restore its shards once its backup completed: the restore proper (verify
/// first, then write) starts. Returns the message to show while it has to wait, or an error
/// message when the backup ended without a usable result.
pub async fn start_awaited_restore(
    ctx: &Context,
    job: &mut JobRecord,
    rev: i64,
) -> Result<std::result::Result<Option<String>, String>> {
    let Some(plan) = job.restore.clone() else {
        return Ok(Ok(None));
    };
    let backup = get_json::<JobRecord>(&*ctx.store, &keys::job(&plan.backup_id))
        .await?
        .map(|(j, _)| j);
    let backup = match backup {
        Some(b) if b.state == JobState::Completed => b,
        Some(b) if !b.state.is_final() => {
            return Ok(Ok(Some(format!(
                "waiting for backup {} in cluster {}",
                b.id, b.cluster
            ))));
        }
        Some(b) => {
            return Ok(Err(format!(
                "the migration's backup {} ended {:?} ({}); nothing was restored",
                b.id, b.state, b.message
            )));
        }
        None => {
            return Ok(Err(format!(
                "the migration's backup {} is gone; nothing was restored",
                plan.backup_id
            )));
        }
    };
    let manifest = read_manifest(ctx, &backup).await?;
    let target = job.app.clone();
    let shards = match shards_from_manifest(&job.id, &manifest, &job.spec, true, |m| {
        format!(
            "app {target:?} has nothing to receive shard {} ({})",
            m.id, m.slot
        )
    }) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Some(p) = job.restore.as_mut() {
        p.awaits_backup = false;
    }
    job.message = format!("backup {} completed; verifying its archives", backup.id);
    let ops = creation_ops(job, &shards);
    if ctx
        .store
        .txn(vec![Condition::ModRevision(keys::job(&job.id), rev)], ops)
        .await?
    {
        ctx.notify();
    }
    Ok(Ok(None))
}

/// Starts a verify job: every archive of the backup is re-read from storage and its SHA-256
/// checked against the manifest, by a worker of the backup's cluster. Nothing is written.
pub async fn create_verify(ctx: &Context, team: &str, backup_id: &str) -> Result<JobRecord> {
    let backup = get_job(ctx, team, backup_id).await?;
    if backup.kind != JobKind::Backup {
        return Err(Error::InvalidArgument(format!(
            "{backup_id} is not a backup"
        )));
    }
    if !matches!(
        backup.state,
        JobState::Completed | JobState::PartiallyFailed
    ) {
        return Err(Error::FailedPrecondition(format!(
            "backup {backup_id} is {:?}; only completed backups have archives to verify",
            backup.state
        )));
    }
    let manifest = read_manifest(ctx, &backup).await?;
    let id = new_job_id(&format!("verify-{}", backup.app));
    let shards = shards_from_manifest(&id, &manifest, &manifest.app_spec, false, |m| {
        format!(
            "manifest of {backup_id} is inconsistent: shard {} has no place ({}) in its app spec",
            m.id, m.slot
        )
    })?;
    if shards.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "backup {backup_id} holds no archive to verify"
        )));
    }
    let job = JobRecord {
        restore: Some(RestorePlan {
            backup_id: backup.id,
            source_app: manifest.app.clone(),
            overwrite: false,
            rewrites: Vec::new(),
            creates_app: false,
            awaits_backup: false,
        }),
        ..JobRecord::pending(
            id,
            JobKind::Verify,
            team.to_owned(),
            backup.app.clone(),
            backup.cluster.clone(),
            backup.storage.clone(),
            manifest.app_spec.clone(),
            "manual".into(),
        )
    };
    persist_new(ctx, &job, &shards).await?;
    Ok(job)
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

/// Jobs of one kind for a team (optionally one app), newest first.
pub async fn list_views(
    ctx: &Context,
    team: &str,
    app: Option<&str>,
    kind: JobKind,
) -> Result<Vec<JobView>> {
    let mut jobs: Vec<_> = list_jobs(ctx)
        .await?
        .into_iter()
        .filter(|j| j.team == team && j.kind == kind && app.is_none_or(|a| j.app == a))
        .collect();
    jobs.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.id.cmp(&a.id)));
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let shards = shards_of(ctx, &job.id).await?;
        out.push(JobView { job, shards });
    }
    Ok(out)
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
        let Some((mut shard, rev)) = get_json::<ShardRecord>(&*ctx.store, &key).await? else {
            return Ok(false);
        };
        if shard.attempt != report.shard.attempt || shard.state != ShardState::Assigned {
            tracing::warn!(shard = %report.shard, current = shard.attempt, state = ?shard.state,
                "stale report refused");
            return Ok(false);
        }
        if shard.worker != worker {
            tracing::warn!(shard = %report.shard, holder = %shard.worker, reporter = %worker,
                "report from a worker that does not hold the shard refused");
            return Err(Error::Access(tonic::Status::permission_denied(format!(
                "shard {} is not handed to worker {worker}",
                report.shard
            ))));
        }
        let labels = crate::metrics::ShardKind {
            kind: shard.kind.clone(),
            op: shard.op.as_str().to_owned(),
        };
        match &report.result {
            Ok(outcome) => {
                let secs = ((report.at_ms - shard.attempt_started_ms).max(1) as f64) / 1000.0;
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
                shard.state = ShardState::Succeeded;
                shard.outcome = Some(outcome.clone());
                shard.error.clear();
                shard.finished_at_ms = report.at_ms;
            }
            Err(message) => {
                shard.failures += 1;
                shard.error = message.clone();
                if report.permanent || shard.failures >= ctx.settings.max_shard_failures {
                    shard.state = ShardState::Failed;
                    shard.finished_at_ms = report.at_ms;
                    ctx.metrics.shard_failures.get_or_create(&labels).inc();
                } else {
                    ctx.metrics.retries.get_or_create(&labels).inc();
                    shard.state = ShardState::Pending;
                    shard.not_before_ms =
                        report.at_ms + ctx.timings.retry_backoff(shard.failures).as_millis() as i64;
                }
                tracing::warn!(shard = %report.shard, worker = %worker,
                    failures = shard.failures, permanent = report.permanent, error = %message,
                    "shard attempt failed");
            }
        }
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
    let mut ops = vec![Op::delete(keys::job(id))];
    ops.extend(
        shards_of(ctx, id)
            .await?
            .iter()
            .map(|s| Op::delete(keys::shard(id, &s.id))),
    );
    ctx.store.txn(vec![], ops).await?;
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
