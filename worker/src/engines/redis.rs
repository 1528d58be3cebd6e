//! Redis shards: one database number of one Redis server.
//!
//! **Backup** takes an RDB snapshot with `redis-cli --rdb -`: the server forks and streams a
//! point-in-time image of its whole dataset, exactly as it would to a new replica, without
//! blocking clients. The RDB goes into the archive as it arrives (see `dump.rs`); nothing is
//! spooled. The snapshot always covers every database of the server; the archive's
//! `ferry-dump.json` records which one the shard is about (`options.db`). Before the transfer a
//! `SELECT db` + `DBSIZE` checks the connection, the credentials and the db number, so that those
//! fail with a clear message instead of a broken transfer.
//!
//! **Restore** must load into a *running* Redis without restarting it — the target may be shared,
//! and replacing its `dump.rdb` would need file-system access and a restart that loses every
//! other database. So the RDB is parsed as a stream (`rdb.rs`) and every key of the backed-up
//! database is sent as `RESTORE key ttl payload ABSTTL` through `redis-cli --pipe` into the
//! target's database. A `RESTORE` payload is the key's type byte and value exactly as the RDB
//! holds them, plus the RDB version and a CRC64, so types, encodings, stream consumer groups and
//! pending entries come back bit for bit without Ferry re-implementing every data type.
//!
//! - **Memory** is bounded by the largest key: the parser holds one key's value at a time, and
//!   keys of other databases are read past without being kept. (A key larger than the target's
//!   `proto-max-bulk-len`, 512 MB by default, cannot be sent as one `RESTORE`.)
//! - **TTL**: the RDB stores absolute expiry times, and they are restored as such (`ABSTTL`), so
//!   a key expires at the same wall-clock moment as it would have on the source. Keys whose
//!   expiry has already passed when they are restored are skipped (and counted); keys without
//!   one get no TTL. LRU idle time / LFU frequency hints are passed on (`IDLETIME` / `FREQ`).
//! - **RDB version**: the payloads carry the source RDB's version, because their values are
//!   encoded the way the source wrote them. A target of the same or a newer Redis accepts them;
//!   an older target refuses them ("DUMP payload version or checksum are wrong"), which fails the
//!   shard with a hint.
//! - **Safety**: without `--overwrite` the target db must be empty (checked in the verify step and
//!   again here), and keys are restored without `REPLACE`, so a key written concurrently fails the
//!   shard rather than being clobbered. With `--overwrite`, `FLUSHDB` runs first on the same
//!   connection and keys are restored with `REPLACE`. The target db number is validated with
//!   `SELECT` before anything is written: a pipe whose `SELECT` failed would write into db 0.
//! - Function libraries in the RDB are server-wide, not part of a database, and are skipped
//!   (counted in the shard's detail); module values are refused with a clear error.
//! - The password reaches `redis-cli` only through `REDISCLI_AUTH`; it is never in arguments, and
//!   it is scrubbed from any output quoted in an error.

use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_model::task::{Resource, ShardOutcome};
use tokio_util::sync::CancellationToken;

use super::dump::{self, DumpInfo};
use super::rdb::{RdbError, RdbParser, Stats};
use super::{Run, ShardError};

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 6379;
/// Seconds `redis-cli --pipe` waits for replies once everything is sent (a big `RESTORE` takes
/// a while).
const PIPE_TIMEOUT_SECS: u32 = 600;
/// How much of a tool's output is kept for error messages.
const OUTPUT_HEAD: usize = 16 << 10;
const OUTPUT_TAIL: usize = 4 << 10;

/// One Redis server and database number, from the shard's resource.
#[derive(Clone)]
struct Target {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    db: u32,
}

impl Target {
    fn of(run: &Run) -> Result<Target, ShardError> {
        let Resource::Database { spec, .. } = &run.task.resource else {
            return Err(ShardError::permanent(format!(
                "not a redis shard: {}",
                run.task.resource.kind()
            )));
        };
        Ok(Target {
            host: spec
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            port: spec.port.unwrap_or(DEFAULT_PORT),
            user: spec.user.clone().filter(|u| !u.is_empty()),
            password: dump::password(spec)?,
            db: spec.db.unwrap_or(0),
        })
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `redis-cli` connected to the server (not yet to a db), the password in its environment.
    fn cli(&self) -> Command {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("-h").arg(&self.host);
        cmd.arg("-p").arg(self.port.to_string());
        if let Some(user) = &self.user {
            cmd.arg("--user").arg(user);
        }
        match &self.password {
            Some(password) => cmd.env("REDISCLI_AUTH", password),
            // An inherited REDISCLI_AUTH is not this database's password.
            None => cmd.env_remove("REDISCLI_AUTH"),
        };
        cmd
    }

    /// `text` without the password in it.
    fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "***"),
            _ => text.to_owned(),
        }
    }

    /// Turns what `redis-cli` printed when `what` failed into an error that says why.
    fn failure(&self, what: &str, output: &str) -> ShardError {
        let text = self.scrub(output);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let find = |needles: &[&str]| {
            lines
                .iter()
                .find(|l| needles.iter().any(|n| l.contains(n)))
                .copied()
        };
        let addr = self.addr();
        let who = self
            .user
            .as_deref()
            .map(|u| format!(" for user {u:?}"))
            .unwrap_or_default();
        if let Some(line) = find(&[
            "NOAUTH",
            "WRONGPASS",
            "AUTH failed",
            "invalid password",
            "invalid username-password",
        ]) {
            return ShardError::permanent(format!(
                "authentication failed at Redis {addr}{who} (check password_env/password_file): \
                 {line}"
            ));
        }
        if let Some(line) = find(&["NOPERM"]) {
            return ShardError::permanent(format!(
                "Redis {addr}{who} denies a command Ferry needs: {line}"
            ));
        }
        if let Some(line) = find(&["DB index is out of range"]) {
            return ShardError::permanent(format!("Redis {addr} has no db {}: {line}", self.db));
        }
        if let Some(line) = find(&["Could not connect", "Connection refused"]) {
            // "Could not connect to Redis at H:P: Connection refused" → "Connection refused".
            let why = line
                .strip_prefix("Could not connect to Redis at ")
                .and_then(|rest| rest.split_once(": "))
                .map_or(line, |(_, why)| why);
            return ShardError::transient(format!("cannot connect to Redis {addr}: {why}"));
        }
        if let Some(line) = find(&[
            "I/O error",
            "Connection reset",
            "Server closed the connection",
            "LOADING",
        ]) {
            return ShardError::transient(format!("Redis {addr}: {what}: {line}"));
        }
        let tail = crate::executor::tail(text.as_bytes());
        ShardError::transient(format!("redis-cli {what} at {addr} failed: {tail}"))
    }

    fn not_empty(&self, keys: u64) -> ShardError {
        ShardError::permanent(format!(
            "target Redis {} db {} is not empty ({keys} keys); restore into another db or \
             replace it with --overwrite",
            self.addr(),
            self.db
        ))
    }
}

fn spawn(cmd: &mut Command) -> Result<Child, ShardError> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ShardError::permanent("redis-cli is not installed on this worker")
            }
            _ => ShardError::transient(format!("redis-cli could not start: {e}")),
        })
}

/// `SELECT db` then `DBSIZE`: the number of keys in the db, or why the server cannot be used.
fn dbsize_blocking(target: &Target) -> Result<u64, ShardError> {
    let mut child = spawn(&mut target.cli())?;
    if let Some(mut stdin) = child.stdin.take() {
        // redis-cli reads one command per line; it may already have exited (refused).
        let _ = stdin.write_all(format!("SELECT {}\nDBSIZE\n", target.db).as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ShardError::transient(format!("waiting for redis-cli: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if out.status.success()
        && let [ok, count] = replies[..]
        && ok == "OK"
        && let Ok(count) = count.parse::<u64>()
    {
        return Ok(count);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(target.failure("SELECT/DBSIZE", &format!("{stdout}\n{stderr}")))
}

async fn dbsize(target: &Target) -> Result<u64, ShardError> {
    let target = target.clone();
    tokio::task::spawn_blocking(move || dbsize_blocking(&target))
        .await
        .map_err(|e| ShardError::transient(format!("redis check crashed: {e}")))?
}

/// Streams an RDB snapshot of the server into the shard archive; the shard is about db
/// `spec.db` (default 0).
pub async fn backup(run: &Run) -> Result<ShardOutcome, ShardError> {
    let source = Target::of(run)?;
    let keys = dbsize(&source).await?;
    let mut cmd = source.cli();
    cmd.arg("--rdb").arg("-");
    let mut options = serde_json::Map::new();
    options.insert("db".into(), source.db.into());
    let info = DumpInfo {
        engine: "redis".into(),
        tool_version: run.tool_version("redis-cli"),
        database: None,
        options,
    };
    let mut outcome = dump::backup_from_command(run, cmd, info)
        .await
        .map_err(|e| {
            if e.message.starts_with("redis-cli failed") {
                source.failure("--rdb", &e.message)
            } else {
                ShardError {
                    message: source.scrub(&e.message),
                    permanent: e.permanent,
                }
            }
        })?;
    outcome.detail = format!(
        "RDB snapshot of {} (all dbs); this shard is db {} ({keys} keys at the start)",
        source.addr(),
        source.db
    );
    Ok(outcome)
}

/// Loads the archive's keys of the backed-up db into the target's db `spec.db` of a running
/// Redis with `RESTORE` (after `FLUSHDB` with `--overwrite`; otherwise the db must be empty).
pub async fn restore(run: &Run) -> Result<ShardOutcome, ShardError> {
    let target = Target::of(run)?;
    let overwrite = run.task.overwrite;
    // Connection, credentials and db number, before anything is downloaded or written.
    let keys = dbsize(&target).await?;
    if keys > 0 && !overwrite {
        return Err(target.not_empty(keys));
    }
    let cancel = run.cancel.clone();
    let into = target.clone();
    let loaded = dump::restore_with(run, move |info, rdb| {
        load(info, rdb, &into, overwrite, &cancel)
    })
    .await?;
    Ok(ShardOutcome {
        source_bytes: loaded.stats.bytes,
        tool_version: Some(run.tool_version("redis-cli")).filter(|v| !v.is_empty()),
        detail: loaded.describe(&target),
        ..Default::default()
    })
}

/// Refuses a target db that holds any key (the verify step of a restore).
pub async fn check_empty(run: &Run) -> Result<(), ShardError> {
    let target = Target::of(run)?;
    match dbsize(&target).await? {
        0 => Ok(()),
        keys => Err(target.not_empty(keys)),
    }
}

/// What a restore did.
struct Loaded {
    source_db: u64,
    restored: u64,
    expired: u64,
    version: u32,
    stats: Stats,
}

impl Loaded {
    fn describe(&self, target: &Target) -> String {
        let mut out = format!(
            "restored {} keys of db {} into {} db {} (RDB v{}{})",
            self.restored,
            self.source_db,
            target.addr(),
            target.db,
            self.version,
            self.stats
                .redis_version
                .as_deref()
                .map(|v| format!(" from Redis {v}"))
                .unwrap_or_default()
        );
        if self.expired > 0 {
            out += &format!("; skipped {} keys that had expired", self.expired);
        }
        if self.stats.skipped_keys > 0 {
            out += &format!("; {} keys of other dbs left out", self.stats.skipped_keys);
        }
        if self.stats.functions > 0 {
            out += &format!(
                "; {} function libraries not restored (server-wide, not part of a db)",
                self.stats.functions
            );
        }
        if !self.stats.module_aux.is_empty() {
            out += &format!(
                "; module data of {} skipped",
                self.stats.module_aux.join(", ")
            );
        }
        out
    }
}

fn rdb_error(e: RdbError) -> ShardError {
    match e {
        RdbError::Io(e) => ShardError::transient(format!("reading the RDB from the archive: {e}")),
        other => ShardError::permanent(other.to_string()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why sending stopped.
enum Stop {
    /// Writing into `redis-cli` failed: it probably died, and says why.
    Write(std::io::Error),
    Shard(ShardError),
}

impl From<ShardError> for Stop {
    fn from(e: ShardError) -> Self {
        Stop::Shard(e)
    }
}

/// Parses the RDB and pipes one `RESTORE` per key of the source db into the target (runs on the
/// pipeline's blocking thread).
fn load(
    info: &DumpInfo,
    rdb: &mut dyn Read,
    target: &Target,
    overwrite: bool,
    cancel: &CancellationToken,
) -> Result<Loaded, ShardError> {
    if info.engine != "redis" {
        return Err(ShardError::permanent(format!(
            "the archive holds a {:?} dump, not a Redis RDB",
            info.engine
        )));
    }
    let source_db = info
        .options
        .get("db")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            ShardError::permanent("the archive does not say which Redis db it holds (options.db)")
        })?;
    let mut parser = RdbParser::new(BufReader::with_capacity(1 << 20, rdb)).map_err(rdb_error)?;
    let version = parser.version();
    let payload_version = u16::try_from(version).unwrap_or(u16::MAX);

    let mut pipe = Pipe::start(target)?;
    let mut restored = 0u64;
    let mut expired = 0u64;
    let sent: Result<(), Stop> = (|| {
        pipe.send(&[b"SELECT", target.db.to_string().as_bytes()])
            .map_err(Stop::Write)?;
        if overwrite {
            pipe.send(&[b"FLUSHDB"]).map_err(Stop::Write)?;
        }
        while let Some(mut entry) = parser.next_entry(Some(source_db)).map_err(rdb_error)? {
            if cancel.is_cancelled() {
                return Err(ShardError::cancelled().into());
            }
            let ttl = match entry.expire_ms {
                Some(at) if at <= now_ms() => {
                    expired += 1;
                    continue;
                }
                Some(at) => Some(at.to_string()),
                None => None,
            };
            let hint = match (entry.freq, entry.idle_secs) {
                (Some(freq), _) => Some(("FREQ", freq.to_string())),
                (None, Some(idle)) => Some(("IDLETIME", idle.to_string())),
                (None, None) => None,
            };
            let key = std::mem::take(&mut entry.key);
            let payload = entry.into_dump_payload(payload_version);
            let mut args: Vec<&[u8]> = vec![
                b"RESTORE",
                &key,
                ttl.as_deref().unwrap_or("0").as_bytes(),
                &payload,
            ];
            if overwrite {
                args.push(b"REPLACE");
            }
            if ttl.is_some() {
                args.push(b"ABSTTL");
            }
            if let Some((name, value)) = &hint {
                args.push(name.as_bytes());
                args.push(value.as_bytes());
            }
            pipe.send(&args).map_err(Stop::Write)?;
            restored += 1;
        }
        Ok(())
    })();
    let stats = match sent {
        Ok(()) => {
            let stats = parser.finish().map_err(rdb_error);
            match stats {
                Ok(stats) => stats,
                Err(e) => {
                    pipe.abort();
                    return Err(e);
                }
            }
        }
        Err(Stop::Shard(e)) => {
            pipe.abort();
            return Err(e);
        }
        Err(Stop::Write(e)) => {
            // redis-cli stopped reading: its own output says why.
            return Err(match pipe.finish(target) {
                Err(tool) => tool,
                Ok(()) => {
                    ShardError::transient(format!("streaming RESTORE commands into redis-cli: {e}"))
                }
            });
        }
    };
    pipe.finish(target)?;
    Ok(Loaded {
        source_db,
        restored,
        expired,
        version,
        stats,
    })
}

/// `redis-cli --pipe`: RESP commands in, a summary (and errors on stderr) out.
struct Pipe {
    child: Child,
    stdin: Option<BufWriter<ChildStdin>>,
    stdout: Option<JoinHandle<Output>>,
    stderr: Option<JoinHandle<Output>>,
    sent: u64,
}

impl Pipe {
    fn start(target: &Target) -> Result<Pipe, ShardError> {
        let mut cmd = target.cli();
        cmd.arg("--pipe")
            .arg("--pipe-timeout")
            .arg(PIPE_TIMEOUT_SECS.to_string());
        let mut child = spawn(&mut cmd)?;
        let stdin = child
            .stdin
            .take()
            .map(|s| BufWriter::with_capacity(1 << 16, s));
        let stdout = child.stdout.take().map(|s| collect(Box::new(s)));
        let stderr = child.stderr.take().map(|s| collect(Box::new(s)));
        Ok(Pipe {
            child,
            stdin,
            stdout,
            stderr,
            sent: 0,
        })
    }

    /// Writes one command as a RESP array of bulk strings.
    fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let w = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("stdin closed"))?;
        write!(w, "*{}\r\n", args.len())?;
        for arg in args {
            write!(w, "${}\r\n", arg.len())?;
            w.write_all(arg)?;
            w.write_all(b"\r\n")?;
        }
        self.sent += 1;
        Ok(())
    }

    fn outputs(&mut self) -> (String, String) {
        let join = |h: Option<JoinHandle<Output>>| {
            h.and_then(|h| h.join().ok())
                .map(|o| o.text())
                .unwrap_or_default()
        };
        (join(self.stdout.take()), join(self.stderr.take()))
    }

    /// Stops the tool (after a parse error or cancel): keys sent so far may have been restored.
    fn abort(mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.outputs();
    }

    /// Ends the input and checks that every command was answered without an error.
    fn finish(mut self, target: &Target) -> Result<(), ShardError> {
        let flushed = match self.stdin.take() {
            Some(mut w) => w.flush(),
            None => Ok(()),
        };
        let status = self
            .child
            .wait()
            .map_err(|e| ShardError::transient(format!("waiting for redis-cli: {e}")))?;
        let (stdout, stderr) = self.outputs();
        let summary = stdout
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("errors: "))
            .and_then(|rest| {
                let (errors, replies) = rest.split_once(", replies: ")?;
                Some((errors.parse::<u64>().ok()?, replies.parse::<u64>().ok()?))
            });
        match summary {
            Some((0, replies)) if status.success() && flushed.is_ok() && replies == self.sent => {
                Ok(())
            }
            Some((errors, replies)) if errors > 0 => {
                let failed = target.failure("--pipe", &stderr);
                // Connection and credential problems say so; the rest are refused RESTOREs.
                if failed.permanent || !failed.message.starts_with("redis-cli") {
                    return Err(failed);
                }
                let text = target.scrub(stderr.trim());
                let first: Vec<&str> = text.lines().take(5).collect();
                let hint = if text.contains("payload version") {
                    " (the target Redis is older than the source: RESTORE accepts only its own \
                     RDB version or older)"
                } else if text.contains("BUSYKEY") {
                    " (a key was written into the target db while it was being restored)"
                } else {
                    ""
                };
                Err(ShardError::permanent(format!(
                    "restoring into Redis {} db {}: {errors} of {replies} commands failed{hint}: \
                     {}",
                    target.addr(),
                    target.db,
                    first.join(" | ")
                )))
            }
            _ => {
                let mut err = target.failure("--pipe", &format!("{stdout}\n{stderr}"));
                if err.message.starts_with("redis-cli") {
                    err.message =
                        format!("{} ({status}; {} commands sent)", err.message, self.sent);
                }
                Err(err)
            }
        }
    }
}

/// The head and tail of what a tool printed.
#[derive(Default)]
struct Output {
    head: Vec<u8>,
    tail: Vec<u8>,
    dropped: bool,
}

impl Output {
    fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped {
            text.push_str("\n…\n");
        }
        text.push_str(&String::from_utf8_lossy(&self.tail));
        text
    }
}

/// Drains a pipe on a side thread (the tool must never block on a full pipe), keeping its head
/// and tail.
fn collect(mut from: Box<dyn Read + Send>) -> JoinHandle<Output> {
    std::thread::spawn(move || {
        let mut out = Output::default();
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut data = &buf[..n];
            if out.head.len() < OUTPUT_HEAD {
                let take = data.len().min(OUTPUT_HEAD - out.head.len());
                out.head.extend_from_slice(&data[..take]);
                data = &data[take..];
            }
            out.tail.extend_from_slice(data);
            if out.tail.len() > 2 * OUTPUT_TAIL {
                out.tail.drain(..out.tail.len() - OUTPUT_TAIL);
                out.dropped = true;
            }
        }
        out
    })
}
