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

/// Dump tools, preferred first.
const DUMP_TOOLS: &[&str] = &["mariadb-dump", "mysqldump"];
/// SQL clients, preferred first.
const CLIENT_TOOLS: &[&str] = &["mariadb", "mysql"];
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
    let cmd = conn.dump_command(dump_tool, &info.tool_version, &db);
    dump::backup_from_command(run, cmd, info)
        .await
        .map_err(|e| conn.explain(e, &format!("dumping database \"{db}\"")))
}

/// Restores the shard archive into the target database, creating it (or, with `--overwrite`,
/// replacing it) first.
pub async fn restore(run: &Run) -> Result<ShardOutcome, ShardError> {
    let (conn, db) = Conn::from_run(run)?;
    let client = pick(run, CLIENT_TOOLS)?;
    let overwrite = run.task.overwrite;
    // Set once this attempt has created the database, and once the client got to run.
    let created = Arc::new(AtomicBool::new(false));
    let replaying = Arc::new(AtomicBool::new(false));
    let restored = {
        let (conn, db) = (conn.clone(), db.clone());
        let (created, replaying) = (created.clone(), replaying.clone());
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
            replay(
                conn.restore_command(client, &db),
                input,
                (source, db.clone()),
            )
        })
        .await
    };
    match restored {
        Ok(bytes) => Ok(ShardOutcome {
            source_bytes: bytes,
            tool_version: Some(run.tool_version(client)).filter(|v| !v.is_empty()),
            ..Default::default()
        }),
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
fn pick(run: &Run, group: &[&'static str]) -> Result<&'static str, ShardError> {
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
struct Conn {
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

    fn new(spec: &DatabaseSpec) -> Result<Conn, ShardError> {
        Ok(Conn {
            engine: spec.engine,
            host: spec.host.clone(),
            port: spec.port,
            user: spec.user.clone(),
            password: dump::password(spec)?,
        })
    }

    /// `host:port` for messages.
    fn server(&self) -> String {
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
    fn command(&self, tool: &str) -> Command {
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
    fn query(&self, tool: &str, sql: &str, what: &str) -> Result<String, ShardError> {
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

    /// Drops `db` (after a failed restore that created it).
    fn drop_database(&self, client: &str, db: &str) -> Result<(), ShardError> {
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
    fn restore_command(&self, tool: &str, db: &str) -> Command {
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
    fn explain(&self, e: ShardError, what: &str) -> ShardError {
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

/// A quoted identifier.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
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
fn last_error(stderr: &[u8]) -> &[u8] {
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

/// How mysqldump locks a table around its rows, and unlocks it.
const LOCK_TABLES: &[u8] = b"LOCK TABLES `";
const UNLOCK_TABLES: &[u8] = b"UNLOCK TABLES;\n";
/// How mysqldump starts a table's definition.
const CREATE_TABLE: &[u8] = b"CREATE TABLE ";
/// How a column definition starts inside mysqldump's `CREATE TABLE`.
const COLUMN_LINE: &[u8] = b"  `";

/// Most bytes of a statement's start [`Retarget`] holds to recognise it; anything longer
/// passes through untouched.
const MAX_HEAD: usize = 4096;
/// How mysqldump starts a trigger (`/*!50003 CREATE*/ /*!50017 DEFINER=…*/ /*!50003 TRIGGER `):
/// the rest is the trigger's original statement from its name on.
const TRIGGER_LINE: &[u8] = b"/*!50003 CREATE*/";
const TRIGGER_KEYWORD: &[u8] = b"*/ /*!50003 TRIGGER ";

/// A reader over a mysqldump dump of database `from` that makes it land in `to` instead. Two
/// kinds of statement name the dumped database, and only they are rewritten:
///
/// - ``ALTER DATABASE `from` CHARACTER SET cs COLLATE cl ;`` (or `;;`), which the tool writes
///   around routines, triggers and events created under another database collation than the
///   current one;
/// - a trigger's head, ``TRIGGER [IF NOT EXISTS] [`from`.]name {BEFORE|AFTER} event ON
///   [`from`.]table``: the server keeps a trigger's original text, so a trigger created with
///   qualified names is dumped with them. (A trigger lives in its table's database, so such a
///   qualifier can only name the source.) Trigger bodies are the application's code and are left
///   alone.
///
/// mysqldump escapes line breaks inside string values, so a line that starts like these is a
/// statement of the tool's own. Memory is bounded: only a statement's start (at most
/// [`MAX_HEAD`] bytes, and only while it may still match) is buffered; everything else streams.
pub struct Retarget<R> {
    inner: R,
    from: Vec<u8>,
    to: String,
    alter: Vec<u8>,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    /// At the start of a line, collecting it while it may still match.
    collecting: bool,
    head: Vec<u8>,
    /// Inside a `CREATE TABLE` statement (its column lines may name sequences).
    in_create_table: bool,
    /// `nextval(`from`.` and `lastval(`from`.`: a column default naming a sequence of the dumped
    /// database.
    sequence_refs: [Vec<u8>; 2],
    out: Vec<u8>,
    out_pos: usize,
}

/// What the collected start of a statement is.
enum Verdict {
    /// Not one of ours: pass it on.
    Pass,
    /// Could still be one of ours: collect more.
    More,
    /// One of ours, rewritten (the whole collected text).
    Rewritten(Vec<u8>),
}

impl<R: Read> Retarget<R> {
    /// Retargets `inner`, a dump of database `from`, to database `to`.
    pub fn new(inner: R, from: &str, to: &str) -> Self {
        Retarget {
            inner,
            from: from.as_bytes().to_vec(),
            to: to.to_owned(),
            alter: format!("ALTER DATABASE {} ", ident(from)).into_bytes(),
            buf: vec![0u8; 64 << 10].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            collecting: true,
            head: Vec::with_capacity(MAX_HEAD),
            in_create_table: false,
            sequence_refs: [
                format!("nextval({}.", ident(from)).into_bytes(),
                format!("lastval({}.", ident(from)).into_bytes(),
            ],
            out: Vec::with_capacity(MAX_HEAD),
            out_pos: 0,
        }
    }

    /// Judges the collected head.
    fn verdict(&self) -> Verdict {
        let head = &self.head[..];
        let complete_line = head.last() == Some(&b'\n');
        let starts = |pattern: &[u8]| {
            let n = head.len().min(pattern.len());
            head[..n] == pattern[..n]
        };
        // LOCK TABLES around a table's rows (left out of new dumps by --skip-add-locks): a row
        // insert whose column defaults to NEXTVAL(seq) needs the sequence locked too, which the
        // tool never does. The locks only speed up MyISAM loads.
        if starts(LOCK_TABLES) || starts(UNLOCK_TABLES) {
            if !complete_line {
                return Verdict::More;
            }
            let lock = head.starts_with(LOCK_TABLES) && head.ends_with(b" WRITE;\n");
            return if lock || head == UNLOCK_TABLES {
                Verdict::Rewritten(Vec::new())
            } else {
                Verdict::Pass
            };
        }
        // Enough of a `CREATE TABLE` line to know it is one (emit() follows the statement).
        if starts(CREATE_TABLE) && head.len() < CREATE_TABLE.len() && !complete_line {
            return Verdict::More;
        }
        if self.in_create_table && starts(COLUMN_LINE) {
            if !complete_line {
                return Verdict::More;
            }
            return match self.sequence_defaults(head) {
                Some(rewritten) => Verdict::Rewritten(rewritten),
                None => Verdict::Pass,
            };
        }
        if starts(&self.alter) {
            if head.len() < self.alter.len() || !complete_line {
                return if complete_line {
                    Verdict::Pass
                } else {
                    Verdict::More
                };
            }
            return match self.alter_database(head) {
                Some(rewritten) => Verdict::Rewritten(rewritten),
                None => Verdict::Pass,
            };
        }
        if starts(TRIGGER_LINE) {
            if head.len() < TRIGGER_LINE.len() {
                return if complete_line {
                    Verdict::Pass
                } else {
                    Verdict::More
                };
            }
            let from = TRIGGER_LINE.len() - 2;
            let Some(at) = find(&head[from..], TRIGGER_KEYWORD) else {
                // The DEFINER comment is on the trigger's first line.
                return if complete_line {
                    Verdict::Pass
                } else {
                    Verdict::More
                };
            };
            let start = from + at + TRIGGER_KEYWORD.len();
            return match trigger_head(&head[start..], &self.from) {
                Err(Stop::More) => Verdict::More,
                Err(Stop::NoMatch) => Verdict::Pass,
                Ok(spans) if spans.is_empty() => Verdict::Pass,
                Ok(spans) => {
                    let quoted = ident(&self.to);
                    let plain = !self.to.bytes().all(|b| b.is_ascii_digit())
                        && self
                            .to
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
                    let mut out = head[..start].to_vec();
                    let mut last = start;
                    for (a, b, bare) in spans {
                        out.extend_from_slice(&head[last..start + a]);
                        // Keep the original's style where the name allows it.
                        let name = if bare && plain { &self.to } else { &quoted };
                        out.extend_from_slice(name.as_bytes());
                        last = start + b;
                    }
                    out.extend_from_slice(&head[last..]);
                    Verdict::Rewritten(out)
                }
            };
        }
        Verdict::Pass
    }

    /// ``ALTER DATABASE `from` CHARACTER SET cs COLLATE cl ;`` (exactly as the tool writes it)
    /// aimed at `to`.
    fn alter_database(&self, line: &[u8]) -> Option<Vec<u8>> {
        let rest = line
            .strip_prefix(self.alter.as_slice())?
            .strip_suffix(b"\n")?;
        let name =
            |w: &[u8]| !w.is_empty() && w.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
        let words: Vec<&[u8]> = rest.split(|&b| b == b' ').collect();
        let exact = matches!(
            words[..],
            [b"CHARACTER", b"SET", cs, b"COLLATE", cl, b";" | b";;"] if name(cs) && name(cl)
        );
        if !exact {
            return None;
        }
        let mut out = format!("ALTER DATABASE {} ", ident(&self.to)).into_bytes();
        out.extend_from_slice(rest);
        out.push(b'\n');
        Some(out)
    }

    /// A column line whose default names a sequence of the dumped database
    /// (``DEFAULT nextval(`from`.`s`)``), aimed at the target's sequence.
    fn sequence_defaults(&self, line: &[u8]) -> Option<Vec<u8>> {
        if self.from == self.to.as_bytes() {
            return None;
        }
        let mut out = Vec::with_capacity(line.len() + 64);
        let mut rest = line;
        let mut changed = false;
        'scan: while !rest.is_empty() {
            for pattern in &self.sequence_refs {
                if rest.len() >= pattern.len()
                    && rest[..pattern.len()].eq_ignore_ascii_case(pattern)
                {
                    // `nextval(` / `lastval(` as written (its case kept).
                    let function = &rest[..b"nextval(".len()];
                    out.extend_from_slice(function);
                    out.extend_from_slice(ident(&self.to).as_bytes());
                    out.push(b'.');
                    rest = &rest[pattern.len()..];
                    changed = true;
                    continue 'scan;
                }
            }
            out.push(rest[0]);
            rest = &rest[1..];
        }
        changed.then_some(out)
    }

    /// Hands the collected head on, as it is or rewritten.
    fn emit(&mut self, bytes: Option<Vec<u8>>) {
        if self.head.starts_with(CREATE_TABLE) {
            self.in_create_table = true;
        } else if self.head.starts_with(b")") {
            self.in_create_table = false;
        }
        let complete_line = self.head.last() == Some(&b'\n');
        self.out.clear();
        self.out_pos = 0;
        match bytes {
            Some(bytes) => {
                self.out = bytes;
                self.head.clear();
            }
            None => std::mem::swap(&mut self.out, &mut self.head),
        }
        self.collecting = complete_line;
    }
}

impl<R: Read> Read for Retarget<R> {
    fn read(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out_pos < self.out.len() {
                let n = (self.out.len() - self.out_pos).min(dst.len());
                dst[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if self.pos == self.len {
                if self.eof {
                    if self.head.is_empty() {
                        return Ok(0);
                    }
                    // The dump ended inside a statement's start: pass it on as it is.
                    self.emit(None);
                    continue;
                }
                let n = self.inner.read(&mut self.buf)?;
                self.pos = 0;
                self.len = n;
                self.eof = n == 0;
                continue;
            }
            let avail = &self.buf[self.pos..self.len];
            let newline = avail.iter().position(|&b| b == b'\n');
            if self.collecting {
                let want = newline.map_or(avail.len(), |i| i + 1);
                let take = want.min(MAX_HEAD - self.head.len());
                self.head.extend_from_slice(&avail[..take]);
                self.pos += take;
                match self.verdict() {
                    Verdict::More if self.head.len() < MAX_HEAD => {}
                    Verdict::More | Verdict::Pass => self.emit(None),
                    Verdict::Rewritten(bytes) => self.emit(Some(bytes)),
                }
                continue;
            }
            let end = newline.map_or(avail.len(), |i| i + 1);
            let n = end.min(dst.len());
            dst[..n].copy_from_slice(&avail[..n]);
            self.pos += n;
            if newline.is_some() && n == end {
                self.collecting = true;
            }
            return Ok(n);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Why a trigger head was not (yet) parsed.
#[derive(Debug, PartialEq)]
enum Stop {
    /// The text ends before the head does.
    More,
    /// Not a head this parser understands (comments inside it, say): leave it alone.
    NoMatch,
}

/// Parses `[IF NOT EXISTS] [db.]name {BEFORE|AFTER} {INSERT|UPDATE|DELETE} ON [db.]table` and
/// returns the byte spans of the qualifiers that name `db` (ASCII case aside), and whether each
/// was bare.
fn trigger_head(text: &[u8], db: &[u8]) -> Result<Vec<(usize, usize, bool)>, Stop> {
    let mut p = HeadParser { text, at: 0 };
    let mut spans = Vec::new();
    p.space()?;
    let first = p.ident()?;
    let name_start = if first.bare && first.value.eq_ignore_ascii_case(b"IF") {
        p.keyword(&["NOT"])?;
        p.keyword(&["EXISTS"])?;
        p.space()?;
        p.ident()?
    } else {
        first
    };
    p.qualified(name_start, db, &mut spans)?;
    p.keyword(&["BEFORE", "AFTER"])?;
    p.keyword(&["INSERT", "UPDATE", "DELETE"])?;
    p.keyword(&["ON"])?;
    p.space()?;
    let table = p.ident()?;
    p.qualified(table, db, &mut spans)?;
    Ok(spans)
}

struct HeadParser<'a> {
    text: &'a [u8],
    at: usize,
}

/// An identifier of a trigger head: where it is, its unquoted value, whether it was bare.
struct Ident {
    start: usize,
    end: usize,
    value: Vec<u8>,
    bare: bool,
}

impl HeadParser<'_> {
    /// Skips white space; comments are not followed.
    fn space(&mut self) -> Result<(), Stop> {
        loop {
            match self.text.get(self.at) {
                None => return Err(Stop::More),
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.at += 1,
                Some(b'#') => return Err(Stop::NoMatch),
                Some(b'/' | b'-') if self.text.get(self.at + 1).is_none() => {
                    return Err(Stop::More);
                }
                Some(b'/') if self.text[self.at + 1] == b'*' => return Err(Stop::NoMatch),
                Some(b'-') if self.text[self.at + 1] == b'-' => return Err(Stop::NoMatch),
                Some(_) => return Ok(()),
            }
        }
    }

    /// A bare, `backticked` or "double-quoted" identifier at the cursor.
    fn ident(&mut self) -> Result<Ident, Stop> {
        let start = self.at;
        let first = *self.text.get(start).ok_or(Stop::More)?;
        if first == b'`' || first == b'"' {
            let mut value = Vec::new();
            let mut i = start + 1;
            loop {
                let b = *self.text.get(i).ok_or(Stop::More)?;
                if b == first {
                    match self.text.get(i + 1) {
                        None => return Err(Stop::More),
                        Some(&next) if next == first => {
                            value.push(first);
                            i += 2;
                        }
                        Some(_) => {
                            self.at = i + 1;
                            return Ok(Ident {
                                start,
                                end: i + 1,
                                value,
                                bare: false,
                            });
                        }
                    }
                } else {
                    value.push(b);
                    i += 1;
                }
            }
        }
        let bare = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        let mut i = start;
        while let Some(&b) = self.text.get(i) {
            if !bare(b) {
                break;
            }
            i += 1;
        }
        if i == self.text.len() {
            return Err(Stop::More);
        }
        if i == start {
            return Err(Stop::NoMatch);
        }
        self.at = i;
        Ok(Ident {
            start,
            end: i,
            value: self.text[start..i].to_vec(),
            bare: true,
        })
    }

    /// One of `words` (bare, any case) after white space.
    fn keyword(&mut self, words: &[&str]) -> Result<(), Stop> {
        self.space()?;
        let word = self.ident()?;
        if word.bare
            && words
                .iter()
                .any(|w| w.as_bytes().eq_ignore_ascii_case(&word.value))
        {
            Ok(())
        } else {
            Err(Stop::NoMatch)
        }
    }

    /// `first` and, when a `.` follows, the name after it; records `first` as a qualifier span
    /// when it names `db`.
    fn qualified(
        &mut self,
        first: Ident,
        db: &[u8],
        spans: &mut Vec<(usize, usize, bool)>,
    ) -> Result<(), Stop> {
        match self.space() {
            Ok(()) if self.text[self.at] == b'.' => {}
            // A comment after a name: no qualifier follows.
            Ok(()) | Err(Stop::NoMatch) => return Ok(()),
            Err(Stop::More) => return Err(Stop::More),
        }
        self.at += 1;
        self.space()?;
        self.ident()?;
        if first.value.eq_ignore_ascii_case(db) {
            spans.push((first.start, first.end, first.bare));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader handing out at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn retarget(input: &[u8], step: usize, read_size: usize) -> Vec<u8> {
        let mut f = Retarget::new(Trickle { data: input, step }, "src", "copy");
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Every way of reading, from a byte at a time to all at once.
    fn assert_retargets(input: &str, expected: &str) {
        for (step, read_size) in [(1, 1), (3, 7), (100, 5), (70_000, 1 << 20), (1 << 20, 64)] {
            let out = retarget(input.as_bytes(), step, read_size);
            assert!(
                out == expected.as_bytes(),
                "step {step}, read size {read_size}:\n{}",
                String::from_utf8_lossy(&out[..out.len().min(2000)])
            );
        }
    }

    #[test]
    fn sequence_defaults_and_table_locks_are_fixed() {
        let input = "DROP SEQUENCE IF EXISTS `s`;\n\
            CREATE SEQUENCE `s` start with 100 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB;\n\
            DO SETVAL(`s`, 1100, 0);\n\
            CREATE TABLE `t` (\n\
            \x20 `id` bigint(20) NOT NULL DEFAULT nextval(`src`.`s`),\n\
            \x20 `last` bigint(20) DEFAULT LASTVAL(`src`.`s`),\n\
            \x20 `other` bigint(20) DEFAULT nextval(`other`.`s`),\n\
            \x20 PRIMARY KEY (`id`)\n\
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n\
            LOCK TABLES `t` WRITE;\n\
            INSERT INTO `t` VALUES (100,'  `x` nextval(`src`.`s`)');\n\
            \x20 `not` in a table nextval(`src`.`s`)\n\
            UNLOCK TABLES;\n\
            LOCK TABLES `t` READ LOCAL, `u` WRITE; -- not the tool's\n";
        let expected = "DROP SEQUENCE IF EXISTS `s`;\n\
            CREATE SEQUENCE `s` start with 100 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB;\n\
            DO SETVAL(`s`, 1100, 0);\n\
            CREATE TABLE `t` (\n\
            \x20 `id` bigint(20) NOT NULL DEFAULT nextval(`copy`.`s`),\n\
            \x20 `last` bigint(20) DEFAULT LASTVAL(`copy`.`s`),\n\
            \x20 `other` bigint(20) DEFAULT nextval(`other`.`s`),\n\
            \x20 PRIMARY KEY (`id`)\n\
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n\
            INSERT INTO `t` VALUES (100,'  `x` nextval(`src`.`s`)');\n\
            \x20 `not` in a table nextval(`src`.`s`)\n\
            LOCK TABLES `t` READ LOCAL, `u` WRITE; -- not the tool's\n";
        assert_retargets(input, expected);
        // In place, the locks still go and nothing else changes.
        let mut f = Retarget::new(input.as_bytes(), "src", "src");
        let mut out = String::new();
        f.read_to_string(&mut out).unwrap();
        assert!(!out.contains("LOCK TABLES `t` WRITE;"), "{out}");
        assert!(out.contains("nextval(`src`.`s`),"), "{out}");
    }

    #[test]
    fn collation_switches_are_aimed_at_the_target() {
        let long = format!("INSERT INTO `t` VALUES ('{}');\n", "x".repeat(200_000));
        let input = format!(
            "-- Host: localhost    Database: src\n\
             ALTER DATABASE `src` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci ;\n\
             {long}\
             ALTER DATABASE `src` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;;\n\
             ALTER DATABASE `src2` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n\
             ALTER DATABASE `src` CHARACTER SET latin1 COLLATE latin1_swedish_ci ; DROP TABLE x\n\
             ALTER DATABASE `src` UPGRADE DATA DIRECTORY NAME;\n\
             \n\n{long}ALTER DATABASE `src` CHARACTER SET a COLLATE b ;"
        );
        let expected = format!(
            "-- Host: localhost    Database: src\n\
             ALTER DATABASE `copy` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci ;\n\
             {long}\
             ALTER DATABASE `copy` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;;\n\
             ALTER DATABASE `src2` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n\
             ALTER DATABASE `src` CHARACTER SET latin1 COLLATE latin1_swedish_ci ; DROP TABLE x\n\
             ALTER DATABASE `src` UPGRADE DATA DIRECTORY NAME;\n\
             \n\n{long}ALTER DATABASE `src` CHARACTER SET a COLLATE b ;"
        );
        assert_retargets(&input, &expected);
        assert!(retarget(b"", 1, 10).is_empty());
        // Binary bytes pass untouched.
        let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        assert_eq!(retarget(&bytes, 4096, 5000), bytes);
    }

    #[test]
    fn qualified_trigger_heads_are_aimed_at_the_target() {
        let d = "/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER";
        let body = format!("SET NEW.s = '{}' */;;\n", "y".repeat(10_000));
        let cases = [
            // Backticked, one line, a long body.
            (
                format!("{d} `src`.`t_bi` BEFORE INSERT ON `src`.`t` FOR EACH ROW {body}"),
                format!("{d} `copy`.`t_bi` BEFORE INSERT ON `copy`.`t` FOR EACH ROW {body}"),
            ),
            // Bare, over several lines, IF NOT EXISTS, odd case and spacing.
            (
                format!(
                    "{d} if not exists src . t_ai\n  after\n  update on\n SRC.t for each row \
                     UPDATE src.other SET n = 1 */;;\n"
                ),
                format!(
                    "{d} if not exists copy . t_ai\n  after\n  update on\n copy.t for each row \
                     UPDATE src.other SET n = 1 */;;\n"
                ),
            ),
            // Without DEFINER; only the table qualified; double quotes.
            (
                "/*!50003 CREATE*/ /*!50003 TRIGGER t_bd BEFORE DELETE ON \"src\".t FOR EACH ROW SET @x = 1 */;;\n"
                    .to_owned(),
                "/*!50003 CREATE*/ /*!50003 TRIGGER t_bd BEFORE DELETE ON `copy`.t FOR EACH ROW SET @x = 1 */;;\n"
                    .to_owned(),
            ),
        ];
        for (input, expected) in &cases {
            assert_retargets(input, expected);
        }
        // Left alone: unqualified heads, other databases, comments inside the head, and
        // anything that only looks similar.
        for same in [
            format!("{d} t_bi BEFORE INSERT ON t FOR EACH ROW {body}"),
            format!("{d} `src2`.t_bi BEFORE INSERT ON `src2`.t FOR EACH ROW SET @x = 1 */;;\n"),
            format!("{d} src.t_bi /* c */ BEFORE INSERT ON src.t FOR EACH ROW SET @x = 1 */;;\n"),
            "/*!50003 CREATE*/ something else `src`.t\n".to_owned(),
            format!("{d} `src`.`t_bi` BEFORE INSERT ON `src`.`t`"),
            format!("SELECT 1;\n{}", "z".repeat(MAX_HEAD * 3)),
        ] {
            assert_retargets(&same, &same);
        }
        // A name that cannot be bare gets quoted.
        let input = format!("{d} src.t_bi AFTER DELETE ON src.t FOR EACH ROW SET @x = 1 */;;\n");
        let mut f = Retarget::new(
            Trickle {
                data: input.as_bytes(),
                step: 5,
            },
            "src",
            "my-copy",
        );
        let mut out = String::new();
        f.read_to_string(&mut out).unwrap();
        assert_eq!(
            out,
            format!(
                "{d} `my-copy`.t_bi AFTER DELETE ON `my-copy`.t FOR EACH ROW SET @x = 1 */;;\n"
            )
        );
    }

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
