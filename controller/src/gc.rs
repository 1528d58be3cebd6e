//! Garbage collection of repository packs (DESIGN §10), on the leader: on `ferry storage gc`
//! and every `--gc-interval`. The decision is `ferry_repo::gc::plan` (pure, unit-tested); this
//! module gathers its inputs from the catalog — the packs lists of every committed backup in
//! the location, and the start of the oldest running backup — and applies it team by team.
//! It also prunes point-in-time logs (`ferry_model::pitr::prunable`): chunks of log files older
//! than the oldest base any committed backup in the location continues from.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use ferry_model::layout;
use ferry_model::pitr::{self, Position};
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
    /// Log chunks no kept backup needs (deleted, or in a dry run: would be).
    pub log_chunks: u64,
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
    // The oldest position each stream's bases continue from, per (team, app, stream).
    let mut oldest: BTreeMap<(String, String, String), Position> = BTreeMap::new();
    for job in jobs.iter().filter(|j| {
        j.kind == JobKind::Backup
            && j.storage == location.name
            && matches!(j.state, JobState::Completed | JobState::PartiallyFailed)
    }) {
        for shard in shards_of(ctx, &job.id).await? {
            if shard.state != ShardState::Succeeded {
                continue;
            }
            if let Some(list) = layout::packs_key_of(&shard.object_key) {
                lists.push(list);
            }
            let position = shard
                .outcome
                .as_ref()
                .and_then(|o| o.log_position.as_deref());
            if let (Some(position), Some(stream)) = (
                position.and_then(Position::parse),
                pitr::stream_of_slot(&shard.slot),
            ) {
                let entry = oldest
                    .entry((job.team.clone(), job.app.clone(), stream))
                    .or_insert_with(|| position.clone());
                if position < *entry {
                    *entry = position;
                }
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
    for ((team, app, stream), position) in &oldest {
        let prefix = pitr::stream_prefix(team, app, stream);
        let chunks: Vec<pitr::Chunk> = store
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|o| pitr::Chunk::parse(&prefix, &o.key))
            .collect();
        for chunk in pitr::prunable(&chunks, Some(position)) {
            if !dry_run {
                store.delete(&chunk.key).await?;
            }
            report.log_chunks += 1;
        }
    }
    tracing::info!(storage = %location.name, dry_run, deleted = report.deleted, log_chunks = report.log_chunks,
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
