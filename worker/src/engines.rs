//! Engines: how each kind of resource is backed up, verified and restored. Every engine streams;
//! none holds a whole dump or archive in memory or on disk.

pub mod config;
pub mod dump;
pub mod exec;
pub mod hook;
pub mod mariadb;
pub mod pg_roles;
pub mod pitr;
pub mod postgres;
pub mod process;
pub mod rdb;
pub mod redis;
pub mod stream;
pub mod volume;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use ferry_model::app::Engine;
use ferry_model::task::{Resource, ShardOp, ShardOutcome, ShardTask};
use ferry_storage::ObjectStore;
use tokio_util::sync::CancellationToken;

/// Why a shard attempt failed, and whether retrying could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardError {
    pub message: String,
    /// True when retrying cannot help (bad checksum, non-empty target, missing path).
    pub permanent: bool,
}

impl ShardError {
    /// A failure worth retrying (I/O, network, a crashed tool).
    pub fn transient(message: impl Into<String>) -> Self {
        ShardError {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        ShardError {
            message: message.into(),
            permanent: true,
        }
    }

    /// The attempt was cancelled.
    pub fn cancelled() -> Self {
        ShardError::permanent("cancelled")
    }
}

impl std::fmt::Display for ShardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Byte counters of a running shard, read by the progress reporter.
#[derive(Debug, Default)]
pub struct Counters {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// What an engine gets to run one task.
pub struct Run {
    pub task: ShardTask,
    pub store: Arc<dyn ObjectStore>,
    pub counters: Arc<Counters>,
    pub cancel: CancellationToken,
    /// Tool name → version line, as detected at start-up (`tools::detect`).
    pub tools: Arc<BTreeMap<String, String>>,
    /// This worker's policy (time limits of hooks and commands).
    pub policy: Arc<crate::policy::Policy>,
    /// The identities that open encrypted backups (`--identity-file`).
    pub identities: Arc<ferry_crypto::seal::Identities>,
    /// This worker's scratch directory (`--work-dir`): a log stream's local files, a
    /// point-in-time restore's temporary server. Each engine removes what it made there.
    pub work_dir: std::path::PathBuf,
    /// The worker's metrics (log streams report their lag); none in tests of one engine.
    pub metrics: Option<crate::metrics::WorkerMetrics>,
}

impl Run {
    /// Backing up into an encrypted location: the recipient archives are encrypted to.
    pub fn encrypt_to(&self) -> Option<String> {
        self.task.sealed.as_ref().map(|s| s.recipient.clone())
    }

    /// Reading an encrypted backup: its own identity, from its key file opened with this
    /// worker's identities. `None` for a backup that is not encrypted. Fails (permanently, before
    /// anything is written) on a worker without an identity that opens the key file.
    pub async fn archive_key(
        &self,
    ) -> Result<Option<Arc<ferry_crypto::seal::Identities>>, ShardError> {
        let Some(sealed) = &self.task.sealed else {
            return Ok(None);
        };
        let location = &self.task.storage.name;
        if self.identities.is_empty() {
            return Err(ShardError::permanent(format!(
                "the backup is encrypted (storage {location}) and this worker has no identity: \
                 start ferry-worker with --identity-file FILE holding an age identity of one of \
                 the location's recipients"
            )));
        }
        let sealed_key = self
            .store
            .get_bytes(&sealed.key_file, ferry_crypto::seal::KEY_FILE_LIMIT)
            .await
            .map_err(|e| match e {
                ferry_storage::StorageError::NotFound { key } => ShardError::permanent(format!(
                    "the backup's key file {key} is missing from storage {location}"
                )),
                other => ShardError::transient(format!("storage: {other}")),
            })?;
        let key = self
            .identities
            .open_key_file(&sealed_key, &format!("key file {}", sealed.key_file))
            .map_err(|e| {
                ShardError::permanent(format!(
                    "{e} (storage {location}: give this worker --identity-file with an identity \
                     of one of the location's recipients)"
                ))
            })?;
        Ok(Some(Arc::new(key)))
    }

    /// The version line of a tool this worker has, or empty.
    pub fn tool_version(&self, tool: &str) -> String {
        self.tools.get(tool).cloned().unwrap_or_default()
    }
}

/// Runs one task with the engine of its resource.
pub async fn run(run: Run) -> Result<ShardOutcome, ShardError> {
    if run.task.op == ShardOp::Backup && run.task.missing_ok && holds_nothing(&run).await {
        return Ok(ShardOutcome {
            absent: true,
            detail: "missing or empty: nothing to keep".into(),
            ..Default::default()
        });
    }
    match (&run.task.resource, run.task.op) {
        (
            _,
            ShardOp::Verify {
                check_target,
                archive,
                read_data,
            },
        ) => verify(&run, check_target, archive, read_data).await,
        (
            Resource::Volume { .. } | Resource::Config { .. } | Resource::Exec { .. },
            ShardOp::Stream,
        ) => Err(ShardError::permanent(
            "only a database server's log is streamed",
        )),
        (Resource::Volume { .. }, ShardOp::Stage) => volume::stage(&run).await,
        (_, ShardOp::Stage) => Err(ShardError::permanent("only a volume is staged")),
        (Resource::Volume { .. }, ShardOp::Backup) => volume::backup(&run).await,
        (Resource::Volume { .. }, ShardOp::Restore) => volume::restore(&run).await,
        (Resource::Config { .. }, ShardOp::Backup) => config::backup(&run).await,
        (Resource::Config { .. }, ShardOp::Restore) => config::restore(&run).await,
        (Resource::Exec { .. }, ShardOp::Backup) => exec::backup(&run).await,
        (Resource::Exec { .. }, ShardOp::Restore) => exec::restore(&run).await,
        (Resource::Hook { .. }, ShardOp::Backup) => hook::run(&run).await,
        (Resource::Hook { .. }, op) => Err(ShardError::permanent(format!(
            "a hook runs only during a backup, not a {}",
            op.as_str()
        ))),
        (Resource::LogStream { .. }, ShardOp::Stream) => stream::run(&run).await,
        (Resource::LogStream { .. }, ShardOp::Release) => stream::release(&run).await,
        (_, ShardOp::Release) => Err(ShardError::permanent("only a log stream is released")),
        (Resource::PgBase { .. }, ShardOp::Backup) => postgres::backup_base(&run).await,
        (Resource::Database { .. } | Resource::PgBase { .. }, ShardOp::Stream) => Err(
            ShardError::permanent("only a database server's log is streamed"),
        ),
        (Resource::PgBase { .. } | Resource::LogStream { .. }, op) => {
            Err(ShardError::permanent(format!(
                "a {} is never {}d: a point-in-time restore of a database shard reads it",
                run.task.resource.kind(),
                op.as_str()
            )))
        }
        (Resource::Database { spec, .. }, op) => match (spec.engine, op) {
            (Engine::Postgres, ShardOp::Backup) => postgres::backup(&run).await,
            (Engine::Postgres, _) => postgres::restore(&run).await,
            (Engine::Mariadb | Engine::Mysql, ShardOp::Backup) => mariadb::backup(&run).await,
            (Engine::Mariadb | Engine::Mysql, _) => mariadb::restore(&run).await,
            (Engine::Redis, ShardOp::Backup) => redis::backup(&run).await,
            (Engine::Redis, _) => redis::restore(&run).await,
        },
    }
}

/// True when a volume or database is missing or empty (exec and config always hold something).
async fn holds_nothing(run: &Run) -> bool {
    match &run.task.resource {
        Resource::Volume { path } => volume::check_empty(path).await.is_ok(),
        Resource::Database { spec, .. } => match spec.engine {
            Engine::Postgres => postgres::check_empty(run).await.is_ok(),
            Engine::Mariadb | Engine::Mysql => mariadb::check_empty(run).await.is_ok(),
            Engine::Redis => redis::check_empty(run).await.is_ok(),
        },
        Resource::Config { .. }
        | Resource::Exec { .. }
        | Resource::Hook { .. }
        | Resource::PgBase { .. }
        | Resource::LogStream { .. } => false,
    }
}

/// Re-reads the archive and checks its checksum; for a restore's first step, also checks that
/// the target holds nothing that would be overwritten.
async fn verify(
    run: &Run,
    check_target: bool,
    archive: bool,
    read_data: bool,
) -> Result<ShardOutcome, ShardError> {
    // A restore of an encrypted backup: this worker must hold a key that opens it, known now,
    // before any shard writes anything.
    run.archive_key().await?;
    let expected =
        run.task.expected_sha256.as_deref().ok_or_else(|| {
            ShardError::permanent("the manifest records no checksum for this shard")
        })?;
    if check_target {
        match &run.task.resource {
            Resource::Volume { path } => volume::check_empty(path).await?,
            // Config replaces the target app's config; an exec restore command decides itself.
            Resource::Config { .. } | Resource::Exec { .. } | Resource::Hook { .. } => {}
            // A base is never restored itself; a stream has no archive.
            Resource::PgBase { .. } | Resource::LogStream { .. } => {}
            Resource::Database { spec, .. } => match spec.engine {
                Engine::Postgres => postgres::check_empty(run).await?,
                Engine::Mariadb | Engine::Mysql => mariadb::check_empty(run).await?,
                Engine::Redis => redis::check_empty(run).await?,
            },
        }
    }
    if !archive {
        // Checked while it is staged, in one read.
        return Ok(ShardOutcome::default());
    }
    let size = crate::pipeline::verify_object(
        &*run.store,
        &run.task.object_key,
        expected,
        &run.counters.done,
    )
    .await?;
    if let Some(repo) = &run.task.repo {
        let missing =
            ferry_repo::gc::missing_packs(&*run.store, &repo.packs_prefix, &repo.packs_key)
                .await
                .map_err(|e| ShardError::transient(format!("storage: {e}")))?;
        if let [first, ..] = missing.as_slice() {
            return Err(ShardError::permanent(format!(
                "{} pack(s) of {} are missing from storage (e.g. {first})",
                missing.len(),
                run.task.object_key
            )));
        }
        if read_data {
            volume::read_repository_data(run, repo, expected).await?;
        }
    }
    Ok(ShardOutcome {
        stored_bytes: size,
        sha256: expected.to_owned(),
        ..Default::default()
    })
}
