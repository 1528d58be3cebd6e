//! PostgreSQL shards (being built).

use ferry_model::task::ShardOutcome;

use super::{Run, ShardError};

fn not_yet() -> ShardError {
    ShardError::permanent("the postgres engine is not built yet")
}

/// Dumps one database into the shard archive.
pub async fn backup(_run: &Run) -> Result<ShardOutcome, ShardError> {
    Err(not_yet())
}

/// Restores the shard archive into the target database.
pub async fn restore(_run: &Run) -> Result<ShardOutcome, ShardError> {
    Err(not_yet())
}

/// Refuses a target database that exists and is not empty (the verify step of a restore).
pub async fn check_empty(_run: &Run) -> Result<(), ShardError> {
    Err(not_yet())
}
