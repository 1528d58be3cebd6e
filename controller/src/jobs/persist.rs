//! Writing jobs at any size. etcd takes at most 128 operations per transaction, and an app may
//! have thousands of shards, so nothing here writes a job and all its shards at once:
//!
//! - creation writes the shards first, in batches, and the job record last — the job record is
//!   the commit point, with the creator's conditions (the job is new; a schedule's tick was not
//!   taken by another leader) — so a job is always whole and a creator that dies leaves only
//!   shard records nothing refers to;
//! - removal deletes the job record first (it vanishes at once), then its shards in batches;
//! - every active job has a key in the active index, written with it and removed by the write
//!   that ends it, so a reconciler pass reads active jobs only.

use std::sync::Arc;

use ferry_model::now_ms;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys;
use crate::records::{JobRecord, ShardRecord};
use crate::store::{Condition, Op, Store};

use super::phase::Phase;

/// Most keys one transaction writes (etcd's limit is 128 operations).
pub const WRITE_BATCH: usize = 100;

/// Writes shards in batches.
pub async fn put_shards(store: &dyn Store, shards: &[ShardRecord]) -> Result<()> {
    for batch in shards.chunks(WRITE_BATCH) {
        let ops = batch
            .iter()
            .map(|s| Op::put_json(keys::shard(&s.job_id, &s.id), s))
            .collect();
        store.txn(vec![], ops).await?;
    }
    Ok(())
}

/// Creates a job: its shards, then (with `conditions` and `extra` ops, and the job being new) the
/// job record in `first` phase and, while it is active, its active-index key. Returns false when
/// a condition did not hold (nothing of the job is left then).
pub async fn create(
    ctx: &Context,
    job: &mut JobRecord,
    shards: &[ShardRecord],
    first: Phase,
    mut conditions: Vec<Condition>,
    mut extra: Vec<Op>,
) -> Result<bool> {
    job.phase = first;
    put_shards(&*ctx.store, shards).await?;
    conditions.push(Condition::Absent(keys::job(&job.id)));
    extra.push(Op::put_json(keys::job(&job.id), &*job));
    if !job.state.is_final() {
        extra.push(Op::put_json(keys::active_job(&job.id), &job.created_at_ms));
    }
    if ctx.store.txn(conditions, extra).await? {
        tracing::info!(job = %job.id, kind = ?job.kind, app = %job.app, shards = shards.len(),
            phase = ?first, "job created");
        ctx.notify();
        return Ok(true);
    }
    remove_shards(&*ctx.store, &job.id).await?;
    Ok(false)
}

/// Creates a job that must be new; refuses (AlreadyExists) otherwise.
pub async fn create_new(
    ctx: &Context,
    job: &mut JobRecord,
    shards: &[ShardRecord],
    first: Phase,
) -> Result<()> {
    if create(ctx, job, shards, first, vec![], vec![]).await? {
        Ok(())
    } else {
        Err(Error::AlreadyExists(format!(
            "job {} already exists",
            job.id
        )))
    }
}

/// Deletes a job's shard records, a batch at a time.
pub async fn remove_shards(store: &dyn Store, job_id: &str) -> Result<()> {
    let prefix = keys::shards_of_job(job_id);
    loop {
        let page = store.list_page(&prefix, &prefix, WRITE_BATCH).await?;
        if page.is_empty() {
            return Ok(());
        }
        store
            .txn(
                vec![],
                page.into_iter().map(|kv| Op::delete(kv.key)).collect(),
            )
            .await?;
    }
}

/// Deletes a job: its record (and index key) first, then its shards.
pub async fn remove(store: &dyn Store, job_id: &str) -> Result<()> {
    store
        .txn(
            vec![],
            vec![
                Op::delete(keys::job(job_id)),
                Op::delete(keys::active_job(job_id)),
            ],
        )
        .await?;
    remove_shards(store, job_id).await
}

/// Saves a job that read at `rev`; false when it changed meanwhile. The write that ends a job
/// also takes it out of the active index.
pub async fn save(ctx: &Context, job: &JobRecord, rev: i64) -> Result<bool> {
    let key = keys::job(&job.id);
    let mut ops = vec![Op::put_json(key.clone(), job)];
    if job.state.is_final() {
        ops.push(Op::delete(keys::active_job(&job.id)));
    }
    let saved = ctx
        .store
        .txn(vec![Condition::ModRevision(key, rev)], ops)
        .await?;
    if saved {
        ctx.notify();
        if job.state.is_final() {
            crate::reconciler::job_ended(ctx, job);
        }
    }
    Ok(saved)
}

/// Ids of the active jobs, page by page.
pub async fn active_ids(store: &dyn Store) -> Result<Vec<String>> {
    let prefix = keys::active_jobs();
    let mut from = prefix.clone();
    let mut ids = Vec::new();
    loop {
        let page = store.list_page(&prefix, &from, 1000).await?;
        let Some(last) = page.last() else { break };
        from = format!("{}\0", last.key);
        let full = page.len() == 1000;
        ids.extend(
            page.iter()
                .filter_map(|kv| kv.key.strip_prefix(&prefix).map(str::to_owned)),
        );
        if !full {
            break;
        }
    }
    Ok(ids)
}

/// Builds the active index once on a store written before it existed: every job not yet final
/// gets its key. Idempotent; marked done in the store.
pub async fn index_active_jobs(ctx: &Arc<Context>) -> Result<()> {
    if ctx.store.get(&keys::active_index_built()).await?.is_some() {
        return Ok(());
    }
    let prefix = keys::jobs();
    let mut from = prefix.clone();
    let mut added = 0;
    loop {
        let page = ctx.store.list_page(&prefix, &from, WRITE_BATCH).await?;
        let Some(last) = page.last() else { break };
        from = format!("{}\0", last.key);
        let full = page.len() == WRITE_BATCH;
        let ops: Vec<Op> = page
            .iter()
            .filter_map(|kv| kv.decode::<JobRecord>().ok())
            .filter(|j| !j.state.is_final())
            .map(|j| Op::put_json(keys::active_job(&j.id), &j.created_at_ms))
            .collect();
        added += ops.len();
        if !ops.is_empty() {
            ctx.store.txn(vec![], ops).await?;
        }
        if !full {
            break;
        }
    }
    ctx.store
        .txn(
            vec![],
            vec![Op::put_json(keys::active_index_built(), &now_ms())],
        )
        .await?;
    if added > 0 {
        tracing::info!(jobs = added, "active-job index built");
    }
    Ok(())
}
