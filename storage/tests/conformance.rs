//! The behaviour every ObjectStore backend must have. Each backend's test at the bottom calls
//! [`run_all`] on a fresh store: the local directory, and S3 (a real S3 server, see
//! `common/s3_server.rs`).

mod common;

use std::sync::Arc;

use ferry_storage::local::LocalStore;
use ferry_storage::s3::{MIN_PART_SIZE, S3Store, S3Tuning};
use ferry_storage::{BoxReader, ObjectStore, StorageError};
use ferry_test_support::S3Server;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

async fn run_all(store: Arc<dyn ObjectStore>) {
    round_trip_and_list(&*store).await;
    failed_body_leaves_nothing(&*store).await;
    cancelled_put_leaves_nothing(&*store).await;
    bad_keys_are_refused(&*store).await;
    aborted_uploads_never_commit(store.clone()).await;
    missing_objects(&*store).await;
}

async fn round_trip_and_list(store: &dyn ObjectStore) {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let n = store
        .put(
            "a/b/big.bin",
            Box::pin(std::io::Cursor::new(big.clone())),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(n, big.len() as u64);
    store
        .put_bytes("a/b/small.json", b"{}".to_vec())
        .await
        .unwrap();
    store.put_bytes("a/c.json", b"[]".to_vec()).await.unwrap();
    assert_eq!(
        store.get_bytes("a/b/big.bin", 10_000_000).await.unwrap(),
        big
    );
    assert_eq!(store.head("a/b/small.json").await.unwrap(), Some(2));
    // Ranged reads: a chunk inside a pack, the last byte, nothing; past the end is an error.
    assert_eq!(
        store
            .get_range("a/b/big.bin", 1_234_567, 70_001)
            .await
            .unwrap(),
        big[1_234_567..1_234_567 + 70_001]
    );
    assert_eq!(
        store.get_range("a/b/big.bin", 2_999_999, 1).await.unwrap(),
        big[2_999_999..]
    );
    assert!(
        store
            .get_range("a/b/big.bin", 5, 0)
            .await
            .unwrap()
            .is_empty()
    );
    let short = store.get_range("a/b/big.bin", 2_999_990, 20).await;
    assert!(
        short.is_err(),
        "a range past the end must fail, got {short:?}"
    );
    let keys: Vec<_> = store
        .list("a/b/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["a/b/big.bin", "a/b/small.json"]);
    let keys: Vec<_> = store
        .list("a/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(
        store.get_bytes("a/b/big.bin", 10).await.is_err(),
        "limit not enforced"
    );
    for k in ["a/b/big.bin", "a/b/small.json", "a/c.json"] {
        store.delete(k).await.unwrap();
    }
    assert!(store.list("a/").await.unwrap().is_empty());
    store.delete("a/c.json").await.unwrap();
}

/// A body that yields some bytes and then fails, like a dump tool dying mid-stream.
struct FailingBody {
    sent: bool,
}

impl AsyncRead for FailingBody {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.sent {
            return std::task::Poll::Ready(Err(std::io::Error::other("dump died")));
        }
        self.sent = true;
        buf.put_slice(&[1u8; 1000]);
        std::task::Poll::Ready(Ok(()))
    }
}

async fn failed_body_leaves_nothing(store: &dyn ObjectStore) {
    let body: BoxReader = Box::pin(FailingBody { sent: false });
    let err = store
        .put("f/x.bin", body, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dump died"), "{err}");
    assert_eq!(store.head("f/x.bin").await.unwrap(), None);
    assert!(store.list("f/").await.unwrap().is_empty());
}

async fn cancelled_put_leaves_nothing(store: &dyn ObjectStore) {
    let (_tx, rx) = tokio::io::duplex(64); // never written: the put waits until cancelled
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        c.cancel();
    });
    let err = store
        .put("c/x.bin", Box::pin(rx), &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Cancelled), "{err}");
    assert!(store.list("c/").await.unwrap().is_empty());
}

async fn aborted_uploads_never_commit(store: Arc<dyn ObjectStore>) {
    use tokio::io::AsyncWriteExt;
    let (mut tx, rx) = tokio::io::duplex(1 << 16);
    let writer = store.clone();
    let put = tokio::spawn(async move {
        writer
            .put("z/slow.bin", Box::pin(rx), &CancellationToken::new())
            .await
    });
    tx.write_all(&[5u8; 10_000]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Garbage collection's abort keeps an upload younger than its cutoff.
    let now = std::time::SystemTime::now();
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(store.abort_stale("z/", now - hour).await.unwrap(), 0);
    assert!(
        store.abort_stale("z/", now + hour).await.unwrap() >= 1,
        "the running upload was not seen"
    );
    drop(tx); // the writer finishes its body only now, after the abort
    let result = put.await.unwrap();
    assert!(result.is_err(), "an aborted upload committed: {result:?}");
    assert_eq!(store.head("z/slow.bin").await.unwrap(), None);
    assert!(store.list("z/").await.unwrap().is_empty());
    assert_eq!(store.abort_incomplete("z/").await.unwrap(), 0);
}

async fn bad_keys_are_refused(store: &dyn ObjectStore) {
    for key in ["", "../x", "a/../../x", "/abs", "a//b", "a/./b"] {
        let err = store.put_bytes(key, vec![1]).await.unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidKey { .. }),
            "{key:?}: {err}"
        );
    }
}

async fn missing_objects(store: &dyn ObjectStore) {
    assert!(matches!(
        store.get("nope/x").await.err().unwrap(),
        StorageError::NotFound { .. }
    ));
    assert_eq!(store.head("nope/x").await.unwrap(), None);
    assert!(matches!(
        store.get_range("nope/x", 0, 10).await.err().unwrap(),
        StorageError::NotFound { .. }
    ));
    assert!(store.list("nope/").await.unwrap().is_empty());
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    run_all(Arc::new(LocalStore::new(dir.path().join("root")))).await;
    // Nothing outside the root, nothing partial left inside it.
    let outside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(outside.len(), 1);
}

#[tokio::test]
async fn local_objects_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("root"));
    store
        .put_bytes("teams/t/apps/a/manifest.json", b"{}".to_vec())
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = dir.path().join("root");
    assert_eq!(mode(&root.join("teams/t/apps/a/manifest.json")), 0o600);
    for d in ["teams", "teams/t", "teams/t/apps", "teams/t/apps/a"] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d}");
    }
}

#[tokio::test]
async fn s3_store_conforms() {
    let server = S3Server::start();
    server.create_bucket("conformance").await;
    // Through `open`, as the controller and workers open a location: default tuning.
    let store = ferry_storage::open(&server.location("s3", "conformance", "")).unwrap();
    run_all(store).await;
    // Nothing left: no object, no multipart upload (asked through the SDK), no part on disk.
    assert!(server.object_keys("conformance").await.is_empty());
    assert!(server.multipart_uploads("conformance").await.is_empty());
    assert!(server.part_files_on_disk().is_empty());
}

#[tokio::test]
async fn s3_store_conforms_with_small_parts_and_a_prefix() {
    // The smallest parts (the 3 MB object still fits in one) and concurrency 1, under a prefix.
    let server = S3Server::start();
    server.create_bucket("conformance").await;
    let tuning = S3Tuning {
        part_size: MIN_PART_SIZE,
        concurrency: 1,
        list_page_size: Some(2),
        ..S3Tuning::default()
    };
    let store = S3Store::new(&server.location("s3", "conformance", "/team/x//"), tuning).unwrap();
    run_all(Arc::new(store)).await;
    assert!(server.object_keys("conformance").await.is_empty());
    assert!(server.multipart_uploads("conformance").await.is_empty());
    assert!(server.part_files_on_disk().is_empty());
}
