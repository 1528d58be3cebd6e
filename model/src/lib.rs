//! Ferry's shared vocabulary. Pure data and validation, no I/O: what an application is
//! ([`app::AppSpec`]), how a restore renames it ([`rewrite::Rewrite`]), what a worker is asked to
//! do ([`task::ShardTask`]), what a backup leaves behind ([`manifest::BackupManifest`]) and where
//! in object storage it lives ([`layout`]).

pub mod access;
pub mod app;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod names;
pub mod pitr;
pub mod rewrite;
pub mod schedule;
pub mod storage;
pub mod task;

pub use error::ModelError;

/// Milliseconds since the Unix epoch, the one time unit of records and the API.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
