//! Names of API states as the CLI and the web console print them, and which job states are
//! final: one place, so both say the same.

use crate::v1;

/// `Completed`, `Running`, … as `ferry backup list` and the console print them.
pub fn job_state(state: i32) -> &'static str {
    match v1::JobState::try_from(state).unwrap_or(v1::JobState::Unspecified) {
        v1::JobState::Unspecified => "Unknown",
        v1::JobState::Pending => "Pending",
        v1::JobState::Running => "Running",
        v1::JobState::Completed => "Completed",
        v1::JobState::PartiallyFailed => "PartiallyFailed",
        v1::JobState::Failed => "Failed",
        v1::JobState::Cancelled => "Cancelled",
    }
}

/// True once a job can no longer change.
pub fn is_final(state: i32) -> bool {
    !matches!(
        v1::JobState::try_from(state),
        Ok(v1::JobState::Pending | v1::JobState::Running) | Err(_)
    )
}

/// `Succeeded`, `Running`, …
pub fn shard_state(state: i32) -> &'static str {
    match v1::ShardState::try_from(state).unwrap_or(v1::ShardState::Unspecified) {
        v1::ShardState::Unspecified => "Unknown",
        v1::ShardState::Pending => "Pending",
        v1::ShardState::Assigned => "Assigned",
        v1::ShardState::Running => "Running",
        v1::ShardState::Succeeded => "Succeeded",
        v1::ShardState::Failed => "Failed",
        v1::ShardState::Cancelled => "Cancelled",
    }
}
