//! Point-in-time restores of a database shard (`task.pitr`): the shard's base plus the archived
//! log up to the moment, moved into the target like any restore.
//!
//! Both engines first list the stream's chunks and ask `pitr::plan` which pieces reach the
//! moment; a moment outside the archived log fails here, before anything is written, with a
//! message naming the recovery window. The pieces are assembled into whole log files in a
//! directory of the work dir (log readers need whole files), removed afterwards.
//!
//! - **PostgreSQL**: the base (`pitr.base_key`, a dump-shaped archive holding pg_basebackup's
//!   tar) is extracted into the work dir and a temporary `postgres` is started on it — as the
//!   `postgres` user when the worker is root, on a free port, reachable only through a socket in
//!   its own directory with `trust` for local connections, with every setting that could reach
//!   out overridden (`archive_mode=off`, no `primary_conninfo`, no preloaded libraries, no
//!   synchronous standbys) — recovering with `restore_command` from the assembled WAL,
//!   `recovery_target_time` = the moment and `recovery_target_action=promote`. The restore waits
//!   for `pg_is_in_recovery()` to turn false (the server's own readiness comes during recovery
//!   already). A server that stops with "recovery ended before configured recovery target was
//!   reached" (no commit after the moment was archived) starts again without a target, which
//!   recovers to the end of the fetched WAL: the plan guarantees that ends after the moment.
//!   The moment reached is the last replayed commit (`pg_last_xact_replay_timestamp()`).
//!   Then `pg_dump -Fc` of the database on the temporary server streams into the same load as
//!   an ordinary restore (`postgres::Loader`: created like the source, `pg_restore --no-owner
//!   --single-transaction`). The server is stopped (fast shutdown) and its directory removed,
//!   also on failure.
//! - **MariaDB/MySQL**: the shard's dump is restored as usual, then the binlog from the dump's
//!   position is replayed: `TZ=UTC mariadb-binlog --start-position=POS --stop-datetime=SECOND
//!   --rewrite-db=SRC->TARGET --database=SRC FILES… | mariadb TARGET`. `--stop-datetime` has
//!   one-second precision: events stamped before the second of the moment are applied, and that
//!   second is the moment reached. A failed replay drops the database the restore created.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferry_model::pitr::{self, Base, Piece, Position};
use ferry_model::task::{PitrTask, ShardOutcome};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::dump::{self, DumpInfo};
use super::process::Supervised;
use super::stream::{self, WAL_SEGMENT, WorkDir, short_hash};
use super::{Run, ShardError, mariadb, postgres};

/// The log pieces that reach `p.at_ms` from `p.position`; fails (permanently) when the moment is
/// outside what the stream archived.
async fn plan(run: &Run, p: &PitrTask) -> Result<(Position, Vec<Piece>), ShardError> {
    let position = p
        .position
        .as_deref()
        .and_then(Position::parse)
        .ok_or_else(|| {
            ShardError::permanent(format!(
                "the backup records no log position for this database ({:?}): it cannot be \
                 restored to a moment",
                p.position
            ))
        })?;
    let chunks = stream::list_chunks(&*run.store, &p.logs_prefix).await?;
    let spans = pitr::spans(&chunks);
    // The controller chose the base; its own ready time is not known here, only that it is
    // before the moment.
    let bases = [Base {
        backup_id: String::new(),
        ready_ms: i64::MIN,
        position: position.clone(),
    }];
    let (_, pieces) = pitr::plan(p.at_ms, &bases, &spans).map_err(|_| {
        let window = spans
            .iter()
            .filter(|s| s.end >= position)
            .map(|s| {
                format!(
                    "{} to {}",
                    pitr::format_ms(s.from_ms),
                    pitr::format_ms(s.to_ms)
                )
            })
            .collect::<Vec<_>>();
        ShardError::permanent(format!(
            "{} is outside the archived log after the backup (log archived from {}: {})",
            pitr::format_ms(p.at_ms),
            position,
            if window.is_empty() {
                "nothing".to_owned()
            } else {
                window.join(", ")
            }
        ))
    })?;
    if pieces.is_empty() {
        return Err(ShardError::permanent(format!(
            "no archived log reaches {} from {position}",
            pitr::format_ms(p.at_ms)
        )));
    }
    Ok((position, pieces))
}

/// Writes the pieces into whole files in `dir` (named as the log names them), each piece at its
/// offset; `size` pre-sizes new files (zero-filled WAL segments). Streams every piece. Returns
/// the files in log order.
async fn assemble(
    run: &Run,
    pieces: &[Piece],
    dir: &Path,
    size: Option<u64>,
) -> Result<Vec<PathBuf>, ShardError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for piece in pieces {
        let path = dir.join(&piece.file);
        let io = |e: std::io::Error| ShardError::transient(format!("writing {path:?}: {e}"));
        let fresh = files.last() != Some(&path);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .await
            .map_err(io)?;
        if fresh {
            if let Some(size) = size {
                file.set_len(size).await.map_err(io)?;
            }
            files.push(path.clone());
        }
        let mut body = run
            .store
            .get(&piece.key)
            .await
            .map_err(|e| ShardError::transient(format!("storage: {e}")))?;
        let read = |e: std::io::Error| ShardError::transient(format!("reading {}: {e}", piece.key));
        if piece.key.ends_with(pitr::SEALED_SUFFIX) {
            body = open_sealed(run, &piece.key, body).await?;
        }
        let skipped = tokio::io::copy(&mut (&mut body).take(piece.skip), &mut tokio::io::sink())
            .await
            .map_err(read)?;
        file.seek(std::io::SeekFrom::Start(piece.offset))
            .await
            .map_err(io)?;
        let len = piece.end - piece.offset;
        let copied = tokio::io::copy(&mut body.take(len), &mut file)
            .await
            .map_err(read)?;
        if skipped != piece.skip || copied != len {
            return Err(ShardError::permanent(format!(
                "log chunk {} is shorter than its name says",
                piece.key
            )));
        }
        file.flush().await.map_err(io)?;
        run.counters
            .done
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(files)
}

/// The plaintext of an encrypted log chunk (at most `pitr::MAX_CHUNK` bytes, so it is read
/// whole), opened with this worker's `--identity-file`.
async fn open_sealed(
    run: &Run,
    key: &str,
    mut body: ferry_storage::BoxReader,
) -> Result<ferry_storage::BoxReader, ShardError> {
    let mut sealed = Vec::new();
    (&mut body)
        .take(pitr::MAX_CHUNK + (1 << 20))
        .read_to_end(&mut sealed)
        .await
        .map_err(|e| ShardError::transient(format!("reading {key}: {e}")))?;
    if run.identities.is_empty() {
        return Err(ShardError::permanent(format!(
            "log chunk {key} is encrypted: give this worker the location's identity with \
             --identity-file"
        )));
    }
    let mut plain = Vec::new();
    run.identities
        .decrypt(&sealed[..], key)
        .map_err(|e| ShardError::permanent(e.to_string()))?
        .take(pitr::MAX_CHUNK)
        .read_to_end(&mut plain)
        .map_err(|e| ShardError::permanent(format!("decrypting {key}: {e}")))?;
    Ok(Box::pin(std::io::Cursor::new(plain)))
}

/// A unique directory name for this attempt's restore.
fn work_name(run: &Run) -> String {
    let t = &run.task;
    format!(
        "pitr-{}",
        short_hash(&format!("{}/{}/{}", t.job_id, t.shard_id, t.attempt))
    )
}

/// `reached 2026-…Z`, the detail every point-in-time restore reports.
fn reached_detail(reached_ms: i64, detail: &str) -> String {
    let reached = format!("reached {}", pitr::format_ms(reached_ms));
    if detail.is_empty() {
        reached
    } else {
        format!("{reached}; {detail}")
    }
}

/// PostgreSQL (see the module doc).
pub async fn restore_postgres(run: &Run, p: &PitrTask) -> Result<ShardOutcome, ShardError> {
    let (spec, target) = dump::named_database(run, "postgres")?;
    let source = p
        .source_database
        .clone()
        .unwrap_or_else(|| target.to_owned());
    let base_key = p.base_key.clone().ok_or_else(|| {
        ShardError::permanent("no PostgreSQL base backup is recorded before the moment")
    })?;
    let (_, pieces) = plan(run, p).await?;
    let dir = WorkDir::create(&run.work_dir, &work_name(run))?;
    let data = dir.0.join("data");
    let wal = dir.0.join("wal");
    for d in [&data, &wal] {
        std::fs::create_dir(d).map_err(|e| ShardError::transient(format!("{d:?}: {e}")))?;
    }
    {
        let data = data.clone();
        dump::read_archive(run, &base_key, p.base_sha256.clone(), move |info, input| {
            extract_base(info, input, &data)
        })
        .await?;
    }
    assemble(run, &pieces, &wal, Some(WAL_SEGMENT)).await?;
    let (at_ms, user, cancel) = (p.at_ms, spec.user.clone(), run.cancel.clone());
    let (server, conn, reached) = {
        let dir = dir.0.clone();
        let (source, user) = (source.clone(), user.clone());
        blocking(move || {
            let server = TempServer::prepare(&dir, user)?;
            let (child, reached) = server.recover(at_ms, &source, &cancel)?;
            let conn = server.conn.clone();
            Ok((child, conn, reached))
        })
        .await?
    };
    let reached = reached.unwrap_or(at_ms);
    let (target_conn, target_db) = (postgres::Conn::new(spec)?, target.to_owned());
    let loader = postgres::Loader::new(target_conn, target_db, run.task.overwrite);
    let restored = {
        let loader = loader.clone();
        let (roles, passwords) = (spec.roles, spec.role_passwords);
        let version = run.tool_version("pg_dump");
        blocking(move || {
            let info = conn
                .dump_info(&source, roles, passwords, version)
                .map_err(|e| conn.explain(e, "reading the recovered database"))?;
            let mut cmd = conn.command("pg_dump", &source);
            cmd.args(["--format=custom", "--compress=0"]);
            let mut child = dump::spawn(&mut cmd, Stdio::null(), Stdio::piped())?;
            let stderr = dump::collect_stderr(&mut child);
            let mut stdout = child
                .stdout
                .take()
                .ok_or_else(|| ShardError::transient("no stdout"))?;
            let loaded = loader.load(&info, &mut stdout);
            drop(stdout);
            if loaded.is_err() {
                let _ = child.kill();
            }
            let dumped = dump::finish(&cmd, child, stderr, dump::everything);
            let bytes = loaded?;
            dumped.map_err(|e| conn.explain(e, "dumping the recovered database"))?;
            Ok(bytes)
        })
        .await
    };
    // The temporary server stops (fast shutdown, killed after the grace) before its
    // directory goes.
    blocking(move || {
        server.stop();
        Ok(())
    })
    .await?;
    drop(dir);
    let mut outcome = loader.finish(run, restored).await?;
    outcome.reached_ms = Some(reached);
    outcome.detail = reached_detail(reached, &outcome.detail);
    Ok(outcome)
}

/// Extracts pg_basebackup's tar (the base archive's payload) into `data`.
fn extract_base(info: &DumpInfo, input: &mut dyn Read, data: &Path) -> Result<u64, ShardError> {
    if info.engine != postgres::BASE_ENGINE {
        return Err(ShardError::permanent(format!(
            "the base archive holds a {} dump, not a {} one",
            info.engine,
            postgres::BASE_ENGINE
        )));
    }
    let mut counted = Counted { inner: input, n: 0 };
    {
        let mut archive = tar::Archive::new(&mut counted);
        archive.set_preserve_permissions(true);
        archive
            .unpack(data)
            .map_err(|e| ShardError::transient(format!("extracting the base backup: {e}")))?;
    }
    // The tar's end padding: the dump reader wants everything read.
    std::io::copy(&mut counted, &mut std::io::sink())
        .map_err(|e| ShardError::transient(format!("reading the base backup: {e}")))?;
    Ok(counted.n)
}

struct Counted<'a> {
    inner: &'a mut dyn Read,
    n: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// A temporary PostgreSQL server on an extracted base, in `DIR` (`DIR/data`, WAL in `DIR/wal`,
/// socket and configuration files in `DIR`).
struct TempServer {
    dir: PathBuf,
    postgres: PathBuf,
    as_root: bool,
    port: u16,
    conn: postgres::Conn,
}

/// What the server logs when the WAL ends before the target (no later commit was archived).
const ENDED_BEFORE_TARGET: &str = "recovery ended before configured recovery target was reached";

impl TempServer {
    /// Writes the server's own files and hands the directory to `postgres` when root.
    fn prepare(dir: &Path, user: Option<String>) -> Result<TempServer, ShardError> {
        let data = dir.join("data");
        let io = |what: &str, e: std::io::Error| {
            ShardError::transient(format!("preparing the temporary server ({what}): {e}"))
        };
        let version = std::fs::read_to_string(data.join("PG_VERSION"))
            .map_err(|e| ShardError::permanent(format!("the base holds no PG_VERSION: {e}")))?;
        let postgres = server_binary(version.trim())?;
        std::fs::write(dir.join("hba.conf"), "local all all trust\n").map_err(|e| io("hba", e))?;
        std::fs::write(dir.join("ident.conf"), "").map_err(|e| io("ident", e))?;
        std::fs::write(dir.join("pitr.conf"), "").map_err(|e| io("config", e))?;
        for stale in ["postmaster.pid", "standby.signal"] {
            let _ = std::fs::remove_file(data.join(stale));
        }
        std::fs::write(data.join("recovery.signal"), "").map_err(|e| io("signal", e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("data", e))?;
        let as_root = is_root();
        if as_root {
            // postgres refuses to run as root: the server's files become the postgres user's.
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:postgres").arg(dir);
            dump::run_capture(chown)?;
        }
        let port = free_port()?;
        Ok(TempServer {
            conn: postgres::Conn::local(dir, port, user),
            dir: dir.to_owned(),
            postgres,
            as_root,
            port,
        })
    }

    /// Starts the server recovering to `at_ms` and waits for the end of recovery; restarts
    /// without a target when the archived WAL ends before it. Returns the running server and the
    /// last replayed commit's time.
    fn recover(
        &self,
        at_ms: i64,
        db: &str,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(Supervised, Option<i64>), ShardError> {
        let child = self.start(Some(at_ms), "postgres-1.log")?;
        let child = match self.wait_promoted(child, db, cancel, "postgres-1.log")? {
            Some(child) => child,
            None => {
                tracing::info!("no commit after the moment was archived: recovering to the end");
                let child = self.start(None, "postgres-2.log")?;
                self.wait_promoted(child, db, cancel, "postgres-2.log")?
                    .ok_or_else(|| {
                        ShardError::transient(format!(
                            "the temporary server stopped: {}",
                            self.log_tail("postgres-2.log")
                        ))
                    })?
            }
        };
        let sql = "SELECT floor(extract(epoch FROM pg_catalog.pg_last_xact_replay_timestamp()) * 1000)::bigint";
        let replayed = self.conn.psql(db, sql)?;
        let reached = replayed.trim().parse::<i64>().ok().or_else(|| {
            let log = std::fs::read_to_string(self.dir.join("postgres-1.log")).unwrap_or_default()
                + &std::fs::read_to_string(self.dir.join("postgres-2.log")).unwrap_or_default();
            last_completed(&log)
        });
        Ok((child, reached))
    }

    /// Starts `postgres` with its output in `DIR/LOG`.
    fn start(&self, at_ms: Option<i64>, log: &str) -> Result<Supervised, ShardError> {
        let dir = self.dir.to_string_lossy();
        let mut settings = vec![
            format!("config_file={dir}/pitr.conf"),
            format!("hba_file={dir}/hba.conf"),
            format!("ident_file={dir}/ident.conf"),
            format!("port={}", self.port),
            "listen_addresses=".to_owned(),
            format!("unix_socket_directories={dir}"),
            "shared_preload_libraries=".to_owned(),
            "archive_mode=off".to_owned(),
            "primary_conninfo=".to_owned(),
            "primary_slot_name=".to_owned(),
            "synchronous_standby_names=".to_owned(),
            "ssl=off".to_owned(),
            "logging_collector=off".to_owned(),
            "log_destination=stderr".to_owned(),
            "hot_standby=on".to_owned(),
            "cluster_name=".to_owned(),
            format!("restore_command=cp \"{dir}/wal/%f\" \"%p\""),
            "recovery_target_action=promote".to_owned(),
        ];
        if let Some(at) = at_ms {
            // Always with an explicit offset: without one the server's time zone applies.
            let at = chrono::DateTime::from_timestamp_millis(at)
                .ok_or_else(|| ShardError::permanent(format!("invalid moment {at}")))?;
            settings.push(format!(
                "recovery_target_time={}",
                at.format("%Y-%m-%d %H:%M:%S%.3f+00")
            ));
        }
        let mut cmd = if self.as_root {
            // setpriv execs postgres itself (the stop signal reaches the server) and keeps the
            // parent-death signal across the change of user, which would otherwise clear it.
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--pdeathsig=KILL",
                "--",
            ])
            .arg(&self.postgres);
            c
        } else {
            Command::new(&self.postgres)
        };
        cmd.arg("-D").arg(self.dir.join("data"));
        for s in settings {
            cmd.arg("-c").arg(s);
        }
        cmd.env_remove("PGDATA");
        let out = std::fs::File::create(self.dir.join(log))
            .map_err(|e| ShardError::transient(format!("creating the server's log: {e}")))?;
        let err = out
            .try_clone()
            .map_err(|e| ShardError::transient(format!("creating the server's log: {e}")))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        Supervised::spawn(cmd, libc::SIGINT)
    }

    /// Waits until the server has left recovery. `None`: it stopped because the WAL ended before
    /// the target. Any other stop is an error carrying its log's tail.
    fn wait_promoted(
        &self,
        child: Supervised,
        db: &str,
        cancel: &tokio_util::sync::CancellationToken,
        log: &str,
    ) -> Result<Option<Supervised>, ShardError> {
        loop {
            if cancel.is_cancelled() {
                return Err(ShardError::cancelled());
            }
            if let Some(status) = child.exited() {
                let text = std::fs::read_to_string(self.dir.join(log)).unwrap_or_default();
                if text.contains(ENDED_BEFORE_TARGET) {
                    return Ok(None);
                }
                return Err(ShardError::transient(format!(
                    "the temporary server recovering the base stopped ({status}): {}",
                    self.log_tail(log)
                )));
            }
            if let Ok(out) = self.conn.psql(db, "SELECT pg_catalog.pg_is_in_recovery()")
                && out.trim() == "f"
            {
                return Ok(Some(child));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn log_tail(&self, log: &str) -> String {
        let text = std::fs::read(self.dir.join(log)).unwrap_or_default();
        crate::executor::tail(&text[text.len().saturating_sub(4096)..])
    }
}

/// `last completed transaction was at log time 2026-12-02 14:53:30.113489+00` → ms.
fn last_completed(log: &str) -> Option<i64> {
    const MARK: &str = "last completed transaction was at log time ";
    let at = log.rfind(MARK)? + MARK.len();
    let text = log[at..].lines().next()?.trim().trim_end_matches('.');
    chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The `postgres` binary of the base's major version: Debian's
/// `/usr/lib/postgresql/VERSION/bin`, else `pg_config --bindir`, else the one on PATH.
fn server_binary(version: &str) -> Result<PathBuf, ShardError> {
    let debian = Path::new("/usr/lib/postgresql")
        .join(version)
        .join("bin/postgres");
    if debian.is_file() {
        return Ok(debian);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("postgres");
        if bin.is_file() {
            return Ok(bin);
        }
    }
    Ok(PathBuf::from("postgres"))
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

fn free_port() -> Result<u16, ShardError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ShardError::transient(format!("finding a free port: {e}")))
}

/// MariaDB/MySQL (see the module doc).
pub async fn restore_mariadb(run: &Run, p: &PitrTask) -> Result<ShardOutcome, ShardError> {
    let (spec, target) = dump::named_database(run, "mariadb/mysql")?;
    let (position, pieces) = plan(run, p).await?;
    let client = mariadb::pick(run, mariadb::CLIENT_TOOLS)?;
    let tool = mariadb::pick(run, &["mariadb-binlog", "mysqlbinlog"])?;
    let dir = WorkDir::create(&run.work_dir, &work_name(run))?;
    let files = assemble(run, &pieces, &dir.0, None).await?;
    let (mut outcome, restored) = mariadb::restore_dump(run).await?;
    // One-second precision: events stamped before this second are applied.
    let stop_s = p.at_ms.div_euclid(1000);
    let stop = chrono::DateTime::from_timestamp(stop_s, 0)
        .ok_or_else(|| ShardError::permanent(format!("invalid moment {}", p.at_ms)))?
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let conn = mariadb::Conn::new(spec)?;
    let replayed = {
        let (conn, target, source) = (conn.clone(), target.to_owned(), restored.source.clone());
        blocking(move || {
            let mut binlog = Command::new(tool);
            binlog
                .env("TZ", "UTC")
                .arg(format!("--start-position={}", position.offset))
                .arg(format!("--stop-datetime={stop}"))
                .arg(format!("--rewrite-db={source}->{target}"))
                .arg(format!("--database={source}"))
                .args(&files);
            let client_cmd = conn.restore_command(client, &target);
            dump::pipe_through(
                binlog,
                |from, to| std::io::copy(from, to),
                client_cmd,
                mariadb::last_error,
                &mut std::io::empty(),
            )
            .map_err(|e| conn.explain(e, &format!("replaying the binlog into \"{target}\"")))
        })
        .await
    };
    drop(dir);
    if let Err(mut e) = replayed {
        if restored.created {
            let (c, t) = (conn.clone(), target.to_owned());
            if blocking(move || c.drop_database(client, &t)).await.is_ok() {
                e.message.push_str(&format!(
                    " (the partly restored database \"{target}\" was dropped again)"
                ));
            }
        }
        return Err(e);
    }
    let reached = stop_s * 1000;
    outcome.reached_ms = Some(reached);
    outcome.detail = reached_detail(reached, &outcome.detail);
    Ok(outcome)
}

/// Runs blocking work (tools, the temporary server) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ShardError> + Send + 'static,
) -> Result<T, ShardError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ShardError::transient(format!("restore helper thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_commit_is_read_from_the_log() {
        let log = "LOG:  redo done at 0/6012128\n\
                   LOG:  last completed transaction was at log time 2026-12-02 14:53:30.113489+00\n";
        assert_eq!(
            last_completed(log),
            chrono::DateTime::parse_from_rfc3339("2026-12-02T14:53:30.113Z")
                .ok()
                .map(|t| t.timestamp_millis())
        );
        assert_eq!(last_completed("nothing"), None);
    }
}
