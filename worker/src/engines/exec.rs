//! exec shards: a component's own `backup` command's stdout is the shard; its `restore`
//! command reads it on stdin. For any engine Ferry has no native support for (a Keycloak realm
//! export, an LDAP dump, …). Ferry cannot tell whether an exec target is empty: the command
//! decides.

use std::process::Command;

use ferry_model::task::{Resource, ShardOutcome};

use super::dump::{DumpInfo, backup_from_command, restore_into_command};
use super::{Run, ShardError};

fn commands(run: &Run) -> Result<(Vec<String>, Vec<String>), ShardError> {
    match &run.task.resource {
        Resource::Exec { backup, restore } => Ok((backup.clone(), restore.clone())),
        other => Err(ShardError::permanent(format!(
            "not an exec shard: {}",
            other.kind()
        ))),
    }
}

fn command(argv: &[String]) -> Result<Command, ShardError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| ShardError::permanent("empty exec command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    Ok(cmd)
}

/// Runs the backup command into the archive.
pub async fn backup(run: &Run) -> Result<ShardOutcome, ShardError> {
    let (backup, _) = commands(run)?;
    let cmd = command(&backup)?;
    let info = DumpInfo {
        engine: "exec".into(),
        tool_version: backup.first().cloned().unwrap_or_default(),
        ..Default::default()
    };
    backup_from_command(run, cmd, info).await
}

/// Feeds the archive to the restore command.
pub async fn restore(run: &Run) -> Result<ShardOutcome, ShardError> {
    let (_, restore) = commands(run)?;
    let bytes = restore_into_command(run, move |_| command(&restore)).await?;
    Ok(ShardOutcome {
        source_bytes: bytes,
        ..Default::default()
    })
}
