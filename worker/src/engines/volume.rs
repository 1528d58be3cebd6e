//! Volumes: a directory tree as a tar stream (ferry-archive), compressed and uploaded while it is
//! being read; restored by streaming the archive back into an empty (or `--overwrite`) directory.

use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use ferry_model::task::{Resource, ShardOutcome, Staged};

use super::{Run, ShardError};
use crate::pipeline::{download_decompressed, upload_compressed};

fn path_of(run: &Run) -> Result<PathBuf, ShardError> {
    match &run.task.resource {
        Resource::Volume { path } => Ok(PathBuf::from(path)),
        other => Err(ShardError::permanent(format!(
            "not a volume: {}",
            other.kind()
        ))),
    }
}

fn archive_error(e: ferry_archive::ArchiveError) -> ShardError {
    use ferry_archive::ArchiveError as A;
    match e {
        // A name the target file system cannot hold fails the same way on every retry.
        A::Io { ref source, .. } if source.kind() == std::io::ErrorKind::InvalidFilename => {
            ShardError::permanent(format!(
                "{e} (the name is too long or invalid for the target's file system)"
            ))
        }
        A::Io { .. } => ShardError::transient(e.to_string()),
        _ => ShardError::permanent(e.to_string()),
    }
}

/// Archives the volume into the task's object.
pub async fn backup(run: &Run) -> Result<ShardOutcome, ShardError> {
    let root = path_of(run)?;
    match tokio::fs::metadata(&root).await {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ShardError::permanent(format!(
                "volume path {} is not a directory",
                root.display()
            )));
        }
        Err(e) => {
            return Err(ShardError::permanent(format!(
                "volume path {} cannot be read: {e}",
                root.display()
            )));
        }
    }
    if let Some(repo) = run.task.repo.clone() {
        return backup_into_repository(run, root, repo).await;
    }
    // The total is only for progress bars: count it beside the backup, not before it.
    count_total(run, &root);
    let counters = run.counters.clone();
    let stage =
        tracing::info_span!("archive", path = %root.display(), bytes = tracing::field::Empty);
    let (stats, stored) = upload_compressed(
        run.store.clone(),
        &run.task.object_key,
        &run.cancel,
        run.encrypt_to(),
        move |out| {
            let _stage = stage.enter();
            let stats =
                ferry_archive::write_tree(&root, out, &counters.done).map_err(archive_error)?;
            stage.record("bytes", (stats.bytes) as i64);
            Ok(stats)
        },
    )
    .await?;
    Ok(ShardOutcome {
        source_bytes: stats.bytes,
        stored_bytes: stored.bytes,
        sha256: stored.sha256,
        tool_version: Some(format!("ferry-archive {}", env!("CARGO_PKG_VERSION"))),
        config: None,
        detail: describe(&stats),
        absent: false,
        staged: None,
        repo: None,
        log_position: None,
        reached_ms: None,
    })
}

/// Counts the tree beside a backup, for the progress total.
fn count_total(run: &Run, root: &Path) {
    let counters = run.counters.clone();
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if let Ok(total) = ferry_archive::tree_size(&root) {
            counters
                .total
                .store(total, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

fn repo_error(e: ferry_repo::RepoError) -> ShardError {
    use ferry_repo::RepoError as R;
    match e {
        R::Archive(e) => archive_error(e),
        R::Storage(ferry_storage::StorageError::Cancelled) => ShardError::cancelled(),
        R::Storage(e) => ShardError::transient(format!("storage: {e}")),
        R::Io { .. } => ShardError::transient(e.to_string()),
    }
}

/// The volume into the location's repository (DESIGN §10): only chunks the repository lacks
/// are uploaded, and files unchanged since the parent backup are not read.
async fn backup_into_repository(
    run: &Run,
    root: PathBuf,
    repo: ferry_model::task::RepoTask,
) -> Result<ShardOutcome, ShardError> {
    count_total(run, &root);
    let plan = ferry_repo::BackupPlan {
        pack_prefix: repo.packs_prefix,
        index_key: run.task.object_key.clone(),
        packs_key: repo.packs_key,
        parent_index: repo.parent_index.clone(),
    };
    let (store, cancel, counters) = (run.store.clone(), run.cancel.clone(), run.counters.clone());
    let stage = tracing::info_span!("archive", path = %root.display(), repository = true,
        bytes = tracing::field::Empty);
    let stats = tokio::task::spawn_blocking(move || {
        let _stage = stage.enter();
        let rt = tokio::runtime::Handle::current();
        let stats = ferry_repo::backup_tree(&rt, store, &root, &plan, &cancel, &counters.done)
            .map_err(repo_error)?;
        stage.record("bytes", stats.archive.bytes as i64);
        Ok::<_, ShardError>(stats)
    })
    .await
    .map_err(|e| ShardError::transient(format!("repository backup crashed: {e}")))??;
    if run.cancel.is_cancelled() {
        return Err(ShardError::cancelled());
    }
    let mut detail = describe(&stats.archive);
    detail.push_str(&format!(
        "; {} files unchanged since the parent, {} read; {} of {} chunks new ({} stored)",
        stats.unchanged_files,
        stats.read_files,
        stats.new_chunks,
        stats.chunks,
        bytesize::ByteSize(stats.new_stored)
    ));
    Ok(ShardOutcome {
        source_bytes: stats.archive.bytes,
        stored_bytes: stats.index.bytes + stats.new_stored,
        sha256: stats.index.sha256.clone(),
        tool_version: Some(format!("ferry-repo {}", env!("CARGO_PKG_VERSION"))),
        detail,
        repo: Some(ferry_model::task::RepoOutcome {
            index_bytes: stats.index.bytes,
            packs: stats.packs.len() as u64,
            chunks: stats.chunks,
            new_chunks: stats.new_chunks,
            new_stored: stats.new_stored,
            unchanged_files: stats.unchanged_files,
            read_files: stats.read_files,
            parent_index: repo.parent_index.filter(|_| stats.parent_used),
        }),
        ..Default::default()
    })
}

/// `verify --read-data` of a repository volume: reads the whole tar stream its index describes
/// — every chunk's hash, the stream's length and SHA-256 checked on the way — writing nothing.
pub async fn read_repository_data(
    run: &Run,
    repo: &ferry_model::task::RepoTask,
    expected: &str,
) -> Result<(), ShardError> {
    let (store, counters, cancel) = (run.store.clone(), run.counters.clone(), run.cancel.clone());
    let (key, prefix, expected) = (
        run.task.object_key.clone(),
        repo.packs_prefix.clone(),
        expected.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Handle::current();
        let mut input =
            ferry_repo::open_tar(&rt, store, &prefix, &key, Some(&expected)).map_err(repo_error)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if cancel.is_cancelled() {
                return Err(ShardError::cancelled());
            }
            match input.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    counters.done.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(ShardError::permanent(format!("{key} is damaged: {e}")));
                }
                Err(e) => return Err(ShardError::transient(format!("reading {key}: {e}"))),
            }
        }
    })
    .await
    .map_err(|e| ShardError::transient(format!("repository read crashed: {e}")))?
}

fn describe(s: &ferry_archive::ArchiveStats) -> String {
    let mut text = format!(
        "{} files, {} directories, {} symlinks, {} hard links, {} skipped",
        s.files, s.dirs, s.symlinks, s.hardlinks, s.skipped
    );
    for w in &s.attr_warnings {
        text.push_str(&format!("; warning: {w}"));
    }
    text
}

/// Names of the staging directories restores make inside their targets.
const STAGING_PREFIX: &str = ".ferry-restore-";

/// Refuses a target directory that exists and is not empty (leftovers of an earlier restore's
/// staging do not count: the next restore removes them).
pub async fn check_empty(path: &str) -> Result<(), ShardError> {
    if let Ok(m) = tokio::fs::symlink_metadata(path).await {
        refuse_symlink(Path::new(path), &m)?;
    }
    let mut entries = match tokio::fs::read_dir(path).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ShardError::permanent(format!(
                "restore target {path} cannot be read: {e}"
            )));
        }
    };
    loop {
        match entries.next_entry().await {
            Ok(None) => return Ok(()),
            Ok(Some(e)) if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) => {}
            Ok(Some(_)) => {
                return Err(ShardError::permanent(format!(
                    "restore target {path} is not empty; restore into a new app (--to-app NAME \
                     --rewrite {path}=NEW_PATH) or replace its content with --overwrite"
                )));
            }
            Err(e) => {
                return Err(ShardError::permanent(format!(
                    "restore target {path} cannot be read: {e}"
                )));
            }
        }
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn io_error(root: &Path, what: &str, e: std::io::Error) -> ShardError {
    ShardError::transient(format!("{what} {}: {e}", root.display()))
}

/// Creates the target (true when it did not exist) and a fresh staging directory in it; staging
/// left by an earlier attempt (or an earlier restore that failed) goes first.
/// A restore target that is a symbolic link would send every write wherever it points.
fn refuse_symlink(path: &Path, m: &std::fs::Metadata) -> Result<(), ShardError> {
    if m.file_type().is_symlink() {
        return Err(ShardError::permanent(format!(
            "restore target {} is a symbolic link; refusing to write through it (restore into \
             the directory it points to by naming that directory)",
            path.display()
        )));
    }
    Ok(())
}

fn prepare_staging(root: &Path, staging: &Path) -> Result<bool, ShardError> {
    if let Ok(m) = std::fs::symlink_metadata(root) {
        refuse_symlink(root, &m)?;
    }
    let created = !root.exists();
    std::fs::create_dir_all(root)
        .map_err(|e| ShardError::permanent(format!("cannot create {}: {e}", root.display())))?;
    for e in std::fs::read_dir(root).map_err(|e| io_error(root, "reading", e))? {
        let e = e.map_err(|e| io_error(root, "reading", e))?;
        if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            remove_any(&e.path()).map_err(|e| io_error(root, "clearing old staging in", e))?;
        }
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .map_err(|e| io_error(staging, "creating", e))?;
    Ok(created)
}

/// The staged copy's root metadata, read before anything is moved out of it.
fn staged_root(staging: &Path, dir: String) -> Result<Staged, ShardError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(staging).map_err(|e| io_error(staging, "reading", e))?;
    Ok(Staged {
        dir,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_s: m.mtime(),
        mtime_ns: m.mtime_nsec() as u32,
        warnings: Vec::new(),
    })
}

/// A volume restore's first half: the archive streamed into a staging directory inside the
/// target (`.ferry-restore-JOB.ATTEMPT`), its SHA-256 checked on the way. Nothing is visible
/// in the target yet; a bad archive leaves nothing.
pub async fn stage(run: &Run) -> Result<ShardOutcome, ShardError> {
    let root = path_of(run)?;
    // An encrypted backup's key, opened before anything is created in the target.
    let decrypt = run.archive_key().await?;
    let dir = format!("{STAGING_PREFIX}{}.{}", run.task.job_id, run.task.attempt);
    let staging = root.join(&dir);
    let created = {
        let (root, staging) = (root.clone(), staging.clone());
        tokio::task::spawn_blocking(move || prepare_staging(&root, &staging))
            .await
            .map_err(|e| ShardError::transient(format!("preparing the target: {e}")))??
    };
    let counters = run.counters.clone();
    let stage =
        tracing::info_span!("restore", path = %root.display(), bytes = tracing::field::Empty);
    let into = staging.clone();
    let options = ferry_archive::ExtractOptions {
        overwrite: true,
        numeric_owner: run.task.numeric_owner,
        max_bytes: run.task.expected_bytes,
        clear_setid: run.task.data_only,
    };
    let extract = move |input: &mut dyn std::io::Read| {
        let _stage = stage.enter();
        let stats = ferry_archive::extract_tree(input, &into, &options, &counters.done)
            .map_err(archive_error)?;
        stage.record("bytes", (stats.bytes) as i64);
        Ok::<_, ShardError>(stats)
    };
    let key = run.task.object_key.clone();
    let expected = run.task.expected_sha256.clone();
    let extracted = match run.task.repo.clone() {
        Some(repo) => {
            let store = run.store.clone();
            tokio::task::spawn_blocking(move || {
                let rt = tokio::runtime::Handle::current();
                let mut input =
                    ferry_repo::open_tar(&rt, store, &repo.packs_prefix, &key, expected.as_deref())
                        .map_err(repo_error)?;
                let stats = extract(&mut input)?;
                // The rest of the stream (the end blocks) is read too: its checks count.
                std::io::copy(&mut input, &mut std::io::sink())
                    .map_err(|e| ShardError::permanent(format!("reading {key}: {e}")))?;
                Ok(stats)
            })
            .await
            .map_err(|e| ShardError::transient(format!("repository restore crashed: {e}")))
            .and_then(|r| r)
        }
        None => download_decompressed(&*run.store, &key, expected, decrypt, extract).await,
    };

    let stats = match extracted {
        Ok(stats) => stats,
        Err(e) => {
            // A refused or broken archive leaves nothing, not even a target it created.
            let root = root.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _ = remove_any(&staging);
                if created {
                    let _ = std::fs::remove_dir(&root);
                }
            })
            .await;
            return Err(e);
        }
    };
    let mut staged = tokio::task::spawn_blocking(move || staged_root(&staging, dir))
        .await
        .map_err(|e| ShardError::transient(format!("reading the staged copy: {e}")))??;
    staged.warnings = stats
        .attr_warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(ShardOutcome {
        source_bytes: stats.bytes,
        detail: describe(&stats),
        staged: Some(staged),
        ..Default::default()
    })
}

/// Moves a staged copy into place (replacing what `overwrite` allows to replace) and gives the
/// target the archived root's owner, mode, extended attributes (a root's default ACL, say) and
/// times. Returns the attribute kinds the target refused. Before the first move the staging
/// directory is renamed `….moving`: a retry after a dead attempt finds it and carries on
/// moving, never clearing what was already moved.
fn publish_staged(
    root: &Path,
    staged: &Staged,
    overwrite: bool,
) -> Result<Vec<ferry_archive::AttrWarning>, ShardError> {
    let io = |what: &str, e: std::io::Error| io_error(root, what, e);
    let staging = root.join(&staged.dir);
    let moving = root.join(format!("{}.moving", staged.dir));
    if staging.is_dir() {
        if overwrite {
            for e in std::fs::read_dir(root).map_err(|e| io("reading", e))? {
                let path = e.map_err(|e| io("reading", e))?.path();
                if path != staging {
                    remove_any(&path).map_err(|e| io("clearing", e))?;
                }
            }
        }
        std::fs::rename(&staging, &moving).map_err(|e| io("starting to move into", e))?;
    } else if !moving.is_dir() {
        return Err(ShardError::permanent(format!(
            "the staged copy {} of this restore is gone; restore again",
            staging.display()
        )));
    }
    for e in std::fs::read_dir(&moving).map_err(|e| io("reading the staging of", e))? {
        let e = e.map_err(|e| io("reading the staging of", e))?;
        std::fs::rename(e.path(), root.join(e.file_name())).map_err(|e| io("moving into", e))?;
    }
    // The staged root carries the archived root's attributes; they go before the staging
    // directory does, so a retry after a crash here copies them again.
    let warnings = ferry_archive::copy_dir_attrs(&moving, root)
        .map_err(|e| io("setting the extended attributes of", e))?;
    std::fs::remove_dir(&moving).map_err(|e| io("removing the staging of", e))?;
    // Owner first (chown clears setuid/setgid), then mode, then times.
    if ferry_archive::can_restore_owners() {
        std::os::unix::fs::chown(root, Some(staged.uid), Some(staged.gid))
            .map_err(|e| io("setting the owner of", e))?;
    }
    std::fs::set_permissions(
        root,
        std::os::unix::fs::PermissionsExt::from_mode(staged.mode),
    )
    .map_err(|e| io("setting the mode of", e))?;
    let mtime = filetime::FileTime::from_unix_time(staged.mtime_s, staged.mtime_ns);
    filetime::set_file_mtime(root, mtime).map_err(|e| io("setting the times of", e))?;
    Ok(warnings)
}

/// A volume restore's second half (or, for a task that was not staged, both halves): the
/// staged copy moved into place.
pub async fn restore(run: &Run) -> Result<ShardOutcome, ShardError> {
    let (staged, mut outcome) = match run.task.staged.clone() {
        Some(staged) => {
            let detail = staged
                .warnings
                .iter()
                .map(|w| format!("warning: {w}"))
                .collect::<Vec<_>>()
                .join("; ");
            let outcome = ShardOutcome {
                detail,
                ..Default::default()
            };
            (staged, outcome)
        }
        None => {
            let outcome = stage(run).await?;
            let staged = outcome.staged.clone().unwrap_or_default();
            (staged, outcome)
        }
    };
    let root = path_of(run)?;
    let overwrite = run.task.overwrite;
    let published = staged.clone();
    let warnings =
        tokio::task::spawn_blocking(move || publish_staged(&root, &published, overwrite))
            .await
            .map_err(|e| ShardError::transient(format!("moving the restore into place: {e}")))??;
    for w in warnings {
        if !outcome.detail.is_empty() {
            outcome.detail.push_str("; ");
        }
        outcome
            .detail
            .push_str(&format!("warning: {w} (the volume root)"));
    }
    Ok(ShardOutcome {
        staged: None,
        ..outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dir: &str) -> Staged {
        Staged {
            dir: dir.into(),
            mode: 0o750,
            uid: 0,
            gid: 0,
            mtime_s: 1_700_000_000,
            mtime_ns: 123,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn a_name_the_file_system_cannot_hold_is_permanent() {
        let long = PathBuf::from("x".repeat(300));
        let source = std::fs::File::create(&long).unwrap_err();
        let e = archive_error(ferry_archive::ArchiveError::Io { path: long, source });
        assert!(e.permanent, "{}", e.message);
        assert!(e.message.contains("too long"), "{}", e.message);
        let e = archive_error(ferry_archive::ArchiveError::Io {
            path: "a".into(),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        });
        assert!(!e.permanent);
    }

    #[test]
    fn a_publish_replaces_old_content_once_and_resumes_after_a_crash() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("target");
        std::fs::create_dir_all(root.join(".ferry-restore-j.3")).unwrap();
        std::fs::write(root.join("old.txt"), "old").unwrap();
        for f in ["a", "b"] {
            std::fs::write(root.join(".ferry-restore-j.3").join(f), f).unwrap();
        }
        // A first attempt died after moving `a`: the staging was already renamed.
        std::fs::remove_file(root.join("old.txt")).unwrap();
        std::fs::rename(
            root.join(".ferry-restore-j.3"),
            root.join(".ferry-restore-j.3.moving"),
        )
        .unwrap();
        std::fs::rename(root.join(".ferry-restore-j.3.moving/a"), root.join("a")).unwrap();
        publish_staged(&root, &staged(".ferry-restore-j.3"), true).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["a", "b"],
            "what was moved is kept, the rest follows"
        );
        let meta = std::fs::metadata(&root).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o750);
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_700_000_000, 123));
        // Nothing staged and nothing moving: a clear error, nothing touched.
        let e = publish_staged(&root, &staged(".ferry-restore-j.9"), true).unwrap_err();
        assert!(e.message.contains("gone"), "{}", e.message);
        assert!(root.join("a").exists());
    }

    #[test]
    fn an_overwrite_clears_the_target_only_when_the_copy_is_ready() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("target");
        std::fs::create_dir_all(root.join(".ferry-restore-j.1")).unwrap();
        std::fs::write(root.join("old.txt"), "old").unwrap();
        std::fs::write(root.join(".ferry-restore-j.1/new.txt"), "new").unwrap();
        publish_staged(&root, &staged(".ferry-restore-j.1"), true).unwrap();
        assert!(!root.join("old.txt").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("new.txt")).unwrap(),
            "new"
        );
    }
}
