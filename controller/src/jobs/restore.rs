//! Restores: planning one (every archive verified and every target checked before anything is
//! written; an in-place restore waits for a safety backup of its target), and ending one off the
//! pass by registering the target app with the restored config.

use std::collections::BTreeMap;

use ferry_model::names::new_job_id;
use ferry_model::rewrite::rewrite_spec;
use ferry_model::task::{ShardOp, plan_shards};
use ferry_proto::model::CreateRestore;

use super::phase::{Phase, restore_outcome};
use super::{
    FirstStep, get_job, new_shard, persist, read_manifest, refuse_if_busy, shards_from_manifest,
};
use crate::apps;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::records::{JobKind, JobRecord, JobState, RestorePlan, ShardRecord, ShardState};

/// Starts a restore: first every archive is verified (and every target checked empty unless
/// `overwrite`), then, only if all of that passed, the data is written.
pub async fn create_restore(ctx: &Context, req: CreateRestore) -> Result<JobRecord> {
    let backup = match &req.at {
        Some((app, at_ms)) => super::pitr::choose_backup(ctx, &req.team, app, *at_ms).await?,
        None => get_job(ctx, &req.team, &req.backup_id).await?,
    };
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
    let mut manifest = read_manifest(ctx, &backup).await?;
    // Judged now, from what the bucket holds now: an edited manifest is no longer trusted.
    let signer = crate::trust::judge_now(ctx, &manifest).await?;
    let data_only = !signer.is_trusted();
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
            let mut spec = without_pitr(rewrite_spec(
                &manifest.app_spec,
                &target,
                cluster,
                &req.rewrites,
            ));
            if data_only {
                spec = data_only_spec(spec);
            }
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

    // Data only: an exec shard restores only into an app this installation declares (with its
    // own command); into a new app it is left out, and the result says so.
    let mut left_out = Vec::new();
    if data_only {
        let slots: std::collections::BTreeSet<String> =
            plan_shards(&spec).into_iter().map(|p| p.slot).collect();
        manifest.shards.retain(|s| {
            let keep = !s.error.is_empty() || slots.contains(&s.slot);
            if !keep {
                left_out.push(s.id.clone());
            }
            keep
        });
        tracing::warn!(backup = %backup.id, signer = %signer.label(), left_out = ?left_out,
            "restoring data only: the backup's manifest is not signed by a trusted installation");
    }
    let id = new_job_id(&format!("restore-{target}"));
    let first_step = if req.overwrite {
        FirstStep::RestoreInPlace
    } else {
        FirstStep::Restore
    };
    let mut shards = shards_from_manifest(&id, &manifest, &spec, first_step, |m| {
        format!(
            "app {target:?} has nothing to receive shard {} ({}); declare it or restore into a \
             new app with --to-app",
            m.id, m.slot
        )
    })?;
    if let Some((_, at_ms)) = req.at {
        super::pitr::attach(ctx, &backup, &manifest, at_ms, &mut shards).await?;
    }
    if shards.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "backup {} holds no restorable shard",
            backup.id
        )));
    }
    // In place (--overwrite): first a backup of what the target holds now, to roll back to.
    let safety = if req.overwrite {
        let sid = new_job_id(&target);
        // Into the same location as the backup read: encrypted like any backup there.
        let sealed =
            crate::sealing::new_backup_key(ctx, &location, &req.team, &target, &sid).await?;
        let backup_job = JobRecord {
            labels: [("ferry.restore".to_owned(), id.clone())].into(),
            sealed,
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
        let safety_shards: Vec<ShardRecord> = plan_shards(&spec)
            .iter()
            .map(|p| ShardRecord {
                missing_ok: true,
                ..new_shard(&sid, p, ShardOp::Backup)
            })
            .collect();
        Some((backup_job, safety_shards))
    } else {
        None
    };
    let job = JobRecord {
        restore: Some(RestorePlan {
            backup_id: backup.id,
            source_app: manifest.app.clone(),
            overwrite: req.overwrite,
            numeric_owner: req.numeric_owner,
            rewrites: req.rewrites,
            creates_app,
            data_only,
            left_out: left_out.clone(),
            at_ms: req.at.as_ref().map(|(_, at)| *at),
        }),
        signer: signer.label(),
        sealed: super::sealed_of(&manifest),

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
    let mut job = job;
    if let Some((mut safety_job, safety_shards)) = safety {
        // The safety backup first: the restore waits for it and writes nothing before it completed.
        persist::create_new(ctx, &mut safety_job, &safety_shards, Phase::Running).await?;
        tracing::info!(job = %job.id, safety = %safety_job.id, "in-place restore: safety backup created");
    }
    let first = Phase::first(&job, &shards, false);
    persist::create_new(ctx, &mut job, &shards, first).await?;
    Ok(job)
}

/// What a point-in-time restore reached, per shard: the moment a replayed database reached, and
/// for everything else (volumes, config, Redis, databases without `pitr`) the backup it came
/// from.
fn moments_reached(at_ms: i64, backup_id: &str, shards: &[ShardRecord]) -> String {
    use ferry_model::pitr::format_ms;
    let mut replayed = Vec::new();
    let mut from_backup = Vec::new();
    for s in shards {
        match s.outcome.as_ref().and_then(|o| o.reached_ms) {
            Some(ms) => replayed.push(format!("{} reached {}", s.id, format_ms(ms))),
            None if s.pitr.is_some() => replayed.push(format!("{} did not finish", s.id)),
            None => from_backup.push(s.id.clone()),
        }
    }
    let mut out = format!("point in time {}", format_ms(at_ms));
    if !replayed.is_empty() {
        out.push_str(&format!(": {}", replayed.join(", ")));
    }
    if !from_backup.is_empty() {
        out.push_str(&format!(
            "; from backup {backup_id} (the newest before it): {}",
            from_backup.join(", ")
        ));
    }
    out
}

/// What the result of a data-only restore says.
fn data_only_note(signer: &str, left_out: &[String]) -> String {
    let mut note = format!(
        "data only (signed by: {signer}): no command or hook of the backup's manifest ran or \
         was registered, setuid/setgid bits cleared"
    );
    if !left_out.is_empty() {
        note.push_str(&format!(
            "; exec shards {} left out (restore into an app that declares them to run this \
             installation's command, or trust the signer: ferry trust add)",
            left_out.join(", ")
        ));
    }
    note
}

/// The app a restore into a new app registers has no `pitr` databases: a copy beside the
/// original would otherwise start log streams of its own, each holding a replication slot (or
/// a binlog reader) on a server that may be the original's. `ferry app apply` the copy with
/// `pitr: true` to stream it. (A migration keeps `pitr`: the app moves.)
pub fn without_pitr(mut spec: ferry_model::app::AppSpec) -> ferry_model::app::AppSpec {
    for c in &mut spec.components {
        for d in &mut c.databases {
            d.pitr = false;
        }
    }
    spec
}

/// The app a data-only restore registers: the manifest's app without any command — no exec
/// backup/restore command, no hook. Volumes, databases and config stay.
pub fn data_only_spec(mut spec: ferry_model::app::AppSpec) -> ferry_model::app::AppSpec {
    for c in &mut spec.components {
        c.exec = None;
        c.hooks = Default::default();
    }
    spec
}

/// Ends a restore (off the pass): the target app is registered with the restored config,
/// component by component. Returns the job to save.
pub async fn commit(ctx: &Context, job: JobRecord, shards: &[ShardRecord]) -> Result<JobRecord> {
    let (state, message) = restore_outcome(shards);
    let ok: Vec<&ShardRecord> = shards
        .iter()
        .filter(|s| s.state == ShardState::Succeeded)
        .collect();
    let data_only_note = job
        .restore
        .as_ref()
        .filter(|r| r.data_only)
        .map(|r| data_only_note(&job.signer, &r.left_out));
    let message = match data_only_note {
        Some(note) if message.is_empty() => note,
        Some(note) => format!("{message}; {note}"),
        None => message,
    };
    let message = match job.restore.as_ref().and_then(|r| Some((r.at_ms?, r))) {
        Some((at_ms, plan)) => {
            let note = moments_reached(at_ms, &plan.backup_id, shards);
            if message.is_empty() {
                note
            } else {
                format!("{message}; {note}")
            }
        }
        None => message,
    };
    let mut job = super::backup::finished(job, state, message);
    job.source_bytes = ok
        .iter()
        .filter_map(|s| s.outcome.as_ref())
        .map(|o| o.source_bytes)
        .sum();
    if !ok.is_empty() {
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
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_does_not_stream() {
        let spec = ferry_model::app::AppSpec::from_yaml(
            "name: shop\ncomponents:\n  - name: db\n    databases: [{name: m, engine: postgres, databases: [s], pitr: true}]\n",
        )
        .unwrap();
        assert_eq!(ferry_model::task::plan_streams(&spec).len(), 1);
        let copy = without_pitr(spec);
        assert!(ferry_model::task::plan_streams(&copy).is_empty());
        // Its backups then take no physical base either.
        assert!(
            plan_shards(&copy)
                .iter()
                .all(|p| p.resource.kind() != "postgres-base")
        );
    }

    #[test]
    fn a_data_only_spec_keeps_data_and_drops_every_command() {
        let spec = ferry_model::app::AppSpec::from_yaml(
            "name: shop\ncomponents:\n  - name: api\n    config: {a: 1}\n    hooks:\n      \
             pre_backup: [sh, -c, 'true']\n    volumes:\n      - {name: data, path: /srv/d}\n    \
             exec:\n      backup: [cat, /x]\n      restore: [sh, -c, 'cat > /x']\n",
        )
        .unwrap();
        assert!(spec.components[0].exec.is_some() && !spec.components[0].hooks.is_empty());
        let stripped = data_only_spec(spec.clone());
        let c = &stripped.components[0];
        assert!(c.exec.is_none() && c.hooks.is_empty());
        assert_eq!(c.volumes, spec.components[0].volumes);
        assert_eq!(c.config, spec.components[0].config);
        let slots: Vec<String> = plan_shards(&stripped).into_iter().map(|p| p.slot).collect();
        assert!(slots.iter().all(|s| !s.contains("exec")), "{slots:?}");
    }
}
