//! Redis shards against real redis-server processes (started here on free ports, killed on drop;
//! the machine's shared instance on 6379 is never touched): every type and encoding, binary keys
//! and values, stream consumer groups and pending entries, TTLs, one db out of several, the
//! empty-target rule, passwords and unreachable servers.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_model::app::DatabaseSpec;
use ferry_model::task::{Resource, ShardOp};
use ferry_worker::engines::ShardError;

/// A throwaway redis-server on a free port, killed on drop.
struct Server {
    child: Child,
    port: u16,
    password: Option<String>,
    _dir: tempfile::TempDir,
}

use ferry_test_support::free_port;

/// Fails loudly when the Redis tools are missing: these tests never skip.
fn require_tools() {
    for tool in ["redis-server", "redis-cli"] {
        let out = Command::new(tool)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{tool} must be installed for the Redis tests (scripts/setup installs it): {e}"
                )
            });
        assert!(out.status.success(), "{tool} --version failed: {out:?}");
    }
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        require_tools();
        let password = extra
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1].to_owned());
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().unwrap();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                // Snapshots start at once instead of waiting 5 s for more replicas.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting redis-server");
            for _ in 0..200 {
                if let Ok(mut c) = Client::connect(port, password.as_deref())
                    && c.cmd("PING") == Reply::Status("PONG".into())
                {
                    return Server {
                        child,
                        port,
                        password,
                        _dir: dir,
                    };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // port taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    fn client(&self, db: u32) -> Client {
        let mut c = Client::connect(self.port, self.password.as_deref()).unwrap();
        c.ok(&format!("SELECT {db}"));
        c
    }

    fn resource(&self, db: u32) -> Resource {
        resource(self.port, db, serde_json::Map::new())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn resource(port: u16, db: u32, extra: serde_json::Map<String, serde_json::Value>) -> Resource {
    let mut spec = serde_json::json!({
        "name": "cache", "engine": "redis", "host": "127.0.0.1", "port": port, "db": db,
    });
    spec.as_object_mut().unwrap().extend(extra);
    let spec: DatabaseSpec = serde_json::from_value(spec).unwrap();
    Resource::Database {
        spec,
        database: None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn items(self) -> Vec<Reply> {
        match self {
            Reply::Array(Some(items)) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    fn text(&self) -> String {
        match self {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Status(s) => s.clone(),
            other => panic!("not a string: {other:?}"),
        }
    }
}

/// Just enough RESP2 to drive the test servers.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn connect(port: u16, password: Option<&str>) -> std::io::Result<Client> {
        let w = TcpStream::connect(("127.0.0.1", port))?;
        let mut c = Client {
            r: BufReader::new(w.try_clone()?),
            w,
        };
        if let Some(p) = password {
            c.call(&[b"AUTH", p.as_bytes()]);
        }
        Ok(c)
    }

    fn call(&mut self, args: &[&[u8]]) -> Reply {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&out).unwrap();
        self.read()
    }

    /// A command of whitespace-separated words.
    fn cmd(&mut self, line: &str) -> Reply {
        let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        self.call(&words)
    }

    fn ok(&mut self, line: &str) -> Reply {
        let reply = self.cmd(line);
        assert!(!matches!(reply, Reply::Error(_)), "{line}: {reply:?}");
        reply
    }

    fn read(&mut self) -> Reply {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line).unwrap();
        assert!(line.len() >= 3, "connection closed");
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        match line[0] {
            b'+' => Reply::Status(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Int(text.parse().unwrap()),
            b'$' => {
                let n: i64 = text.parse().unwrap();
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut data = vec![0u8; n as usize + 2];
                self.r.read_exact(&mut data).unwrap();
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
            b'*' => {
                let n: i64 = text.parse().unwrap();
                if n < 0 {
                    return Reply::Array(None);
                }
                Reply::Array(Some((0..n).map(|_| self.read()).collect()))
            }
            other => panic!("bad reply type {other}"),
        }
    }

    fn keys(&mut self) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = self
            .cmd("KEYS *")
            .items()
            .into_iter()
            .map(|k| match k {
                Reply::Bulk(Some(k)) => k,
                other => panic!("{other:?}"),
            })
            .collect();
        keys.sort();
        keys
    }

    fn dbsize(&mut self) -> i64 {
        self.cmd("DBSIZE").int()
    }
}

/// Everything observable about one key.
#[derive(Debug, PartialEq)]
struct KeyState {
    kind: String,
    encoding: String,
    content: Vec<Reply>,
    /// Absolute expiry, ms (-1: none).
    pexpiretime: i64,
}

/// A flat field/value reply without the fields that change with time (idle times).
fn without(reply: Reply, fields: &[&str]) -> Reply {
    let items = reply.items();
    let mut kept = Vec::new();
    for pair in items.chunks(2) {
        let name = pair[0].text();
        if !fields.contains(&name.as_str()) {
            kept.extend(pair.iter().cloned());
        }
    }
    Reply::Array(Some(kept))
}

fn sorted(reply: Reply) -> Reply {
    let mut items = reply.items();
    items.sort();
    Reply::Array(Some(items))
}

fn sorted_pairs(reply: Reply) -> Reply {
    let items = reply.items();
    let mut pairs: Vec<Vec<Reply>> = items.chunks(2).map(<[Reply]>::to_vec).collect();
    pairs.sort();
    Reply::Array(Some(pairs.into_iter().flatten().collect()))
}

fn state(c: &mut Client, key: &[u8]) -> KeyState {
    let kind = c.call(&[b"TYPE", key]).text();
    let encoding = c.call(&[b"OBJECT", b"ENCODING", key]).text();
    let content = match kind.as_str() {
        "string" => vec![c.call(&[b"GET", key])],
        "list" => vec![c.call(&[b"LRANGE", key, b"0", b"-1"])],
        "set" => vec![sorted(c.call(&[b"SMEMBERS", key]))],
        "zset" => vec![c.call(&[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])],
        "hash" => vec![sorted_pairs(c.call(&[b"HGETALL", key]))],
        "stream" => {
            let mut out = vec![
                c.call(&[b"XRANGE", key, b"-", b"+"]),
                c.call(&[b"XINFO", b"STREAM", key]),
            ];
            let groups = c.call(&[b"XINFO", b"GROUPS", key]);
            out.push(groups.clone());
            for group in groups.items() {
                let name = group.items()[1].text();
                let name = name.as_bytes();
                out.push(c.call(&[b"XPENDING", key, name]));
                // id, consumer, idle ms, deliveries: all but the idle time.
                let pending = c.call(&[b"XPENDING", key, name, b"-", b"+", b"1000"]);
                for entry in pending.items() {
                    let mut entry = entry.items();
                    entry.remove(2);
                    out.push(Reply::Array(Some(entry)));
                }
                for consumer in c.call(&[b"XINFO", b"CONSUMERS", key, name]).items() {
                    out.push(without(consumer, &["idle", "inactive"]));
                }
            }
            out
        }
        other => panic!("unexpected type {other}"),
    };
    KeyState {
        kind,
        encoding,
        content,
        pexpiretime: c.call(&[b"PEXPIRETIME", key]).int(),
    }
}

fn snapshot(c: &mut Client) -> BTreeMap<Vec<u8>, KeyState> {
    c.keys()
        .into_iter()
        .map(|k| (k.clone(), state(c, &k)))
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const BINARY_KEY: &[u8] = b"bin\x00\xff\xfe key\r\nwith crlf";
const BINARY_VALUE: &[u8] = b"\x00\x01\x02\r\n \xff\xc3\x80 value";

/// Source db 3: every type and encoding, TTLs, binary data.
fn fill_source(c: &mut Client) {
    for line in [
        "SET plain hello",
        "SET int-encoded 1234567",
        "SET negative -42",
        "SET 987654 integer-named-key",
        "SET ttl-string soon PX 120000",
        "RPUSH list-small a b c 1 2 3",
        "SADD set-intset 1 2 3 -5 1000000 -99999999",
        "SADD set-strings apple banana cherry",
        "ZADD zset-small -1.5 neg 0 zero 3.25 frac inf top -inf bottom",
        "HSET hash-small f1 v1 f2 v2 f3 3",
        "HSET hash-ttl a b",
        "PEXPIRE hash-ttl 3600000",
    ] {
        c.ok(line);
    }
    c.call(&[b"SET", b"empty-string", b""]);
    c.call(&[b"SET", BINARY_KEY, BINARY_VALUE]);
    c.call(&[b"SET", b"key with spaces", b"value with\r\nnewline"]);
    c.call(&[b"HSET", b"hash\x00binary", b"f\xff", BINARY_VALUE]);
    // 1 MB that compresses well: stored LZF-compressed in the RDB.
    let big = "0123456789abcdef".repeat(1 << 16);
    c.call(&[b"SET", b"string-1mb", big.as_bytes()]);
    // A list of ~2 MB: a quicklist of many nodes.
    for batch in 0..20 {
        let mut args: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"list-big".to_vec()];
        for i in 0..1000 {
            args.push(format!("element-{batch}-{i}-{}", "x".repeat(80)).into_bytes());
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        c.call(&refs);
    }
    c.ok("PEXPIRE list-big 600000");
    for i in 0..600 {
        c.call(&[b"SADD", b"set-big", format!("member-{i}").as_bytes()]);
        let score = format!("{}", f64::from(i) * 0.25 - 37.125);
        c.call(&[
            b"ZADD",
            b"zset-big",
            score.as_bytes(),
            format!("m{i}").as_bytes(),
        ]);
        c.call(&[b"HSET", b"hash-big", format!("field-{i}").as_bytes(), b"v"]);
    }
    c.ok("ZADD zset-big -inf lowest inf highest");
    let far = (now_ms() / 1000 + 365 * 86400).to_string();
    c.call(&[b"EXPIREAT", b"zset-big", far.as_bytes()]);
    // A stream: entries, deleted entries, two groups, pending entries, consumers.
    for i in 1..=20 {
        c.call(&[
            b"XADD",
            b"stream",
            format!("{i}-0").as_bytes(),
            b"n",
            i.to_string().as_bytes(),
            b"bin",
            BINARY_VALUE,
        ]);
    }
    for line in [
        "XDEL stream 3-0 4-0 10-0",
        "XGROUP CREATE stream g1 0",
        "XGROUP CREATE stream g2 5-0",
        "XREADGROUP GROUP g1 alice COUNT 5 STREAMS stream >",
        "XREADGROUP GROUP g1 bob COUNT 3 STREAMS stream >",
        "XACK stream g1 1-0",
        "XREADGROUP GROUP g2 carol COUNT 2 STREAMS stream >",
        "XGROUP CREATECONSUMER stream g2 dave",
        "PEXPIRE stream 900000",
        "XGROUP CREATE stream-empty g0 $ MKSTREAM",
    ] {
        c.ok(line);
    }
}

fn encoding(c: &mut Client, key: &str) -> String {
    c.call(&[b"OBJECT", b"ENCODING", key.as_bytes()]).text()
}

#[tokio::test(flavor = "multi_thread")]
async fn db3_round_trips_into_db7_with_every_type_ttl_and_stream_state() {
    let source = Server::start(&["--enable-debug-command", "yes"]);
    let target = Server::start(&[]);
    let mut src = source.client(3);
    fill_source(&mut src);
    // Keys of other dbs, which must not be restored.
    let mut other = source.client(0);
    other.ok("SET db0-key zero");
    other.ok("SET plain not-this-one");
    let mut other = source.client(5);
    other.ok("RPUSH db5-list x y");

    // The fixture covers the encodings it means to.
    for (key, expected) in [
        ("int-encoded", "int"),
        ("list-big", "quicklist"),
        ("set-intset", "intset"),
        ("set-big", "hashtable"),
        ("zset-small", "listpack"),
        ("zset-big", "skiplist"),
        ("hash-small", "listpack"),
        ("hash-big", "hashtable"),
    ] {
        assert_eq!(encoding(&mut src, key), expected, "{key}");
    }
    // Redis 7.0 keeps even small lists in a one-node quicklist; 7.2 uses a listpack.
    let small_list = encoding(&mut src, "list-small");
    assert!(
        small_list == "quicklist" || small_list == "listpack",
        "{small_list}"
    );
    let debug = src.ok("DEBUG OBJECT string-1mb").text();
    let serialized: u64 = debug
        .split_whitespace()
        .find_map(|f| f.strip_prefix("serializedlength:"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        serialized < 100_000,
        "the 1 MB string is not LZF-compressed: {debug}"
    );

    // Stream state worth carrying: 7 pending in g1 (5 + 3 read, 1 acked), 2 in g2, 4 consumers.
    assert_eq!(src.ok("XPENDING stream g1").items()[0], Reply::Int(7));
    assert_eq!(src.ok("XPENDING stream g2").items()[0], Reply::Int(2));
    assert_eq!(src.ok("XINFO CONSUMERS stream g2").items().len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let outcome = common::round_trip(dir.path(), source.resource(3), target.resource(7), false)
        .await
        .expect("round trip");
    assert!(outcome.source_bytes > 10_000, "{outcome:?}"); // LZF shrinks the RDB
    assert!(
        outcome
            .tool_version
            .as_deref()
            .unwrap()
            .contains("redis-cli")
    );

    let expected = snapshot(&mut src);
    let expected_pttl: BTreeMap<Vec<u8>, i64> = expected
        .keys()
        .map(|k| (k.clone(), src.call(&[b"PTTL", k]).int()))
        .collect();
    let mut tgt = target.client(7);
    let restored = snapshot(&mut tgt);
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the keys of target db 7 are those of source db 3"
    );
    for (key, want) in &expected {
        assert_eq!(
            &restored[key],
            want,
            "key {:?} differs",
            String::from_utf8_lossy(key)
        );
        let pttl = tgt.call(&[b"PTTL", key]).int();
        let source_pttl = expected_pttl[key];
        if source_pttl == -1 {
            assert_eq!(pttl, -1, "{:?} got a TTL", String::from_utf8_lossy(key));
        } else {
            assert!(
                (pttl - source_pttl).abs() < 5_000 && pttl > 0,
                "PTTL of {:?}: target {pttl}, source {source_pttl}",
                String::from_utf8_lossy(key)
            );
        }
    }
    let with_ttl = expected.values().filter(|s| s.pexpiretime > 0).count();
    assert_eq!(with_ttl, 5, "the fixture's TTL keys");
    assert_eq!(
        tgt.call(&[b"GET", BINARY_KEY]),
        Reply::Bulk(Some(BINARY_VALUE.to_vec()))
    );
    // Nothing else of the source landed anywhere on the target.
    for db in (0..16).filter(|&db| db != 7) {
        assert_eq!(target.client(db).dbsize(), 0, "target db {db} is not empty");
    }

    // (a) Db 7 is no longer empty: without --overwrite nothing is written.
    tgt.ok("SET junk extra");
    let err = common::round_trip(dir.path(), source.resource(3), target.resource(7), false)
        .await
        .expect_err("restoring into a non-empty db must fail");
    assert!(err.permanent, "{err:?}");
    assert!(
        err.message.contains(&format!(
            "target Redis 127.0.0.1:{} db 7 is not empty",
            target.port
        )) && err.message.contains("--overwrite"),
        "{err:?}"
    );
    // The restore step re-checks on its own (not only the verify step before it).
    let storage = common::storage(dir.path());
    let key = format!("shards/{}.tar.zst", common::uuid_like());
    let backup = common::run(common::task(
        ShardOp::Backup,
        source.resource(3),
        &storage,
        &key,
    ))
    .await
    .unwrap();
    let mut restore = common::task(ShardOp::Restore, target.resource(7), &storage, &key);
    restore.expected_sha256 = Some(backup.sha256.clone());
    let err = common::run(restore.clone()).await.unwrap_err();
    assert!(
        err.message.contains("is not empty (") && err.permanent,
        "{err:?}"
    );
    assert_eq!(tgt.dbsize() as usize, expected.len() + 1, "nothing changed");
    assert_eq!(tgt.cmd("GET junk"), Reply::Bulk(Some(b"extra".to_vec())));

    // With --overwrite the db is replaced: the junk key is gone, everything else is back.
    common::round_trip(dir.path(), source.resource(3), target.resource(7), true)
        .await
        .expect("overwrite");
    assert_eq!(tgt.cmd("EXISTS junk"), Reply::Int(0));
    let restored = snapshot(&mut tgt);
    assert_eq!(restored, snapshot(&mut src));
    // And the restore step on its own, with --overwrite, reports what it did.
    restore.overwrite = true;
    let done = common::run(restore).await.unwrap();
    assert!(
        done.detail
            .contains(&format!("restored {} keys of db 3", expected.len())),
        "{done:?}"
    );
    assert!(
        done.detail.contains("keys of other dbs left out"),
        "{done:?}"
    );
    assert_eq!(tgt.dbsize() as usize, expected.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_work_and_auth_errors_name_no_secret() {
    let secret = format!("SECRET_{}", common::uuid_like());
    let wrong = format!("WRONG_{}", common::uuid_like());
    let server = Server::start(&["--requirepass", &secret]);
    let target = Server::start(&[]);
    let mut c = server.client(0);
    c.ok("SET guarded value");
    c.ok("ACL SETUSER ferry on >userpass ~* &* +@all");

    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let with_password = |password: &str, user: Option<&str>| {
        let file = secrets.path().join(common::uuid_like());
        std::fs::write(&file, format!("{password}\n")).unwrap();
        let mut extra = serde_json::Map::new();
        extra.insert("password_file".into(), file.to_string_lossy().into());
        if let Some(user) = user {
            extra.insert("user".into(), user.into());
        }
        resource(server.port, 0, extra)
    };
    let storage = common::storage(dir.path());

    // A wrong password: a clear, permanent error that names neither password.
    let err = common::run(common::task(
        ShardOp::Backup,
        with_password(&wrong, None),
        &storage,
        "shards/wrong.tar.zst",
    ))
    .await
    .unwrap_err();
    assert!(err.permanent, "{err:?}");
    assert!(err.message.contains("authentication failed"), "{err:?}");
    assert!(
        err.message.contains(&format!("127.0.0.1:{}", server.port)),
        "{err:?}"
    );
    assert!(
        !err.message.contains(&secret) && !err.message.contains(&wrong),
        "{err:?}"
    );
    // No password at all.
    let err = common::run(common::task(
        ShardOp::Backup,
        server.resource(0),
        &storage,
        "shards/none.tar.zst",
    ))
    .await
    .unwrap_err();
    assert!(err.permanent && err.message.contains("NOAUTH"), "{err:?}");
    // Restoring with a wrong password fails the same way (verify's empty check first).
    let err = common::round_trip(
        dir.path(),
        target.resource(0),
        with_password(&wrong, None),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        err.permanent && err.message.contains("authentication failed"),
        "{err:?}"
    );
    assert!(!err.message.contains(&wrong), "{err:?}");

    // The right password works, as the default user and as an ACL user.
    common::round_trip(
        dir.path(),
        with_password(&secret, None),
        target.resource(2),
        false,
    )
    .await
    .expect("backup with the password");
    let mut t = target.client(2);
    assert_eq!(t.cmd("GET guarded"), Reply::Bulk(Some(b"value".to_vec())));
    common::round_trip(
        dir.path(),
        with_password("userpass", Some("ferry")),
        target.resource(3),
        false,
    )
    .await
    .expect("backup as an ACL user");
    assert_eq!(
        target.client(3).cmd("GET guarded"),
        Reply::Bulk(Some(b"value".to_vec()))
    );
    let err = common::run(common::task(
        ShardOp::Backup,
        with_password(&wrong, Some("ferry")),
        &storage,
        "shards/user.tar.zst",
    ))
    .await
    .unwrap_err();
    assert!(
        err.permanent && err.message.contains("user \"ferry\""),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_a_clear_transient_error() {
    require_tools();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let storage = common::storage(dir.path());
    let unreachable = resource(port, 0, serde_json::Map::new());
    let expect_refused = |err: ShardError| {
        assert!(!err.permanent, "{err:?}");
        assert!(
            err.message
                .contains(&format!("cannot connect to Redis 127.0.0.1:{port}")),
            "{err:?}"
        );
    };
    let err = common::run(common::task(
        ShardOp::Backup,
        unreachable.clone(),
        &storage,
        "shards/x.tar.zst",
    ))
    .await
    .unwrap_err();
    expect_refused(err);
    // As a restore target: the verify step's empty check, and the restore itself.
    let source = Server::start(&[]);
    source.client(0).ok("SET k v");
    let err = common::round_trip(dir.path(), source.resource(0), unreachable.clone(), false)
        .await
        .unwrap_err();
    expect_refused(err);
    let err = common::round_trip(dir.path(), source.resource(0), unreachable, true)
        .await
        .unwrap_err();
    expect_refused(err);
    // A db number the server does not have is refused before anything is read or written.
    let err = common::run(common::task(
        ShardOp::Backup,
        source.resource(99),
        &storage,
        "shards/y.tar.zst",
    ))
    .await
    .unwrap_err();
    assert!(
        err.permanent && err.message.contains("has no db 99"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_expired_by_restore_time_are_skipped_and_disk_sync_works() {
    // A disk-based snapshot (no diskless end mark after the RDB) this time.
    let source = Server::start(&["--repl-diskless-sync", "no"]);
    let target = Server::start(&[]);
    let mut c = source.client(0);
    c.ok("SET stays here");
    c.ok("SET goes soon PX 2500");
    let set_at = now_ms();

    let dir = tempfile::tempdir().unwrap();
    let storage = common::storage(dir.path());
    let key = "shards/expiring.tar.zst";
    let backup = common::run(common::task(
        ShardOp::Backup,
        source.resource(0),
        &storage,
        key,
    ))
    .await
    .unwrap();
    assert!(
        now_ms() - set_at < 2000,
        "the backup was too slow for this test"
    );
    tokio::time::sleep(Duration::from_millis(
        (set_at + 3000 - now_ms()).max(0) as u64
    ))
    .await;
    let mut restore = common::task(ShardOp::Restore, target.resource(4), &storage, key);
    restore.expected_sha256 = Some(backup.sha256.clone());
    let done = common::run(restore).await.unwrap();
    assert!(
        done.detail.contains("skipped 1 keys that had expired"),
        "{done:?}"
    );
    let mut t = target.client(4);
    assert_eq!(t.keys(), vec![b"stays".to_vec()]);
    assert_eq!(t.cmd("PTTL stays"), Reply::Int(-1));
}

/// Stores a hand-made RDB as a Redis shard archive; returns its key and SHA-256.
async fn store_rdb(dir: &std::path::Path, rdb: Vec<u8>, engine: &str) -> (String, String) {
    use ferry_worker::engines::dump::{DumpInfo, write_dump};
    let store = ferry_storage::open(&common::storage(dir)).unwrap();
    let key = format!("shards/{}.tar.zst", common::uuid_like());
    let mut options = serde_json::Map::new();
    options.insert("db".into(), 0.into());
    let info = DumpInfo {
        engine: engine.into(),
        tool_version: "hand-made".into(),
        database: None,
        options,
    };
    let (_, stored) = ferry_worker::pipeline::upload_compressed(
        store,
        &key,
        &tokio_util::sync::CancellationToken::new(),
        None,
        move |out| {
            let progress = std::sync::atomic::AtomicU64::new(0);
            write_dump(out, &info, &mut rdb.as_slice(), &progress)
                .map_err(|e| ShardError::transient(e.to_string()))
        },
    )
    .await
    .unwrap();
    (key, stored.sha256)
}

/// `REDISxxxx`, db 0, one string key `k` = `v`, EOF and checksum.
fn tiny_rdb(version: &str, checksum: Option<u64>) -> Vec<u8> {
    let mut r = format!("REDIS{version}").into_bytes();
    r.extend_from_slice(&[0xfe, 0, 0, 1, b'k', 1, b'v', 0xff]);
    let crc = checksum.unwrap_or_else(|| ferry_worker::engines::rdb::crc64(0, &r));
    r.extend_from_slice(&crc.to_le_bytes());
    r
}

async fn restore_archive(
    dir: &std::path::Path,
    target: &Server,
    archive: (String, String),
) -> Result<ferry_model::task::ShardOutcome, ShardError> {
    let mut task = common::task(
        ShardOp::Restore,
        target.resource(0),
        &common::storage(dir),
        &archive.0,
    );
    task.expected_sha256 = Some(archive.1);
    task.overwrite = true;
    common::run(task).await
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_restores_and_bad_archives_fail_with_the_reason() {
    let target = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();

    // The same RDB the target could have written restores fine…
    let ok = store_rdb(dir.path(), tiny_rdb("0010", None), "redis").await;
    let done = restore_archive(dir.path(), &target, ok).await.unwrap();
    assert!(done.detail.contains("restored 1 keys of db 0"), "{done:?}");
    assert_eq!(
        target.client(0).cmd("GET k"),
        Reply::Bulk(Some(b"v".to_vec()))
    );

    // …one from a newer Redis (RDB 12) is refused by RESTORE on this 7.0 target.
    let newer = store_rdb(dir.path(), tiny_rdb("0012", None), "redis").await;
    let err = restore_archive(dir.path(), &target, newer)
        .await
        .unwrap_err();
    assert!(err.permanent, "{err:?}");
    assert!(
        err.message.contains("1 of 3 commands failed")
            && err
                .message
                .contains("the target Redis is older than the source"),
        "{err:?}"
    );

    // A corrupt RDB (its checksum does not match).
    let corrupt = store_rdb(dir.path(), tiny_rdb("0010", Some(12345)), "redis").await;
    let err = restore_archive(dir.path(), &target, corrupt)
        .await
        .unwrap_err();
    assert!(
        err.permanent && err.message.contains("checksum mismatch"),
        "{err:?}"
    );

    // An archive of another engine.
    let other = store_rdb(dir.path(), tiny_rdb("0010", None), "postgres").await;
    let err = restore_archive(dir.path(), &target, other)
        .await
        .unwrap_err();
    assert!(
        err.permanent && err.message.contains("not a Redis RDB"),
        "{err:?}"
    );
}
