//! Migrations: a backup by the source cluster's workers into storage both clusters reach, and a
//! restore by the target cluster's workers that waits for it (phase `AwaitingBackup`), gets its
//! shards from the backup's manifest, and registers the app in the target cluster and team.

use ferry_model::names::new_job_id;
use ferry_model::rewrite::rewrite_spec;
use ferry_proto::model::{CreateBackup, Migrate};

use super::backup::new_backup;
use super::phase::Phase;
use super::{FirstStep, persist, read_manifest, refuse_if_busy, shards_from_manifest};
use crate::apps;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys;
use crate::records::{JobKind, JobRecord, RestorePlan};
use crate::store::get_json;

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
        full: false,
    };
    let (backup, backup_shards) =
        new_backup(ctx, backup_req, &format!("migrate/{restore_id}")).await?;
    let backup_id = backup.id.clone();
    let restore = JobRecord {
        restore: Some(RestorePlan {
            backup_id: backup_id.clone(),
            source_app: req.app.clone(),
            overwrite: false,
            numeric_owner: false,
            rewrites: req.rewrites,
            creates_app: true,
            // This installation's own backup, made by this very job.
            data_only: false,
            left_out: Vec::new(),
            at_ms: None,
        }),
        sealed: backup.sealed.clone(),
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
    let (mut backup, mut restore) = (backup, restore);
    let first = Phase::first(&backup, &backup_shards, false);
    persist::create_new(ctx, &mut backup, &backup_shards, first).await?;
    persist::create_new(ctx, &mut restore, &[], Phase::AwaitingBackup).await?;
    tracing::info!(backup = %backup.id, restore = %restore.id, from = %from,
        to = %req.to_cluster, team = %req.to_team, "migration created");
    Ok((backup, restore))
}

/// Gives a migration's restore its shards (off the pass), once its backup completed: they are
/// written in batches, then the job moves on to verifying them. `Err` with a message when the
/// backup cannot be restored into the target.
pub async fn load_shards(
    ctx: &Context,
    job: &JobRecord,
) -> Result<std::result::Result<(), String>> {
    let Some(plan) = job.restore.clone() else {
        return Ok(Err("a migration's restore without its plan".into()));
    };
    let Some((backup, _)) = get_json::<JobRecord>(&*ctx.store, &keys::job(&plan.backup_id)).await?
    else {
        return Ok(Err(format!(
            "the migration's backup {} is gone; nothing was restored",
            plan.backup_id
        )));
    };
    let manifest = read_manifest(ctx, &backup).await?;
    let target = job.app.clone();
    let shards =
        match shards_from_manifest(&job.id, &manifest, &job.spec, FirstStep::Restore, |m| {
            format!(
                "app {target:?} has nothing to receive shard {} ({})",
                m.id, m.slot
            )
        }) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e.to_string())),
        };
    persist::put_shards(&*ctx.store, &shards).await?;
    Ok(Ok(()))
}
