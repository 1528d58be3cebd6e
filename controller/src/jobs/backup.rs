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
use crate::keys;
use crate::records::{JobKind, JobRecord, JobState, ShardRecord, ShardState};
use crate::store::get_json;

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
        full: req.full,
        ..JobRecord::pending(
            new_job_id(&req.app),
            JobKind::Backup,
            req.team,
            req.app,
            app.spec.cluster.clone(),
            location.name.clone(),
            app.spec.clone(),
            trigger.into(),
        )
    };
    let mut job = job;
    job.sealed =
        crate::sealing::new_backup_key(ctx, &location, &job.team, &job.app, &job.id).await?;
    let mut shards: Vec<_> = planned
        .iter()
        .chain(plan_hooks(&app.spec).iter())
        .map(|p| new_shard(&job.id, p, ShardOp::Backup))
        .collect();
    if !job.full && job.sealed.is_none() {
        let parents = parent_indexes(ctx, &job).await?;
        for shard in &mut shards {
            shard.parent_index = parents.get(&shard.slot).cloned();
        }
    }
    Ok((job, shards))
}

/// Each volume slot's newest index: what `repo_heads` holds.
type Heads = std::collections::BTreeMap<String, String>;

/// The parents of a repository backup's volumes: for each slot, its index in the newest
/// completed backup of the same app in the same location that holds one (a `--full` backup in
/// between does not break the chain), read from the app's heads (one key, whatever the job
/// history). A volume no earlier backup holds starts without a parent.
async fn parent_indexes(ctx: &Context, job: &JobRecord) -> Result<Heads> {
    if !job.spec.components.iter().any(|c| !c.volumes.is_empty()) {
        return Ok(Heads::new());
    }
    let key = keys::repo_heads(&job.team, &job.app, &job.storage);
    Ok(get_json::<Heads>(&*ctx.store, &key)
        .await?
        .map(|(heads, _)| heads)
        .unwrap_or_default())
}

/// After `deleted` left the catalog: heads that named its indexes are found again among the
/// remaining backups (deleting the newest backup; retention deletes the oldest, which are no
/// heads, and costs nothing here).
pub async fn forget_heads_of(ctx: &Context, deleted: &JobRecord) -> Result<()> {
    let key = keys::repo_heads(&deleted.team, &deleted.app, &deleted.storage);
    let Some((heads, _)) = get_json::<Heads>(&*ctx.store, &key).await? else {
        return Ok(());
    };
    let dir = layout::backup_dir(&deleted.team, &deleted.app, &deleted.id);
    if !heads.values().any(|index| index.starts_with(&dir)) {
        return Ok(());
    }
    let found = scan_parents(ctx, deleted).await?;
    let heads: Heads = heads
        .into_iter()
        .filter_map(|(slot, index)| {
            if index.starts_with(&dir) {
                found.get(&slot).map(|i| (slot, i.clone()))
            } else {
                Some((slot, index))
            }
        })
        .collect();
    ctx.store.put(&key, heads_json(&heads)).await?;
    Ok(())
}

/// A map of strings always serializes.
fn heads_json(heads: &Heads) -> Vec<u8> {
    serde_json::to_vec(heads).expect("a map of strings serializes")
}

/// Records the indexes a committed backup wrote as its app's heads.
async fn advance_heads(ctx: &Context, job: &JobRecord, ok: &[&ShardRecord]) -> Result<()> {
    let key = keys::repo_heads(&job.team, &job.app, &job.storage);
    let mut heads: Heads = get_json(&*ctx.store, &key)
        .await?
        .map(|(heads, _)| heads)
        .unwrap_or_default();
    let before = heads.clone();
    for s in ok.iter().filter(|s| layout::is_index_key(&s.object_key)) {
        heads.insert(s.slot.clone(), s.object_key.clone());
    }
    if heads != before {
        ctx.store.put(&key, heads_json(&heads)).await?;
    }
    Ok(())
}

/// The heads of `job`'s app found by reading the job history: every slot's index in the
/// newest completed backup (other than `job`) that holds one.
async fn scan_parents(ctx: &Context, job: &JobRecord) -> Result<Heads> {
    /// Backups looked at, newest first: enough to step over a few `--full` ones.
    const LOOK_BACK: usize = 16;
    let mut candidates: Vec<JobRecord> = crate::jobs::list_jobs(ctx)
        .await?
        .into_iter()
        .filter(|j| {
            j.kind == JobKind::Backup
                && j.team == job.team
                && j.app == job.app
                && j.storage == job.storage
                && j.id != job.id
                && matches!(j.state, JobState::Completed | JobState::PartiallyFailed)
        })
        .collect();
    candidates.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
    let wanted = job
        .spec
        .components
        .iter()
        .map(|c| c.volumes.len())
        .sum::<usize>();
    let mut parents = Heads::new();
    for candidate in candidates.iter().take(LOOK_BACK) {
        for s in crate::jobs::shards_of(ctx, &candidate.id).await? {
            if s.state == ShardState::Succeeded && layout::is_index_key(&s.object_key) {
                parents.entry(s.slot).or_insert(s.object_key);
            }
        }
        if parents.len() >= wanted {
            break;
        }
    }
    Ok(parents)
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
        let reported = outcome
            .repo
            .as_ref()
            .map_or(outcome.stored_bytes, |r| r.index_bytes);
        let why = match listed.get(&s.object_key) {
            Some(size) if *size == reported => missing_packs(&*store, &s.object_key).await?,
            Some(size) => Some(format!("is {size} bytes, not the {reported} reported")),
            None => Some("is missing".to_owned()),
        };
        if let Some(why) = why {
            tracing::warn!(job = %job.id, shard = %s.id, key = %s.object_key, %why, "archive check at commit failed");
            *s = crate::shards::skip(
                s,
                &format!("at commit, its archive {} {why}", s.object_key),
                now_ms(),
            );
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
        crate::trust::sign(ctx, &mut manifest);
        if manifest.signature.is_some() {
            job.signer = crate::trust::Signer::Own.label();
        }
        let key = layout::manifest_key(&job.team, &job.app, &job.id);
        store.put_bytes(&key, manifest.to_json()).await?;
        advance_heads(ctx, &job, &ok).await?;
    } else if let Some(sealed) = &job.sealed
        && let Err(e) = store.delete(&sealed.key_file).await
    {
        // A failed backup leaves nothing, its key file included.
        tracing::warn!(job = %job.id, error = %e, "could not remove the key file of a failed backup");
    }
    let keep: Vec<String> = ok
        .iter()
        .filter(|s| !is_absent(s))
        .flat_map(|s| {
            std::iter::once(s.object_key.clone()).chain(layout::packs_key_of(&s.object_key))
        })
        .collect();
    if let Err(e) = store.abort_incomplete(&dir).await {
        tracing::warn!(job = %job.id, error = %e, "could not abort unfinished uploads");
    }
    for key in listed.keys() {
        if !keep.contains(key)
            && let Err(e) = store.delete(key).await
        {
            tracing::warn!(job = %job.id, key = %key, error = %e, "could not remove a stray archive");
        }
    }
    // Shards failed by the check are saved with the job.
    persist::put_shards(&*ctx.store, &shards).await?;
    Ok(job)
}

/// For a repository volume: why its packs do not all exist (a collection removed one the
/// backup reused while it ran), or `None` when they do. Other archives have no packs.
async fn missing_packs(
    store: &dyn ferry_storage::ObjectStore,
    index_key: &str,
) -> Result<Option<String>> {
    let (Some(prefix), Some(list)) = (
        layout::packs_prefix_of(index_key),
        layout::packs_key_of(index_key),
    ) else {
        return Ok(None);
    };
    let missing = ferry_repo::gc::missing_packs(store, &prefix, &list).await?;
    Ok(match missing.as_slice() {
        [] => None,
        [first, ..] => Some(format!(
            "references {} pack(s) no longer in storage (e.g. {first}: collected while the \
             backup ran); back up again",
            missing.len()
        )),
    })
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
    let mut manifest = BackupManifest {
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
        signature: None,
        encrypted_to: job.sealed.as_ref().map(|s| s.recipient.clone()),
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
                    repo: if ok { outcome.repo } else { None },
                    log_position: if ok { outcome.log_position } else { None },
                }
            })
            .collect(),
    };
    manifest.version = if manifest.shards.iter().any(|s| s.repo.is_some()) {
        MANIFEST_VERSION
    } else {
        1
    };
    // The manifest stays readable without an identity (sync, import, restore planning), so in
    // an encrypted location it must not carry data: config values live only in the (encrypted)
    // config shard, and a restore takes them from there.
    if manifest.encrypted_to.is_some() {
        for c in &mut manifest.app_spec.components {
            if c.config.is_some() {
                c.config = Some(serde_json::Value::String(SEALED_CONFIG.to_owned()));
            }
        }
    }
    manifest
}

/// What an encrypted backup's manifest says in place of a component's config.
pub const SEALED_CONFIG: &str = "(encrypted: kept in the backup's config shard)";
