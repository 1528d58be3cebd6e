//! Backups: planning one (a shard per volume, config, database and exec, plus the components'
//! hooks) and committing it off the reconciler's pass — the manifest written last, after every
//! archive it names was found in storage with its reported size.

use ferry_model::layout;
use ferry_model::manifest::{BackupManifest, MANIFEST_FORMAT, MANIFEST_VERSION, ManifestShard};
use ferry_model::names::new_job_id;
use ferry_model::now_ms;
use ferry_model::task::{ShardOp, plan_hooks, plan_shards};
use ferry_proto::model::CreateBackup;

use super::phase::{Phase, backup_outcome};
use super::{new_shard, persist, refuse_if_busy};
use crate::apps;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::records::{JobKind, JobRecord, JobState, ShardRecord, ShardState};

/// Starts a backup of an app.
pub async fn create_backup(ctx: &Context, req: CreateBackup) -> Result<JobRecord> {
    let (mut job, shards) = new_backup(ctx, req, "manual").await?;
    let first = Phase::first(&job, &shards, false);
    persist::create_new(ctx, &mut job, &shards, first).await?;
    Ok(job)
}

/// Plans a backup (job and shard records, hooks included) without persisting it. Refuses an app
/// that already has a backup running: one backup at a time per app.
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
            app.spec.clone(),
            trigger.into(),
        )
    };
    let shards: Vec<_> = planned
        .iter()
        .chain(plan_hooks(&app.spec).iter())
        .map(|p| new_shard(&job.id, p, ShardOp::Backup))
        .collect();
    Ok((job, shards))
}

/// A shard whose resource held nothing (a safety backup of a target that did not exist).
fn is_absent(shard: &ShardRecord) -> bool {
    shard.outcome.as_ref().is_some_and(|o| o.absent)
}

/// Ends a backup (off the pass): a cancelled one leaves nothing in storage; otherwise every
/// archive of a succeeded shard must be in storage with its reported size (a shard whose
/// archive is missing fails), the manifest is written — the commit point — and objects no
/// manifest names (lost attempts, unfinished uploads) are removed. Returns the job to save.
pub async fn commit(
    ctx: &Context,
    mut job: JobRecord,
    mut shards: Vec<ShardRecord>,
) -> Result<JobRecord> {
    if job.cancel_requested {
        super::delete_objects(ctx, &job).await?;
        let (state, message) = backup_outcome(&job, &shards);
        return Ok(finished(job, state, message));
    }
    let location = apps::find_storage(&*ctx.store, &job.storage)
        .await?
        .ok_or_else(|| Error::FailedPrecondition(format!("storage {:?} is gone", job.storage)))?;
    let store = ferry_storage::open(&location)?;
    let dir = format!(
        "{}shards/",
        layout::backup_dir(&job.team, &job.app, &job.id)
    );
    let listed: std::collections::HashMap<String, u64> = store
        .list(&dir)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    // Trust, but check: a worker's report names an archive; it must be there, whole.
    for s in shards.iter_mut() {
        let Some(outcome) = s.outcome.as_ref() else {
            continue;
        };
        if s.state != ShardState::Succeeded || is_absent(s) || s.resource.hook().is_some() {
            continue;
        }
        match listed.get(&s.object_key) {
            Some(size) if *size == outcome.stored_bytes => {}
            found => {
                let why = match found {
                    Some(size) => {
                        format!("is {size} bytes, not the {} reported", outcome.stored_bytes)
                    }
                    None => "is missing".to_owned(),
                };
                tracing::warn!(job = %job.id, shard = %s.id, key = %s.object_key, %why, "archive check at commit failed");
                *s = crate::shards::skip(
                    s,
                    &format!("its archive {} {why} at commit", s.object_key),
                    now_ms(),
                );
            }
        }
    }
    let (state, message) = backup_outcome(&job, &shards);
    job = finished(job, state, message);
    let ok: Vec<&ShardRecord> = shards
        .iter()
        .filter(|s| s.state == ShardState::Succeeded && s.resource.hook().is_none())
        .collect();
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
    if job.state != JobState::Failed {
        let mut manifest = build_manifest(&job, &shards);
        manifest.installation = ctx.installation().to_owned();
        let key = layout::manifest_key(&job.team, &job.app, &job.id);
        store.put_bytes(&key, manifest.to_json()).await?;
    }
    let keep: Vec<&str> = ok
        .iter()
        .filter(|s| !is_absent(s))
        .map(|s| s.object_key.as_str())
        .collect();
    if let Err(e) = store.abort_incomplete(&dir).await {
        tracing::warn!(job = %job.id, error = %e, "could not abort unfinished uploads");
    }
    for key in listed.keys() {
        if !keep.contains(&key.as_str())
            && let Err(e) = store.delete(key).await
        {
            tracing::warn!(job = %job.id, key = %key, error = %e, "could not remove a stray archive");
        }
    }
    // Shards failed by the check are saved with the job.
    persist::put_shards(&*ctx.store, &shards).await?;
    Ok(job)
}

/// The job ended in `state`.
pub fn finished(mut job: JobRecord, state: JobState, message: String) -> JobRecord {
    job.state = state;
    job.phase = Phase::Done;
    job.message = message;
    job.finished_at_ms = now_ms();
    job
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
        installation: String::new(),
        app_spec: job.spec.clone(),
        shards: shards
            .iter()
            .filter(|s| !is_absent(s) && s.resource.hook().is_none())
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
