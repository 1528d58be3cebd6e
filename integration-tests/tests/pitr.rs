//! Point-in-time restore of a whole application, on real servers started by the test (a
//! PostgreSQL cluster and a MariaDB server with its binary log, each on its own port) and real
//! controller and worker processes: a writer inserts one row every 100 ms into both databases
//! for a minute; a backup is taken in the middle; the worker holding the PostgreSQL log stream
//! is SIGKILLed and the stream resumes on the other worker; a restore `--at` a moment right
//! after the kill, into a copy beside the original, holds exactly the rows committed before that
//! moment in both databases (one restore job), and the volume as the backup before it had it.
//! Moments outside the recovery window fail before anything is written, naming the window.
//! The location is encrypted: the archived log, like every archive, holds no plaintext.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_integration_tests::{Cluster, sh};
use ferry_test_support::MariaServer;
use ferry_test_support::pg::PgServer;

/// One row as the writer saw it: its number, and the wall-clock window its commit fell in (ms).
#[derive(Debug, Clone, Copy)]
struct Row {
    n: u64,
    before_ms: i64,
    after_ms: i64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rfc3339(ms: i64) -> String {
    ferry_model::pitr::format_ms(ms)
}

const MARKER: &str = "FERRY-PITR-PLAINTEXT-4b7d";

/// The pid of the process whose command line contains every one of `words`, if one runs.
fn find_process(words: &[&str]) -> Option<(i32, i32)> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !words.iter().all(|w| cmdline.contains(w)) {
            return None;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let after = stat.rsplit(')').next()?;
        let mut fields = after.split_whitespace();
        let state = fields.next()?;
        let ppid: i32 = fields.next()?.parse().ok()?;
        (state != "Z").then_some((pid, ppid))
    })
}

#[test]
fn a_whole_app_restores_to_a_moment_across_a_stream_failover() {
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    let (identity, recipient) = ferry_integration_tests::age_key(c.path(), "location");
    let identity = identity.to_str().unwrap().to_owned();
    let workers = [
        c.add_worker_args("local", "n1", 2, &[], &["--identity-file", &identity]),
        c.add_worker_args("local", "n2", 2, &[], &["--identity-file", &identity]),
    ];
    let archive = c.path().join("archive");
    c.ferry(&[
        "storage",
        "add",
        "archive",
        "--local",
        archive.to_str().unwrap(),
        "--cluster",
        "local",
        "--encrypt-to",
        &recipient,
    ])
    .expect_code(0);
    let pg = PgServer::start();
    let my = MariaServer::start();
    let me = sh("id", &["-un"]).trim().to_owned();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        &format!("CREATE TABLE t (id serial PRIMARY KEY, n int NOT NULL, ts timestamptz NOT NULL DEFAULT clock_timestamp(), note text NOT NULL DEFAULT '{MARKER}')"),
    );
    my.sql("CREATE DATABASE shop");
    my.sql(
        &format!("CREATE TABLE shop.t (id int AUTO_INCREMENT PRIMARY KEY, n int NOT NULL, ts datetime(6) NOT NULL DEFAULT now(6), note varchar(64) NOT NULL DEFAULT '{MARKER}')"),
    );
    let files = c.path().join("srv/files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("state.txt"), "before the backup").unwrap();
    c.apply(&format!(
        "name: shop\ncomponents:\n  - name: db\n    databases:\n      \
         - {{name: pg, engine: postgres, host: 127.0.0.1, port: {}, user: {me}, databases: [shop], pitr: true}}\n      \
         - {{name: my, engine: mariadb, host: 127.0.0.1, port: {}, user: root, databases: [shop], pitr: true}}\n  \
         - name: files\n    volumes:\n      - {{name: data, path: {}}}\n",
        pg.port,
        my.port,
        files.display()
    ))
    .expect_code(0);

    // Both streams archive something before the writer starts.
    let window = |c: &Cluster| {
        c.ferry(&["app", "recovery-window", "shop", "-o", "json"])
            .expect_code(0)
            .json()
    };
    ferry_test_support::wait_for(
        Duration::from_secs(60),
        "both log streams to archive their first chunk",
        || {
            let w = window(&c);
            let streams = w["streams"].as_array().cloned().unwrap_or_default();
            streams.len() == 2
                && streams
                    .iter()
                    .all(|s| !s["last_position"].as_str().unwrap_or("").is_empty())
        },
    );

    // The writer: a row every 100 ms into both databases, each insert its own transaction.
    let rows: Arc<Mutex<Vec<Row>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (rows, stop) = (rows.clone(), stop.clone());
        let (pg_port, my_port) = (pg.port.to_string(), my.port.to_string());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let before_ms = now_ms();
                let sql = format!("INSERT INTO t (n) VALUES ({n})");
                sh(
                    "psql",
                    &[
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &pg_port,
                        "-d",
                        "shop",
                        "-X",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-qc",
                        &sql,
                    ],
                );
                sh(
                    "mariadb",
                    &[
                        "-h",
                        "127.0.0.1",
                        "-P",
                        &my_port,
                        "-uroot",
                        "shop",
                        "-e",
                        &sql,
                    ],
                );
                let after_ms = now_ms();
                rows.lock().unwrap().push(Row {
                    n,
                    before_ms,
                    after_ms,
                });
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();

    // A backup in the middle; the volume changes after it.
    std::thread::sleep(Duration::from_secs(15));
    let backup = c
        .ferry(&["backup", "create", "shop", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let kinds: Vec<&str> = backup["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"postgres-base"), "{kinds:?}");
    std::fs::write(files.join("state.txt"), "after the backup").unwrap();

    // The worker running the PostgreSQL stream dies.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(started.elapsed()));
    let port = pg.port.to_string();
    let (_, stream_worker) = find_process(&["pg_receivewal", &port])
        .expect("a pg_receivewal of the PostgreSQL stream is running");
    let index = workers
        .iter()
        .copied()
        .find(|i| c.workers[*i].pid() == stream_worker)
        .expect("pg_receivewal is a child of one of the test's workers");
    let killed_ms = now_ms();
    c.workers[index].kill();
    eprintln!("SIGKILLed worker #{index} (pid {stream_worker}), which held the PostgreSQL stream");
    ferry_test_support::wait_for(
        Duration::from_secs(60),
        "the PostgreSQL stream to resume on the other worker",
        || find_process(&["pg_receivewal", &port]).is_some_and(|(_, ppid)| ppid != stream_worker),
    );

    std::thread::sleep(Duration::from_secs(60).saturating_sub(started.elapsed()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let rows = rows.lock().unwrap().clone();
    assert!(
        rows.len() > 200,
        "the writer wrote only {} rows",
        rows.len()
    );

    // The moment: a whole second (MariaDB's binary log has second precision) during the
    // failover, when no insert was in flight.
    let in_flight = |t: i64| {
        rows.iter()
            .any(|r| r.before_ms - 20 <= t && t <= r.after_ms + 20)
    };
    let at_ms = (1..20)
        .map(|s| (killed_ms / 1000 + s) * 1000)
        .find(|t| !in_flight(*t) && rows.iter().any(|r| r.before_ms > *t))
        .expect("a whole second without an insert in flight");
    let expected: Vec<u64> = rows
        .iter()
        .filter(|r| r.after_ms < at_ms)
        .map(|r| r.n)
        .collect();
    let k = expected.len() as u64;
    assert_eq!(expected, (1..=k).collect::<Vec<_>>());

    // The window reaches past the moment, without a gap across the failover.
    ferry_test_support::wait_for(
        Duration::from_secs(60),
        "the recovery window to reach the chosen moment",
        || {
            window(&c)["streams"].as_array().is_some_and(|s| {
                s.iter().all(|s| {
                    s["ranges"].as_array().is_some_and(|r| {
                        r.last().and_then(|r| r["to"].as_str()).is_some_and(|to| {
                            ferry_model::pitr::parse_at(to, 0).is_ok_and(|to| to > at_ms)
                        })
                    })
                })
            })
        },
    );
    let w = window(&c);
    for s in w["streams"].as_array().unwrap() {
        assert_eq!(s["gaps"].as_array().unwrap().len(), 0, "{w}");
        assert_eq!(s["ranges"].as_array().unwrap().len(), 1, "{w}");
    }

    let copy_files = c.path().join("srv/files-copy");
    let at = rfc3339(at_ms);
    let restore = c
        .ferry(&[
            "restore",
            "create",
            "shop",
            "--at",
            &at,
            "--to-app",
            "shop-copy",
            "--rewrite",
            "shop=shop_copy",
            "--rewrite",
            &format!("{}={}", files.display(), copy_files.display()),
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(restore["state"], "Completed", "{restore}");
    let message = restore["message"].as_str().unwrap_or_default();
    assert!(message.contains("reached"), "{message}");
    assert!(message.contains(&backup_id), "{message}");

    let pg_rows = pg.psql("shop_copy", "SELECT count(*), max(n), sum(n) FROM t");
    assert_eq!(
        pg_rows.trim(),
        format!("{k}|{k}|{}", k * (k + 1) / 2),
        "PostgreSQL holds exactly the rows committed before {at}"
    );
    let my_rows = my.sql("SELECT count(*), max(n), sum(n) FROM shop_copy.t");
    assert_eq!(
        my_rows.trim(),
        format!("{k}\t{k}\t{}", k * (k + 1) / 2),
        "MariaDB holds exactly the rows committed before {at}"
    );
    assert_eq!(
        std::fs::read_to_string(copy_files.join("state.txt")).unwrap(),
        "before the backup",
        "the volume comes from the backup before the moment"
    );
    // The copy does not stream (it would hold a second slot on the same server).
    let copy = c.ferry(&["app", "get", "shop-copy"]).expect_code(0).stdout;
    assert!(!copy.contains("pitr"), "{copy}");
    // The source was not touched.
    let source = pg.psql("shop", "SELECT count(*) FROM t");
    assert_eq!(source.trim(), rows.len().to_string());

    // Outside the window: before the backup, and in the future. Nothing is written.
    let before = c.ferry(&[
        "restore",
        "create",
        "shop",
        "--at",
        &rfc3339(now_ms() - 3_600_000),
        "--to-app",
        "shop-early",
        "--rewrite",
        "shop=shop_early",
    ]);
    assert_eq!(before.code, 2, "{}", before.stderr);
    assert!(
        before.stderr.contains("before the oldest completed backup")
            && before.stderr.contains("recovery window: db.pg: "),
        "{}",
        before.stderr
    );
    let future = c.ferry(&[
        "restore",
        "create",
        "shop",
        "--at",
        &rfc3339(now_ms() + 3_600_000),
        "--to-app",
        "shop-late",
        "--rewrite",
        "shop=shop_late",
    ]);
    assert_eq!(future.code, 2, "{}", future.stderr);
    assert!(
        future.stderr.contains("recovery window"),
        "{}",
        future.stderr
    );
    // Encrypted at rest: every log chunk is an age file, and no file of the location holds a
    // row's plaintext.
    let logs = archive.join("teams/default/apps/shop/logs");
    let mut chunks = 0;
    for file in ferry_integration_tests::files(&archive) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{} holds plaintext",
            file.display()
        );
        if file.starts_with(&logs) {
            chunks += 1;
            assert!(
                file.to_string_lossy().ends_with(".age"),
                "{}",
                file.display()
            );
        }
    }
    assert!(
        chunks > 10,
        "only {chunks} log chunks under {}",
        logs.display()
    );
    // Retention: a second backup (after new log files began), the first one deleted: the log
    // only the first one needed goes, and the window starts at the second.
    my.sql("FLUSH BINARY LOGS");
    pg.psql("postgres", "SELECT pg_switch_wal()");
    let second = c
        .ferry(&["backup", "create", "shop", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    c.ferry(&["backup", "delete", &backup_id]).expect_code(0);
    let gc = c
        .ferry(&["storage", "gc", "archive", "-o", "json"])
        .expect_code(0)
        .json();
    assert!(gc["log_chunks_deleted"].as_u64().unwrap() > 0, "{gc}");
    let second_id = second["id"].as_str().unwrap();
    let w = window(&c);
    for s in w["streams"].as_array().unwrap() {
        let from = s["ranges"][0]["from"].as_str().unwrap();
        let from = ferry_model::pitr::parse_at(from, 0).unwrap();
        assert!(from > at_ms, "{second_id}: {w}");
    }
    let gone = c.ferry(&[
        "restore",
        "create",
        "shop",
        "--at",
        &at,
        "--to-app",
        "shop-gone",
    ]);
    assert_eq!(gone.code, 2, "{}", gone.stderr);
    let databases = pg.psql("postgres", "SELECT datname FROM pg_database");
    // The app goes: its streams stop and the replication slot Ferry made is dropped (it would
    // keep WAL on the server forever).
    let slots = || {
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'ferry_%'",
        )
    };
    assert_eq!(slots().trim(), "1");
    c.ferry(&["app", "delete", "shop"]).expect_code(0);
    ferry_test_support::wait_for(
        Duration::from_secs(90),
        "the deleted app's replication slot to be dropped",
        || slots().trim() == "0",
    );
    assert!(!databases.contains("shop_early") && !databases.contains("shop_late"));
}

/// A `pitr` database on a server that keeps no binary log: the stream fails for good (no retry
/// can fix a server setting), and `app recovery-window` says why, naming the setting; a backup
/// (which needs the binlog position too) fails the same way instead of leaving a base nothing
/// can replay from.
#[test]
fn a_server_without_a_usable_log_says_why() {
    let c = Cluster::start(&[]);
    let db = format!("ferry_pitr_nolog_{}", ferry_integration_tests::unique());
    sh(
        "mariadb",
        &["-uroot", "-e", &format!("CREATE DATABASE `{db}`")],
    );
    struct Drop_(String);
    impl Drop for Drop_ {
        fn drop(&mut self) {
            let _ = std::process::Command::new("mariadb")
                .args([
                    "-uroot",
                    "-e",
                    &format!("DROP DATABASE IF EXISTS `{}`", self.0),
                ])
                .status();
        }
    }
    let _drop = Drop_(db.clone());
    // The machine's own MariaDB runs without log_bin.
    assert_eq!(
        sh("mariadb", &["-uroot", "-N", "-e", "SELECT @@log_bin"]).trim(),
        "0"
    );
    c.apply(&format!(
        "name: nolog\ncomponents:\n  - name: db\n    databases:\n      \
         - {{name: my, engine: mariadb, host: 127.0.0.1, port: 3306, user: root, databases: [{db}], pitr: true}}\n"
    ))
    .expect_code(0);
    let mut last = serde_json::Value::Null;
    ferry_test_support::wait_for(
        Duration::from_secs(60),
        "the stream to fail, saying why",
        || {
            last = c
                .ferry(&["app", "recovery-window", "nolog", "-o", "json"])
                .expect_code(0)
                .json();
            last["streams"][0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("log_bin"))
        },
    );
    assert_eq!(last["streams"][0]["state"], "Failed", "{last:#}");
    // No new stream job per heartbeat while the server stays as it is (a minute's rest; 9 s
    // at the tests' heartbeat).
    std::thread::sleep(Duration::from_secs(3));
    let again = c
        .ferry(&["app", "recovery-window", "nolog", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(
        again["streams"][0]["job"], last["streams"][0]["job"],
        "{again:#}"
    );
    let table = c.ferry(&["app", "recovery-window", "nolog"]).expect_code(0);
    assert!(table.stderr.contains("log_bin"), "{}", table.stderr);
    let backup = c.ferry(&["backup", "create", "nolog", "--wait", "-o", "json"]);
    assert_eq!(backup.code, 1, "{}", backup.stdout);
    assert!(backup.stdout.contains("log_bin"), "{}", backup.stdout);
}

/// A stream that was down while its server purged the binlog it had reached: it resumes from
/// what the server still has, the recovery window shows the gap it really has (from the last
/// archived moment before the outage to the first backup after it), a moment inside the gap is
/// refused before anything is written (naming the window and its gap), and a moment after the
/// next backup restores exactly. The worker's metrics say how far the archive is behind the
/// server in bytes (none, once caught up) and where it ends.
#[test]
fn a_stream_down_while_its_server_purged_the_log_shows_the_gap() {
    let metrics = format!("127.0.0.1:{}", ferry_integration_tests::free_port());
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    let first = c.add_worker_args("local", "n1", 2, &[], &["--metrics-listen", &metrics]);
    c.add_local_storage("archive", "local");
    let my = MariaServer::start();
    my.sql("CREATE DATABASE shop");
    my.sql("CREATE TABLE shop.t (n int PRIMARY KEY)");
    c.apply(&format!(
        "name: shop\ncomponents:\n  - name: db\n    databases:\n      \
         - {{name: my, engine: mariadb, host: 127.0.0.1, port: {}, user: root, databases: [shop], pitr: true}}\n",
        my.port
    ))
    .expect_code(0);
    let insert = |from: u32, to: u32| {
        for n in from..=to {
            my.sql(&format!("INSERT INTO shop.t VALUES ({n})"));
        }
    };
    let window = |c: &Cluster| {
        c.ferry(&["app", "recovery-window", "shop", "-o", "json"])
            .expect_code(0)
            .json()
    };
    insert(1, 5);

    // The archive catches up with the server: no byte behind, and it ends where the server's
    // binlog does.
    let stream = [("stream", "default/shop/db.my")];
    let mut seen = String::new();
    ferry_test_support::wait_for(
        Duration::from_secs(60),
        "the stream's metrics to show it caught up with the server",
        || {
            let status = my.sql("SHOW MASTER STATUS");
            let mut cols = status.split('\t');
            let (file, offset) = (cols.next().unwrap_or(""), cols.next().unwrap_or(""));
            let samples =
                ferry_integration_tests::parse_metrics(&ferry_integration_tests::scrape(&metrics));
            let lag =
                ferry_integration_tests::metric(&samples, "ferry_worker_stream_lag_bytes", &stream);
            let at = ferry_integration_tests::metric(
                &samples,
                "ferry_worker_stream_archived_position",
                &[stream[0], ("file", file)],
            );
            seen = format!("server at {file}:{offset}, lag {lag:?}, archived position {at:?}");
            lag == Some(0.0) && at.is_some_and(|a| a.to_string() == offset.trim())
        },
    );
    eprintln!("{seen}");

    let base = c
        .ferry(&["backup", "create", "shop", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(base["state"], "Completed", "{base}");
    insert(6, 10);
    let last_write_ms = now_ms();
    // The server is quiet from here: the stream's mark (it caught up with an idle server) takes
    // the window past the last write, not 5 s short of it.
    ferry_test_support::wait_for(
        Duration::from_secs(30),
        "the window of the idle server to reach past its last write",
        || {
            window(&c)["streams"][0]["ranges"][0]["to"]
                .as_str()
                .is_some_and(|to| {
                    ferry_model::pitr::parse_at(to, 0).is_ok_and(|to| to > last_write_ms)
                })
        },
    );

    // The only worker dies; while no stream runs the server moves to a new binlog and purges
    // the one the archive had reached.
    let port = my.port.to_string();
    c.workers[first].kill();
    ferry_test_support::wait_for(
        Duration::from_secs(30),
        "the killed worker's mariadb-binlog to end",
        || find_process(&["mariadb-binlog", &port]).is_none(),
    );
    insert(11, 13);
    let in_gap_ms = now_ms();
    std::thread::sleep(Duration::from_millis(300));
    insert(14, 15);
    my.sql("FLUSH BINARY LOGS");
    let current = my.sql("SHOW MASTER STATUS");
    let current = current.split('\t').next().unwrap().to_owned();
    // The server purges a binlog only once its binlog checkpoint moved past it (InnoDB
    // flushed): repeat until the old file is gone.
    ferry_test_support::wait_for(
        Duration::from_secs(30),
        "the server to purge every binlog but the current one",
        || {
            my.sql(&format!("PURGE BINARY LOGS TO '{current}'"));
            my.sql("SHOW BINARY LOGS").lines().count() == 1
        },
    );
    insert(16, 20);

    // Another worker takes the stream over, from the binlog the server still has.
    c.add_worker("local", "n2");
    ferry_test_support::wait_for(
        Duration::from_secs(90),
        "the stream to resume on the new worker",
        || {
            window(&c)["streams"][0]["last_position"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{current}:")))
        },
    );
    let after = c
        .ferry(&["backup", "create", "shop", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(after["state"], "Completed", "{after}");
    insert(21, 23);
    // A whole second (MariaDB's binlog has second precision) after rows 1–23, before 24–26.
    let at_ms = (now_ms() / 1000 + 1) * 1000;
    std::thread::sleep(Duration::from_millis((at_ms + 300 - now_ms()).max(0) as u64));
    insert(24, 26);

    ferry_test_support::wait_for(
        Duration::from_secs(60),
        "the recovery window to reach the chosen moment",
        || {
            window(&c)["streams"][0]["ranges"]
                .as_array()
                .and_then(|r| r.last().and_then(|r| r["to"].as_str().map(str::to_owned)))
                .is_some_and(|to| ferry_model::pitr::parse_at(&to, 0).is_ok_and(|to| to > at_ms))
        },
    );
    let w = window(&c);
    let s = &w["streams"][0];
    let ms = |v: &serde_json::Value| ferry_model::pitr::parse_at(v.as_str().unwrap(), 0).unwrap();
    let gaps = s["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "one gap: {w:#}");
    assert!(
        ms(&gaps[0]["from"]) < in_gap_ms && in_gap_ms < ms(&gaps[0]["to"]),
        "the gap covers the outage: {w:#}"
    );
    assert_eq!(s["ranges"].as_array().unwrap().len(), 2, "{w:#}");

    // Inside the gap: refused, naming the window and its gap; nothing is written.
    let refused = c.ferry(&[
        "restore",
        "create",
        "shop",
        "--at",
        &rfc3339(in_gap_ms),
        "--to-app",
        "shop-gap",
        "--rewrite",
        "shop=shop_gap",
    ]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("recovery window: ")
            && refused.stderr.contains("gaps: ")
            && refused.stderr.contains("nothing was written"),
        "{}",
        refused.stderr
    );
    assert!(
        !my.sql("SHOW DATABASES").contains("shop_gap"),
        "a refused restore writes nothing"
    );

    // After the next backup: exact.
    let restore = c
        .ferry(&[
            "restore",
            "create",
            "shop",
            "--at",
            &rfc3339(at_ms),
            "--to-app",
            "shop-copy",
            "--rewrite",
            "shop=shop_copy",
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(restore["state"], "Completed", "{restore}");
    assert_eq!(
        my.sql("SELECT count(*), min(n), max(n) FROM shop_copy.t")
            .trim(),
        "23\t1\t23",
        "exactly the rows committed before {}",
        rfc3339(at_ms)
    );
}
