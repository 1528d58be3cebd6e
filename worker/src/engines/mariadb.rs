//! MariaDB/MySQL shards: one database per shard, dumped with `mariadb-dump` (or `mysqldump`) and
//! replayed with the `mariadb` (or `mysql`) client, both streaming through the shared dump
//! archive (`dump.rs`).
//!
//! - **Backup** dumps the one database *without* `--databases`: the dump then holds no
//!   `CREATE DATABASE` and no `USE`, so it lands in whatever database the client is pointed at —
//!   which is what lets a restore go under another name (`--rewrite legacy=legacy_copy`). The
//!   flags, and why:
//!   - `--single-transaction`: one consistent InnoDB snapshot without locking the application
//!     out (it also turns `--lock-tables` off);
//!   - `--routines --triggers --events`: procedures, functions, triggers and events are part of
//!     the database (mysqldump leaves routines and events out by default);
//!   - `--hex-blob`: binary columns travel as hex literals, immune to any charset conversion;
//!   - `--default-character-set=utf8mb4`: every string is carried without loss, whatever the
//!     column's charset;
//!   - `--quick`: rows stream, never buffered whole; `--add-drop-table`; `--skip-dump-date`: equal
//!     databases give equal dumps;
//!   - `--skip-add-locks`: no `LOCK TABLES` around a table's rows — a row of a table whose
//!     column defaults to `NEXTVAL(seq)` cannot be inserted under a lock that leaves the
//!     sequence out, and the tool never locks it (the locks only speed up MyISAM loads);
//!   - `--no-tablespaces`: tablespaces are server-wide (and MySQL 8 wants the PROCESS privilege
//!     to list them);
//!   - `--max-allowed-packet=1G`: rows bigger than the tool's default 24 MiB packet are dumped
//!     instead of failing;
//!   - `--dump-history` (MariaDB's tool ≥ 10.11, MariaDB servers): system-versioned tables keep
//!     their history rows;
//!   - with MySQL's own `mysqldump`: `--set-gtid-purged=OFF` (a copy must not rewrite the target
//!     server's GTID state) and, from 8.0, `--column-statistics=0` (the tool otherwise queries a
//!     table MariaDB servers do not have).
//!
//!   DEFINER clauses name users, not databases, and are kept (SHOW CREATE must come back equal;
//!   restoring them needs a user allowed to create objects for those definers). The source's
//!   default charset and collation go into the archive's [`DumpInfo`] options.
//! - **Restore** creates the target with that charset and collation when it does not exist (drops
//!   and recreates it with `--overwrite`; an existing empty one gets them with `ALTER DATABASE`),
//!   then pipes the dump into `mariadb --database=TARGET` with `--binary-mode` (no `\`-command
//!   parsing; NUL bytes and `\r\n` stay data), `--comments` (the client otherwise strips comments
//!   out of routine and trigger bodies) and `--max-allowed-packet=1G`. The client stops at the
//!   first error; a database the attempt created is dropped again so that a retry starts clean.
//!
//!   Three kinds of statement in a dump still name the source database, and under another name
//!   they would fail — or, on the source's own server, touch the *source*: the
//!   ``ALTER DATABASE `src` …`` the tool writes around routines, triggers and events created
//!   under another database collation than the current one, the head of a trigger created
//!   with qualified names (``CREATE TRIGGER `src`.t_bi … ON `src`.t``: the server keeps a
//!   trigger's original text), and a column default naming a sequence
//!   (``DEFAULT nextval(`src`.`s`)``: the server always qualifies it). [`Retarget`] rewrites
//!   exactly those, while streaming, to the target, and drops the `LOCK TABLES`/`UNLOCK TABLES`
//!   lines of dumps made before `--skip-add-locks`. The archive itself stays what the tool
//!   wrote.
//! - **Verify** refuses a target that exists and holds any table, view, sequence, routine, event
//!   or trigger ([`check_empty`]); the restore checks again right before writing.
//! - The password reaches the tools only through `MYSQL_PWD` in the child's environment (an
//!   inherited one is removed when the spec has none), never through arguments, errors or logs.
//! - Access denied, an unknown database, a non-empty target and SQL errors while replaying are
//!   permanent; a server that cannot be reached, a lost connection or a deadlock are transient.
//!
//! Known limit: FLOAT (single precision) values travel as the server prints them, with 6
//! significant digits, so one that needs more comes back rounded (DOUBLE and DECIMAL are exact).
//! That is mysqldump's format; no flag changes it.

use std::io::Read;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_model::app::{DatabaseSpec, Engine};
use ferry_model::task::ShardOutcome;
use serde_json::{Map, Value};

use super::dump::{self, DumpInfo};
use super::{Run, ShardError};

mod retarget;
pub use retarget::Retarget;
use retarget::ident;

/// Dump tools, preferred first.
const DUMP_TOOLS: &[&str] = &["mariadb-dump", "mysqldump"];
/// SQL clients, preferred first.
pub(super) const CLIENT_TOOLS: &[&str] = &["mariadb", "mysql"];
/// Seconds a client waits for a connection.
const CONNECT_TIMEOUT: &str = "--connect-timeout=10";
/// The largest packet (row, statement) the tools accept; the server's own limit still applies.
const MAX_PACKET: &str = "--max-allowed-packet=1G";

/// Dumps one database into the shard archive.
pub async fn backup(run: &Run) -> Result<ShardOutcome, ShardError> {
    let (conn, db) = Conn::from_run(run)?;
    let dump_tool = pick(run, DUMP_TOOLS)?;
    let client = pick(run, CLIENT_TOOLS)?;
    let defaults = {
        let (conn, db) = (conn.clone(), db.clone());
        blocking(move || conn.schema(client, &db)).await?
    };
    let Some(defaults) = defaults else {
        return Err(ShardError::permanent(format!(
            "database \"{db}\" does not exist on {} (or {} may not see it)",
            conn.server(),
            conn.who()
        )));
    };
    let mut options = Map::new();
    options.insert("charset".into(), Value::String(defaults.charset));
    options.insert("collation".into(), Value::String(defaults.collation));
    options.insert("server_version".into(), Value::String(defaults.version));
    let info = DumpInfo {
        engine: conn.engine.as_str().into(),
        tool_version: run.tool_version(dump_tool),
        database: Some(db.clone()),
        options,
    };
    let mut cmd = conn.dump_command(dump_tool, &info.tool_version, &db);
    let (spec, _) = dump::named_database(run, "mariadb/mysql")?;
    if !spec.pitr {
        return dump::backup_from_command(run, cmd, info)
            .await
            .map_err(|e| conn.explain(e, &format!("dumping database \"{db}\"")));
    }
    // A point-in-time restore replays the binlog from where the dump's snapshot is: the tool
    // writes that position as a comment at the dump's head, picked out as it streams by.
    {
        let conn = conn.clone();
        blocking(move || conn.require_row_format(client)).await?;
    }
    cmd.arg("--master-data=2");
    let head = Arc::new(std::sync::Mutex::new(HeadScan::default()));
    let watch = {
        let head = head.clone();
        move |bytes: &[u8]| head.lock().unwrap_or_else(|e| e.into_inner()).feed(bytes)
    };
    let mut outcome = dump::backup_from_command_watched(run, cmd, info, watch)
        .await
        .map_err(|e| conn.explain(e, &format!("dumping database \"{db}\"")))?;
    let found = head.lock().unwrap_or_else(|e| e.into_inner()).found.take();
    let Some(position) = found else {
        return Err(ShardError::transient(format!(
            "the dump of database \"{db}\" on {} recorded no binlog position (--master-data)",
            conn.server()
        )));
    };
    outcome.log_position = Some(position);
    Ok(outcome)
}

/// Looks for the binlog position in a dump's first lines:
/// `-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000003', MASTER_LOG_POS=47011;`.
#[derive(Default)]
struct HeadScan {
    line: Vec<u8>,
    seen: u64,
    /// `FILE:POS`, once found.
    found: Option<String>,
}

impl HeadScan {
    /// How much of the dump is looked at: the comment comes before any data.
    const HEAD: u64 = 1 << 20;
    /// Longer lines are data, not the comment: only their start is kept.
    const LINE: usize = 4096;

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.found.is_some() || self.seen >= Self::HEAD {
                return;
            }
            self.seen += 1;
            if b == b'\n' {
                self.found = binlog_position(&String::from_utf8_lossy(&self.line));
                self.line.clear();
            } else if self.line.len() < Self::LINE {
                self.line.push(b);
            }
        }
    }
}

/// `FILE:POS` from a `CHANGE MASTER TO` (or MySQL's `CHANGE REPLICATION SOURCE TO`) comment.
fn binlog_position(line: &str) -> Option<String> {
    let rest = line.strip_prefix("-- CHANGE ")?;
    let file_at = rest.find("_LOG_FILE='")? + "_LOG_FILE='".len();
    let file = &rest[file_at..rest[file_at..].find('\'')? + file_at];
    let pos_at = rest.find("_LOG_POS=")? + "_LOG_POS=".len();
    let pos: String = rest[pos_at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let pos: u64 = pos.parse().ok()?;
    ferry_model::pitr::valid_file(file).then(|| format!("{file}:{pos}"))
}

/// Restores the shard archive into the target database, creating it (or, with `--overwrite`,
/// replacing it) first.
pub async fn restore(run: &Run) -> Result<ShardOutcome, ShardError> {
    if let Some(p) = &run.task.pitr {
        return super::pitr::restore_mariadb(run, p).await;
    }
    restore_dump(run).await.map(|(outcome, _)| outcome)
}

/// What [`restore_dump`] did besides the outcome.
pub(super) struct Restored {
    /// The database the dump was made of.
    pub source: String,
    /// This attempt created the target (a later failure should drop it).
    pub created: bool,
}

/// The restore of the shard's dump (see [`restore`]).
pub(super) async fn restore_dump(run: &Run) -> Result<(ShardOutcome, Restored), ShardError> {
    let (conn, db) = Conn::from_run(run)?;
    let source_name = Arc::new(std::sync::Mutex::new(db.clone()));
    let client = pick(run, CLIENT_TOOLS)?;
    let overwrite = run.task.overwrite;
    // Set once this attempt has created the database, and once the client got to run.
    let created = Arc::new(AtomicBool::new(false));
    let replaying = Arc::new(AtomicBool::new(false));
    let restored = {
        let (conn, db) = (conn.clone(), db.clone());
        let (created, replaying) = (created.clone(), replaying.clone());
        let source_name = source_name.clone();
        dump::restore_with(run, move |info, input| {
            if info.engine != "mariadb" && info.engine != "mysql" {
                return Err(ShardError::permanent(format!(
                    "the archive holds a {} dump, not a mariadb/mysql one",
                    info.engine
                )));
            }
            conn.prepare_target(client, &db, info, overwrite, &created)?;
            replaying.store(true, Ordering::SeqCst);
            let source = info.database.clone().unwrap_or_else(|| db.clone());
            source.clone_into(&mut source_name.lock().unwrap_or_else(|e| e.into_inner()));
            replay(
                conn.restore_command(client, &db),
                input,
                (source, db.clone()),
            )
        })
        .await
    };
    match restored {
        Ok(bytes) => Ok((
            ShardOutcome {
                source_bytes: bytes,
                tool_version: Some(run.tool_version(client)).filter(|v| !v.is_empty()),
                ..Default::default()
            },
            Restored {
                source: source_name
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
                created: created.load(Ordering::SeqCst),
            },
        )),
        Err(e) => {
            let mut e = if replaying.load(Ordering::SeqCst) {
                conn.explain(e, &format!("restoring into database \"{db}\""))
            } else {
                conn.explain(e, "")
            };
            if created.load(Ordering::SeqCst) {
                // Leave no half-restored copy behind: a retry then finds no target and starts
                // again instead of being refused as "not empty".
                let (c, target) = (conn.clone(), db.clone());
                match blocking(move || c.drop_database(client, &target)).await {
                    Ok(()) => e.message.push_str(&format!(
                        " (the partly restored database \"{db}\" was dropped again)"
                    )),
                    Err(err) => {
                        tracing::warn!(database = %db, error = %err, "could not drop the database a failed restore created");
                        e.message.push_str(&format!(
                            " (the partly restored database \"{db}\" could not be dropped: {})",
                            err.message
                        ));
                    }
                }
            }
            Err(e)
        }
    }
}

/// Refuses a target database that exists and is not empty (the verify step of a restore); a
/// missing one is fine, the restore creates it.
pub async fn check_empty(run: &Run) -> Result<(), ShardError> {
    let (conn, db) = Conn::from_run(run)?;
    let client = pick(run, CLIENT_TOOLS)?;
    blocking(move || conn.ensure_empty(client, &db).map(drop)).await
}

/// The first tool of `group` this worker has.
pub(super) fn pick(run: &Run, group: &[&'static str]) -> Result<&'static str, ShardError> {
    group
        .iter()
        .copied()
        .find(|t| run.tools.contains_key(*t))
        .ok_or_else(|| {
            ShardError::permanent(format!(
                "none of {} is installed on this worker",
                group.join(", ")
            ))
        })
}

/// Runs short blocking work (client calls) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ShardError> + Send + 'static,
) -> Result<T, ShardError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ShardError::transient(format!("mariadb helper thread failed: {e}")))?
}

/// A database's defaults, as `information_schema.SCHEMATA` has them.
struct Schema {
    charset: String,
    collation: String,
    version: String,
}

/// What a target database holds.
enum TargetState {
    Missing,
    Present {
        objects: u64,
        charset: String,
        collation: String,
    },
}

/// How to reach the server of a shard: the spec's host, port and user plus the resolved password.
#[derive(Clone)]
pub(super) struct Conn {
    engine: Engine,
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
}

impl Conn {
    /// The connection and database name of a task; fails permanently on a malformed resource.
    fn from_run(run: &Run) -> Result<(Conn, String), ShardError> {
        let (spec, db) = dump::named_database(run, "mariadb/mysql")?;
        check_database_name(db)?;
        Ok((Conn::new(spec)?, db.to_owned()))
    }

    pub(super) fn new(spec: &DatabaseSpec) -> Result<Conn, ShardError> {
        Ok(Conn {
            engine: spec.engine,
            host: spec.host.clone(),
            port: spec.port,
            user: spec.user.clone(),
            password: dump::password(spec)?,
        })
    }

    /// `host:port` for messages.
    pub(super) fn server(&self) -> String {
        dump::server_of(self.host.as_deref(), self.port)
    }

    /// The user, for messages.
    fn who(&self) -> String {
        match &self.user {
            Some(user) => format!("user \"{user}\""),
            None => "the default user".to_owned(),
        }
    }

    /// `tool` with the connection flags and the password in its environment.
    pub(super) fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        if let Some(host) = &self.host {
            cmd.arg("-h").arg(host).arg("--protocol=TCP");
        }
        if let Some(port) = self.port {
            cmd.arg("-P").arg(port.to_string());
        }
        if let Some(user) = &self.user {
            cmd.arg("-u").arg(user);
        }
        match &self.password {
            Some(password) => cmd.env("MYSQL_PWD", password),
            None => cmd.env_remove("MYSQL_PWD"),
        };
        cmd
    }

    /// The client, ready for one statement or script (`-e`), printing tab-separated rows.
    fn client(&self, tool: &str) -> Command {
        let mut cmd = self.command(tool);
        cmd.args([
            CONNECT_TIMEOUT,
            "--default-character-set=utf8mb4",
            "--batch",
            "--skip-column-names",
        ]);
        cmd
    }

    /// Runs `sql` with the client and returns its output; errors carry `what` and the server.
    pub(super) fn query(&self, tool: &str, sql: &str, what: &str) -> Result<String, ShardError> {
        let mut cmd = self.client(tool);
        cmd.arg("-e").arg(sql);
        dump::run_capture(cmd).map_err(|e| self.explain(e, what))
    }

    /// The source's default charset and collation (and the server's version), or None when the
    /// database does not exist (or is invisible to the user).
    fn schema(&self, client: &str, db: &str) -> Result<Option<Schema>, ShardError> {
        let sql = format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, VERSION() \
             FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
            literal(db)
        );
        let out = self.query(client, &sql, &format!("reading database \"{db}\""))?;
        let Some(line) = out.lines().find(|l| !l.is_empty()) else {
            return Ok(None);
        };
        let mut cols = line.split('\t');
        match (cols.next(), cols.next(), cols.next()) {
            (Some(charset), Some(collation), Some(version)) => Ok(Some(Schema {
                charset: charset.to_owned(),
                collation: collation.to_owned(),
                version: version.to_owned(),
            })),
            _ => Err(ShardError::transient(format!(
                "unexpected answer reading database \"{db}\" on {}: {line:?}",
                self.server()
            ))),
        }
    }

    /// Whether the target exists, and how many objects it holds.
    fn target_state(&self, client: &str, db: &str) -> Result<TargetState, ShardError> {
        let name = literal(db);
        let sql = format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, \
               (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {name}) \
             + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {name}) \
             + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {name}) \
             + (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {name}) \
             FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {name}"
        );
        let out = self.query(client, &sql, &format!("inspecting database \"{db}\""))?;
        let Some(line) = out.lines().find(|l| !l.is_empty()) else {
            return Ok(TargetState::Missing);
        };
        let cols: Vec<&str> = line.split('\t').collect();
        match cols[..] {
            [charset, collation, count] => match count.parse() {
                Ok(objects) => Ok(TargetState::Present {
                    objects,
                    charset: charset.to_owned(),
                    collation: collation.to_owned(),
                }),
                Err(_) => Err(ShardError::transient(format!(
                    "unexpected answer inspecting database \"{db}\" on {}: {line:?}",
                    self.server()
                ))),
            },
            _ => Err(ShardError::transient(format!(
                "unexpected answer inspecting database \"{db}\" on {}: {line:?}",
                self.server()
            ))),
        }
    }

    /// Fails permanently when `db` exists and holds anything; returns its state otherwise.
    fn ensure_empty(&self, client: &str, db: &str) -> Result<TargetState, ShardError> {
        let state = self.target_state(client, db)?;
        if let TargetState::Present { objects, .. } = state
            && objects > 0
        {
            return Err(ShardError::permanent(format!(
                "target database \"{db}\" on {} is not empty ({objects} objects); restore into a \
                 new database (--rewrite {db}=NEW) or replace it with --overwrite",
                self.server()
            )));
        }
        Ok(state)
    }

    /// Makes `db` an empty database with the archive's charset and collation: creates it,
    /// replaces it (`overwrite`) or adopts an existing empty one. Sets `created` when this
    /// attempt created it.
    fn prepare_target(
        &self,
        client: &str,
        db: &str,
        info: &DumpInfo,
        overwrite: bool,
        created: &AtomicBool,
    ) -> Result<(), ShardError> {
        let charset = option(info, "charset")?;
        let collation = option(info, "collation")?;
        let mut spec = String::new();
        if let Some(cs) = &charset {
            spec.push_str(&format!(" CHARACTER SET {cs}"));
        }
        if let Some(cl) = &collation {
            spec.push_str(&format!(" COLLATE {cl}"));
        }
        let create = format!("CREATE DATABASE {}{spec}", ident(db));
        let state = if overwrite {
            self.target_state(client, db)?
        } else {
            self.ensure_empty(client, db)?
        };
        match state {
            TargetState::Present { .. } if overwrite => {
                let sql = format!("DROP DATABASE {}; {create}", ident(db));
                self.query(client, &sql, &format!("replacing database \"{db}\""))?;
                created.store(true, Ordering::SeqCst);
            }
            TargetState::Present {
                charset: cs,
                collation: cl,
                ..
            } => {
                // An empty database someone prepared (grants, say): give it the source's
                // defaults, which tables and routines created without their own inherit.
                let same = charset.as_deref().is_none_or(|c| c == cs)
                    && collation.as_deref().is_none_or(|c| c == cl);
                if !same && !spec.is_empty() {
                    let sql = format!("ALTER DATABASE {}{spec}", ident(db));
                    self.query(client, &sql, &format!("preparing database \"{db}\""))?;
                }
            }
            TargetState::Missing => {
                // No IF NOT EXISTS: a database that appeared meanwhile (or that this user
                // cannot see) must stop the restore, not receive it.
                self.query(client, &create, &format!("creating database \"{db}\""))?;
                created.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// Fails permanently unless the server logs rows (`binlog_format=ROW`): statements could
    /// not be replayed into a database under another name.
    pub(super) fn require_row_format(&self, client: &str) -> Result<(), ShardError> {
        let out = self.query(
            client,
            "SELECT @@GLOBAL.binlog_format, @@GLOBAL.log_bin",
            "reading binlog_format",
        )?;
        let line = out.lines().next().unwrap_or_default();
        let mut cols = line.split('\t');
        let (format, log_bin) = (cols.next().unwrap_or_default(), cols.next());
        if log_bin == Some("0") {
            return Err(ShardError::permanent(format!(
                "binary logging is off on {} (log_bin): point-in-time restore needs the binlog",
                self.server()
            )));
        }
        if !format.eq_ignore_ascii_case("ROW") {
            return Err(ShardError::permanent(format!(
                "binlog_format is {format} on {}: point-in-time restore needs binlog_format=ROW \
                 (set it in the server's configuration)",
                self.server()
            )));
        }
        Ok(())
    }

    /// The binlog file the server writes now (`SHOW MASTER STATUS`).
    pub(super) fn current_binlog(&self, client: &str) -> Result<String, ShardError> {
        let out = self.query(client, "SHOW MASTER STATUS", "reading the binlog position")?;
        let file = out.split('\t').next().unwrap_or_default().trim().to_owned();
        if !ferry_model::pitr::valid_file(&file) {
            return Err(ShardError::permanent(format!(
                "{} reports no binlog (SHOW MASTER STATUS: {:?}): is log_bin on?",
                self.server(),
                out.trim()
            )));
        }
        Ok(file)
    }

    /// The binlog files the server still has, each with its size (`SHOW BINARY LOGS`).
    pub(super) fn binlogs(&self, client: &str) -> Result<Vec<(String, u64)>, ShardError> {
        let out = self.query(client, "SHOW BINARY LOGS", "listing the binlogs")?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut cols = l.split('\t');
                let file = cols.next()?.to_owned();
                let size = cols.next()?.trim().parse().ok()?;
                Some((file, size))
            })
            .collect())
    }

    /// Drops `db` (after a failed restore that created it).
    pub(super) fn drop_database(&self, client: &str, db: &str) -> Result<(), ShardError> {
        let sql = format!("DROP DATABASE IF EXISTS {}", ident(db));
        self.query(client, &sql, &format!("dropping database \"{db}\""))
            .map(drop)
    }

    /// The dump command for `db` (see the module doc for the flags).
    fn dump_command(&self, tool: &str, tool_version: &str, db: &str) -> Command {
        let mut cmd = self.command(tool);
        cmd.args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--default-character-set=utf8mb4",
            "--quick",
            "--add-drop-table",
            "--skip-add-locks",
            "--skip-dump-date",
            "--no-tablespaces",
            MAX_PACKET,
        ]);
        let release = tool_release(tool_version);
        if tool_version.contains("MariaDB") {
            if self.engine == Engine::Mariadb && release.is_some_and(|r| r >= (10, 11)) {
                cmd.arg("--dump-history");
            }
        } else if release.is_some_and(|r| r >= (5, 6)) {
            // MySQL's own mysqldump.
            cmd.arg("--set-gtid-purged=OFF");
            if release.is_some_and(|r| r >= (8, 0)) {
                cmd.arg("--column-statistics=0");
            }
        }
        cmd.arg(db);
        cmd
    }

    /// The client replaying a dump from stdin into `db`.
    pub(super) fn restore_command(&self, tool: &str, db: &str) -> Command {
        let mut cmd = self.command(tool);
        cmd.args([
            CONNECT_TIMEOUT,
            "--default-character-set=utf8mb4",
            "--binary-mode",
            "--comments",
            MAX_PACKET,
        ]);
        cmd.arg(format!("--database={db}"));
        cmd
    }

    /// Adds context to a tool's error, decides whether it is permanent, and makes sure the
    /// password is not in it.
    pub(super) fn explain(&self, e: ShardError, what: &str) -> ShardError {
        let mut message = if what.is_empty() {
            e.message
        } else {
            format!("{what} on {}: {}", self.server(), e.message)
        };
        if let Some(password) = self.password.as_deref().filter(|p| p.len() >= 4) {
            message = message.replace(password, "***");
        }
        let permanent = e.permanent || is_permanent(&message);
        ShardError { message, permanent }
    }
}

/// Whether an error of the server or the tools cannot be fixed by retrying: access denied, an
/// unknown database, and SQL errors (codes 1000–1999, except a few about load and locks).
/// Client errors (2000+: cannot connect, connection lost) are transient.
fn is_permanent(message: &str) -> bool {
    if message.contains("Access denied") || message.contains("Unknown database") {
        return true;
    }
    const TRANSIENT: &[u32] = &[
        1040, // too many connections
        1053, // server shutdown in progress
        1152, // aborted connection
        1153, // packet bigger than max_allowed_packet: may be raised on the server
        1159, // net read timeout
        1160, // net write error
        1161, // net write timeout
        1205, // lock wait timeout
        1213, // deadlock
        1317, // query interrupted
        1927, // connection killed
    ];
    error_codes(message).any(|code| (1000..2000).contains(&code) && !TRANSIENT.contains(&code))
}

/// MySQL error codes in a tool's message: `ERROR 1045 (28000)`, `Got error: 1045:`.
fn error_codes(message: &str) -> impl Iterator<Item = u32> + '_ {
    ["ERROR ", "Got error: "]
        .into_iter()
        .flat_map(move |marker| {
            message.match_indices(marker).filter_map(move |(i, _)| {
                let rest = &message[i + marker.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if digits.len() == 4 {
                    digits.parse().ok()
                } else {
                    None
                }
            })
        })
}

/// `(major, minor)` of the server release a tool's version line names:
/// `mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, …`, `mariadb-dump from 11.4.2-MariaDB, …`,
/// `mysqldump  Ver 8.0.36 for Linux …`.
fn tool_release(line: &str) -> Option<(u32, u32)> {
    let after = ["Distrib ", " from ", "Ver "]
        .iter()
        .find_map(|marker| line.find(marker).map(|i| &line[i + marker.len()..]))?;
    let mut parts = after.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A charset or collation name from the archive, checked before it goes into SQL.
fn option(info: &DumpInfo, key: &str) -> Result<Option<String>, ShardError> {
    match info.options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            Ok(Some(s.clone()))
        }
        Some(other) => Err(ShardError::permanent(format!(
            "dump archive: invalid {key} {other}"
        ))),
    }
}

/// Refuses database names the tools or SQL quoting could misread.
fn check_database_name(db: &str) -> Result<(), ShardError> {
    let bad = db.is_empty()
        || db.len() > 64
        || db.starts_with('-')
        || db.ends_with(' ')
        || db
            .chars()
            .any(|c| c.is_control() || matches!(c, '`' | '\'' | '"' | '\\' | '/'));
    if bad {
        return Err(ShardError::permanent(format!(
            "invalid mariadb/mysql database name {db:?}"
        )));
    }
    Ok(())
}

/// A quoted string literal (names are checked to hold no quote or backslash; escape anyway).
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Pipes the dump into the restore client through [`Retarget`], from database `rename.0` to
/// `rename.1` (the same name when restoring in place). Returns the dump's size. (The shape of
/// [`dump::restore_into_command`], plus the filter.)
fn replay(
    cmd: Command,
    input: &mut dyn Read,
    (from, to): (String, String),
) -> Result<u64, ShardError> {
    let mut counted = Counted {
        inner: input,
        bytes: 0,
    };
    dump::pipe_into(
        cmd,
        &mut Retarget::new(&mut counted, &from, &to),
        last_error,
    )?;
    Ok(counted.bytes)
}

/// The client's stderr from its last `ERROR` line on. Before that line it echoes the failing
/// statement, which can be a row-laden INSERT: table data has no place in an error report.
pub(super) fn last_error(stderr: &[u8]) -> &[u8] {
    let at = find_last(stderr, b"\nERROR ").map(|i| i + 1);
    match at {
        Some(i) => &stderr[i..],
        None => stderr,
    }
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Counts the bytes read through it.
struct Counted<'a> {
    inner: &'a mut dyn Read,
    bytes: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echoed_statement_is_left_out_of_errors() {
        let stderr = b"--------------\nINSERT INTO `t` VALUES ('secret row')\n--------------\n\nERROR 1062 (23000) at line 9: Duplicate entry\n";
        assert_eq!(
            last_error(stderr),
            b"ERROR 1062 (23000) at line 9: Duplicate entry\n"
        );
        assert_eq!(last_error(b"ERROR 2002: x"), b"ERROR 2002: x");
    }

    #[test]
    fn the_binlog_position_is_read_from_the_dump_head() {
        let mut scan = HeadScan::default();
        let head = b"/*M!999999\\- enable the sandbox mode */\n--\n-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000003', MASTER_LOG_POS=47011;\n\nCREATE TABLE";
        for part in head.chunks(7) {
            scan.feed(part);
        }
        assert_eq!(scan.found.as_deref(), Some("binlog.000003:47011"));
        assert_eq!(
            binlog_position(
                "-- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='b.000001', SOURCE_LOG_POS=4;"
            ),
            Some("b.000001:4".to_owned())
        );
        assert_eq!(binlog_position("INSERT INTO t VALUES ('-- CHANGE')"), None);
    }

    #[test]
    fn tool_versions_and_error_codes_are_read() {
        assert_eq!(
            tool_release(
                "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)"
            ),
            Some((10, 11))
        );
        assert_eq!(
            tool_release("mariadb-dump from 11.4.2-MariaDB, client 10.19 for debian-linux-gnu"),
            Some((11, 4))
        );
        assert_eq!(
            tool_release("mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server)"),
            Some((8, 0))
        );
        assert_eq!(tool_release(""), None);
        assert!(is_permanent(
            "mariadb failed (exit status: 1): ERROR 1064 (42000) at line 12: syntax"
        ));
        assert!(is_permanent(
            "mariadb-dump: Got error: 1045: \"Access denied for user 'x'@'localhost'\""
        ));
        assert!(!is_permanent(
            "ERROR 2002 (HY000): Can't connect to server on '127.0.0.1' (115)"
        ));
        assert!(!is_permanent("ERROR 1213 (40001): Deadlock found"));
    }

    #[test]
    fn names_are_checked_and_quoted() {
        for ok in ["shop", "legacy_copy", "a-b", "v1.2", "Ünïcode"] {
            check_database_name(ok).unwrap();
        }
        for bad in ["", "-x", "a`b", "a'b", "a\\b", "a/b", "a\0b"] {
            assert!(check_database_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal("a'b\\"), "'a''b\\\\'");
    }
}
