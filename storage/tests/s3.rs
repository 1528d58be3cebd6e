//! The S3 backend against a real S3 server (`common/s3_server.rs`): multipart uploads, failures,
//! cancellation, a server outage mid-upload, prefixes, pagination and credentials. The behaviour
//! it shares with every backend is in `conformance.rs`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pseudo_random;
use ferry_storage::s3::{MIN_PART_SIZE, S3Store, S3Tuning};
use ferry_storage::{BoxReader, ObjectStore, StorageError};
use ferry_test_support::s3::{
    ACCESS_KEY, S3Server, SECRET_KEY, WRONG_SECRET_KEY, WRONG_SECRET_KEY_ENV, set_credentials_env,
};
use futures::StreamExt;
use tokio_util::io::StreamReader;
use tokio_util::sync::CancellationToken;

const MIB: usize = 1 << 20;

/// How a test body ends after its data.
#[derive(Clone, Copy)]
enum End {
    Clean,
    Fail,
    Hang,
}

/// Streams `data` in 256 KiB chunks, sleeping `delay` before each, counting what was read.
fn body(data: Arc<Vec<u8>>, delay: Duration, end: End, read: Arc<AtomicU64>) -> BoxReader {
    const CHUNK: usize = 256 << 10;
    let chunks = futures::stream::unfold(0usize, move |at| {
        let data = data.clone();
        let read = read.clone();
        async move {
            if at >= data.len() {
                return None;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let end = (at + CHUNK).min(data.len());
            read.store(end as u64, Ordering::SeqCst);
            Some((
                Ok::<Bytes, std::io::Error>(Bytes::copy_from_slice(&data[at..end])),
                end,
            ))
        }
    });
    let tail = futures::stream::once(async move { end }).filter_map(|end| async move {
        match end {
            End::Clean => None,
            End::Fail => Some(Err(std::io::Error::other("dump died"))),
            End::Hang => futures::future::pending::<Option<std::io::Result<Bytes>>>().await,
        }
    });
    Box::pin(StreamReader::new(chunks.chain(tail)))
}

fn tuning(part_size: usize, concurrency: usize) -> S3Tuning {
    S3Tuning {
        part_size,
        concurrency,
        ..S3Tuning::default()
    }
}

async fn wait_until_read(read: &AtomicU64, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while read.load(Ordering::SeqCst) < n as u64 {
        assert!(
            Instant::now() < deadline,
            "the put stopped reading its body"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Nothing of an upload is left: no object, no multipart upload (asked through the SDK), no part
/// file on the server's disk.
async fn assert_nothing_left(server: &S3Server, bucket: &str) {
    assert_eq!(server.object_keys(bucket).await, vec![]);
    assert_eq!(server.multipart_uploads(bucket).await, vec![]);
    assert_eq!(server.part_files_on_disk(), Vec::<String>::new());
}

#[tokio::test]
async fn multipart_objects_round_trip_byte_exact() {
    let server = S3Server::start();
    server.create_bucket("multipart").await;
    let store: Arc<dyn ObjectStore> = Arc::new(
        S3Store::new(&server.location("s3", "multipart", ""), tuning(5 * MIB, 4)).unwrap(),
    );
    let data = Arc::new(pseudo_random(23 * MIB + 12_345, 7));

    // A streamed body (the worker's case): 5 parts, the last one short.
    let read = Arc::new(AtomicU64::new(0));
    let n = store
        .put(
            "a/streamed.bin",
            body(data.clone(), Duration::from_millis(1), End::Clean, read),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    // A body that is all there at once, larger than a part: multipart as well.
    let n = store
        .put(
            "a/cursor.bin",
            Box::pin(std::io::Cursor::new(data.to_vec())),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);

    for key in ["a/streamed.bin", "a/cursor.bin"] {
        let back = store.get_bytes(key, 100 * MIB as u64).await.unwrap();
        assert!(back == *data, "{key} differs from what was put");
        assert_eq!(store.head(key).await.unwrap(), Some(data.len() as u64));
        // Multipart for real: S3's ETag of a 5-part object ends in -5.
        let head = server
            .client()
            .head_object()
            .bucket("multipart")
            .key(key)
            .send()
            .await
            .unwrap();
        assert!(
            head.e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .ends_with("-5"),
            "{key}: {:?}",
            head.e_tag()
        );
    }
    let listed = store.list("a/").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|o| (o.key.as_str(), o.size))
            .collect::<Vec<_>>(),
        [
            ("a/cursor.bin", data.len() as u64),
            ("a/streamed.bin", data.len() as u64)
        ]
    );

    // A streamed body that turns out empty still makes an (empty) object.
    let (tx, rx) = tokio::io::duplex(64);
    let put = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .put("a/empty.bin", Box::pin(rx), &CancellationToken::new())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(tx);
    assert_eq!(put.await.unwrap().unwrap(), 0);
    assert_eq!(store.get_bytes("a/empty.bin", 10).await.unwrap(), b"");

    assert_eq!(server.multipart_uploads("multipart").await, vec![]);
    assert_eq!(store.abort_incomplete("").await.unwrap(), 0);
}

#[tokio::test]
async fn a_body_failing_mid_upload_leaves_nothing() {
    let server = S3Server::start();
    server.create_bucket("failing").await;
    let store = S3Store::new(&server.location("s3", "failing", ""), tuning(5 * MIB, 2)).unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let data = Arc::new(pseudo_random(13 * MIB, 1)); // two parts go up, then the body fails
    let err = store
        .put(
            "f/x.bin",
            body(data, Duration::from_millis(2), End::Fail, read.clone()),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dump died"), "{err}");
    assert_eq!(read.load(Ordering::SeqCst), 13 * MIB as u64);
    assert_eq!(store.head("f/x.bin").await.unwrap(), None);
    assert_nothing_left(&server, "failing").await;
}

#[tokio::test]
async fn a_cancelled_upload_leaves_nothing() {
    let server = S3Server::start();
    server.create_bucket("cancelled").await;
    let store = S3Store::new(&server.location("s3", "cancelled", ""), tuning(5 * MIB, 2)).unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let data = Arc::new(pseudo_random(12 * MIB, 2));
    let cancel = CancellationToken::new();
    let canceller = {
        let (cancel, read) = (cancel.clone(), read.clone());
        tokio::spawn(async move {
            wait_until_read(&read, 12 * MIB).await;
            tokio::time::sleep(Duration::from_millis(500)).await; // let parts land
            cancel.cancel();
        })
    };
    let err = store
        .put(
            "c/x.bin",
            body(data, Duration::ZERO, End::Hang, read),
            &cancel,
        )
        .await
        .unwrap_err();
    canceller.await.unwrap();
    assert!(matches!(err, StorageError::Cancelled), "{err}");
    assert_nothing_left(&server, "cancelled").await;
}

#[tokio::test]
async fn a_dropped_put_is_aborted_in_the_background() {
    let server = S3Server::start();
    server.create_bucket("dropped").await;
    let store =
        Arc::new(S3Store::new(&server.location("s3", "dropped", ""), tuning(5 * MIB, 2)).unwrap());
    let read = Arc::new(AtomicU64::new(0));
    let data = Arc::new(pseudo_random(12 * MIB, 3));
    let put = {
        let (store, read) = (store.clone(), read.clone());
        tokio::spawn(async move {
            store
                .put(
                    "d/x.bin",
                    body(data, Duration::ZERO, End::Hang, read),
                    &CancellationToken::new(),
                )
                .await
        })
    };
    wait_until_read(&read, 12 * MIB).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.multipart_uploads("dropped").await.len(), 1);
    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.multipart_uploads("dropped").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the dropped put's upload was not aborted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.object_keys("dropped").await, vec![]);
}

/// The server is killed in the middle of a multi-part upload and comes back 15 s later. The put
/// must either complete byte-exact or fail clearly; either way no partial object is listed and
/// `abort_incomplete` leaves no multipart upload.
#[tokio::test]
async fn a_server_outage_mid_upload_is_survived_or_fails_clearly() {
    let mut server = S3Server::start();
    server.create_bucket("outage").await;
    let part = 5 * MIB;
    let concurrency = 2;
    let store = Arc::new(
        S3Store::new(
            &server.location("s3", "outage", ""),
            tuning(part, concurrency),
        )
        .unwrap(),
    );
    let data = Arc::new(pseudo_random(40 * MIB, 4));
    let read = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let put = {
        let (store, data, read) = (store.clone(), data.clone(), read.clone());
        tokio::spawn(async move {
            let r = store
                .put(
                    "o/x.bin",
                    body(data, Duration::from_millis(10), End::Clean, read),
                    &CancellationToken::new(),
                )
                .await;
            (r, started.elapsed())
        })
    };
    wait_until_read(&read, 12 * MIB).await;
    server.kill();
    let killed_at = started.elapsed();
    // Counted after the kill: no part can land any more (s3s-fs renames a part into place only
    // once it is complete).
    let parts_before = server.part_files_on_disk().len();
    let read_at_kill = read.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(15)).await;
    // While the server was away the put held at most `concurrency + 1` parts of body beyond
    // what had landed (plus one chunk of the body's own): the memory bound.
    let read_during = read.load(Ordering::SeqCst);
    assert!(
        read_during <= ((parts_before + concurrency + 1) * part + (256 << 10)) as u64,
        "read {read_during} bytes with {parts_before} parts stored: more than the bound"
    );
    server.restart();
    let restarted_at = started.elapsed();
    let (result, finished_at) = tokio::time::timeout(Duration::from_secs(240), put)
        .await
        .expect("the put neither finished nor failed within 4 minutes of the restart")
        .unwrap();
    eprintln!(
        "outage: killed at {killed_at:.1?} (body read {read_at_kill}, {parts_before} parts on \
         disk), read {read_during} while down, restarted at {restarted_at:.1?}, put ended at \
         {finished_at:.1?}: {}",
        match &result {
            Ok(n) => format!("completed, {n} bytes"),
            Err(e) => format!("failed: {e}"),
        }
    );
    let aborted = store.abort_incomplete("").await.unwrap();
    eprintln!("outage: abort_incomplete aborted {aborted} upload(s)");
    assert_eq!(server.multipart_uploads("outage").await, vec![]);
    match result {
        Ok(n) => {
            assert_eq!(n, data.len() as u64);
            let back = store.get_bytes("o/x.bin", 100 * MIB as u64).await.unwrap();
            assert!(back == *data, "the object differs from what was put");
            assert_eq!(
                server.object_keys("outage").await,
                vec![("o/x.bin".to_owned(), data.len() as i64)]
            );
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("o/x.bin") && msg.contains("s3 "),
                "unclear: {msg}"
            );
            assert_eq!(server.object_keys("outage").await, vec![]);
        }
    }
}

/// A server that does not come back: the put gives up with an error that says so, including
/// that the upload could not be aborted; `abort_incomplete` removes it once the server is back.
#[tokio::test]
async fn an_unreachable_server_fails_clearly_and_cleanup_happens_later() {
    let mut server = S3Server::start();
    server.create_bucket("gone").await;
    let store = Arc::new(
        S3Store::new(
            &server.location("s3", "gone", ""),
            S3Tuning {
                part_size: MIN_PART_SIZE,
                concurrency: 2,
                max_attempts: 3,
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                ..S3Tuning::default()
            },
        )
        .unwrap(),
    );
    let data = Arc::new(pseudo_random(30 * MIB, 5));
    let read = Arc::new(AtomicU64::new(0));
    let put = {
        let (store, read) = (store.clone(), read.clone());
        tokio::spawn(async move {
            store
                .put(
                    "g/x.bin",
                    body(data, Duration::from_millis(5), End::Clean, read),
                    &CancellationToken::new(),
                )
                .await
        })
    };
    wait_until_read(&read, 11 * MIB).await;
    server.kill();
    let err = tokio::time::timeout(Duration::from_secs(60), put)
        .await
        .expect("the put did not give up")
        .unwrap()
        .unwrap_err();
    let msg = err.to_string();
    eprintln!("unreachable: {msg}");
    assert!(msg.contains("g/x.bin"), "{msg}");
    assert!(msg.contains("gave up after 3 attempts"), "{msg}");
    assert!(msg.contains(&server.endpoint()), "{msg}");
    assert!(msg.contains("abort_incomplete"), "{msg}");
    assert!(!msg.contains(SECRET_KEY), "{msg}");

    server.restart();
    assert_eq!(server.multipart_uploads("gone").await.len(), 1);
    assert_eq!(store.abort_incomplete("g/").await.unwrap(), 1);
    assert_nothing_left(&server, "gone").await;
}

#[tokio::test]
async fn a_prefix_location_keeps_to_its_prefix() {
    let server = S3Server::start();
    server.create_bucket("prefixed").await;
    let location = server.location("s3", "prefixed", "/tenants//a/");
    let store = S3Store::new(
        &location,
        S3Tuning {
            list_page_size: Some(2),
            ..S3Tuning::default()
        },
    )
    .unwrap();
    for i in 0..5 {
        store
            .put_bytes(&format!("x/{i}.json"), vec![b'x'; i])
            .await
            .unwrap();
    }
    // Neighbours that are not the location's.
    let client = server.client();
    for key in ["tenants/ab/y.bin", "other.bin", "tenants/a.json"] {
        client
            .put_object()
            .bucket("prefixed")
            .key(key)
            .body(Bytes::from_static(b"n").into())
            .send()
            .await
            .unwrap();
    }
    let mut keys: Vec<String> = server
        .object_keys("prefixed")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "other.bin",
            "tenants/a.json",
            "tenants/a/x/0.json",
            "tenants/a/x/1.json",
            "tenants/a/x/2.json",
            "tenants/a/x/3.json",
            "tenants/a/x/4.json",
            "tenants/ab/y.bin"
        ]
    );
    // Listed page by page (2 keys a page), relative to the prefix.
    let listed = store.list("").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|o| (o.key.as_str(), o.size))
            .collect::<Vec<_>>(),
        [
            ("x/0.json", 0),
            ("x/1.json", 1),
            ("x/2.json", 2),
            ("x/3.json", 3),
            ("x/4.json", 4)
        ]
    );
    assert_eq!(store.get_bytes("x/3.json", 10).await.unwrap(), b"xxx");

    // abort_incomplete pages through uploads and touches only the location's.
    for key in [
        "tenants/a/x/u1.bin",
        "tenants/a/x/u2.bin",
        "tenants/a/x/u3.bin",
        "tenants/ab/u.bin",
        "other/u.bin",
    ] {
        client
            .create_multipart_upload()
            .bucket("prefixed")
            .key(key)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(store.abort_incomplete("y/").await.unwrap(), 0);
    assert_eq!(store.abort_incomplete("").await.unwrap(), 3);
    let mut left: Vec<String> = server
        .multipart_uploads("prefixed")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    left.sort();
    assert_eq!(left, ["other/u.bin", "tenants/ab/u.bin"]);

    for i in 0..5 {
        store.delete(&format!("x/{i}.json")).await.unwrap();
    }
    assert!(store.list("").await.unwrap().is_empty());
    assert_eq!(server.object_keys("prefixed").await.len(), 3);
}

#[test]
fn missing_credentials_name_the_variable_and_never_a_secret() {
    set_credentials_env();
    let server_less = |access: &str, secret: &str| ferry_model::storage::StorageLocation {
        name: "remote".into(),
        encrypt_to: Vec::new(),
        backend: ferry_model::storage::StorageBackend::S3 {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "b".into(),
            prefix: String::new(),
            region: String::new(),
            path_style: true,
            access_key_env: access.into(),
            secret_key_env: secret.into(),
        },
    };
    use ferry_test_support::s3::{ACCESS_KEY_ENV, SECRET_KEY_ENV};

    let err = ferry_storage::open(&server_less("FERRY_TEST_UNSET_ACCESS_KEY", SECRET_KEY_ENV))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StorageError::Config(_)), "{err:?}");
    assert!(
        msg.contains("FERRY_TEST_UNSET_ACCESS_KEY") && msg.contains("not set"),
        "{msg}"
    );
    assert!(msg.contains("remote"), "{msg}");
    assert!(!msg.contains(SECRET_KEY) && !format!("{err:?}").contains(SECRET_KEY));

    let err = ferry_storage::open(&server_less(ACCESS_KEY_ENV, "FERRY_TEST_UNSET_SECRET_KEY"))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("FERRY_TEST_UNSET_SECRET_KEY") && msg.contains("secret key"),
        "{msg}"
    );
    assert!(!msg.contains(ACCESS_KEY), "{msg}");

    // Empty names mean the AWS defaults; the error names them when they are unset.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        let msg = ferry_storage::open(&server_less("", ""))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("AWS_ACCESS_KEY_ID"), "{msg}");
    }

    // `open` is synchronous and needs no runtime; what it opens shows no secret.
    let store = ferry_storage::open(&server_less(ACCESS_KEY_ENV, SECRET_KEY_ENV)).unwrap();
    let debug = format!("{store:?}");
    assert!(
        debug.contains("S3Store") && debug.contains(ACCESS_KEY_ENV),
        "{debug}"
    );
    assert!(
        !debug.contains(SECRET_KEY) && !debug.contains(ACCESS_KEY),
        "{debug}"
    );
}

#[tokio::test]
async fn errors_from_the_server_carry_no_secret() {
    let server = S3Server::start();
    // No such bucket.
    let store = S3Store::new(
        &server.location("s3", "missing-bucket", ""),
        S3Tuning::default(),
    )
    .unwrap();
    let err = store.list("").await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("NoSuchBucket"), "{msg}");
    assert!(!msg.contains(SECRET_KEY) && !format!("{err:?}").contains(SECRET_KEY));

    // A wrong secret: the server refuses the signature; the error shows neither secret.
    server.create_bucket("signed").await;
    let mut location = server.location("s3", "signed", "");
    if let ferry_model::storage::StorageBackend::S3 { secret_key_env, .. } = &mut location.backend {
        *secret_key_env = WRONG_SECRET_KEY_ENV.to_owned();
    }
    let store = S3Store::new(&location, S3Tuning::default()).unwrap();
    let err = store.put_bytes("k.json", b"{}".to_vec()).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("wrong secret: {msg}");
    assert!(msg.contains("k.json") && msg.contains("HTTP 403"), "{msg}");
    for secret in [SECRET_KEY, WRONG_SECRET_KEY] {
        assert!(
            !msg.contains(secret) && !format!("{err:?}").contains(secret),
            "{msg}"
        );
    }
    assert_eq!(server.object_keys("signed").await, vec![]);
}
