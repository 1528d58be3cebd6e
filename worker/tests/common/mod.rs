//! Running engines directly, against real tools and a local storage directory: what the
//! controller would hand a worker, minus the network.
#![allow(dead_code)]

use std::sync::Arc;

use ferry_model::storage::{StorageBackend, StorageLocation};
use ferry_model::task::{Resource, ShardOp, ShardOutcome, ShardTask};
use ferry_worker::engines::{self, Counters, Run, ShardError};
use tokio_util::sync::CancellationToken;

/// A local storage location in `dir`.
pub fn storage(dir: &std::path::Path) -> StorageLocation {
    StorageLocation {
        name: "test".into(),
        encrypt_to: Vec::new(),
        backend: StorageBackend::Local {
            path: dir.to_string_lossy().into_owned(),
            cluster: "local".into(),
        },
    }
}

/// A task for `resource`.
pub fn task(op: ShardOp, resource: Resource, storage: &StorageLocation, key: &str) -> ShardTask {
    ShardTask {
        job_id: "job-1".into(),
        shard_id: "c.shard".into(),
        attempt: 1,
        op,
        component: "c".into(),
        resource,
        storage: storage.clone(),
        object_key: key.into(),
        expected_sha256: None,
        expected_bytes: None,
        overwrite: false,
        numeric_owner: false,
        staged: None,
        rewrites: Vec::new(),
        repo: None,
        missing_ok: false,
        traceparent: None,
        data_only: false,
        sealed: None,
        pitr: None,
    }
}

/// Runs one task with the tools this machine has.
pub async fn run(task: ShardTask) -> Result<ShardOutcome, ShardError> {
    run_until(task, CancellationToken::new()).await
}

/// Runs one task until it ends or `cancel` fires (a log stream runs until then).
pub async fn run_until(
    task: ShardTask,
    cancel: CancellationToken,
) -> Result<ShardOutcome, ShardError> {
    let store = ferry_storage::open(&task.storage).expect("opening storage");
    let tools = ferry_worker::tools::detect().await;
    engines::run(Run {
        task,
        store,
        counters: Arc::new(Counters::default()),
        cancel,
        tools: Arc::new(tools),
        policy: Arc::new(ferry_worker::policy::Policy::default()),
        identities: Arc::new(ferry_crypto::seal::Identities::default()),
        // One per test process: tests running at once must not share scratch space. Under the
        // system temp dir (not a 0700 tempdir): a temporary PostgreSQL runs as `postgres`.
        work_dir: std::env::temp_dir().join(format!("ferry-worker-tests-{}", std::process::id())),
        metrics: None,
    })
    .await
}

/// Backs `source` up, verifies the archive (checking `target` is empty unless `overwrite`),
/// and restores it into `target`, as a restore job does. Returns the backup's outcome.
pub async fn round_trip(
    dir: &std::path::Path,
    source: Resource,
    target: Resource,
    overwrite: bool,
) -> Result<ShardOutcome, ShardError> {
    let storage = storage(dir);
    let key = format!("shards/{}.tar.zst", uuid_like());
    let backup = run(task(ShardOp::Backup, source, &storage, &key)).await?;
    let mut verify = task(
        ShardOp::Verify {
            check_target: !overwrite,
            archive: true,
            read_data: false,
        },
        target.clone(),
        &storage,
        &key,
    );
    verify.expected_sha256 = Some(backup.sha256.clone());
    run(verify).await?;
    let mut restore = task(ShardOp::Restore, target, &storage, &key);
    restore.expected_sha256 = Some(backup.sha256.clone());
    restore.overwrite = overwrite;
    run(restore).await?;
    Ok(backup)
}

/// A unique name for databases and keys of one test.
pub fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}
