//! What the controller persists: apps, jobs, shards and worker sessions. Jobs and shards are
//! persisted state machines: the intent (what should run, which attempt is current) is written
//! before anything is handed out, so a restarted controller picks every job up where it was.

use std::collections::BTreeMap;

use ferry_model::app::AppSpec;
use ferry_model::rewrite::Rewrite;
use ferry_model::task::{Resource, ShardOp, ShardOutcome};
use serde::{Deserialize, Serialize};

use crate::jobs::phase::Phase;

/// A registered application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub team: String,
    pub spec: AppSpec,
    pub updated_at_ms: i64,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    Backup,
    Restore,
    /// Re-reads a backup's archives and checks their checksums, writing nothing.
    Verify,
    /// Keeps the log streams of an app's `pitr` databases archived (one shard per stream) until
    /// cancelled; `streams.rs` starts one per such app.
    Stream,
}

impl JobKind {
    /// `backup`, `restore`, `verify` or `stream`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
            JobKind::Verify => "verify",
            JobKind::Stream => "stream",
        }
    }
}

/// The life of a job. `Pending` and `Running` are active; the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Running,
    Completed,
    PartiallyFailed,
    Failed,
    Cancelled,
}

impl JobState {
    /// True once the job can no longer change.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }
}

/// A backup or restore job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    pub team: String,
    /// The app backed up, or for a restore the app restored into.
    pub app: String,
    pub cluster: String,
    pub storage: String,
    /// For a backup: the app as it was when the backup started. For a restore: the target app
    /// as it will be registered when the restore completes.
    pub spec: AppSpec,
    pub created_at_ms: i64,
    #[serde(default)]
    pub started_at_ms: i64,
    #[serde(default)]
    pub finished_at_ms: i64,
    /// Why the job is where it is.
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "manual")]
    pub trigger: String,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// Restore only: the backup read and how.
    #[serde(default)]
    pub restore: Option<RestorePlan>,
    /// Restore with `--overwrite`: the backup of the target taken first; the restore writes
    /// nothing until it completed.
    #[serde(default)]
    pub safety_backup: Option<String>,
    /// Where the job is in its procedure (`crate::jobs::phase`).
    #[serde(default)]
    pub phase: Phase,
    /// The job's trace (hex) and the id of its root span, emitted when the job ends; every span
    /// of the job, on every machine, descends from it.
    #[serde(default)]
    pub trace_id: String,
    #[serde(default)]
    pub root_span_id: String,
    /// Set by `cancel` (the caller's intent): the job's procedure stops its shards and ends it
    /// `Cancelled`.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Backup only: self-contained archives for every volume (`backup create --full`) instead
    /// of the location's incremental repository.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// Backup only: summary of what was written, once committed.
    #[serde(default)]
    pub stored_bytes: u64,
    #[serde(default)]
    pub source_bytes: u64,
    /// Who signed the backup's manifest (`crate::trust::Signer::label`); for a restore, of the
    /// backup it reads.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signer: String,
    /// Backup into an encrypted location: the public halves of its keys (what workers encrypt
    /// to) and where their sealed identities are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<ferry_model::task::Sealed>,
}

fn manual() -> String {
    "manual".to_owned()
}

impl JobRecord {
    /// A new job, not yet started, with a fresh trace; callers set what differs from the defaults.
    #[allow(clippy::too_many_arguments)]
    pub fn pending(
        id: String,
        kind: JobKind,
        team: String,
        app: String,
        cluster: String,
        storage: String,
        spec: AppSpec,
        trigger: String,
    ) -> JobRecord {
        let (trace_id, root_span_id) = ferry_telemetry::logging::new_root_ids();
        JobRecord {
            id,
            kind,
            state: JobState::Pending,
            team,
            app,
            cluster,
            storage,
            spec,
            created_at_ms: ferry_model::now_ms(),
            started_at_ms: 0,
            finished_at_ms: 0,
            message: String::new(),
            labels: BTreeMap::new(),
            trigger,
            expires_at_ms: None,
            restore: None,
            safety_backup: None,
            phase: Phase::default(),
            trace_id,
            root_span_id,
            cancel_requested: false,
            full: false,
            stored_bytes: 0,
            source_bytes: 0,
            signer: String::new(),
            sealed: None,
        }
    }
}

/// How a restore reads its backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestorePlan {
    pub backup_id: String,
    /// The app the backup was taken of.
    pub source_app: String,
    pub overwrite: bool,
    /// Volumes: owners by archived number, never by name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub numeric_owner: bool,
    pub rewrites: Vec<Rewrite>,
    /// True when the target app did not exist and is created by the restore.
    pub creates_app: bool,
    /// The backup's signer is not trusted: data only (DESIGN §6 "Trust") — no exec command or
    /// hook of its manifest runs or is registered, setuid/setgid bits are cleared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_only: bool,
    /// Data only, into a new app: the exec shards of the backup that were left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    /// A point-in-time restore: the moment (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
}

/// The life of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardState {
    /// Waiting for a worker (possibly until `not_before_ms`, after a failure).
    Pending,
    /// Handed to `worker` under `attempt`.
    Assigned,
    Succeeded,
    Failed,
    Cancelled,
}

impl ShardState {
    /// True once the shard can no longer change.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ShardState::Succeeded | ShardState::Failed | ShardState::Cancelled
        )
    }
}

/// One shard of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub job_id: String,
    pub id: String,
    pub component: String,
    pub slot: String,
    pub kind: String,
    pub resource: Resource,
    #[serde(default)]
    pub node: Option<String>,
    pub op: ShardOp,
    pub state: ShardState,
    /// The fencing token: bumped and persisted before every hand-out; reports of any other
    /// attempt are refused.
    pub attempt: u32,
    #[serde(default)]
    pub worker: String,
    /// Failed attempts of the current op (a worker that died does not count).
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub not_before_ms: i64,
    /// When the shard first found no worker able to take it (0: not waiting).
    #[serde(default)]
    pub waiting_since_ms: i64,
    /// The archive: written by a backup attempt, read by verify and restore.
    #[serde(default)]
    pub object_key: String,
    #[serde(default)]
    pub expected_sha256: Option<String>,
    /// What the manifest recorded as read by the backup (restores refuse more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_bytes: Option<u64>,
    #[serde(default)]
    pub outcome: Option<ShardOutcome>,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub started_at_ms: i64,
    #[serde(default)]
    pub finished_at_ms: i64,
    /// See `ShardTask::missing_ok`.
    #[serde(default)]
    pub missing_ok: bool,
    /// When the current attempt was handed out.
    #[serde(default)]
    pub attempt_started_ms: i64,
    /// A volume restore: its staged copy, to be moved into place by the writing step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<ferry_model::task::Staged>,
    /// A volume backup into the repository: the index of the same volume in the parent backup
    /// (the newest completed backup of the app in the same location), if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_index: Option<String>,
    /// A database restore `--at` a moment: the log to replay (see `ShardTask::pitr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr: Option<ferry_model::task::PitrTask>,
}

/// A live worker session, stored under the worker's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    pub cluster: String,
    pub node: String,
    pub max_shards: u32,
    pub tools: BTreeMap<String, String>,
    pub version: String,
    pub lease: i64,
    pub registered_at_ms: i64,
    /// SHA-256 of the session key every call of the session carries.
    #[serde(default)]
    pub session_sha256: String,
    /// The join token that opened the session.
    #[serde(default)]
    pub token: String,
}

/// What an assignment key holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    pub attempt: u32,
    /// A log stream: long-lived and light, it does not take one of the worker's `--max-shards`
    /// slots (a worker keeps running backups beside the streams it holds).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}
