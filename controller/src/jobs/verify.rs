//! Verify jobs: every archive of a backup re-read from storage and its SHA-256 checked against
//! the manifest, by a worker of the backup's cluster. Nothing is written.

use ferry_model::names::new_job_id;

use super::phase::Phase;
use super::{FirstStep, get_job, persist, read_manifest, shards_from_manifest};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::records::{JobKind, JobRecord, JobState, RestorePlan};

/// Starts a verify job: every archive of the backup is re-read from storage and its SHA-256
/// checked against the manifest, by a worker of the backup's cluster. Nothing is written.
pub async fn create_verify(
    ctx: &Context,
    team: &str,
    backup_id: &str,
    read_data: bool,
) -> Result<JobRecord> {
    let backup = get_job(ctx, team, backup_id).await?;
    if backup.kind != JobKind::Backup {
        return Err(Error::InvalidArgument(format!(
            "{backup_id} is not a backup"
        )));
    }
    if !matches!(
        backup.state,
        JobState::Completed | JobState::PartiallyFailed
    ) {
        return Err(Error::FailedPrecondition(format!(
            "backup {backup_id} is {:?}; only completed backups have archives to verify",
            backup.state
        )));
    }
    let manifest = read_manifest(ctx, &backup).await?;
    let id = new_job_id(&format!("verify-{}", backup.app));
    let shards = shards_from_manifest(
        &id,
        &manifest,
        &manifest.app_spec,
        if read_data {
            FirstStep::VerifyData
        } else {
            FirstStep::Verify
        },
        |m| {
            format!(
                "manifest of {backup_id} is inconsistent: shard {} has no place ({}) in its app spec",
                m.id, m.slot
            )
        },
    )?;
    if shards.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "backup {backup_id} holds no archive to verify"
        )));
    }
    let job = JobRecord {
        restore: Some(RestorePlan {
            backup_id: backup.id,
            source_app: manifest.app.clone(),
            overwrite: false,
            numeric_owner: false,
            rewrites: Vec::new(),
            creates_app: false,
            data_only: false,
            left_out: Vec::new(),
            at_ms: None,
        }),
        // Verifying hashes what is stored: no key needed (a restore's check step opens the key).
        sealed: None,
        ..JobRecord::pending(
            id,
            JobKind::Verify,
            team.to_owned(),
            backup.app.clone(),
            backup.cluster.clone(),
            backup.storage.clone(),
            manifest.app_spec.clone(),
            "manual".into(),
        )
    };
    let mut job = job;
    persist::create_new(ctx, &mut job, &shards, Phase::Verifying).await?;
    Ok(job)
}
