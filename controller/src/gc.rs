//! Garbage collection of repository packs (DESIGN §10), on the leader: on `ferry storage gc`
//! and every `--gc-interval`. The decision is `ferry_repo::gc::plan` (pure, unit-tested); this
//! module gathers its inputs from the catalog — the packs lists of every committed backup in
//! the location, and the start of the oldest running backup — and applies it team by team.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use ferry_model::layout;
use ferry_model::storage::StorageLocation;
use tokio_util::sync::CancellationToken;

use crate::apps;
use crate::context::Context;
use crate::error::Result;
use crate::jobs::{list_jobs, shards_of};
use crate::records::{JobKind, JobState, ShardState};

/// What a collection of one location did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub deleted: u64,
    pub bytes: u64,
    pub referenced: u64,
    pub young: u64,
    pub aborted: u64,
}

/// Collects the packs of every team in `location` that no committed backup references.
pub async fn collect_location(
    ctx: &Context,
    location: &StorageLocation,
    dry_run: bool,
) -> Result<GcReport> {
    let jobs = list_jobs(ctx).await?;
    let teams: BTreeSet<String> = jobs
        .iter()
        .filter(|j| j.storage == location.name)
        .map(|j| j.team.clone())
        .chain(app_teams(ctx).await?)
        .collect();
    // Running backups (of any location: conservative) protect what they may have written.
    let oldest_running = jobs
        .iter()
        .filter(|j| j.kind == JobKind::Backup && !j.state.is_final())
        .map(|j| j.created_at_ms)
        .min();
    let mut lists = Vec::new();
    for job in jobs.iter().filter(|j| {
        j.kind == JobKind::Backup
            && j.storage == location.name
            && matches!(j.state, JobState::Completed | JobState::PartiallyFailed)
    }) {
        for shard in shards_of(ctx, &job.id).await? {
            if shard.state == ShardState::Succeeded
                && let Some(list) = layout::packs_key_of(&shard.object_key)
            {
                lists.push(list);
            }
        }
    }
    let store = ferry_storage::open(location)?;
    let referenced: HashSet<String> = ferry_repo::gc::referenced_packs(&*store, &lists).await?;
    let grace = ctx.settings.gc_grace.as_millis() as i64;
    let mut report = GcReport::default();
    for team in teams {
        let plan = ferry_repo::gc::collect(
            &*store,
            &layout::packs_prefix(&team),
            &referenced,
            grace,
            oldest_running,
            dry_run,
        )
        .await?;
        report.deleted += plan.delete.len() as u64;
        report.bytes += plan.bytes();
        report.referenced += plan.referenced;
        report.young += plan.young;
        report.aborted += plan.aborted;
    }
    tracing::info!(storage = %location.name, dry_run, deleted = report.deleted,
        bytes = report.bytes, referenced = report.referenced, young = report.young, aborted = report.aborted,
        "repository packs collected");
    Ok(report)
}

/// Teams that have apps (a team whose backups were all deleted still has packs to collect).
async fn app_teams(ctx: &Context) -> Result<Vec<String>> {
    let prefix = format!("{}apps/", crate::keys::ROOT);
    Ok(ctx
        .store
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|kv| {
            kv.key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split('/').next())
                .map(str::to_owned)
        })
        .collect())
}

/// Collects every location every `gc_interval` while this controller leads.
pub async fn run(ctx: Arc<Context>, cancel: CancellationToken) {
    let every = ctx.settings.gc_interval;
    if every.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => return,
        }
        match apps::list_storage(&*ctx.store).await {
            Ok(locations) => {
                for location in locations {
                    tokio::select! {
                        r = collect_location(&ctx, &location, false) => if let Err(e) = r {
                            tracing::warn!(storage = %location.name, error = %e, "collection failed");
                        },
                        _ = cancel.cancelled() => return,
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "gc: could not list storage locations"),
        }
    }
}
