//! The catalog and the buckets: backups found in a storage location (sync), streamed out as one
//! portable file (export) and taken in from one (import).
//!
//! A backup exists in storage when its `manifest.json` does (DESIGN.md §4), so the manifest is
//! all another installation needs: sync turns every manifest it does not know into a catalog
//! entry and drops entries whose manifest is gone; import writes the archives, checks each
//! against the manifest's checksum as it arrives, and writes the manifest last.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use ferry_model::layout;
use ferry_model::manifest::BackupManifest;
use ferry_model::storage::StorageLocation;
use ferry_model::task::{ShardOp, ShardOutcome, plan_shards};
use ferry_proto::v1;
use ferry_proto::v1::export_chunk::Part;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::StreamReader;
use tokio_util::sync::CancellationToken;

use crate::apps;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::jobs::phase::Phase;
use crate::jobs::{self, MANIFEST_LIMIT};
use crate::keys;
use crate::records::{JobKind, JobRecord, JobState, ShardRecord, ShardState};
use crate::store::{Condition, Op, list_json};

/// Bytes per `data` chunk of an export.
const CHUNK: usize = 1 << 20;

/// What one sync of a location found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub listed: u32,
    pub added: u32,
    pub removed: u32,
    pub invalid: u32,
}

/// Syncs every location, every `sync_interval`, while this controller leads.
pub async fn run(ctx: Arc<Context>, cancel: CancellationToken) {
    let every = ctx.settings.sync_interval;
    if every.is_zero() {
        return;
    }
    loop {
        match apps::list_storage(&*ctx.store).await {
            Ok(locations) => {
                for location in locations {
                    tokio::select! {
                        _ = sync_location(&ctx, &location) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sync: could not list storage locations"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Brings the catalog in line with one location: every manifest there that the catalog does not
/// know becomes a completed backup; every completed backup of the location whose manifest is
/// gone is dropped. A location that cannot be listed changes nothing.
pub async fn sync_location(ctx: &Context, location: &StorageLocation) -> Result<SyncReport> {
    let result = sync_inner(ctx, location).await;
    match &result {
        Ok(r) if r.added + r.removed + r.invalid > 0 => {
            tracing::info!(storage = %location.name, listed = r.listed, added = r.added,
                removed = r.removed, invalid = r.invalid, "storage synced");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(storage = %location.name, error = %e, "storage sync failed"),
    }
    result
}

async fn sync_inner(ctx: &Context, location: &StorageLocation) -> Result<SyncReport> {
    // The catalog is read before the bucket is listed: a backup that commits in between has its
    // manifest in the listing, so it can never be mistaken for one whose manifest is gone.
    let catalog = list_json::<JobRecord>(&*ctx.store, &keys::jobs()).await?;
    let known: HashSet<String> = catalog.iter().map(|(j, _)| j.id.clone()).collect();
    // A local directory that is not there (unmounted, briefly missing) lists as empty: that
    // must not read as "every backup is gone".
    if let ferry_model::storage::StorageBackend::Local { path, .. } = &location.backend
        && !std::path::Path::new(path).is_dir()
    {
        return Err(Error::FailedPrecondition(format!(
            "the directory {path} of storage {:?} is missing; the catalog is left as it is",
            location.name
        )));
    }
    let store = ferry_storage::open(location)?;
    let manifests: BTreeMap<String, String> = store
        .list("teams/")
        .await?
        .into_iter()
        .filter_map(|o| {
            let (_, _, id) = layout::parse_manifest_key(&o.key)?;
            Some((id, o.key))
        })
        .collect();
    let mut report = SyncReport {
        listed: manifests.len() as u32,
        ..SyncReport::default()
    };
    // Read once for the whole listing, not per manifest.
    let (own_key, trusted) = (
        crate::trust::own_key(ctx),
        crate::trust::list(&*ctx.store).await?,
    );
    for (id, key) in &manifests {
        if known.contains(id) {
            continue;
        }
        let found = async {
            let bytes = store.get_bytes(key, MANIFEST_LIMIT).await?;
            let manifest = BackupManifest::from_json(&bytes)?;
            if layout::manifest_key(&manifest.team, &manifest.app, &manifest.id) != *key {
                return Err(Error::InvalidArgument(format!(
                    "it describes backup {} of {}/{}, which belongs elsewhere",
                    manifest.id, manifest.team, manifest.app
                )));
            }
            // Only a manifest signed by this installation comes back as its own (trigger,
            // expiry): an unsigned "installation" field would let a bucket writer make
            // retention count a fake backup.
            let signer = crate::trust::judge(&manifest, &own_key, &trusted);
            let ours = if signer == crate::trust::Signer::Own {
                ctx.installation()
            } else {
                ""
            };
            let (mut job, shards) = record_from_manifest(
                &manifest,
                &location.name,
                "sync",
                format!("found in storage {} by sync", location.name),
                ours,
            )?;
            job.signer = signer.label();
            persist(ctx, &job, &shards).await
        };
        match found.await {
            Ok(true) => report.added += 1,
            Ok(false) => {} // added meanwhile by another path
            Err(e) => {
                report.invalid += 1;
                tracing::warn!(storage = %location.name, key = %key, error = %e,
                    "sync: not a usable backup manifest; left alone");
            }
        }
    }
    for (job, rev) in catalog {
        let committed = matches!(job.state, JobState::Completed | JobState::PartiallyFailed);
        if job.kind != JobKind::Backup
            || job.storage != location.name
            || !committed
            || manifests.contains_key(&job.id)
        {
            continue;
        }
        // Gone from the listing; make sure it is gone, not just unlisted for a moment.
        let key = layout::manifest_key(&job.team, &job.app, &job.id);
        match store.head(&key).await {
            Ok(None) => {}
            Ok(Some(_)) => continue,
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "sync: cannot tell whether the manifest is gone; kept");
                continue;
            }
        }
        let condition = Condition::ModRevision(keys::job(&job.id), rev);
        let ops = vec![Op::delete(keys::job(&job.id))];
        if ctx.store.txn(vec![condition], ops).await? {
            jobs::persist::remove_shards(&*ctx.store, &job.id).await?;
            report.removed += 1;
            tracing::warn!(job = %job.id, storage = %location.name,
                "backup removed from the catalog: its manifest is gone from storage");
        }
    }
    if report.added + report.removed > 0 {
        ctx.notify();
    }
    Ok(report)
}

/// Writes a catalog entry (shards first, the job record last) unless one with its id exists;
/// true when written.
async fn persist(ctx: &Context, job: &JobRecord, shards: &[ShardRecord]) -> Result<bool> {
    let mut job = job.clone();
    jobs::persist::create(ctx, &mut job, shards, Phase::Done, vec![], vec![]).await
}

/// The catalog entry (a finished backup and its shards) for a manifest found in `storage`.
/// Refuses a manifest whose archives lie outside its own backup directory or whose shards have
/// no place in its app spec.
/// A manifest this installation wrote (`ours` is its id) comes back exactly: its trigger (so a
/// schedule's keep-N counts it again) and its expiry; another installation's keeps `trigger`
/// and no expiry, so this installation's schedules and TTLs never delete it.
pub fn record_from_manifest(
    manifest: &BackupManifest,
    storage: &str,
    trigger: &str,
    message: String,
    ours: &str,
) -> Result<(JobRecord, Vec<ShardRecord>)> {
    let own = !ours.is_empty() && manifest.installation == ours;
    let trigger = if own {
        manifest.trigger.as_str()
    } else {
        trigger
    };
    let state = match manifest.state.as_str() {
        "Completed" => JobState::Completed,
        "PartiallyFailed" => JobState::PartiallyFailed,
        other => {
            return Err(Error::InvalidArgument(format!(
                "manifest of {} has state {other:?}; only completed backups have one",
                manifest.id
            )));
        }
    };
    manifest.app_spec.validate()?;
    let dir = format!(
        "{}shards/",
        layout::backup_dir(&manifest.team, &manifest.app, &manifest.id)
    );
    let planned: BTreeMap<String, _> = plan_shards(&manifest.app_spec)
        .into_iter()
        .map(|p| (p.slot.clone(), p))
        .collect();
    let mut shards = Vec::with_capacity(manifest.shards.len());
    for m in &manifest.shards {
        let ok = m.error.is_empty();
        if ok && archive_name(&m.object_key, &dir).is_none() {
            return Err(Error::InvalidArgument(format!(
                "manifest of {}: archive {:?} of shard {} is not in the backup's directory",
                manifest.id, m.object_key, m.id
            )));
        }
        let planned = planned.get(&m.slot).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "manifest of {}: shard {} ({}) has no place in its app spec",
                manifest.id, m.id, m.slot
            ))
        })?;
        let mut shard = jobs::new_shard(&manifest.id, planned, ShardOp::Backup);
        shard.id = m.id.clone();
        shard.state = if ok {
            ShardState::Succeeded
        } else {
            ShardState::Failed
        };
        shard.attempt = m.attempt;
        shard.worker = m.worker.clone();
        shard.object_key = m.object_key.clone();
        shard.expected_sha256 = ok.then(|| m.sha256.clone());
        shard.outcome = ok.then(|| ShardOutcome {
            source_bytes: m.source_bytes,
            stored_bytes: m.stored_bytes,
            sha256: m.sha256.clone(),
            tool_version: m.tool_version.clone(),
            ..ShardOutcome::default()
        });
        shard.error = m.error.clone();
        shard.started_at_ms = m.started_at_ms;
        shard.finished_at_ms = m.finished_at_ms;
        shards.push(shard);
    }
    let job = JobRecord {
        state,
        started_at_ms: manifest.created_at_ms,
        created_at_ms: manifest.created_at_ms,
        finished_at_ms: manifest.completed_at_ms,
        labels: manifest.labels.clone(),
        message,
        expires_at_ms: if own { manifest.expires_at_ms } else { None },
        source_bytes: manifest.shards.iter().map(|s| s.source_bytes).sum(),
        stored_bytes: manifest.shards.iter().map(|s| s.stored_bytes).sum(),
        ..JobRecord::pending(
            manifest.id.clone(),
            JobKind::Backup,
            manifest.team.clone(),
            manifest.app.clone(),
            manifest.cluster.clone(),
            storage.to_owned(),
            manifest.app_spec.clone(),
            trigger.to_owned(),
        )
    };
    Ok((job, shards))
}

/// `shards/FILE` for an archive key inside `shards_dir`, or None when the key lies elsewhere.
fn archive_name(key: &str, shards_dir: &str) -> Option<String> {
    layout::names_shard_in(key, shards_dir).then(|| format!("shards/{}", &key[shards_dir.len()..]))
}

/// Streams a finished backup as the parts of one `.ferry` file: its manifest, then each archive
/// (header, then data in chunks). Reads one chunk ahead at most.
pub async fn export(
    ctx: &Context,
    team: &str,
    id: &str,
) -> Result<impl Stream<Item = Result<v1::ExportChunk, tonic::Status>> + Send + 'static> {
    let backup = jobs::get_job(ctx, team, id).await?;
    if backup.kind != JobKind::Backup
        || !matches!(
            backup.state,
            JobState::Completed | JobState::PartiallyFailed
        )
    {
        return Err(Error::FailedPrecondition(format!(
            "{id} is not a completed backup; only those can be exported"
        )));
    }
    let mut manifest = jobs::read_manifest(ctx, &backup).await?;
    let trusted = crate::trust::judge_now(ctx, &manifest).await?.is_trusted();
    let location = apps::find_storage(&*ctx.store, &backup.storage)
        .await?
        .ok_or_else(|| Error::NotFound(format!("storage location {:?} gone", backup.storage)))?;
    let store = ferry_storage::open(&location)?;
    let dir = format!("{}shards/", layout::backup_dir(team, &backup.app, id));
    // Repository volumes leave as self-contained archives: measured first (the manifest,
    // which goes first, names their size and checksum), then streamed.
    let mut rehydrated = std::collections::HashMap::new();
    for shard in manifest.shards.iter_mut() {
        if shard.repo.is_none() || !shard.error.is_empty() {
            continue;
        }
        let (index, index_sha256) = (shard.object_key.clone(), shard.sha256.clone());
        let written = rehydrate(store.clone(), &index, &index_sha256, std::io::sink()).await?;
        shard.object_key = layout::shard_key(team, &backup.app, id, &shard.id, shard.attempt);
        shard.stored_bytes = written.bytes;
        shard.sha256 = written.sha256;
        shard.repo = None;
        rehydrated.insert(
            shard.object_key.clone(),
            (index, index_sha256, shard.sha256.clone()),
        );
    }
    if !rehydrated.is_empty() && manifest.shards.iter().all(|s| s.repo.is_none()) {
        manifest.version = 1;
    }
    // Rehydrating changed what the manifest says of its volumes: this installation vouches for
    // the result by signing it again, but only for a manifest it trusts (an untrusted one keeps
    // its old signature, which no longer matches: it stays untrusted wherever it goes).
    if !rehydrated.is_empty() && trusted {
        crate::trust::sign(ctx, &mut manifest);
    }
    // An encrypted backup travels with its key file (sealed: useless without an identity of
    // the location's recipients), so that wherever it is imported it restores the same way.
    let key_file = match manifest.encrypted_to {
        Some(_) => Some(
            store
                .get_bytes(
                    &layout::key_file(team, &backup.app, id),
                    ferry_crypto::seal::KEY_FILE_LIMIT,
                )
                .await?,
        ),
        None => None,
    };
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let send = |part: Part| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(v1::ExportChunk { part: Some(part) }))
                    .await
                    .is_ok()
            }
        };
        if !send(Part::Manifest(manifest.to_json())).await {
            return;
        }
        if let Some(sealed) = key_file {
            let header = Part::Archive(v1::ArchiveStart {
                name: layout::KEY_FILE.to_owned(),
                size: sealed.len() as u64,
            });
            if !send(header).await || !send(Part::Data(sealed)).await {
                return;
            }
        }
        for shard in manifest.shards.iter().filter(|s| s.error.is_empty()) {
            let Some(name) = archive_name(&shard.object_key, &dir) else {
                let _ = tx
                    .send(Err(tonic::Status::data_loss(format!(
                        "manifest of {} names archive {:?} outside its directory",
                        manifest.id, shard.object_key
                    ))))
                    .await;
                return;
            };
            let header = Part::Archive(v1::ArchiveStart {
                name,
                size: shard.stored_bytes,
            });
            if !send(header).await {
                return;
            }
            let streamed = match rehydrated.get(&shard.object_key) {
                Some((index, index_sha256, sha256)) => {
                    stream_rehydrated(&store, index, index_sha256, sha256, &tx).await
                }
                None => stream_object(&*store, &shard.object_key, &tx).await,
            };
            if let Err(e) = streamed {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// A repository volume as the tar.zst a full backup would hold (see `ferry_repo::rehydrate`).
async fn rehydrate<W: std::io::Write + Send + 'static>(
    store: std::sync::Arc<dyn ferry_storage::ObjectStore>,
    index: &str,
    index_sha256: &str,
    out: W,
) -> Result<ferry_storage::blocking::Written> {
    let (index, sha) = (index.to_owned(), index_sha256.to_owned());
    let prefix = layout::packs_prefix_of(&index)
        .ok_or_else(|| Error::DataLoss(format!("index {index:?} lies outside any team")))?;
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Handle::current();
        ferry_repo::rehydrate(&rt, store, &prefix, &index, Some(&sha), out)
            .map_err(|e| Error::DataLoss(format!("rehydrating {index}: {e}")))
    })
    .await
    .map_err(|e| Error::DataLoss(format!("rehydrating crashed: {e}")))?
}

/// Streams a rehydrated repository volume, checking that it came out as measured.
async fn stream_rehydrated(
    store: &std::sync::Arc<dyn ferry_storage::ObjectStore>,
    index: &str,
    index_sha256: &str,
    expected: &str,
    tx: &mpsc::Sender<Result<v1::ExportChunk, tonic::Status>>,
) -> Result<()> {
    let out = ChunkSender {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
    };
    let written = rehydrate(store.clone(), index, index_sha256, out).await?;
    if written.sha256 != expected {
        return Err(Error::DataLoss(format!(
            "{index} rehydrated differently the second time"
        )));
    }
    Ok(())
}

/// Export data parts from a blocking thread.
struct ChunkSender {
    tx: mpsc::Sender<Result<v1::ExportChunk, tonic::Status>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let part = Part::Data(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(v1::ExportChunk { part: Some(part) }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "export cancelled"))
    }
}

async fn stream_object(
    store: &dyn ferry_storage::ObjectStore,
    key: &str,
    tx: &mpsc::Sender<Result<v1::ExportChunk, tonic::Status>>,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut reader = store.get(key).await?;
    loop {
        let mut buf = Vec::with_capacity(CHUNK);
        let n = (&mut reader)
            .take(CHUNK as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| ferry_storage::StorageError::Io {
                key: key.to_owned(),
                source: e,
            })?;
        if n == 0 {
            return Ok(());
        }
        let chunk = v1::ExportChunk {
            part: Some(Part::Data(buf)),
        };
        if tx.send(Ok(chunk)).await.is_err() {
            return Err(Error::Cancelled);
        }
    }
}

/// Takes in an exported backup (see [`export`]) into a location of this installation, under the
/// team the import names. Nothing of it is visible until it is whole: archives are written and
/// checked one by one, the manifest last, then the catalog entry. Anything wrong — a bad
/// manifest, an archive it does not list, a size or checksum that does not match, a missing
/// archive — stops the import and removes what it wrote. `scope` turns the team the import
/// names into the team it goes to (the caller's, see `crate::auth::Caller::team`).
pub async fn import<S>(
    ctx: &Context,
    mut parts: S,
    scope: impl FnOnce(&str) -> Result<String, tonic::Status>,
) -> Result<JobRecord>
where
    S: Stream<Item = Result<v1::ExportChunk, tonic::Status>> + Unpin + Send,
{
    let bad = |m: String| Error::InvalidArgument(format!("not a valid Ferry export: {m}"));
    let Some(Part::Target(target)) = next_part(&mut parts).await? else {
        return Err(bad("an import starts with its target".into()));
    };
    if !target.team.is_empty() {
        ferry_model::names::check_name("team name", &target.team)?;
    }
    let team = scope(&target.team)?;
    let location = apps::find_storage(&*ctx.store, &target.storage)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!("storage location {:?} not found", target.storage))
        })?;
    let Some(Part::Manifest(raw)) = next_part(&mut parts).await? else {
        return Err(bad("the manifest must come first".into()));
    };
    let mut manifest =
        BackupManifest::from_json(&raw).map_err(|e| bad(format!("its manifest: {e}")))?;
    // Rebase onto this installation: the importing team, this location.
    let old_dir = format!(
        "{}shards/",
        layout::backup_dir(&manifest.team, &manifest.app, &manifest.id)
    );
    let new_dir = layout::backup_dir(&team, &manifest.app, &manifest.id);
    let mut expected: BTreeMap<String, (String, u64, String)> = BTreeMap::new();
    for shard in manifest.shards.iter_mut().filter(|s| s.error.is_empty()) {
        let name = archive_name(&shard.object_key, &old_dir).ok_or_else(|| {
            bad(format!(
                "archive {:?} is outside the backup's directory",
                shard.object_key
            ))
        })?;
        shard.object_key = format!("{new_dir}{name}");
        expected.insert(
            name,
            (
                shard.object_key.clone(),
                shard.stored_bytes,
                shard.sha256.clone(),
            ),
        );
    }
    manifest.team = team.clone();
    manifest.storage = location.name.clone();
    let (mut job, shards) = record_from_manifest(
        &manifest,
        &location.name,
        "import",
        "imported from a .ferry file".into(),
        "",
    )
    .map_err(|e| bad(e.to_string()))?;
    job.signer = crate::trust::judge_now(ctx, &manifest).await?.label();
    if crate::store::get_json::<JobRecord>(&*ctx.store, &keys::job(&job.id))
        .await?
        .is_some()
    {
        return Err(Error::AlreadyExists(format!(
            "backup {} is already in this installation's catalog",
            job.id
        )));
    }
    let store = ferry_storage::open(&location)?;
    let manifest_key = layout::manifest_key(&team, &manifest.app, &manifest.id);
    if store.head(&manifest_key).await?.is_some() {
        return Err(Error::AlreadyExists(format!(
            "storage {} already holds backup {}; sync it instead (ferry storage sync {})",
            location.name, job.id, location.name
        )));
    }
    let written = async {
        let mut have_key = false;
        while let Some(part) = next_part(&mut parts).await? {
            let Part::Archive(start) = part else {
                return Err(bad("expected an archive header".into()));
            };
            if start.name == layout::KEY_FILE && manifest.encrypted_to.is_some() && !have_key {
                let sealed = import_key_file(&mut parts, start.size).await?;
                store
                    .put_bytes(&format!("{new_dir}{}", layout::KEY_FILE), sealed)
                    .await?;
                have_key = true;
                continue;
            }
            let (key, size, sha) = expected.remove(&start.name).ok_or_else(|| {
                bad(format!(
                    "it holds archive {:?}, which its manifest does not list (or twice)",
                    start.name
                ))
            })?;
            if start.size != size {
                return Err(bad(format!(
                    "archive {} is {} bytes; its manifest says {size}",
                    start.name, start.size
                )));
            }
            import_archive(&*store, &mut parts, &start.name, &key, size, &sha).await?;
        }
        if let Some(name) = expected.keys().next() {
            return Err(bad(format!(
                "archive {name} is missing ({} in all)",
                expected.len()
            )));
        }
        if manifest.encrypted_to.is_some() && !have_key {
            return Err(bad(format!(
                "the backup is encrypted and its {} is missing",
                layout::KEY_FILE
            )));
        }
        store.put_bytes(&manifest_key, manifest.to_json()).await?;
        Ok(())
    }
    .await;
    if let Err(e) = written {
        tracing::warn!(backup = %job.id, storage = %location.name, error = %e,
            "import failed; removing what it wrote");
        let _ = store.abort_incomplete(&new_dir).await;
        if let Ok(objects) = store.list(&new_dir).await {
            for o in objects {
                let _ = store.delete(&o.key).await;
            }
        }
        return Err(e);
    }
    if !persist(ctx, &job, &shards).await? {
        return Err(Error::AlreadyExists(format!(
            "backup {} appeared in the catalog meanwhile (a sync found it)",
            job.id
        )));
    }
    tracing::info!(job = %job.id, team = %team, storage = %location.name, shards = shards.len(),
        "backup imported");
    ctx.notify();
    Ok(job)
}

async fn next_part<S>(parts: &mut S) -> Result<Option<Part>>
where
    S: Stream<Item = Result<v1::ExportChunk, tonic::Status>> + Unpin,
{
    match parts.next().await {
        None => Ok(None),
        Some(Err(status)) => Err(Error::InvalidArgument(format!(
            "the import stream broke: {}",
            status.message()
        ))),
        Some(Ok(v1::ExportChunk { part: None })) => Err(Error::InvalidArgument(
            "not a valid Ferry export: an empty chunk".into(),
        )),
        Some(Ok(v1::ExportChunk { part: Some(p) })) => Ok(Some(p)),
    }
}

/// An encrypted backup's key file from the import stream: small, and an age file.
async fn import_key_file<S>(parts: &mut S, size: u64) -> Result<Vec<u8>>
where
    S: Stream<Item = Result<v1::ExportChunk, tonic::Status>> + Unpin + Send,
{
    let bad = |m: &str| Error::InvalidArgument(format!("not a valid Ferry export: {m}"));
    if size > ferry_crypto::seal::KEY_FILE_LIMIT {
        return Err(bad("its key file is too large"));
    }
    let mut sealed = Vec::with_capacity(size as usize);
    while (sealed.len() as u64) < size {
        let Some(Part::Data(data)) = next_part(parts).await? else {
            return Err(bad("its key file is cut short"));
        };
        sealed.extend_from_slice(&data);
    }
    if sealed.len() as u64 != size || !ferry_crypto::seal::is_key_file(&sealed) {
        return Err(bad("its key file is not an age file"));
    }
    Ok(sealed)
}

/// Streams one archive's `data` parts into storage. The object is completed only after all
/// `size` bytes arrived and their SHA-256 matched; otherwise the upload is aborted.
async fn import_archive<S>(
    store: &dyn ferry_storage::ObjectStore,
    parts: &mut S,
    name: &str,
    key: &str,
    size: u64,
    sha256: &str,
) -> Result<()>
where
    S: Stream<Item = Result<v1::ExportChunk, tonic::Status>> + Unpin + Send,
{
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    let cancel = CancellationToken::new();
    let body = Box::pin(StreamReader::new(ReceiverStream::new(rx)));
    let feed = async {
        let result = async {
            let mut hasher = Sha256::new();
            let mut got = 0u64;
            while got < size {
                let Some(Part::Data(data)) = next_part(parts).await? else {
                    return Err(Error::InvalidArgument(format!(
                        "not a valid Ferry export: archive {name} ends after {got} of {size} bytes"
                    )));
                };
                got += data.len() as u64;
                if got > size {
                    return Err(Error::InvalidArgument(format!(
                        "not a valid Ferry export: archive {name} is longer than {size} bytes"
                    )));
                }
                hasher.update(&data);
                if tx.send(Ok(Bytes::from(data))).await.is_err() {
                    return Ok(()); // the upload failed; its error is the one to report
                }
            }
            if hex::encode(hasher.finalize()) != sha256 {
                return Err(Error::InvalidArgument(format!(
                    "archive {name} is corrupt: its SHA-256 does not match the manifest"
                )));
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            // Fail the body so that the upload is aborted, never completed short.
            let _ = tx.send(Err(std::io::Error::other("import stopped"))).await;
        }
        drop(tx);
        result
    };
    let (fed, put) = tokio::join!(feed, store.put(key, body, &cancel));
    fed?;
    put?;
    Ok(())
}
