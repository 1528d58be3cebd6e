//! Volumes: a directory tree as a tar stream (ferry-archive), compressed and uploaded while it is
//! being read; restored by streaming the archive back into an empty (or `--overwrite`) directory.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ferry_model::task::{Resource, ShardOutcome};

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
    // The total is only for progress bars: count it beside the backup, not before it.
    let counters = run.counters.clone();
    let sizing_root = root.clone();
    tokio::task::spawn_blocking(move || {
        if let Ok(total) = ferry_archive::tree_size(&sizing_root) {
            counters
                .total
                .store(total, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let counters = run.counters.clone();
    let stage =
        tracing::info_span!("archive", path = %root.display(), bytes = tracing::field::Empty);
    let (stats, stored) = upload_compressed(
        run.store.clone(),
        &run.task.object_key,
        &run.cancel,
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
    })
}

fn describe(s: &ferry_archive::ArchiveStats) -> String {
    format!(
        "{} files, {} directories, {} symlinks, {} hard links, {} skipped",
        s.files, s.dirs, s.symlinks, s.hardlinks, s.skipped
    )
}

/// Refuses a target directory that exists and is not empty.
pub async fn check_empty(path: &str) -> Result<(), ShardError> {
    let mut entries = match tokio::fs::read_dir(path).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ShardError::permanent(format!(
                "restore target {path} cannot be read: {e}"
            )));
        }
    };
    match entries.next_entry().await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(ShardError::permanent(format!(
            "restore target {path} is not empty; restore into a new app (--to-app NAME \
             --rewrite {path}=NEW_PATH) or replace its content with --overwrite"
        ))),
        Err(e) => Err(ShardError::permanent(format!(
            "restore target {path} cannot be read: {e}"
        ))),
    }
}

/// Name prefix of the staging directories of one restore job inside its target.
fn staging_prefix(job_id: &str) -> String {
    format!(".ferry-restore-{job_id}.")
}

/// Makes the target ready for this attempt: creates it, and when an earlier attempt of the same
/// restore left its staging directory there (it died, or lost its lease), everything in the
/// target is that attempt's and is removed. Otherwise a target with content is refused unless
/// `overwrite`.
fn claim(root: &Path, prefix: &str, overwrite: bool) -> Result<(), ShardError> {
    let io = |what: &str, e: std::io::Error| {
        ShardError::transient(format!("{what} {}: {e}", root.display()))
    };
    std::fs::create_dir_all(root)
        .map_err(|e| ShardError::permanent(format!("cannot create {}: {e}", root.display())))?;
    let mut ours = false;
    let mut entries = Vec::new();
    for e in std::fs::read_dir(root).map_err(|e| io("reading", e))? {
        let e = e.map_err(|e| io("reading", e))?;
        ours |= e.file_name().to_string_lossy().starts_with(prefix);
        entries.push(e.path());
    }
    if ours {
        tracing::info!(target = %root.display(), "an earlier attempt of this restore left its work here: removing it");
        for path in entries {
            remove_any(&path).map_err(|e| io("clearing", e))?;
        }
    } else if !entries.is_empty() && !overwrite {
        return Err(ShardError::permanent(format!(
            "restore target {} is not empty; restore into a new app (--to-app NAME \
             --rewrite {0}=NEW_PATH) or replace its content with --overwrite",
            root.display()
        )));
    }
    Ok(())
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Moves a verified staging directory's content into the target (replacing what `overwrite`
/// allows to replace), then gives the target the archived root's owner, mode and times. The
/// staging directory goes last, so until then a retry knows the target's content is ours.
fn publish(root: &Path, staging: &Path, overwrite: bool) -> Result<(), ShardError> {
    use std::os::unix::fs::MetadataExt;
    let io = |what: &str, e: std::io::Error| {
        ShardError::transient(format!("{what} {}: {e}", root.display()))
    };
    if overwrite {
        for e in std::fs::read_dir(root).map_err(|e| io("reading", e))? {
            let path = e.map_err(|e| io("reading", e))?.path();
            if path != staging {
                remove_any(&path).map_err(|e| io("clearing", e))?;
            }
        }
    }
    // The archived root's metadata is the staging directory's, read before moving changes it.
    let meta = std::fs::symlink_metadata(staging).map_err(|e| io("reading the staging of", e))?;
    for e in std::fs::read_dir(staging).map_err(|e| io("reading the staging of", e))? {
        let e = e.map_err(|e| io("reading the staging of", e))?;
        std::fs::rename(e.path(), root.join(e.file_name())).map_err(|e| io("moving into", e))?;
    }
    std::fs::remove_dir(staging).map_err(|e| io("removing the staging of", e))?;
    // Owner first (chown clears setuid/setgid), then mode, then times.
    if ferry_archive::can_restore_owners() {
        std::os::unix::fs::chown(root, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| io("setting the owner of", e))?;
    }
    std::fs::set_permissions(
        root,
        std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
    )
    .map_err(|e| io("setting the mode of", e))?;
    let mtime = filetime::FileTime::from_last_modification_time(&meta);
    let atime = filetime::FileTime::from_last_access_time(&meta);
    filetime::set_file_times(root, atime, mtime).map_err(|e| io("setting the times of", e))?;
    Ok(())
}

/// Streams the archive into a staging directory inside the volume's directory, and moves it
/// into place only once the archive's SHA-256 matched. A retry after a failed or lost attempt
/// finds that attempt's staging directory and starts over; two attempts never share one.
pub async fn restore(run: &Run) -> Result<ShardOutcome, ShardError> {
    let root = path_of(run)?;
    let overwrite = run.task.overwrite;
    let prefix = staging_prefix(&run.task.job_id);
    let staging = root.join(format!("{prefix}{}", run.task.attempt));
    {
        let (root, prefix, staging) = (root.clone(), prefix.clone(), staging.clone());
        tokio::task::spawn_blocking(move || {
            claim(&root, &prefix, overwrite)?;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&staging)
                .map_err(|e| ShardError::transient(format!("creating {}: {e}", staging.display())))
        })
        .await
        .map_err(|e| ShardError::transient(format!("preparing the target: {e}")))??;
    }
    let counters = run.counters.clone();
    let stage =
        tracing::info_span!("restore", path = %root.display(), bytes = tracing::field::Empty);
    let into = staging.clone();
    let extracted = download_decompressed(
        &*run.store,
        &run.task.object_key,
        run.task.expected_sha256.clone(),
        move |input| {
            let _stage = stage.enter();
            let stats = ferry_archive::extract_tree(input, &into, true, &counters.done)
                .map_err(archive_error)?;
            stage.record("bytes", (stats.bytes) as i64);
            Ok(stats)
        },
    )
    .await;
    let stats = match extracted {
        Ok(stats) => stats,
        Err(e) => {
            // Nothing of a refused or broken archive stays in the target.
            let _ = tokio::task::spawn_blocking(move || remove_any(&staging)).await;
            return Err(e);
        }
    };
    tokio::task::spawn_blocking(move || publish(&root, &staging, overwrite))
        .await
        .map_err(|e| ShardError::transient(format!("moving the restore into place: {e}")))??;
    Ok(ShardOutcome {
        source_bytes: stats.bytes,
        detail: describe(&stats),
        ..Default::default()
    })
}
