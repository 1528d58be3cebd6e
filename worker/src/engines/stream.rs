//! Log streams (`ShardOp::Stream` on `Resource::LogStream`): a database server's log — PostgreSQL
//! WAL, MariaDB/MySQL binlogs — followed with the server's own tool and archived as it grows, in
//! chunks under the stream's prefix (`task.object_key`; key format in `ferry_model::pitr`).
//!
//! - **Where it resumes**: the chunks already under the prefix, cut into spans
//!   (`pitr::spans`); archiving goes on from the end of the last one, so no byte is archived
//!   twice by attempts that follow each other. A resumed tool re-reads the current file from its
//!   start; only the bytes past that end are uploaded.
//! - **PostgreSQL**: `pg_receivewal --synchronous --no-loop` into the stream's work directory,
//!   with an `application_name` of the attempt's own; with `--synchronous` its walsender's
//!   `flush_lsn` (`pg_stat_replication`) is what it has flushed, and every second the bytes up
//!   to it are uploaded (segment file name = the WAL file, offset = LSN mod 16 MiB). The
//!   physical replication slot `ferry_HASH` (created when missing, named after a hash of the
//!   prefix) is not the receiver's: Ferry moves it (`pg_replication_slot_advance`) to what is
//!   *archived*, so the server keeps every byte a worker received but died before uploading.
//!   The receiver starts at the segment of an empty `SEGMENT.partial` put in its directory:
//!   the resumed one (re-read from its start; only the bytes past the archive are uploaded),
//!   or the slot's. A slot that no longer holds the resumed segment (dropped and recreated)
//!   restarts at its own position, and the hole shows as a gap in the recovery window.
//! - **MariaDB/MySQL**: `binlog_format` must be ROW (a statement-based binlog cannot be replayed
//!   into a database under another name). `mariadb-binlog --read-from-remote-server --raw
//!   --stop-never` from the resumed file (else the server's current one, `SHOW MASTER STATUS`),
//!   with a replica server id of its own (hash of the prefix, high range); every second the new
//!   bytes of each file are uploaded. A file is complete once the next one exists.
//! - The tool runs as a [`Supervised`] child: it dies with the worker, and stops when the
//!   stream is cancelled (then the stream returns Ok) or fails (the tool exited: a transient
//!   error, the controller retries). The work directory is removed on the way out.
//! - Chunks are the log's raw bytes, streamed from the local file into storage (never whole in
//!   memory); `RECEIVED_MS` is when the worker saw them in the local file, so every commit in a
//!   chunk happened before it.
//!
//! - **Marks and lag**: every tick (with metrics, or when a mark is due) the server's own end
//!   is read (`pg_current_wal_lsn()`, the sizes of `SHOW BINARY LOGS`): the bytes between it and
//!   the archive's end are the lag in bytes. When nothing was written for `MARK_AFTER_MS` and the
//!   archive holds everything the server had when asked, a *mark* (an empty chunk at the
//!   archive's end, named with the moment of asking) says so; the attempt's previous mark is
//!   deleted.
//! - In an encrypted location (`encrypt_to`) each chunk is an age file to the location's
//!   recipients (`….age`); a restore opens it with `--identity-file`.
//!
//! Known limit: a chunk is not compressed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_model::app::{DatabaseSpec, Engine};
use ferry_model::pitr::{self, Chunk, Position};
use ferry_model::task::{Resource, ShardOutcome};
use ferry_storage::{BoxReader, ObjectStore};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

use super::process::Supervised;
use super::{Run, ShardError, mariadb, postgres};
use crate::metrics::StreamFile;

/// How often new bytes are looked for and uploaded.
const TICK: Duration = Duration::from_secs(1);
/// How long a caught-up stream of an idle server waits before it writes a mark (see
/// `ferry_model::pitr`): the recovery window of a quiet server trails the present by about this.
const MARK_AFTER_MS: i64 = 5_000;
/// A WAL segment's size: the only one streams support (file names and successors assume it).
pub const WAL_SEGMENT: u64 = 16 << 20;

/// Follows the server's log and archives it until cancelled.
pub async fn run(run: &Run) -> Result<ShardOutcome, ShardError> {
    let Resource::LogStream { spec } = &run.task.resource else {
        return Err(ShardError::permanent("only a log-stream shard is streamed"));
    };
    let prefix = run.task.object_key.clone();
    if !prefix.ends_with('/') {
        return Err(ShardError::permanent(format!(
            "a stream's key must be a prefix ending in '/', not {prefix:?}"
        )));
    }
    let chunks = list_chunks(&*run.store, &prefix).await?;
    let resume = pitr::spans(&chunks).last().map(|s| s.end.clone());
    let dir = WorkDir::create(
        &run.work_dir,
        &format!("stream-{}-{}", short_hash(&prefix), run.task.attempt),
    )?;
    let mut source = match spec.engine {
        Engine::Postgres => {
            Source::Pg(PgSource::start(spec, &prefix, run.task.attempt, resume, &dir.0).await?)
        }
        Engine::Mariadb | Engine::Mysql => {
            Source::Maria(MariaSource::start(run, spec, &prefix, resume, &dir.0).await?)
        }
        Engine::Redis => {
            return Err(ShardError::permanent("Redis has no log to stream"));
        }
    };
    tracing::info!(stream = %prefix, from = %source.cursor(), "log stream started");
    let mut archived = 0u64;
    let label = crate::metrics::Stream::of_prefix(&prefix);
    // The file label the position metric has now.
    let mut position: Option<StreamFile> = None;
    // When the archive last held everything received (the lag metric counts from it).
    let mut caught_up = std::time::Instant::now();
    // Set when a tick left bytes behind (a chunk is at most MAX_CHUNK): go on without a pause.
    let mut behind = false;
    // When a chunk or mark was last written, and this attempt's newest mark (replaced by the
    // next one: only the newest says anything).
    let mut last_write_ms = now_ms();
    let mut last_mark: Option<String> = None;
    loop {
        if !behind {
            tokio::select! {
                _ = run.cancel.cancelled() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
        } else if run.cancel.is_cancelled() {
            break;
        }
        behind = false;
        if let Some(status) = source.child().exited() {
            return Err(ShardError::transient(format!(
                "{} exited ({status}): {}",
                source.child().name(),
                stderr_tail(&dir.0)
            )));
        }
        let ready = source.ready().await?;
        let received_ms = now_ms();
        for (file, end, complete) in ready {
            let cursor = source.cursor().clone();
            debug_assert_eq!(cursor.file, file);
            // At most MAX_CHUNK bytes a chunk (the rest goes at the next tick); a file is
            // complete only once every byte of it went.
            let capped = end > cursor.offset + pitr::MAX_CHUNK;
            let (end, complete) = if capped {
                (cursor.offset + pitr::MAX_CHUNK, false)
            } else {
                (end, complete)
            };
            if end > cursor.offset {
                let mut key = Chunk::key_for(
                    &prefix,
                    &file,
                    cursor.offset,
                    end,
                    received_ms,
                    run.task.attempt,
                );
                let recipients = &run.task.storage.encrypt_to;
                if !recipients.is_empty() {
                    key.push_str(pitr::SEALED_SUFFIX);
                }
                let path = source.local_file(&file)?;
                let range = (cursor.offset, end);
                match upload(&*run.store, &key, &path, range, recipients, &run.cancel).await {
                    Err(e) if run.cancel.is_cancelled() => {
                        tracing::debug!(error = %e, "upload stopped by the cancellation");
                        break;
                    }
                    other => other?,
                }
                archived += end - cursor.offset;
                if let Some(m) = &run.metrics {
                    m.stream_archived
                        .get_or_create(&label)
                        .inc_by(end - cursor.offset);
                }
                run.counters
                    .done
                    .fetch_add(end - cursor.offset, Ordering::Relaxed);
                last_write_ms = now_ms();
            }
            source.set_cursor(Position {
                file: file.clone(),
                offset: end.max(cursor.offset),
            });
            if capped {
                // The rest of this file (and the files after it) right away.
                behind = true;
                break;
            }
            if complete {
                // Every byte of it is archived: recorded, so that the archived log runs on into
                // the next file, which starts at 0.
                put_empty(
                    run,
                    Chunk::eof_key(&prefix, &file, end, now_ms(), run.task.attempt),
                )
                .await?;
                let _ = std::fs::remove_file(source.local_file(&file)?);
                let next = pitr::successor(&file).ok_or_else(|| {
                    ShardError::permanent(format!("no log file follows {file:?}"))
                })?;
                source.set_cursor(Position {
                    file: next,
                    offset: 0,
                });
            }
        }
        if !behind {
            caught_up = std::time::Instant::now();
        }
        let mark_due = !behind && now_ms() - last_write_ms >= MARK_AFTER_MS;
        let server = if mark_due || run.metrics.is_some() {
            source.behind().await
        } else {
            None
        };
        if mark_due && let Some((0, at_ms)) = server {
            // Caught up with an idle server: every commit up to `at_ms` is archived.
            let at = source.cursor();
            let key = Chunk::key_for(
                &prefix,
                &at.file,
                at.offset,
                at.offset,
                at_ms,
                run.task.attempt,
            );
            match put_empty(run, key).await {
                Ok(key) => {
                    last_write_ms = now_ms();
                    if let Some(old) = last_mark.replace(key)
                        && let Err(e) = run.store.delete(&old).await
                    {
                        tracing::debug!(key = %old, error = %e, "could not delete a replaced mark");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not write a mark; the next tick tries again")
                }
            }
        }
        if let Some(m) = &run.metrics {
            m.stream_lag
                .get_or_create(&label)
                .set(caught_up.elapsed().as_secs_f64());
            if let Some((bytes, _)) = server {
                m.stream_lag_bytes
                    .get_or_create(&label)
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
            let at = source.cursor();
            let file = StreamFile {
                stream: label.stream.clone(),
                file: at.file.clone(),
            };
            if position.as_ref() != Some(&file)
                && let Some(old) = position.replace(file.clone())
            {
                m.stream_position.remove(&old);
            }
            m.stream_position
                .get_or_create(&file)
                .set(i64::try_from(at.offset).unwrap_or(i64::MAX));
        }
    }
    if let Some(m) = &run.metrics {
        m.stream_lag.remove(&label);
        m.stream_lag_bytes.remove(&label);
        if let Some(old) = position {
            m.stream_position.remove(&old);
        }
    }
    let end = source.cursor().clone();
    drop(source); // stops the tool before its directory goes
    drop(dir);
    Ok(ShardOutcome {
        source_bytes: archived,
        detail: format!("archived {archived} byte(s); the log is archived up to {end}"),
        log_position: Some(end.to_string()),
        ..Default::default()
    })
}

/// Lets go of what a removed stream holds on its server: a PostgreSQL stream's replication slot
/// (it would keep WAL forever), once no reader uses it (a stopping stream has up to a minute).
/// A MariaDB/MySQL binlog reader holds nothing.
pub async fn release(run: &Run) -> Result<ShardOutcome, ShardError> {
    let Resource::LogStream { spec } = &run.task.resource else {
        return Err(ShardError::permanent("only a log stream is released"));
    };
    if spec.engine != Engine::Postgres {
        return Ok(ShardOutcome {
            detail: "a binlog reader holds nothing on its server".into(),
            ..Default::default()
        });
    }
    let (conn, db, slot) = pg_slot(spec, &run.task.object_key)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (conn, db, name) = (conn.clone(), db.clone(), slot.clone());
        let state = blocking(move || {
            let slot = name;
            let drop = format!(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name) \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = '{slot}' AND NOT active"
            );
            conn.psql(&db, &drop)
                .map_err(|e| conn.explain(e, &format!("dropping replication slot {slot}")))?;
            let left = format!(
                "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = '{slot}'"
            );
            Ok(conn.psql(&db, &left)?.trim() == "0")
        })
        .await?;
        if state {
            tracing::info!(slot = %slot, "released the removed stream's replication slot");
            return Ok(ShardOutcome {
                detail: format!("replication slot {slot} dropped"),
                ..Default::default()
            });
        }
        if std::time::Instant::now() > deadline {
            return Err(ShardError::transient(format!(
                "replication slot {slot} is still in use by a reader"
            )));
        }
        tokio::select! {
            _ = run.cancel.cancelled() => return Err(ShardError::transient("cancelled")),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A PostgreSQL stream's connection, the database it connects to, and its replication slot
/// (`ferry_` + a hash of the stream's prefix: the same for every attempt and for its release).
fn pg_slot(
    spec: &DatabaseSpec,
    prefix: &str,
) -> Result<(postgres::Conn, String, String), ShardError> {
    let conn = postgres::Conn::new(spec)?;
    let db = spec
        .databases
        .first()
        .cloned()
        .unwrap_or_else(|| "postgres".to_owned());
    Ok((conn, db, format!("ferry_{}", short_hash(prefix))))
}

/// The chunks under a stream's prefix (stray objects ignored).
pub async fn list_chunks(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<Chunk>, ShardError> {
    let objects = store
        .list(prefix)
        .await
        .map_err(|e| ShardError::transient(format!("storage: listing {prefix}: {e}")))?;
    Ok(objects
        .iter()
        .filter_map(|o| Chunk::parse(prefix, &o.key))
        .collect())
}

/// Uploads bytes `offset..end` of a local file as one chunk object: streamed as they are, or,
/// for an encrypted location (`recipients`), encrypted to its recipients (a chunk holds at most
/// `pitr::MAX_CHUNK` bytes, so this stays bounded).
async fn upload(
    store: &dyn ObjectStore,
    key: &str,
    path: &Path,
    (offset, end): (u64, u64),
    recipients: &[String],
    cancel: &CancellationToken,
) -> Result<(), ShardError> {
    let io = |e: std::io::Error| ShardError::transient(format!("reading {}: {e}", path.display()));
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io)?;
    let (body, expected): (BoxReader, u64) = if recipients.is_empty() {
        (Box::pin(file.take(end - offset)), end - offset)
    } else {
        let mut plain = Vec::with_capacity((end - offset) as usize);
        (&mut file)
            .take(end - offset)
            .read_to_end(&mut plain)
            .await
            .map_err(io)?;
        if plain.len() as u64 != end - offset {
            return Err(ShardError::transient(format!(
                "{} held {} byte(s) from {offset}, not {}",
                path.display(),
                plain.len(),
                end - offset
            )));
        }
        let sealed = ferry_crypto::seal::seal(recipients, &plain)
            .map_err(|e| ShardError::permanent(format!("encrypting a log chunk: {e}")))?;
        let len = sealed.len() as u64;
        (Box::pin(std::io::Cursor::new(sealed)), len)
    };
    let n = store
        .put(key, body, cancel)
        .await
        .map_err(|e| ShardError::transient(format!("storage: {e}")))?;
    if n != expected {
        // put only commits a clean end, so a short file leaves a short chunk: say so.
        return Err(ShardError::transient(format!(
            "{} held {n} byte(s) from {offset}, not {}",
            path.display(),
            end - offset
        )));
    }
    Ok(())
}

/// Writes a record without log bytes (a mark, a file's end) under `key`, sealed like the
/// chunks in an encrypted location; returns the key it has there.
async fn put_empty(run: &Run, mut key: String) -> Result<String, ShardError> {
    let recipients = &run.task.storage.encrypt_to;
    let body = if recipients.is_empty() {
        Vec::new()
    } else {
        key.push_str(pitr::SEALED_SUFFIX);
        ferry_crypto::seal::seal(recipients, &[])
            .map_err(|e| ShardError::permanent(format!("encrypting a log record: {e}")))?
    };
    run.store
        .put_bytes(&key, body)
        .await
        .map_err(|e| ShardError::transient(format!("storage: {e}")))?;
    Ok(key)
}

/// The following tool of either engine.
enum Source {
    Pg(PgSource),
    Maria(MariaSource),
}

impl Source {
    fn child(&self) -> &Supervised {
        match self {
            Source::Pg(s) => &s.child,
            Source::Maria(s) => &s.child,
        }
    }

    fn cursor(&self) -> &Position {
        match self {
            Source::Pg(s) => &s.cursor,
            Source::Maria(s) => &s.cursor,
        }
    }

    fn set_cursor(&mut self, to: Position) {
        match self {
            Source::Pg(s) => s.cursor = to,
            Source::Maria(s) => s.cursor = to,
        }
    }

    /// The files that may be archived now, from the cursor's on: each with the end of what may
    /// be taken and whether the file is complete.
    async fn ready(&mut self) -> Result<Vec<(String, u64, bool)>, ShardError> {
        match self {
            Source::Pg(s) => s.ready().await,
            Source::Maria(s) => Ok(s.ready()),
        }
    }

    /// Bytes of log the server had written past the cursor, and when it was asked (`None`: not
    /// known now).
    async fn behind(&self) -> Option<(u64, i64)> {
        match self {
            Source::Pg(s) => {
                let archived = s.archived_lsn().ok()?;
                let (lsn, at_ms) = s.server_lsn?;
                Some((lsn.saturating_sub(archived), at_ms))
            }
            Source::Maria(s) => match s.behind().await {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::debug!(error = %e, "could not read the server's binlog sizes");
                    None
                }
            },
        }
    }

    /// Where the tool keeps `file`.
    fn local_file(&self, file: &str) -> Result<PathBuf, ShardError> {
        match self {
            Source::Pg(s) => Ok(s.local_file(file)),
            Source::Maria(s) => Ok(s.dir.join(file)),
        }
    }
}

/// `pg_receivewal`, and the slot that keeps what it received until it is archived.
struct PgSource {
    child: Supervised,
    conn: postgres::Conn,
    db: String,
    slot: String,
    /// The `application_name` of this attempt's pg_receivewal (its row in pg_stat_replication).
    app: String,
    /// Where the slot holds the server's WAL from (its `restart_lsn`, as last set).
    held: u64,
    timeline: String,
    dir: PathBuf,
    cursor: Position,
    /// The server's WAL position at the last look (`ready`), and when it was asked.
    server_lsn: Option<(u64, i64)>,
}

impl PgSource {
    async fn start(
        spec: &DatabaseSpec,
        prefix: &str,
        attempt: u32,
        resume: Option<Position>,
        dir: &Path,
    ) -> Result<PgSource, ShardError> {
        let (conn, db, slot) = pg_slot(spec, prefix)?;
        let (restart_lsn, timeline) = {
            let (conn, db, slot) = (conn.clone(), db.clone(), slot.clone());
            blocking(move || {
                let size = conn.psql(
                    &db,
                    "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'",
                )?;
                if size.trim() != WAL_SEGMENT.to_string() {
                    return Err(ShardError::permanent(format!(
                        "wal_segment_size is {} bytes on {}: streams support 16 MiB segments only",
                        size.trim(),
                        conn.location()
                    )));
                }
                let sql = format!(
                    "SELECT restart_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = '{slot}'"
                );
                let mut lsn = conn.psql(&db, &sql)?;
                if lsn.trim().is_empty() {
                    let create = format!(
                        "SELECT lsn FROM pg_catalog.pg_create_physical_replication_slot('{slot}', true)"
                    );
                    lsn = conn.psql(&db, &create).map_err(|e| {
                        conn.explain(e, &format!("creating replication slot {slot}"))
                    })?;
                    tracing::info!(slot = %slot, "created the stream's replication slot");
                }
                let timeline =
                    conn.psql(&db, "SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()")?;
                Ok((lsn.trim().to_owned(), timeline.trim().to_owned()))
            })
            .await?
        };
        let restart = parse_lsn(&restart_lsn).ok_or_else(|| {
            ShardError::transient(format!(
                "slot {slot}: unexpected restart_lsn {restart_lsn:?}"
            ))
        })?;
        let timeline: u32 = timeline
            .parse()
            .map_err(|_| ShardError::transient(format!("unexpected timeline {timeline:?}")))?;
        let timeline = format!("{timeline:08X}");
        let held = wal_file(&timeline, restart / WAL_SEGMENT);
        let cursor = match resume {
            Some(pos) if segment_number(&pos.file).is_some_and(|n| n >= restart / WAL_SEGMENT) => {
                pos
            }
            Some(pos) => {
                tracing::warn!(
                    slot = %slot,
                    archived_to = %pos,
                    slot_holds_from = %held,
                    "the slot no longer holds the WAL after what is archived: the stream has a gap"
                );
                Position {
                    file: held,
                    offset: 0,
                }
            }
            None => Position {
                file: held,
                offset: 0,
            },
        };
        // An empty segment of the right size makes pg_receivewal start there.
        std::fs::File::create(dir.join(format!("{}.partial", cursor.file)))
            .and_then(|f| f.set_len(WAL_SEGMENT))
            .map_err(|e| ShardError::transient(format!("preparing {dir:?}: {e}")))?;
        let app = format!("{slot}_{attempt}");
        let mut cmd = conn.command("pg_receivewal", &db);
        cmd.env("PGAPPNAME", &app)
            .arg("-D")
            .arg(dir)
            .args(["--synchronous", "--no-loop"]);
        let child = spawn_logged(cmd, dir, libc::SIGINT)?;
        Ok(PgSource {
            child,
            conn,
            db,
            slot,
            app,
            held: restart,
            timeline,
            dir: dir.to_owned(),
            cursor,
            server_lsn: None,
        })
    }

    /// Up to what pg_receivewal has flushed. On the way (one query): moves the slot up to what
    /// is archived, and notes the server's own position (for the lag in bytes).
    async fn ready(&mut self) -> Result<Vec<(String, u64, bool)>, ShardError> {
        let (conn, db) = (self.conn.clone(), self.db.clone());
        let sql = ready_sql(&self.app, &self.slot, self.held, self.archived_lsn()?);
        let asked_ms = now_ms();
        let out = blocking(move || conn.psql(&db, &sql)).await?;
        let fields: Vec<&str> = out.trim().split('|').collect();
        let [flushed, server, held] = fields[..] else {
            return Err(ShardError::transient(format!(
                "unexpected answer from psql: {:?}",
                out.trim()
            )));
        };
        self.server_lsn = parse_lsn(server).map(|lsn| (lsn, asked_ms));
        self.held = parse_lsn(held).ok_or_else(|| {
            ShardError::transient(format!(
                "replication slot {} is gone (or holds no WAL)",
                self.slot
            ))
        })?;
        let mut out = Vec::new();
        let Some(flushed) = parse_lsn(flushed) else {
            // pg_receivewal has not connected (or reported) yet.
            return Ok(out);
        };
        let mut file = self.cursor.file.clone();
        let mut segment = segment_number(&file)
            .ok_or_else(|| ShardError::permanent(format!("not a WAL file name: {file:?}")))?;
        if flushed / WAL_SEGMENT < segment {
            // A resumed pg_receivewal re-receiving what is archived already.
            return Ok(out);
        }
        while segment < flushed / WAL_SEGMENT {
            out.push((file.clone(), WAL_SEGMENT, true));
            segment += 1;
            file = wal_file(&self.timeline, segment);
        }
        out.push((file, flushed % WAL_SEGMENT, false));
        Ok(out)
    }

    /// The LSN up to which the log is archived.
    fn archived_lsn(&self) -> Result<u64, ShardError> {
        let segment = segment_number(&self.cursor.file).ok_or_else(|| {
            ShardError::permanent(format!("not a WAL file name: {:?}", self.cursor.file))
        })?;
        Ok(segment * WAL_SEGMENT + self.cursor.offset)
    }

    /// pg_receivewal renames `SEGMENT.partial` to `SEGMENT` when it is complete.
    fn local_file(&self, file: &str) -> PathBuf {
        let done = self.dir.join(file);
        if done.exists() {
            return done;
        }
        let partial = self.dir.join(format!("{file}.partial"));
        if partial.exists() {
            return partial;
        }
        // Renamed between the two looks.
        done
    }
}

/// `mariadb-binlog --read-from-remote-server --raw --stop-never`.
struct MariaSource {
    child: Supervised,
    conn: mariadb::Conn,
    client: &'static str,
    dir: PathBuf,
    cursor: Position,
}

impl MariaSource {
    async fn start(
        run: &Run,
        spec: &DatabaseSpec,
        prefix: &str,
        resume: Option<Position>,
        dir: &Path,
    ) -> Result<MariaSource, ShardError> {
        let conn = mariadb::Conn::new(spec)?;
        let client = mariadb::pick(run, mariadb::CLIENT_TOOLS)?;
        let tool = mariadb::pick(run, &["mariadb-binlog", "mysqlbinlog"])?;
        let first = {
            let conn = conn.clone();
            blocking(move || {
                conn.require_row_format(client)?;
                let current = conn.current_binlog(client)?;
                let listed: Vec<String> =
                    conn.binlogs(client)?.into_iter().map(|(f, _)| f).collect();
                Ok(match resume {
                    Some(pos) if listed.contains(&pos.file) => pos,
                    Some(pos) => {
                        // Purged before it was archived: go on from what the server still has.
                        let next = listed
                            .into_iter()
                            .find(|f| f > &pos.file)
                            .unwrap_or(current);
                        tracing::warn!(archived_to = %pos, from = %next,
                            "the server no longer has the binlog after what is archived: the stream has a gap");
                        Position {
                            file: next,
                            offset: 0,
                        }
                    }
                    None => Position {
                        file: current,
                        offset: 0,
                    },
                })
            })
            .await?
        };
        let mut cmd = conn.command(tool);
        let mut result_file = dir.as_os_str().to_owned();
        result_file.push("/");
        cmd.args([
            "--read-from-remote-server",
            "--raw",
            "--stop-never",
            &format!("--stop-never-slave-server-id={}", server_id(prefix)),
        ])
        .arg({
            let mut flag = std::ffi::OsString::from("--result-file=");
            flag.push(&result_file);
            flag
        })
        .arg(&first.file);
        let child = spawn_logged(cmd, dir, libc::SIGTERM)?;
        Ok(MariaSource {
            child,
            conn,
            client,
            dir: dir.to_owned(),
            cursor: first,
        })
    }

    /// Bytes of binlog the server has past the cursor (`SHOW BINARY LOGS`), and when it was
    /// asked.
    async fn behind(&self) -> Result<(u64, i64), ShardError> {
        let (conn, client) = (self.conn.clone(), self.client);
        let asked_ms = now_ms();
        let files = blocking(move || conn.binlogs(client)).await?;
        Ok((pitr::bytes_behind(&self.cursor, &files), asked_ms))
    }

    /// Each file's size; a file is complete once the next one exists (the tool writes one
    /// event at a time and opens the next file after the last event of the previous one).
    fn ready(&self) -> Vec<(String, u64, bool)> {
        let mut out = Vec::new();
        let mut file = self.cursor.file.clone();
        loop {
            let next = pitr::successor(&file);
            let complete = next.as_ref().is_some_and(|n| self.dir.join(n).exists());
            let Ok(meta) = std::fs::metadata(self.dir.join(&file)) else {
                break; // not received yet
            };
            out.push((file.clone(), meta.len(), complete));
            match next {
                Some(n) if complete => file = n,
                _ => break,
            }
        }
        out
    }
}

/// Starts a streaming tool with its stderr in `DIR/stderr.log`.
fn spawn_logged(mut cmd: Command, dir: &Path, stop_signal: i32) -> Result<Supervised, ShardError> {
    let log = std::fs::File::create(dir.join("stderr.log"))
        .map_err(|e| ShardError::transient(format!("creating a log in {dir:?}: {e}")))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    Supervised::spawn(cmd, stop_signal)
}

/// The last lines of a streaming tool's stderr.
fn stderr_tail(dir: &Path) -> String {
    let text = std::fs::read(dir.join("stderr.log")).unwrap_or_default();
    crate::executor::tail(&text[text.len().saturating_sub(4096)..])
}

/// A directory of the work dir, removed (with what is in it) when dropped.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    /// `WORK_DIR/NAME`, emptied first (a crashed attempt's leftovers), absolute.
    pub fn create(work_dir: &Path, name: &str) -> Result<WorkDir, ShardError> {
        let dir = std::path::absolute(work_dir.join(name))
            .map_err(|e| ShardError::transient(format!("work dir {work_dir:?}: {e}")))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ShardError::transient(format!("creating {dir:?}: {e}")))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove a work directory");
        }
    }
}

/// 16 hex digits of the SHA-256 of `text`: stable names (slots, directories) from a prefix.
pub fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// A replica server id of the stream's own, stable across attempts (a second reader with the
/// same id would make the server drop the first), in a range real replicas rarely use.
fn server_id(prefix: &str) -> u32 {
    let digest = Sha256::digest(prefix.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    2_000_000_000 + n % 2_000_000_000
}

/// One look at a PostgreSQL stream's server: what the receiver `app` has flushed, the server's
/// own position, and where the slot holds WAL from — moved first to `archived` when that is
/// past `held` (a slot never moves back; the server drops WAL only before it).
fn ready_sql(app: &str, slot: &str, held: u64, archived: u64) -> String {
    let held = if archived > held {
        format!(
            "(SELECT end_lsn FROM pg_catalog.pg_replication_slot_advance('{slot}', '{}'))",
            format_lsn(archived)
        )
    } else {
        format!(
            "(SELECT restart_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = '{slot}')"
        )
    };
    format!(
        "SELECT (SELECT max(flush_lsn) FROM pg_catalog.pg_stat_replication \
         WHERE application_name = '{app}'), CASE WHEN pg_catalog.pg_is_in_recovery() \
         THEN pg_catalog.pg_last_wal_receive_lsn() ELSE pg_catalog.pg_current_wal_lsn() END, {held}"
    )
}

/// An LSN as PostgreSQL writes it (`16/B374D848`).
fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// `16/B374D848` → the LSN as a number.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The WAL file of segment number `segment` (16 MiB segments) on `timeline` (8 hex digits).
pub fn wal_file(timeline: &str, segment: u64) -> String {
    format!("{timeline}{:08X}{:08X}", segment >> 8, segment & 0xFF)
}

/// The segment number of a WAL file name.
pub fn segment_number(file: &str) -> Option<u64> {
    if file.len() != 24 {
        return None;
    }
    let log = u64::from_str_radix(file.get(8..16)?, 16).ok()?;
    let seg = u64::from_str_radix(file.get(16..24)?, 16).ok()?;
    Some((log << 8) | seg)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs short blocking work (client calls) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ShardError> + Send + 'static,
) -> Result<T, ShardError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ShardError::transient(format!("stream helper thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_and_lsns() {
        assert_eq!(parse_lsn("0/1511B00"), Some(0x1511B00));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn(""), None);
        assert_eq!(format_lsn(0x1_0151_1B00), "1/1511B00");
        assert_eq!(parse_lsn(&format_lsn(0xAB_0000_0001)), Some(0xAB_0000_0001));
        let seg = 0x1511B00 / WAL_SEGMENT;
        assert_eq!(wal_file("00000001", seg), "000000010000000000000001");
        assert_eq!(wal_file("00000001", 0x100), "000000010000000100000000");
        assert_eq!(segment_number("000000010000000100000000"), Some(0x100));
        assert_eq!(
            pitr::successor(&wal_file("00000001", 0xFF)).unwrap(),
            wal_file("00000001", 0x100)
        );
        assert!(server_id("a/") >= 2_000_000_000);
        assert_eq!(short_hash("x").len(), 16);
    }

    #[test]
    fn the_slot_moves_only_forward_to_what_is_archived() {
        let moving = ready_sql("ferry_ab_2", "ferry_ab", 0x100, 0x2000);
        assert!(
            moving.contains("pg_replication_slot_advance('ferry_ab', '0/2000')"),
            "{moving}"
        );
        assert!(
            moving.contains("application_name = 'ferry_ab_2'"),
            "{moving}"
        );
        for archived in [0x100, 0x80] {
            let still = ready_sql("ferry_ab_2", "ferry_ab", 0x100, archived);
            assert!(!still.contains("advance"), "{still}");
            assert!(still.contains("slot_name = 'ferry_ab'"), "{still}");
        }
    }
}
