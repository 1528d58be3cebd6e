//! Volumes: a directory tree as a tar stream (ferry-archive), compressed and uploaded while it is
//! being read; restored by streaming the archive back into an empty (or `--overwrite`) directory.

use std::path::PathBuf;

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
            stage.record("bytes", stats.bytes);
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

/// Streams the archive back into the volume's directory.
pub async fn restore(run: &Run) -> Result<ShardOutcome, ShardError> {
    let root = path_of(run)?;
    if !run.task.overwrite {
        check_empty(&root.to_string_lossy()).await?;
    }
    tokio::fs::create_dir_all(&root)
        .await
        .map_err(|e| ShardError::permanent(format!("cannot create {}: {e}", root.display())))?;
    let overwrite = run.task.overwrite;
    let counters = run.counters.clone();
    let stage =
        tracing::info_span!("restore", path = %root.display(), bytes = tracing::field::Empty);
    let stats = download_decompressed(
        &*run.store,
        &run.task.object_key,
        run.task.expected_sha256.clone(),
        move |input| {
            let _stage = stage.enter();
            let stats = ferry_archive::extract_tree(input, &root, overwrite, &counters.done)
                .map_err(archive_error)?;
            stage.record("bytes", stats.bytes);
            Ok(stats)
        },
    )
    .await?;
    Ok(ShardOutcome {
        source_bytes: stats.bytes,
        detail: describe(&stats),
        ..Default::default()
    })
}
