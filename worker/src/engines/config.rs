//! Component config: the component's declared config as `config.json` inside the shard archive.
//! A restore reads it back, applies the rewrites, and hands it to the controller, which puts it
//! into the restored app's spec.

use std::io::Read;

use ferry_model::rewrite::rewrite_json;
use ferry_model::task::{Resource, ShardOutcome};

use super::{Run, ShardError};
use crate::pipeline::{download_decompressed, upload_compressed};

const ENTRY: &str = "config.json";
/// A config larger than this is not a config.
const LIMIT: u64 = 16 << 20;

/// Archives the config.
pub async fn backup(run: &Run) -> Result<ShardOutcome, ShardError> {
    let Resource::Config { config } = &run.task.resource else {
        return Err(ShardError::permanent("not a config shard"));
    };
    let bytes = serde_json::to_vec_pretty(config)
        .map_err(|e| ShardError::permanent(format!("config: {e}")))?;
    let len = bytes.len() as u64;
    let ((), stored) = upload_compressed(
        run.store.clone(),
        &run.task.object_key,
        &run.cancel,
        run.encrypt_to(),
        move |out| {
            let mut tar = tar::Builder::new(out);
            let mut header = tar::Header::new_gnu();
            header.set_size(len);
            header.set_mode(0o644);
            header.set_mtime(0);
            tar.append_data(&mut header, ENTRY, bytes.as_slice())
                .and_then(|_| tar.finish())
                .map_err(|e| ShardError::transient(format!("config archive: {e}")))
        },
    )
    .await?;
    Ok(ShardOutcome {
        source_bytes: len,
        stored_bytes: stored.bytes,
        sha256: stored.sha256,
        ..Default::default()
    })
}

/// Reads the config back, rewritten for the target.
pub async fn restore(run: &Run) -> Result<ShardOutcome, ShardError> {
    let config = download_decompressed(
        &*run.store,
        &run.task.object_key,
        run.task.expected_sha256.clone(),
        run.archive_key().await?,
        |input| {
            let mut archive = tar::Archive::new(input);
            let entries = archive
                .entries()
                .map_err(|e| ShardError::permanent(format!("config archive: {e}")))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| ShardError::permanent(format!("config archive: {e}")))?;
                let is_config = entry
                    .path()
                    .map(|p| p.as_os_str() == ENTRY)
                    .unwrap_or(false);
                if is_config {
                    let mut text = Vec::new();
                    entry
                        .take(LIMIT)
                        .read_to_end(&mut text)
                        .map_err(|e| ShardError::permanent(format!("config archive: {e}")))?;
                    return serde_json::from_slice::<serde_json::Value>(&text)
                        .map_err(|e| ShardError::permanent(format!("config.json: {e}")));
                }
            }
            Err(ShardError::permanent("config archive holds no config.json"))
        },
    )
    .await?;
    let config = rewrite_json(&run.task.rewrites, &config);
    Ok(ShardOutcome {
        source_bytes: serde_json::to_vec(&config)
            .map(|v| v.len() as u64)
            .unwrap_or(0),
        config: Some(config),
        ..Default::default()
    })
}
