//! Point-in-time restores against servers the tests start themselves: a PostgreSQL cluster with
//! `wal_level=replica` and a MariaDB server with its binlog on, each on its own port. A writer
//! inserts a row every 100 ms while the log stream runs, a base (dump) is taken in the middle,
//! the stream is cancelled and resumed by a second attempt, and a restore to a moment between
//! two inserts must hold exactly the rows committed before it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_model::app::DatabaseSpec;
use ferry_model::pitr::{self, Chunk};
use ferry_model::storage::StorageLocation;
use ferry_model::task::{PitrTask, Resource, ShardOp, ShardOutcome, ShardTask};
use ferry_test_support::MariaServer;
use ferry_test_support::pg::PgServer;
use ferry_worker::engines::{ShardError, stream};
use tokio_util::sync::CancellationToken;

/// A SQL client fed one statement every 100 ms until stopped; `pause` (after this many
/// statements, for this long) leaves an idle stretch.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(mut cmd: Command, statement: &'static str, pause: Option<(u32, Duration)>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the writer's client");
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut stdin = child.stdin.take().expect("the writer's stdin");
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    stdin
                        .write_all(statement.as_bytes())
                        .expect("the writer's client died");
                    stdin.flush().unwrap();
                    n += 1;
                    if let Some((after, pause)) = pause
                        && n == after
                    {
                        std::thread::sleep(pause);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                drop(stdin);
                let status = child.wait().unwrap();
                assert!(status.success(), "the writer's client failed");
            })
        };
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Runs a stream attempt on a task of its own; cancel the token to end it.
fn start_stream(
    storage: &StorageLocation,
    spec: &DatabaseSpec,
    prefix: &str,
    attempt: u32,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<ShardOutcome, ShardError>>,
) {
    let mut task = common::task(
        ShardOp::Stream,
        Resource::LogStream { spec: spec.clone() },
        storage,
        prefix,
    );
    task.attempt = attempt;
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(common::run_until(task, cancel.clone()));
    (cancel, handle)
}

/// The stream's chunks in storage.
async fn chunks(storage: &StorageLocation, prefix: &str) -> Vec<Chunk> {
    let store = ferry_storage::open(storage).unwrap();
    store
        .list(prefix)
        .await
        .unwrap()
        .iter()
        .filter_map(|o| Chunk::parse(prefix, &o.key))
        .collect()
}

/// Waits until the stream holds bytes received after `ms` (what a restore to `ms` needs).
async fn wait_archived_past(storage: &StorageLocation, prefix: &str, ms: i64) {
    for _ in 0..600 {
        let spans = pitr::spans(&chunks(storage, prefix).await);
        if spans.last().is_some_and(|s| s.to_ms > ms + pitr::SETTLE_MS) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream archived nothing received after {ms} within a minute");
}

/// One contiguous span, and every byte in one chunk only: the resumed attempt re-archived
/// nothing.
async fn assert_one_span_without_duplicates(storage: &StorageLocation, prefix: &str) {
    let all = chunks(storage, prefix).await;
    let spans = pitr::spans(&all);
    assert_eq!(spans.len(), 1, "the stream has a hole: {spans:#?}");
    let stored: u64 = all.iter().map(|c| c.end - c.offset).sum();
    let spanned: u64 = spans[0].pieces.iter().map(|p| p.end - p.offset).sum();
    assert_eq!(
        stored,
        spanned,
        "some bytes were archived twice ({} chunks)",
        all.len()
    );
    let attempts: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|c| c.end > c.offset) // log bytes, not a file's end or a mark
        .filter_map(|c| c.key.rsplit('.').next())
        .collect();
    assert_eq!(
        attempts.into_iter().collect::<Vec<_>>(),
        ["1", "2"],
        "both attempts archived part of the log"
    );
}

fn spec(json: serde_json::Value) -> DatabaseSpec {
    serde_json::from_value(json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restore_to_a_moment_holds_exactly_the_rows_committed_before_it() {
    let server = PgServer::start();
    server.psql("postgres", "CREATE DATABASE shop");
    server.psql(
        "shop",
        "CREATE TABLE t (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    );
    let dir = tempfile::tempdir().unwrap();
    let storage = common::storage(dir.path());
    let source = spec(serde_json::json!({
        "name": "main", "engine": "postgres", "host": "127.0.0.1", "port": server.port,
        "databases": ["shop"], "pitr": true
    }));
    let prefix = pitr::stream_prefix("t", "a", "c.main");

    let mut psql = Command::new("psql");
    psql.args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-d", "shop", "-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    let writer = Writer::start(psql, "INSERT INTO t DEFAULT VALUES;\n", None);
    let (cancel, first) = start_stream(&storage, &source, &prefix, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The base, in the middle of the writes.
    let base_key = "teams/t/apps/a/backups/b1/c.postgres-base.main.tar.zst";
    let base = common::run(common::task(
        ShardOp::Backup,
        Resource::PgBase {
            spec: source.clone(),
        },
        &storage,
        base_key,
    ))
    .await
    .expect("the base backup");
    let position = base.log_position.clone().expect("the base's WAL position");
    assert!(position.ends_with(":0"), "{position}");
    let base_done = now_ms();

    // The stream's worker goes; a second attempt resumes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cancel.cancel();
    let ended = first
        .await
        .unwrap()
        .expect("a cancelled stream ends cleanly");
    assert!(ended.log_position.is_some(), "{ended:?}");
    // The server keeps every byte the worker received but did not archive (a worker killed
    // between the two loses nothing): the slot holds from the archive's end or before.
    let archived = pitr::spans(&chunks(&storage, &prefix).await)
        .last()
        .map(|s| stream::segment_number(&s.end.file).unwrap() * stream::WAL_SEGMENT + s.end.offset)
        .expect("the first attempt archived something");
    let slot = format!("ferry_{}", stream::short_hash(&prefix));
    let held = server.psql(
        "postgres",
        &format!("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    );
    let held = stream::parse_lsn(held.trim()).expect("the stream's slot");
    assert!(
        held <= archived,
        "the slot holds from {held:X}, after the archive's end {archived:X}"
    );
    // Writes go on while no worker streams, and the server drops every segment no slot holds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..2 {
        server.psql("postgres", "SELECT pg_switch_wal()");
        server.psql("postgres", "CHECKPOINT");
    }
    let (cancel, second) = start_stream(&storage, &source, &prefix, 2);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A moment between two commits after the base and the resume: the middle of the gap.
    let commits: Vec<(i64, i64)> = server
        .psql(
            "shop",
            "SELECT id, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint \
             FROM t ORDER BY id",
        )
        .lines()
        .map(|l| {
            let (id, us) = l.split_once('|').unwrap();
            (id.parse().unwrap(), us.parse().unwrap())
        })
        .collect();
    let after: Vec<&(i64, i64)> = commits
        .iter()
        .filter(|(_, us)| *us / 1000 > base_done + 1500)
        .collect();
    assert!(after.len() > 6, "too few rows after the base: {commits:?}");
    let (before, next) = (after[after.len() / 2], after[after.len() / 2 + 1]);
    let at_ms = (before.1 + next.1) / 2 / 1000;
    assert!(before.1 < at_ms * 1000 && at_ms * 1000 < next.1);
    let expected = server.psql(
        "shop",
        &format!(
            "SELECT id, at FROM t WHERE pg_xact_commit_timestamp(xmin) <= to_timestamp({at_ms} / 1000.0) ORDER BY id"
        ),
    );
    assert_eq!(expected.lines().count() as i64, before.0, "ids are dense");

    // The writer goes on until the log is archived well past the moment (SETTLE_MS).
    wait_archived_past(&storage, &prefix, at_ms).await;
    writer.finish();
    cancel.cancel();
    second
        .await
        .unwrap()
        .expect("the second attempt ends cleanly");
    assert_one_span_without_duplicates(&storage, &prefix).await;

    let target = |db: &str| Resource::Database {
        spec: source.clone(),
        database: Some(db.to_owned()),
    };
    let restore = |db: &str, at_ms: i64| {
        let mut task: ShardTask = common::task(ShardOp::Restore, target(db), &storage, base_key);
        task.pitr = Some(PitrTask {
            at_ms,
            logs_prefix: prefix.clone(),
            base_key: Some(base_key.to_owned()),
            base_sha256: Some(base.sha256.clone()),
            position: Some(position.clone()),
            source_database: Some("shop".into()),
        });
        task
    };
    let outcome = common::run(restore("shop_copy", at_ms))
        .await
        .expect("the restore to the moment");
    let restored = server.psql("shop_copy", "SELECT id, at FROM t ORDER BY id");
    assert_eq!(
        restored, expected,
        "exactly the rows committed before the moment"
    );
    assert_eq!(outcome.reached_ms, Some(before.1 / 1000), "{outcome:?}");
    assert!(outcome.detail.starts_with("reached "), "{}", outcome.detail);

    // A moment past the archived log fails before writing anything, naming the window.
    let late = common::run(restore("shop_late", now_ms() + 3_600_000))
        .await
        .unwrap_err();
    assert!(
        late.permanent && late.message.contains("outside"),
        "{late:?}"
    );
    assert_eq!(
        server.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop_late'"
        ),
        "0\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_restore_to_a_moment_holds_exactly_the_rows_written_before_it() {
    let server = MariaServer::start();
    server.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id int AUTO_INCREMENT PRIMARY KEY, \
         at datetime(6) NOT NULL DEFAULT now(6))",
    );
    let dir = tempfile::tempdir().unwrap();
    let storage = common::storage(dir.path());
    let source = spec(serde_json::json!({
        "name": "main", "engine": "mariadb", "host": "127.0.0.1", "port": server.port,
        "user": "root", "databases": ["shop"], "pitr": true
    }));
    let prefix = pitr::stream_prefix("t", "a", "c.main");

    let mut client = Command::new("mariadb");
    client.args(server.args()).arg("shop");
    // 40 inserts, 2.5 s of nothing (a whole idle second), then more.
    let writer = Writer::start(
        client,
        "INSERT INTO t () VALUES ();\n",
        Some((40, Duration::from_millis(2500))),
    );
    let (cancel, first) = start_stream(&storage, &source, &prefix, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The dump, in the middle of the writes, records its binlog position.
    let dump_key = "teams/t/apps/a/backups/b1/c.mariadb.main.shop.tar.zst";
    let dump = common::run(common::task(
        ShardOp::Backup,
        Resource::Database {
            spec: source.clone(),
            database: Some("shop".into()),
        },
        &storage,
        dump_key,
    ))
    .await
    .expect("the dump");
    let position = dump
        .log_position
        .clone()
        .expect("the dump's binlog position");
    let rows_after_dump: usize = server
        .sql("SELECT COUNT(*) FROM shop.t")
        .trim()
        .parse()
        .unwrap();
    // The replay spans two binlog files.
    server.sql("FLUSH BINARY LOGS");

    tokio::time::sleep(Duration::from_secs(1)).await;
    cancel.cancel();
    first
        .await
        .unwrap()
        .expect("a cancelled stream ends cleanly");
    let (cancel, second) = start_stream(&storage, &source, &prefix, 2);
    tokio::time::sleep(Duration::from_secs(6)).await;

    // The whole second inside the pause.
    let rows: Vec<f64> = server
        .sql("SELECT UNIX_TIMESTAMP(at) FROM shop.t ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let last_before = rows
        .windows(2)
        .find(|w| w[1] - w[0] > 2.0)
        .map(|w| w[0])
        .expect("the writer's pause");
    let second_s = (last_before + 0.3).floor() as i64 + 1;
    let at_ms = second_s * 1000;
    let expected = server.sql(&format!(
        "SELECT id, at FROM shop.t WHERE at < FROM_UNIXTIME({second_s}) ORDER BY id"
    ));
    assert!(
        rows.iter()
            .all(|&r| r < second_s as f64 - 0.3 || r > second_s as f64 + 0.5),
        "the moment is in an idle stretch"
    );

    // The writer goes on until the log is archived well past the moment (SETTLE_MS).
    wait_archived_past(&storage, &prefix, at_ms).await;
    writer.finish();
    cancel.cancel();
    second
        .await
        .unwrap()
        .expect("the second attempt ends cleanly");
    assert_one_span_without_duplicates(&storage, &prefix).await;

    let restore = |db: &str, at_ms: i64| {
        let mut task = common::task(
            ShardOp::Restore,
            Resource::Database {
                spec: source.clone(),
                database: Some(db.to_owned()),
            },
            &storage,
            dump_key,
        );
        task.expected_sha256 = Some(dump.sha256.clone());
        task.pitr = Some(PitrTask {
            at_ms,
            logs_prefix: prefix.clone(),
            base_key: None,
            base_sha256: None,
            position: Some(position.clone()),
            source_database: None,
        });
        task
    };
    let outcome = common::run(restore("shop_copy", at_ms))
        .await
        .expect("the restore to the moment");
    let restored = server.sql("SELECT id, at FROM shop_copy.t ORDER BY id");
    assert_eq!(
        restored, expected,
        "exactly the rows written before the moment"
    );
    assert_eq!(restored.lines().count(), 40, "every row before the pause");
    assert!(
        rows_after_dump < 40,
        "the dump ({rows_after_dump} rows) was taken before the moment: the replay added rows"
    );
    assert_eq!(outcome.reached_ms, Some(at_ms));
    assert!(outcome.detail.starts_with("reached "), "{}", outcome.detail);

    let late = common::run(restore("shop_late", now_ms() + 3_600_000))
        .await
        .unwrap_err();
    assert!(
        late.permanent && late.message.contains("outside"),
        "{late:?}"
    );
    assert_eq!(
        server.sql(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_late'"
        ),
        "0\n"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
