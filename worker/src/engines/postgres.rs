//! PostgreSQL shards: one database per shard, dumped with `pg_dump` and restored with
//! `pg_restore`, both streaming through the shared dump archive (`dump.rs`).
//!
//! - **Backup** is `pg_dump --format=custom`: one consistent snapshot of the whole database (every
//!   schema, large objects, comments, grants) in the format `pg_restore` understands. pg_dump's
//!   own compression is off (`--compress=0`): the shard is zstd-compressed anyway, and zlib
//!   before zstd only costs CPU and makes zstd's job harder. The source's encoding and locale go
//!   into the archive's [`DumpInfo`] so that the restore can create an identical database.
//! - **Restore** creates the target database from `template0` with those settings when it does
//!   not exist (or drops and recreates it with `--overwrite`), then runs
//!   `pg_restore --single-transaction --exit-on-error`: a restore that fails half-way rolls back
//!   and leaves an empty database, never a half-restored one. `--no-owner`, because the owner
//!   roles of the source need not exist where the copy lands; the restoring user owns the copy.
//! - **Verify** refuses a target that exists and holds anything ([`check_empty`]); the restore
//!   checks again right before writing.
//! - The password reaches the tools only through `PGPASSWORD` in the child's environment, never
//!   through arguments, errors or logs; `--no-password` makes a missing one fail instead of
//!   prompting.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use ferry_model::app::DatabaseSpec;
use ferry_model::task::ShardOutcome;
use serde_json::{Map, Value};

use super::dump::{self, DumpInfo};
use super::pg_roles;
use super::{Run, ShardError};
use crate::executor::tail;

/// Seconds libpq waits for a connection before giving up.
const CONNECT_TIMEOUT_SECS: &str = "10";

/// Dumps one database into the shard archive.
pub async fn backup(run: &Run) -> Result<ShardOutcome, ShardError> {
    let (conn, db) = Conn::from_run(run)?;
    let (spec, _) = dump::named_database(run, "postgres")?;
    let info = {
        let (conn, db) = (conn.clone(), db.clone());
        let (roles, passwords, version) =
            (spec.roles, spec.role_passwords, run.tool_version("pg_dump"));
        blocking(move || conn.dump_info(&db, roles, passwords, version)).await?
    };
    let mut cmd = conn.command("pg_dump", &db);
    cmd.args(["--format=custom", "--compress=0"]);
    dump::backup_from_command(run, cmd, info)
        .await
        .map_err(|e| conn.explain(e, &format!("dumping database \"{db}\"")))
}

/// A physical base backup of the whole server (`Resource::PgBase`, for point-in-time restores):
/// `pg_basebackup -D - -Ft -X fetch --checkpoint=fast`, its tar streamed through the dump
/// archive like every dump. The WAL file that was current before it started is where the
/// log continues after it: the outcome's `log_position` (`FILE:0`).
pub async fn backup_base(run: &Run) -> Result<ShardOutcome, ShardError> {
    let ferry_model::task::Resource::PgBase { spec } = &run.task.resource else {
        return Err(ShardError::permanent("not a postgres-base shard"));
    };
    let conn = Conn::new(spec)?;
    let db = spec
        .databases
        .first()
        .cloned()
        .unwrap_or_else(|| "postgres".to_owned());
    let start = {
        let (conn, db) = (conn.clone(), db.clone());
        blocking(move || {
            conn.psql(
                &db,
                "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn())",
            )
            .map_err(|e| conn.explain(e, "reading the current WAL file"))
        })
        .await?
    };
    let start = start.trim().to_owned();
    if !ferry_model::pitr::valid_file(&start) {
        return Err(ShardError::transient(format!(
            "unexpected WAL file name {start:?} from {}",
            conn.location()
        )));
    }
    let mut options = Map::new();
    options.insert("start_wal".into(), Value::String(start.clone()));
    let info = DumpInfo {
        engine: BASE_ENGINE.into(),
        tool_version: run.tool_version("pg_basebackup"),
        database: None,
        options,
    };
    let mut cmd = conn.command("pg_basebackup", &db);
    cmd.args(["-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast"]);
    let mut outcome = dump::backup_from_command(run, cmd, info)
        .await
        .map_err(|e| conn.explain(e, "taking a base backup"))?;
    outcome.log_position = Some(format!("{start}:0"));
    Ok(outcome)
}

/// The engine a base archive's [`DumpInfo`] names.
pub const BASE_ENGINE: &str = "postgres-base";

/// Restores the shard archive into the target database, creating it (or, with `--overwrite`,
/// replacing it) first. With `task.pitr`, recovers the server's base to the moment first and
/// moves the database from there (`pitr.rs`).
pub async fn restore(run: &Run) -> Result<ShardOutcome, ShardError> {
    if let Some(p) = &run.task.pitr {
        return super::pitr::restore_postgres(run, p).await;
    }
    let (conn, db) = Conn::from_run(run)?;
    let loader = Loader::new(conn, db, run.task.overwrite);
    let restored = {
        let loader = loader.clone();
        dump::restore_with(run, move |info, input| loader.load(info, input)).await
    };
    loader.finish(run, restored).await
}

/// Loads a pg_dump custom-format stream into the target database: the shared half of a
/// restore from the shard's archive and of one from a recovered temporary server.
#[derive(Clone)]
pub(super) struct Loader {
    conn: Conn,
    db: String,
    overwrite: bool,
    prepared: Arc<Mutex<Prepared>>,
    notes: Arc<Mutex<Vec<String>>>,
}

impl Loader {
    /// Loads into database `db` of `conn`'s server.
    pub(super) fn new(conn: Conn, db: String, overwrite: bool) -> Loader {
        Loader {
            conn,
            db,
            overwrite,
            prepared: Arc::default(),
            notes: Arc::default(),
        }
    }

    /// Prepares the target as `info` describes the source and streams `input` (pg_dump's
    /// custom format) into it with pg_restore. Returns the bytes read. Blocks.
    pub(super) fn load(&self, info: &DumpInfo, input: &mut dyn Read) -> Result<u64, ShardError> {
        let (conn, db) = (&self.conn, &self.db);
        if info.engine != "postgres" {
            return Err(ShardError::permanent(format!(
                "the archive holds a {} dump, not a postgres one",
                info.engine
            )));
        }
        let target = conn.prepare_target(db, info, self.overwrite)?;
        *self.prepared.lock().unwrap_or_else(|e| e.into_inner()) = target;
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        let missing = conn.missing_roles(db, info, &mut notes)?;
        if missing.is_empty() {
            let mut cmd = conn.command("pg_restore", db);
            cmd.args(["--no-owner", "--exit-on-error", "--single-transaction"]);
            return dump::pipe_into(cmd, input, dump::everything);
        }
        // Grants to roles this server lacks would stop pg_restore: go through its script
        // instead, leaving those grants out.
        let mut script = Command::new(crate::tools::program("pg_restore"));
        script.args(["--no-owner", "--file=-"]);
        let mut psql = conn.command("psql", db);
        psql.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
            "-",
        ]);
        let leave_out = missing.clone();
        let (bytes, dropped) = dump::pipe_through(
            script,
            move |from, to| {
                let from = std::io::BufReader::with_capacity(64 << 10, from);
                pg_roles::drop_grants_to(from, std::io::BufWriter::new(to), &leave_out)
            },
            psql,
            first_error,
            input,
        )?;
        notes.push(format!(
            "{dropped} privilege statement(s) left out: they name role(s) missing on {}: {} \
             (declare `roles: true` on the database to carry the roles with the backup)",
            conn.location(),
            missing.join(", ")
        ));
        Ok(bytes)
    }

    /// After [`Loader::load`]: applies the source database's settings on success, removes a
    /// database the failed attempt created, and words the outcome.
    pub(super) async fn finish(
        &self,
        run: &Run,
        restored: Result<u64, ShardError>,
    ) -> Result<ShardOutcome, ShardError> {
        let (conn, db) = (self.conn.clone(), self.db.clone());
        let prepared =
            std::mem::take(&mut *self.prepared.lock().unwrap_or_else(|e| e.into_inner()));
        let notes = std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()));
        match restored {
            Ok(bytes) => {
                // After the content: a setting such as default_transaction_read_only must not get
                // in pg_restore's way.
                let refused = {
                    let (conn, db) = (conn.clone(), db.clone());
                    blocking(move || Ok(conn.apply_properties(&db, prepared.properties))).await?
                };
                Ok(ShardOutcome {
                    source_bytes: bytes,
                    tool_version: Some(run.tool_version("pg_restore")).filter(|v| !v.is_empty()),
                    detail: notes
                        .into_iter()
                        .chain(refused)
                        .collect::<Vec<_>>()
                        .join("; "),
                    ..Default::default()
                })
            }
            Err(e) => {
                if prepared.fresh {
                    // The restore rolled back; leave no empty database behind that it created.
                    let (conn, target) = (conn.clone(), db.clone());
                    if let Err(err) = blocking(move || conn.drop_if_still_empty(&target)).await {
                        tracing::warn!(
                            database = %db,
                            error = %err,
                            "could not remove the database a failed restore created"
                        );
                    }
                }
                // Errors of the preparation carry their context already; pg_restore's do not.
                if e.message.starts_with("pg_restore") {
                    return Err(conn.explain(e, &format!("restoring into database \"{db}\"")));
                }
                Err(ShardError {
                    permanent: e.permanent || is_permanent(&e.message),
                    ..e
                })
            }
        }
    }
}

/// What preparing the target did, for after pg_restore.
#[derive(Default)]
struct Prepared {
    /// The database did not exist: a failed restore removes it again.
    fresh: bool,
    /// The source database's settings and comment, to apply to a database this restore
    /// created: `(what, SQL)`.
    properties: Vec<(String, String)>,
}

/// Refuses a target database that exists and is not empty (the verify step of a restore); a
/// missing one is fine, the restore creates it.
pub async fn check_empty(run: &Run) -> Result<(), ShardError> {
    let (conn, db) = Conn::from_run(run)?;
    blocking(move || conn.ensure_empty(&db).map(drop)).await
}

/// Runs short blocking work (psql calls) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ShardError> + Send + 'static,
) -> Result<T, ShardError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ShardError::transient(format!("postgres helper thread failed: {e}")))?
}

/// How to reach the server of a shard: the spec's host, port and user plus the resolved password.
/// Deliberately not `Debug`: it holds the password.
#[derive(Clone)]
pub(super) struct Conn {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
}

impl Conn {
    /// The connection and database name of a task; fails permanently on a malformed resource.
    fn from_run(run: &Run) -> Result<(Conn, String), ShardError> {
        let (spec, db) = dump::named_database(run, "postgres")?;
        if db.is_empty() || db.contains('\0') {
            return Err(ShardError::permanent(format!(
                "invalid postgres database name {db:?}"
            )));
        }
        Ok((Conn::new(spec)?, db.to_owned()))
    }

    pub(super) fn new(spec: &DatabaseSpec) -> Result<Conn, ShardError> {
        Ok(Conn {
            host: spec.host.clone(),
            port: spec.port,
            user: spec.user.clone(),
            password: dump::password(spec)?,
        })
    }

    /// `host:port` for messages.
    pub(super) fn location(&self) -> String {
        dump::server_of(self.host.as_deref(), self.port)
    }

    /// A libpq tool connected to `db`: connection flags, `--no-password`, and the password only
    /// in the environment.
    pub(super) fn command(&self, program: &str, db: &str) -> Command {
        let mut cmd = Command::new(crate::tools::program(program));
        if let Some(host) = &self.host {
            cmd.arg("-h").arg(host);
        }
        if let Some(port) = self.port {
            cmd.arg("-p").arg(port.to_string());
        }
        if let Some(user) = &self.user {
            cmd.arg("-U").arg(user);
        }
        // A conninfo string, so that no database name can be mistaken for one.
        cmd.arg("--no-password").arg("-d").arg(conninfo_dbname(db));
        cmd.env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECS)
            .env("PGAPPNAME", "ferry-worker");
        if let Some(password) = &self.password {
            cmd.env("PGPASSWORD", password);
        }
        cmd
    }

    /// Runs one SQL statement with psql in `db` and returns its unaligned, tuples-only output.
    pub(super) fn psql(&self, db: &str, sql: &str) -> Result<String, ShardError> {
        let mut cmd = self.command("psql", db);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        dump::run_capture(cmd)
    }

    /// Runs SQL fed through psql's stdin, for statements that carry values of the source (a
    /// database setting may be a secret, e.g. a JWT key): arguments are visible to `ps`.
    fn psql_stdin(&self, db: &str, sql: &str) -> Result<(), ShardError> {
        self.psql_script(db, sql).map(drop)
    }

    /// Runs a script fed through psql's stdin (statements and meta-commands, several in one
    /// connection) and returns its unaligned, tuples-only output.
    fn psql_script(&self, db: &str, sql: &str) -> Result<String, ShardError> {
        let mut cmd = self.command("psql", db);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| ShardError::transient(format!("psql could not start: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A few hundred bytes: the pipe takes them before psql reads.
            let _ = stdin.write_all(sql.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ShardError::transient(format!("waiting for psql: {e}")))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(ShardError::transient(format!(
            "psql failed ({}): {}",
            out.status,
            tail(&out.stderr)
        )))
    }

    /// Runs a query returning one JSON object.
    fn psql_json(&self, db: &str, sql: &str) -> Result<Map<String, Value>, ShardError> {
        let out = self.psql(db, sql)?;
        serde_json::from_str(out.trim()).map_err(|e| {
            ShardError::transient(format!("unexpected answer from psql ({e}): {out:?}"))
        })
    }

    /// Adds context to an error, and makes it permanent when retrying cannot help.
    pub(super) fn explain(&self, e: ShardError, doing: &str) -> ShardError {
        if e == ShardError::cancelled() {
            return e;
        }
        ShardError {
            permanent: e.permanent || is_permanent(&e.message),
            message: format!("{doing} on {}: {}", self.location(), e.message),
        }
    }

    /// What a dump of `db` records about its source: encoding, locale, settings, comment and
    /// (with `roles`) the definitions of the roles its grants name.
    pub(super) fn dump_info(
        &self,
        db: &str,
        with_roles: bool,
        with_passwords: bool,
        tool_version: String,
    ) -> Result<DumpInfo, ShardError> {
        let mut options = self.database_options(db)?;
        if with_roles {
            let globals = self.role_definitions(db, &options, with_passwords)?;
            options.insert("globals".into(), Value::String(globals));
        }
        Ok(DumpInfo {
            engine: "postgres".into(),
            tool_version,
            database: Some(db.to_owned()),
            options,
        })
    }

    /// A connection to a server of this worker's own (a temporary recovery instance): its
    /// socket directory and port, no password.
    pub(super) fn local(socket_dir: &std::path::Path, port: u16, user: Option<String>) -> Conn {
        Conn {
            host: Some(socket_dir.to_string_lossy().into_owned()),
            port: Some(port),
            user,
            password: None,
        }
    }

    /// Whether `db` exists, asked of the maintenance database (locale-independent, unlike
    /// parsing a connection error).
    fn exists(&self, db: &str) -> Result<bool, ShardError> {
        let sql = format!(
            "SELECT count(*) FROM pg_catalog.pg_database WHERE datname = {}",
            quote_literal(db)
        );
        let out = self
            .psql(maintenance_db(db), &sql)
            .map_err(|e| self.explain(e, &format!("looking for database \"{db}\"")))?;
        Ok(out.trim() != "0")
    }

    /// The source database's encoding and locale, to create the restored one alike.
    pub(super) fn database_options(&self, db: &str) -> Result<Map<String, Value>, ShardError> {
        // Settings (ALTER DATABASE … SET) and the comment belong to the database, not to its
        // content, so pg_dump leaves them out without --create: carry them in DumpInfo.
        // to_jsonb(d) reads the locale-provider columns without naming them: they differ
        // between server versions (daticulocale in 15–16, datlocale from 17).
        // `roles`: the roles the database's privileges name (see pg_roles).
        let sql = format!(
            "SELECT json_build_object(\
                'encoding', pg_catalog.pg_encoding_to_char(d.encoding), \
                'lc_collate', d.datcollate, \
                'lc_ctype', d.datctype, \
                'locale_provider', j->>'datlocprovider', \
                'locale', coalesce(j->>'datlocale', j->>'daticulocale'), \
                'icu_rules', j->>'daticurules', \
                'settings', (SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s \
                             WHERE s.setdatabase = d.oid AND s.setrole = 0), \
                'comment', pg_catalog.shobj_description(d.oid, 'pg_database'), \
                'roles', {named_roles}) \
            FROM pg_catalog.pg_database d, pg_catalog.to_jsonb(d) j \
            WHERE d.datname = pg_catalog.current_database()",
            named_roles = pg_roles::NAMED_ROLES_SQL
        );
        match self.psql_json(db, &sql) {
            Ok(mut options) => {
                options.retain(|_, v| !v.is_null());
                Ok(options)
            }
            Err(e) => {
                // Tell a missing database (permanent) from a server we cannot reach.
                if let Ok(false) = self.exists(db) {
                    return Err(ShardError::permanent(format!(
                        "source database \"{db}\" does not exist on {}",
                        self.location()
                    )));
                }
                Err(self.explain(e, &format!("reading database \"{db}\"")))
            }
        }
    }

    /// Objects in `db` a restore could collide with and the database's encoding, or `None` when
    /// `db` does not exist.
    fn inspect(&self, db: &str) -> Result<Option<(u64, String)>, ShardError> {
        if !self.exists(db)? {
            return Ok(None);
        }
        let answer = self
            .psql_json(db, COUNT_OBJECTS)
            .map_err(|e| self.explain(e, &format!("inspecting database \"{db}\"")))?;
        let objects = answer
            .get("objects")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                ShardError::transient(format!("unexpected answer from psql: {answer:?}"))
            })?;
        let encoding = answer
            .get("encoding")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(Some((objects, encoding)))
    }

    /// Fails permanently if `db` exists and is not empty; returns its encoding if it exists.
    fn ensure_empty(&self, db: &str) -> Result<Option<String>, ShardError> {
        match self.inspect(db)? {
            None => Ok(None),
            Some((0, encoding)) => Ok(Some(encoding)),
            Some((n, _)) => Err(ShardError::permanent(format!(
                "target database \"{db}\" on {} is not empty ({n} objects); restore into a new \
                 database (--rewrite {db}=NEW) or replace it with --overwrite",
                self.location()
            ))),
        }
    }

    /// Makes `db` ready for pg_restore: created like the source (encoding, locale), dropped and
    /// recreated (overwrite), or checked to be empty.
    fn prepare_target(
        &self,
        db: &str,
        info: &DumpInfo,
        overwrite: bool,
    ) -> Result<Prepared, ShardError> {
        let create = create_database_sql(db, &info.options);
        // The usual cases (a new database; --overwrite) in one psql call: the wrapper and the
        // connection cost more than the statements.
        let done = self
            .psql_script(maintenance_db(db), &prepare_script(db, &create, overwrite))
            .map_err(|e| self.explain(e, &format!("creating database \"{db}\"")))?;
        let prepared = Prepared {
            fresh: true,
            properties: database_properties_sql(db, &info.options),
        };
        match done.trim() {
            PREPARE_CREATED => {
                tracing::info!(database = db, "created the target database");
                Ok(prepared)
            }
            PREPARE_REPLACED => {
                tracing::info!(
                    database = db,
                    "dropped and recreated the target database (--overwrite)"
                );
                Ok(Prepared {
                    fresh: false,
                    ..prepared
                })
            }
            // It exists and we may not replace it: restore into it only if it is empty.
            PREPARE_EXISTS => match self.ensure_empty(db)? {
                Some(encoding) => {
                    let wanted = info.options.get("encoding").and_then(Value::as_str);
                    if wanted.is_some_and(|w| !w.eq_ignore_ascii_case(&encoding)) {
                        tracing::warn!(
                            database = db,
                            target_encoding = %encoding,
                            source_encoding = ?wanted,
                            "restoring into an existing empty database with another encoding"
                        );
                    }
                    // Someone made it for us: its settings are theirs.
                    Ok(Prepared::default())
                }
                // Dropped since we looked: a retry creates it.
                None => Err(ShardError::transient(format!(
                    "target database \"{db}\" on {} vanished while the restore prepared it",
                    self.location()
                ))),
            },
            other => Err(ShardError::transient(format!(
                "unexpected answer from psql while preparing database \"{db}\": {other:?}"
            ))),
        }
    }

    /// Applies the source database's settings and comment. What the server refuses (a
    /// superuser-only setting, say) is reported, not fatal: it must not cost the data. Values
    /// stay out of messages; a setting may hold a secret.
    fn apply_properties(&self, db: &str, properties: Vec<(String, String)>) -> Vec<String> {
        let mut refused = Vec::new();
        for (what, sql) in properties {
            if let Err(e) = self.psql_stdin(maintenance_db(db), &sql) {
                tracing::warn!(database = db, property = %what, error = %e, "not restored");
                refused.push(format!("database {what} not restored: {}", e.message));
            }
        }
        refused
    }

    /// `pg_dumpall --roles-only` (password hashes only when asked), cut down to the roles the
    /// database's privileges name (`roles` in `options`, see [`pg_roles`]).
    pub(super) fn role_definitions(
        &self,
        db: &str,
        options: &Map<String, Value>,
        with_passwords: bool,
    ) -> Result<String, ShardError> {
        let named: std::collections::BTreeSet<String> =
            string_list(options.get("roles")).into_iter().collect();
        if named.is_empty() {
            return Ok(String::new());
        }
        let mut cmd = self.command("pg_dumpall", db);
        cmd.arg("--roles-only");
        if !with_passwords {
            cmd.arg("--no-role-passwords");
        }
        let all = dump::run_capture(cmd)
            .map_err(|e| self.explain(e, "reading the roles the database's grants name"))?;
        Ok(pg_roles::globals_for(&all, &named))
    }

    /// The roles the dump's privileges name that this server lacks, after creating those the
    /// backup carries definitions for (what was created, and what could not be, goes into
    /// `notes`).
    fn missing_roles(
        &self,
        db: &str,
        info: &DumpInfo,
        notes: &mut Vec<String>,
    ) -> Result<Vec<String>, ShardError> {
        let named = string_list(info.options.get("roles"));
        if named.is_empty() {
            return Ok(Vec::new());
        }
        let list = named
            .iter()
            .map(|r| quote_literal(r))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT coalesce(json_agg(n ORDER BY n), '[]') FROM unnest(ARRAY[{list}]::text[]) n \
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = n)"
        );
        let out = self
            .psql(db, &sql)
            .map_err(|e| self.explain(e, "looking for the roles the backup's grants name"))?;
        let mut missing: Vec<String> = serde_json::from_str(out.trim()).map_err(|e| {
            ShardError::transient(format!("unexpected answer from psql ({e}): {out:?}"))
        })?;
        let Some(globals) = info.options.get("globals").and_then(Value::as_str) else {
            return Ok(missing);
        };
        let mut created = Vec::new();
        for role in &missing {
            let (own, _) = pg_roles::role_statements(globals, role);
            if own.is_empty() {
                continue;
            }
            // Through stdin: with role_passwords the statements hold password hashes.
            match self.psql_stdin(maintenance_db(db), &own.join("\n")) {
                Ok(()) => created.push(role.clone()),
                Err(e) => notes.push(format!(
                    "role {role} not created: {}",
                    first_line(&e.message)
                )),
            }
        }
        for role in &created {
            for grant in pg_roles::role_statements(globals, role).1 {
                if let Err(e) = self.psql_stdin(maintenance_db(db), &grant) {
                    notes.push(format!(
                        "membership of role {role} not restored ({grant}): {}",
                        first_line(&e.message)
                    ));
                }
            }
        }
        if !created.is_empty() {
            tracing::info!(roles = ?created, "created the roles the backup's grants name");
            notes.push(format!(
                "created role(s) {} on {}",
                created.join(", "),
                self.location()
            ));
        }
        missing.retain(|r| !created.contains(r));
        Ok(missing)
    }

    /// Drops `db` if it holds nothing (after a failed restore into a database it created).
    fn drop_if_still_empty(&self, db: &str) -> Result<(), ShardError> {
        if let Some((0, _)) = self.inspect(db)? {
            let sql = format!("DROP DATABASE IF EXISTS {}", quote_ident(db));
            self.psql(maintenance_db(db), &sql)?;
        }
        Ok(())
    }
}

/// What [`prepare_script`] prints: the database was created, dropped and recreated, or left
/// alone because it exists and may not be replaced.
const PREPARE_CREATED: &str = "ferry:created";
const PREPARE_REPLACED: &str = "ferry:replaced";
const PREPARE_EXISTS: &str = "ferry:exists";

/// A psql script for the maintenance database: runs `create` (a `CREATE DATABASE` of `db`) when
/// `db` is missing; when it exists, drops and recreates it with `overwrite`, else leaves it.
/// Prints one of the `PREPARE_` marks.
fn prepare_script(db: &str, create: &str, overwrite: bool) -> String {
    let exists = if overwrite {
        format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE);\n{create};\n\\echo {PREPARE_REPLACED}\n",
            quote_ident(db)
        )
    } else {
        format!("\\echo {PREPARE_EXISTS}\n")
    };
    format!(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = {}) AS ferry_exists \\gset\n\
         \\if :ferry_exists\n{exists}\\else\n{create};\n\\echo {PREPARE_CREATED}\n\\endif\n",
        quote_literal(db)
    )
}

/// Counts what a restore could collide with: relations, routines, types, collations,
/// operators, text search objects, conversions and statistics in user schemas; user schemas but
/// `public`; extensions but plpgsql; large objects; event triggers, publications and foreign
/// servers. Temporary schemas of other sessions are not the database's content.
const COUNT_OBJECTS: &str = "WITH ns AS (\
        SELECT oid FROM pg_catalog.pg_namespace \
        WHERE nspname NOT IN ('pg_catalog', 'information_schema') \
          AND nspname !~ '^pg_(toast|temp_)') \
    SELECT json_build_object('objects', \
        (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace IN (SELECT oid FROM ns)) \
      + (SELECT count(*) FROM pg_catalog.pg_proc WHERE pronamespace IN (SELECT oid FROM ns)) \
      + (SELECT count(*) FROM pg_catalog.pg_type t \
         WHERE typnamespace IN (SELECT oid FROM ns) AND typrelid = 0 \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = t.oid)) \
      + (SELECT count(*) FROM pg_catalog.pg_collation WHERE collnamespace IN (SELECT oid FROM ns)) \
      + (SELECT count(*) FROM pg_catalog.pg_operator WHERE oprnamespace IN (SELECT oid FROM ns)) \
      + (SELECT count(*) FROM pg_catalog.pg_ts_config WHERE cfgnamespace IN (SELECT oid FROM ns)) \
      + (SELECT count(*) FROM pg_catalog.pg_ts_dict WHERE dictnamespace IN (SELECT oid FROM ns)) \
      + (SELECT count(*) FROM pg_catalog.pg_conversion WHERE connamespace IN (SELECT oid FROM ns)) \
      + (SELECT count(*) FROM pg_catalog.pg_statistic_ext WHERE stxnamespace IN (SELECT oid FROM ns)) \
      + (SELECT count(*) FROM pg_catalog.pg_namespace \
         WHERE oid IN (SELECT oid FROM ns) AND nspname <> 'public') \
      + (SELECT count(*) FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql') \
      + (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata) \
      + (SELECT count(*) FROM pg_catalog.pg_event_trigger) \
      + (SELECT count(*) FROM pg_catalog.pg_publication) \
      + (SELECT count(*) FROM pg_catalog.pg_foreign_server), \
      'encoding', pg_catalog.pg_encoding_to_char(\
        (SELECT encoding FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())))";

/// A JSON array of strings (absent or malformed: empty).
fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

/// psql's stderr from its first `ERROR:` to the end of that line: what follows (`LINE`,
/// `CONTEXT: COPY t, line 3: …`) can echo table data.
fn first_error(stderr: &[u8]) -> &[u8] {
    let Some(at) = stderr.windows(6).position(|w| w == b"ERROR:") else {
        return stderr;
    };
    let rest = &stderr[at..];
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    &rest[..end]
}

/// The database CREATE and DROP run from: `postgres`, unless that is the one being replaced.
fn maintenance_db(db: &str) -> &'static str {
    if db == "postgres" {
        "template1"
    } else {
        "postgres"
    }
}

/// `CREATE DATABASE` with the source's encoding and locale, from the pristine `template0` (the
/// only template that accepts another encoding or locale, and holds nothing of this server).
fn create_database_sql(db: &str, options: &Map<String, Value>) -> String {
    let option = |key: &str| {
        options
            .get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(db));
    for (key, clause) in [
        ("encoding", "ENCODING"),
        ("lc_collate", "LC_COLLATE"),
        ("lc_ctype", "LC_CTYPE"),
    ] {
        if let Some(value) = option(key) {
            sql.push_str(&format!(" {clause} {}", quote_literal(value)));
        }
    }
    // Only a non-libc provider needs saying, so that older servers still accept the statement.
    match option("locale_provider") {
        Some("i") => {
            sql.push_str(" LOCALE_PROVIDER icu");
            if let Some(locale) = option("locale") {
                sql.push_str(&format!(" ICU_LOCALE {}", quote_literal(locale)));
            }
            if let Some(rules) = option("icu_rules") {
                sql.push_str(&format!(" ICU_RULES {}", quote_literal(rules)));
            }
        }
        Some("b") => {
            sql.push_str(" LOCALE_PROVIDER builtin");
            if let Some(locale) = option("locale") {
                sql.push_str(&format!(" BUILTIN_LOCALE {}", quote_literal(locale)));
            }
        }
        _ => {}
    }
    sql
}

/// `ALTER DATABASE … SET` for each of the source's settings (`name=value` as the catalog keeps
/// them) and `COMMENT ON DATABASE`, each with a label for messages.
fn database_properties_sql(db: &str, options: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let settings = options.get("settings").and_then(Value::as_array);
    for setting in settings.into_iter().flatten().filter_map(Value::as_str) {
        let Some((name, value)) = setting.split_once('=') else {
            continue;
        };
        // Like pg_dump: list settings are stored as one string but must be set as a list, or
        // `search_path = 'a, b'` would become one schema named "a, b".
        let value = if LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
            split_setting_list(value)
                .iter()
                .map(|v| quote_literal(v))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            quote_literal(value)
        };
        out.push((
            format!("setting {name}"),
            format!(
                "ALTER DATABASE {} SET {} TO {value}",
                quote_ident(db),
                quote_ident(name)
            ),
        ));
    }
    if let Some(comment) = options.get("comment").and_then(Value::as_str) {
        out.push((
            "comment".to_owned(),
            format!(
                "COMMENT ON DATABASE {} IS {}",
                quote_ident(db),
                quote_literal(comment)
            ),
        ));
    }
    out
}

/// Settings whose value is a list of quoted elements (the server's GUC_LIST_QUOTE ones).
const LIST_SETTINGS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// Splits a list setting as the server prints it (`a, "B c", "x""y"`) into its elements.
fn split_setting_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut element = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                // A doubled quote is a quote; a single one ends the element.
                if c == '"' && chars.next_if_eq(&'"').is_none() {
                    break;
                }
                element.push(c);
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',' && !c.is_whitespace()) {
                element.push(c);
            }
        }
        out.push(element);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&',').is_none() {
            break;
        }
    }
    out
}

/// Errors no retry can fix: credentials, permissions, missing databases or roles, locales or
/// extensions the server lacks, tool and server versions that do not fit.
fn is_permanent(message: &str) -> bool {
    const MARKERS: &[&str] = &[
        "password authentication failed",
        "no password supplied",
        "permission denied",
        "no pg_hba.conf entry",
        "invalid locale name",
        "server version mismatch",
        "unsupported version",
        "is not available",
    ];
    MARKERS.iter().any(|m| message.contains(m))
        || message.lines().any(|line| {
            ["database \"", "role \""].iter().any(|what| {
                line.find(what)
                    .is_some_and(|i| line[i..].contains("\" does not exist"))
            })
        })
}

/// An SQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal, quoted the way `PQescapeLiteral` does (correct whatever
/// `standard_conforming_strings` is).
fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    if value.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `dbname='…'` as a libpq connection string.
fn conninfo_dbname(db: &str) -> String {
    let mut out = String::from("dbname='");
    for c in db.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preparation_is_one_script() {
        let create = "CREATE DATABASE \"it's\" TEMPLATE template0";
        let fresh = prepare_script("it's", create, false);
        assert!(fresh.starts_with(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = 'it''s') AS ferry_exists \\gset\n\\if :ferry_exists\n"
        ));
        // Missing: created. Present, no --overwrite: left alone, and said so.
        assert!(fresh.contains(&format!(
            "\\else\n{create};\n\\echo {PREPARE_CREATED}\n\\endif\n"
        )));
        assert!(fresh.contains(&format!("\\echo {PREPARE_EXISTS}\n")));
        assert!(!fresh.contains("DROP"));
        let replace = prepare_script("it's", create, true);
        assert!(replace.contains(&format!(
            "DROP DATABASE IF EXISTS \"it's\" WITH (FORCE);\n{create};\n\\echo {PREPARE_REPLACED}\n"
        )));
        assert!(!replace.contains(PREPARE_EXISTS));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("shop"), "\"shop\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("en_US.UTF-8"), "'en_US.UTF-8'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(conninfo_dbname("shop"), "dbname='shop'");
        assert_eq!(conninfo_dbname("a'b\\c"), "dbname='a\\'b\\\\c'");
    }

    #[test]
    fn create_statement_carries_encoding_and_locale() {
        let options: Map<String, Value> = serde_json::from_str(
            r#"{"encoding":"UTF8","lc_collate":"de_DE.UTF-8","lc_ctype":"C","locale_provider":"c"}"#,
        )
        .unwrap();
        assert_eq!(
            create_database_sql("shop copy", &options),
            "CREATE DATABASE \"shop copy\" TEMPLATE template0 ENCODING 'UTF8' \
             LC_COLLATE 'de_DE.UTF-8' LC_CTYPE 'C'"
        );
        let icu: Map<String, Value> = serde_json::from_str(
            r#"{"encoding":"UTF8","lc_collate":"C","lc_ctype":"C","locale_provider":"i","locale":"und-u-ks-level2"}"#,
        )
        .unwrap();
        assert!(
            create_database_sql("x", &icu)
                .ends_with(" LOCALE_PROVIDER icu ICU_LOCALE 'und-u-ks-level2'")
        );
        assert_eq!(
            create_database_sql("x", &Map::new()),
            "CREATE DATABASE \"x\" TEMPLATE template0"
        );
    }

    #[test]
    fn database_settings_become_alter_database() {
        let options: Map<String, Value> = serde_json::from_str(
            r#"{"settings":["search_path=sales, \"My Schema\", \"$user\"","TimeZone=Asia/Tokyo","myapp.flag=it's"],"comment":"shop data"}"#,
        )
        .unwrap();
        let sql: Vec<String> = database_properties_sql("s", &options)
            .into_iter()
            .map(|(_, sql)| sql)
            .collect();
        assert_eq!(
            sql,
            [
                "ALTER DATABASE \"s\" SET \"search_path\" TO 'sales', 'My Schema', '$user'",
                "ALTER DATABASE \"s\" SET \"TimeZone\" TO 'Asia/Tokyo'",
                "ALTER DATABASE \"s\" SET \"myapp.flag\" TO 'it''s'",
                "COMMENT ON DATABASE \"s\" IS 'shop data'",
            ]
        );
        assert_eq!(split_setting_list("\"\""), [""]);
        assert_eq!(split_setting_list("a,b"), ["a", "b"]);
        assert_eq!(split_setting_list("\"x\"\"y\" , z"), ["x\"y", "z"]);
    }

    #[test]
    fn permanent_errors_are_recognised() {
        assert!(is_permanent(
            "psql: error: connection to server on socket \"/run/x\" failed: FATAL:  database \"shop\" does not exist"
        ));
        assert!(is_permanent("FATAL:  role \"bob\" does not exist"));
        assert!(is_permanent(
            "FATAL:  password authentication failed for user \"bob\""
        ));
        assert!(!is_permanent(
            "connection to server at \"127.0.0.1\", port 1 failed: Connection refused"
        ));
        assert!(!is_permanent("ERROR:  relation \"t\" does not exist"));
    }
}
