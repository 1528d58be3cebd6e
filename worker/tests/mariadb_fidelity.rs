//! MariaDB fidelity: a backup restored under another database name must bring back every
//! object and value of the source — NocoBase lost default values, unique indexes, views,
//! functions, procedures and triggers; Ferry must lose none. Sources and targets are compared
//! by catalog (`SHOW CREATE …`) and content (ordered digests, byte-exact HEX), and by behaviour
//! (triggers fire, generated columns compute, auto-increment continues where it was).
//!
//! Needs the local MariaDB on 127.0.0.1:3306 (root, empty password) and its `mariadb` client;
//! every test fails loudly when they are missing. Every database and user a test creates is
//! dropped at its end, also when it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferry_model::app::{DatabaseSpec, Engine};
use ferry_model::task::{Resource, ShardOp};
use ferry_worker::engines::ShardError;
use ferry_worker::engines::dump::{DumpInfo, read_dump};

const HOST: &str = "127.0.0.1";
const PORT: u16 = 3306;
const SERVER: &str = "127.0.0.1:3306";

// ---------------------------------------------------------------------------------------------
// Talking to the server

/// The `mariadb` client as root over TCP, printing tab-separated rows. `--comments` so that
/// comments in routine and trigger bodies reach the server (the client strips them otherwise).
fn client(db: Option<&str>) -> Command {
    let mut cmd = Command::new("mariadb");
    cmd.args([
        "-h",
        HOST,
        "-P",
        "3306",
        "--protocol=TCP",
        "-u",
        "root",
        "--connect-timeout=10",
        "--default-character-set=utf8mb4",
        "--batch",
        "--skip-column-names",
        "--comments",
    ])
    .env_remove("MYSQL_PWD");
    if let Some(db) = db {
        cmd.arg(format!("--database={db}"));
    }
    cmd
}

/// Runs a script (DELIMITER works) and returns its output, or the client's error.
fn try_sql(db: Option<&str>, script: &str) -> Result<String, String> {
    let mut child = client(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the mariadb client: {e}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let script = script.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Runs a script that must succeed.
#[track_caller]
fn sql(db: Option<&str>, script: &str) -> String {
    match try_sql(db, script) {
        Ok(out) => out,
        Err(e) => panic!("SQL failed: {e}\n--- script ---\n{script}"),
    }
}

/// One value.
#[track_caller]
fn value(db: Option<&str>, script: &str) -> String {
    sql(db, script).trim_end_matches('\n').to_owned()
}

/// Fails the test, loudly, when MariaDB is not there.
fn require_mariadb() {
    if let Err(e) = try_sql(None, "SELECT 1") {
        panic!(
            "these tests need the MariaDB service on {SERVER} (user root, empty password) and \
             its `mariadb` client; start it with scripts/setup. The client said: {e}"
        );
    }
}

fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Drops every database and user a test created, whatever happens.
#[derive(Default)]
struct Cleanup {
    databases: Vec<String>,
    users: Vec<String>,
}

impl Cleanup {
    /// A fresh database name, registered for dropping.
    fn database(&mut self, tag: &str) -> String {
        let name = format!("ferry_t_{}_{tag}", common::uuid_like());
        self.databases.push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for db in &self.databases {
            if let Err(e) = try_sql(None, &format!("DROP DATABASE IF EXISTS {}", ident(db))) {
                eprintln!("cleanup: could not drop database {db}: {e}");
            }
        }
        for user in &self.users {
            let sql = format!(
                "DROP USER IF EXISTS {u}@'%', {u}@'localhost'",
                u = literal(user)
            );
            if let Err(e) = try_sql(None, &sql) {
                eprintln!("cleanup: could not drop user {user}: {e}");
            }
        }
    }
}

fn spec(db: &str) -> DatabaseSpec {
    DatabaseSpec {
        name: "legacy".into(),
        engine: Engine::Mariadb,
        host: Some(HOST.into()),
        port: Some(PORT),
        user: Some("root".into()),
        password_env: None,
        password_file: None,
        databases: vec![db.into()],
        db: None,
        roles: false,
        role_passwords: false,
        pitr: false,
    }
}

fn resource_with(spec: DatabaseSpec, db: &str) -> Resource {
    Resource::Database {
        spec,
        database: Some(db.into()),
    }
}

fn resource(db: &str) -> Resource {
    resource_with(spec(db), db)
}

/// The dump inside the one archive stored under `dir`.
fn stored_dump(dir: &Path) -> (DumpInfo, Vec<u8>) {
    fn archives(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                archives(&path, out);
            } else if path.to_string_lossy().ends_with(".tar.zst") {
                out.push(path);
            }
        }
    }
    let mut found = Vec::new();
    archives(dir, &mut found);
    assert_eq!(found.len(), 1, "expected one archive, found {found:?}");
    let file = std::fs::File::open(&found[0]).unwrap();
    let mut decoder = zstd::stream::read::Decoder::new(file).unwrap();
    read_dump(&mut decoder, |info, dump| {
        let mut bytes = Vec::new();
        dump.read_to_end(&mut bytes)
            .map_err(|e| ShardError::transient(e.to_string()))?;
        Ok((info.clone(), bytes))
    })
    .unwrap()
}

/// Asserts that the dump neither creates nor selects a database (no `--databases`), so that it
/// lands in whatever database the client is pointed at.
fn assert_portable(dump: &[u8], source: &str) {
    let text = String::from_utf8_lossy(dump);
    let pinned: Vec<&str> = text
        .lines()
        .filter(|l| {
            let l = l.to_ascii_uppercase();
            l.starts_with("USE ") || l.contains("CREATE DATABASE")
        })
        .collect();
    assert!(
        pinned.is_empty(),
        "the dump selects a database: {pinned:#?}"
    );
    assert!(!text.contains(&format!("USE `{source}`")));
}

// ---------------------------------------------------------------------------------------------
// Comparing databases

/// Everything about a database that a restore must reproduce, keyed by object, with the
/// database's own name replaced by `<DB>`.
type Snapshot = BTreeMap<String, String>;

fn snapshot(db: &str) -> Snapshot {
    let mut snap = Snapshot::new();
    let name = literal(db);
    snap.insert(
        "schema defaults".into(),
        value(
            None,
            &format!(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
                 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {name}"
            ),
        ),
    );
    let tables = sql(
        None,
        &format!(
            "SELECT TABLE_NAME, TABLE_TYPE, IFNULL(AUTO_INCREMENT, '-') FROM \
             information_schema.TABLES WHERE TABLE_SCHEMA = {name} ORDER BY TABLE_NAME"
        ),
    );
    for line in tables.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let [table, kind, auto_increment] = cols[..] else {
            panic!("unexpected TABLES row {line:?}")
        };
        let q = ident(table);
        match kind {
            "VIEW" => {
                snap.insert(
                    format!("view {table}"),
                    value(Some(db), &format!("SHOW CREATE VIEW {q}")),
                );
            }
            "SEQUENCE" => {
                snap.insert(
                    format!("sequence {table}"),
                    value(Some(db), &format!("SHOW CREATE SEQUENCE {q}")),
                );
            }
            _ => {
                snap.insert(
                    format!("table {table}"),
                    value(Some(db), &format!("SHOW CREATE TABLE {q}")),
                );
                snap.insert(format!("auto_increment {table}"), auto_increment.to_owned());
                snap.insert(
                    format!("data {table}"),
                    digest(db, table, kind == "SYSTEM VERSIONED"),
                );
            }
        }
    }
    let routines = sql(
        None,
        &format!(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA = {name} ORDER BY ROUTINE_TYPE, ROUTINE_NAME"
        ),
    );
    for line in routines.lines() {
        let (kind, routine) = line.split_once('\t').unwrap();
        snap.insert(
            format!("{} {routine}", kind.to_lowercase()),
            value(Some(db), &format!("SHOW CREATE {kind} {}", ident(routine))),
        );
    }
    let triggers = sql(
        None,
        &format!(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, \
             ACTION_ORDER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {name} \
             ORDER BY TRIGGER_NAME"
        ),
    );
    for line in triggers.lines() {
        let (trigger, placement) = line.split_once('\t').unwrap();
        snap.insert(format!("trigger order {trigger}"), placement.to_owned());
        let create = value(Some(db), &format!("SHOW CREATE TRIGGER {}", ident(trigger)));
        // The last column is when the trigger was created: the copy's is newer, of course.
        let (definition, _created) = create.rsplit_once('\t').unwrap();
        snap.insert(format!("trigger {trigger}"), definition.to_owned());
    }
    let events = sql(
        None,
        &format!(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {name} \
             ORDER BY EVENT_NAME"
        ),
    );
    for event in events.lines() {
        snap.insert(
            format!("event {event}"),
            value(Some(db), &format!("SHOW CREATE EVENT {}", ident(event))),
        );
    }
    snap.into_iter()
        .map(|(k, v)| (k, v.replace(db, "<DB>")))
        .collect()
}

/// Row count and an order-independent, byte-exact digest of a table's rows (every column,
/// invisible ones too; with its history for a system-versioned table).
fn digest(db: &str, table: &str, versioned: bool) -> String {
    let mut columns: Vec<String> = sql(
        None,
        &format!(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} \
             AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
            literal(db),
            literal(table)
        ),
    )
    .lines()
    .map(ident)
    .collect();
    let mut from = ident(table);
    if versioned {
        columns.extend(["ROW_START".to_owned(), "ROW_END".to_owned()]);
        from.push_str(" FOR SYSTEM_TIME ALL");
    }
    let row = columns
        .iter()
        .map(|c| format!("IFNULL(HEX(CONCAT({c})), '-')"))
        .collect::<Vec<_>>()
        .join(", ");
    value(
        Some(db),
        &format!(
            "SET SESSION group_concat_max_len = 1073741824;\n\
             SELECT COUNT(*), MD5(GROUP_CONCAT(h ORDER BY h SEPARATOR ',')) \
             FROM (SELECT MD5(CONCAT_WS(',', {row})) AS h FROM {from}) AS rows_"
        ),
    )
}

/// Asserts two snapshots are equal, listing every difference.
#[track_caller]
fn assert_same(source: &Snapshot, target: &Snapshot, what: &str) {
    let keys: BTreeSet<&String> = source.keys().chain(target.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| source.get(*k) != target.get(*k))
        .map(|k| {
            format!(
                "{k}:\n    source: {:?}\n    target: {:?}",
                source.get(k),
                target.get(k)
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} differences\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

fn count_kind(snap: &Snapshot, prefix: &str) -> usize {
    snap.keys().filter(|k| k.starts_with(prefix)).count()
}

// ---------------------------------------------------------------------------------------------
// The source

/// Strings that must come back byte for byte: emoji (with ZWJ sequences), CJK, Hangul,
/// combining marks, escapes, trailing spaces, a NUL.
const TEXTS: &[&str] = &[
    "😀🎉 👩‍👩‍👧‍👦 🇯🇵",
    "漢字かなカナ 한국어 中文",
    "e\u{301} Å ﬁ ß",
    "tab\tnewline\nreturn\r backslash\\ quote' dq\" zero\u{0}end",
    "trailing spaces   ",
];

/// Latin-1 representable, for a latin1 column.
const LATIN1: &str = "Ærøskøbing café ñ";

/// Creates the fidelity source: every kind of object and value MariaDB keeps.
fn create_source(db: &str) {
    sql(
        None,
        &format!(
            "CREATE DATABASE {} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            ident(db)
        ),
    );
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let mut script = String::from(
        r#"
CREATE TABLE tenants (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  status ENUM('active','suspended') NOT NULL DEFAULT 'active',
  flags SET('a','b','c') NOT NULL DEFAULT 'a,c',
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  token CHAR(36) NOT NULL DEFAULT (UUID()),
  quota BIGINT NOT NULL DEFAULT (1024 * 1024),
  settings JSON NOT NULL DEFAULT '{}',
  score INT NOT NULL DEFAULT -1 COMMENT 'it''s a score 🚀',
  UNIQUE KEY uk_name (name),
  KEY ix_created (created_at),
  KEY ix_score_desc (score DESC)
) ENGINE=InnoDB COMMENT='tenants — ünïcode comment';

CREATE TABLE users (
  id INT NOT NULL AUTO_INCREMENT,
  tenant_id INT UNSIGNED NOT NULL,
  email VARCHAR(190) NOT NULL,
  slug VARCHAR(64) COLLATE utf8mb4_bin NOT NULL,
  display_name VARCHAR(100) COLLATE utf8mb4_unicode_ci NOT NULL DEFAULT '',
  bio TEXT,
  age TINYINT UNSIGNED CHECK (age < 200),
  internal_note VARCHAR(20) INVISIBLE DEFAULT 'hidden',
  PRIMARY KEY (id),
  UNIQUE KEY uk_email (email),
  UNIQUE KEY uk_tenant_slug (tenant_id, slug),
  KEY ix_display (display_name(10)),
  FULLTEXT KEY ft_bio (bio),
  CONSTRAINT fk_users_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id)
    ON DELETE CASCADE ON UPDATE RESTRICT,
  CONSTRAINT chk_email CHECK (email LIKE '%@%')
) ENGINE=InnoDB;

CREATE TABLE counters (name VARCHAR(20) PRIMARY KEY, n INT NOT NULL DEFAULT 0);

CREATE TABLE orders (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id INT NULL,
  code VARCHAR(32) NOT NULL,
  qty INT NOT NULL DEFAULT 1 CHECK (qty > 0),
  price DECIMAL(12,2) NOT NULL,
  total DECIMAL(14,2) AS (qty * price) STORED,
  label VARCHAR(80) AS (CONCAT(code, ' x', qty)) VIRTUAL,
  note VARCHAR(100) NOT NULL DEFAULT 'n/a',
  created DATE NOT NULL DEFAULT (CURDATE()),
  KEY ix_total (total),
  CONSTRAINT fk_orders_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL
) ENGINE=InnoDB;

CREATE TABLE audit (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  order_id BIGINT NOT NULL,
  action VARCHAR(200) NOT NULL,
  at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB;

CREATE TABLE texts (
  id INT NOT NULL PRIMARY KEY,
  ci VARCHAR(100) COLLATE utf8mb4_unicode_ci,
  bin VARCHAR(100) COLLATE utf8mb4_bin,
  def VARCHAR(100),
  l1 VARCHAR(100) CHARACTER SET latin1 COLLATE latin1_swedish_ci,
  fixed CHAR(10),
  big MEDIUMTEXT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE blobs (
  id INT NOT NULL PRIMARY KEY,
  b LONGBLOB,
  vb VARBINARY(16),
  fixed BINARY(4),
  bits BIT(10),
  pt POINT
) ENGINE=InnoDB;

CREATE TABLE nums (
  id INT NOT NULL PRIMARY KEY,
  d DOUBLE,
  f FLOAT,
  dec_ DECIMAL(30,10),
  big BIGINT UNSIGNED,
  neg BIGINT,
  t TIME(6),
  y YEAR,
  dt DATETIME(6),
  ts TIMESTAMP(6) NULL DEFAULT NULL
) ENGINE=InnoDB;

CREATE TABLE prices (id INT NOT NULL PRIMARY KEY, amount DECIMAL(10,2)) WITH SYSTEM VERSIONING;

CREATE TABLE legacy_log (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  msg VARCHAR(50) NOT NULL DEFAULT 'x'
) ENGINE=MyISAM AUTO_INCREMENT=40;

CREATE TABLE readings (
  id INT NOT NULL,
  y INT NOT NULL,
  v INT,
  PRIMARY KEY (id, y)
) PARTITION BY RANGE (y) (PARTITION p_old VALUES LESS THAN (2000),
                          PARTITION p_new VALUES LESS THAN MAXVALUE);

CREATE TABLE tags (tag VARCHAR(20), n INT);

CREATE SEQUENCE invoice_seq START WITH 1000 INCREMENT BY 10 CACHE 20;

DELIMITER //
CREATE TRIGGER orders_bi BEFORE INSERT ON orders FOR EACH ROW
BEGIN
  -- normalise the code
  SET NEW.code = UPPER(NEW.code);
  IF NEW.note = '' THEN SET NEW.note = 'none'; END IF;
END//
CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW
  INSERT INTO audit (order_id, action) VALUES (NEW.id, CONCAT('created ', NEW.code))//
CREATE TRIGGER orders_ai_count AFTER INSERT ON orders FOR EACH ROW FOLLOWS orders_ai
  UPDATE counters SET n = n + 1 WHERE name = 'orders'//
CREATE PROCEDURE add_order(IN p_user INT, IN p_code VARCHAR(32), INOUT p_qty INT, OUT p_id BIGINT)
    MODIFIES SQL DATA
    COMMENT 'creates an order — ünïcode'
BEGIN
  -- a line comment that must survive
  /* a block comment */
  # a hash comment
  INSERT INTO orders (user_id, code, qty, price) VALUES (p_user, p_code, p_qty, 1.50);
  SET p_id = LAST_INSERT_ID();
  SET p_qty = p_qty * 2;
END//
CREATE FUNCTION user_spent(p_user INT) RETURNS DECIMAL(14,2)
    READS SQL DATA
    DETERMINISTIC
    SQL SECURITY INVOKER
BEGIN
  DECLARE s DECIMAL(14,2);
  SELECT COALESCE(SUM(total), 0) INTO s FROM orders WHERE user_id = p_user; -- sum
  RETURN s;
END//
CREATE FUNCTION greet(p VARCHAR(50)) RETURNS VARCHAR(80) CHARSET utf8mb4 COLLATE utf8mb4_bin
    DETERMINISTIC
  RETURN CONCAT('héllo ', p, ' 👋')//
CREATE EVENT purge_audit
    ON SCHEDULE EVERY 1 DAY STARTS '2031-01-01 03:00:00' ENDS '2032-01-01 00:00:00'
    ON COMPLETION PRESERVE DISABLE COMMENT 'nightly purge'
  DO DELETE FROM audit WHERE at < NOW() - INTERVAL 30 DAY//
CREATE EVENT bump ON SCHEDULE AT '2035-06-01 00:00:00' ON COMPLETION PRESERVE ENABLE
  DO UPDATE counters SET n = n + 100 WHERE name = 'orders'//
DELIMITER ;

CREATE VIEW order_totals AS
  SELECT u.email, SUM(o.total) AS spent, COUNT(*) AS n
  FROM orders o JOIN users u ON u.id = o.user_id GROUP BY u.email;
CREATE ALGORITHM=MERGE SQL SECURITY INVOKER VIEW active_tenants AS
  SELECT id, name FROM tenants WHERE status = 'active' WITH CHECK OPTION;
CREATE VIEW big_spenders AS SELECT email FROM order_totals WHERE spent > 10;

INSERT INTO counters VALUES ('orders', 0);
INSERT INTO tenants (name, settings) VALUES ('acme', '{"plan": "gold", "seats": 10}'), ('globex', DEFAULT);
INSERT INTO tenants (name, status, flags, score) VALUES ('initech', 'suspended', 'b', 42);
INSERT INTO users (tenant_id, email, slug, display_name, bio, age, internal_note) VALUES
  (1, 'ann@acme.test', 'ann', 'Ann', 'likes databases', 30, 'vip'),
  (1, 'bob@acme.test', 'Bob', 'Bob 😀', NULL, NULL, DEFAULT),
  (2, 'cy@globex.test', 'ann', '漢字', 'full text bio', 41, NULL);
INSERT INTO orders (user_id, code, qty, price, note) VALUES
  (1, 'a-1', 2, 9.99, ''), (1, 'a-2', 1, 100.00, 'rush'), (2, 'b-1', 5, 0.10, DEFAULT),
  (3, 'gone-1', 1, 1, ''), (3, 'gone-2', 1, 1, ''), (3, 'gone-3', 1, 1, '');
DELETE FROM orders WHERE code LIKE 'GONE-%';
INSERT INTO nums VALUES
  (1, 0.1 + 0.2, 3.14159, 12345678901234567890.0123456789, 18446744073709551615,
   -9223372036854775808, '-838:59:59.000000', 2155, '9999-12-31 23:59:59.999999',
   '2038-01-18 00:00:00.999999'),
  (2, 1e308, -1.5e-10, -0.0000000001, 0, 0, '00:00:00.000001', 1901,
   '1000-01-01 00:00:00', '2000-02-29 12:00:00.5'),
  (3, 4.9e-324, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO prices VALUES (1, 10.00), (2, 5.00);
UPDATE prices SET amount = 11.00 WHERE id = 1;
UPDATE prices SET amount = 12.00 WHERE id = 1;
DELETE FROM prices WHERE id = 2;
INSERT INTO legacy_log (msg) VALUES ('one'), ('two'), ('three');
DELETE FROM legacy_log WHERE msg = 'three';
INSERT INTO readings VALUES (1, 1999, 10), (1, 2024, 20), (2, 1850, NULL);
INSERT INTO tags VALUES ('a', 1), ('a', 1), ('b', NULL), ('', 0);
SELECT NEXTVAL(invoice_seq);
SELECT NEXTVAL(invoice_seq);
"#,
    );
    for (i, text) in TEXTS.iter().enumerate() {
        let utf8 = format!("CONVERT(X'{}' USING utf8mb4)", hex(text.as_bytes()));
        script.push_str(&format!(
            "INSERT INTO texts (id, ci, bin, def, fixed, big) VALUES ({}, {utf8}, {utf8}, {utf8}, LEFT({utf8}, 10), REPEAT({utf8}, 1000));\n",
            i + 1
        ));
    }
    script.push_str(&format!(
        "INSERT INTO texts (id, l1, ci) VALUES (100, CONVERT(X'{h}' USING utf8mb4), ''), (101, NULL, NULL);\n",
        h = hex(LATIN1.as_bytes())
    ));
    script.push_str(&format!(
        "INSERT INTO blobs VALUES
           (1, X'{all}', X'00000000', X'61', b'1010101010', ST_GeomFromText('POINT(1 2)')),
           (2, X'', X'', X'00000000', b'0', NULL),
           (3, NULL, NULL, NULL, NULL, NULL),
           (4, REPEAT(X'00FF5C270A0D1A', 450000), X'5C30', X'27272727', b'1111111111',
            ST_GeomFromText('POINT(-0.5 1e10)'));\n",
        all = hex(&all_bytes)
    ));
    sql(Some(db), &script);
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread")]
async fn every_object_and_value_survives_a_restore_under_another_name() {
    require_mariadb();
    let mut dbs = Cleanup::default();
    let source = dbs.database("src");
    let target = dbs.database("copy");
    create_source(&source);
    let before = snapshot(&source);
    // The fixture really holds every kind of object (a broken fixture must not pass vacuously).
    for (prefix, n) in [
        ("table ", 12),
        ("view ", 3),
        ("sequence ", 1),
        ("procedure ", 1),
        ("function ", 2),
        ("trigger order ", 3),
        ("event ", 2),
    ] {
        assert_eq!(count_kind(&before, prefix), n, "{prefix}in {before:#?}");
    }
    assert_eq!(before["auto_increment orders"], "7");
    assert_eq!(
        before["schema defaults"], "utf8mb4\tutf8mb4_unicode_ci",
        "the schema default is the non-default one"
    );

    let dir = tempfile::tempdir().unwrap();
    let outcome = common::round_trip(dir.path(), resource(&source), resource(&target), false)
        .await
        .expect("round trip");
    assert!(outcome.source_bytes > 3_000_000, "{outcome:?}");
    assert!(
        outcome
            .tool_version
            .as_deref()
            .is_some_and(|v| v.contains("MariaDB")),
        "{outcome:?}"
    );

    // The archive: what it says about itself, and a dump that selects no database.
    let (info, dump) = stored_dump(dir.path());
    assert_eq!(info.engine, "mariadb");
    assert_eq!(info.database.as_deref(), Some(source.as_str()));
    assert_eq!(info.options["charset"], "utf8mb4");
    assert_eq!(info.options["collation"], "utf8mb4_unicode_ci");
    assert_portable(&dump, &source);

    // (1)–(4): catalog, data, auto-increment counters, schema defaults.
    let source_now = snapshot(&source);
    assert_same(
        &before,
        &source_now,
        "the backup or restore changed the source",
    );
    let copy = snapshot(&target);
    assert_same(&before, &copy, "source vs restored copy");

    // (2) Strings come back byte for byte, whatever the column's collation and charset.
    for (i, text) in TEXTS.iter().enumerate() {
        let expected = hex(text.as_bytes());
        let got = value(
            Some(&target),
            &format!(
                "SELECT CONCAT_WS(',', HEX(ci), HEX(bin), HEX(def), HEX(big)) FROM texts WHERE id = {}",
                i + 1
            ),
        );
        assert_eq!(
            got,
            [
                expected.clone(),
                expected.clone(),
                expected.clone(),
                expected.repeat(1000)
            ]
            .join(","),
            "text {text:?}"
        );
    }
    assert_eq!(
        value(
            Some(&target),
            "SELECT HEX(CONVERT(l1 USING utf8mb4)) FROM texts WHERE id = 100"
        ),
        hex(LATIN1.as_bytes())
    );
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    assert_eq!(
        value(Some(&target), "SELECT HEX(b) FROM blobs WHERE id = 1"),
        hex(&all_bytes)
    );
    // Numbers compare as numbers too (a text digest could hide a rounding).
    let n = value(
        None,
        &format!(
            "SELECT COUNT(*) FROM {s}.nums a JOIN {t}.nums b USING (id) WHERE a.d <=> b.d \
             AND a.f <=> b.f AND a.dec_ <=> b.dec_ AND a.big <=> b.big AND a.neg <=> b.neg \
             AND a.t <=> b.t AND a.y <=> b.y AND a.dt <=> b.dt AND a.ts <=> b.ts",
            s = ident(&source),
            t = ident(&target)
        ),
    );
    assert_eq!(n, "3", "numeric values differ after the restore");

    // (5) Behaviour: triggers fire, generated columns compute, ids continue where they were.
    let insert = "INSERT INTO orders (user_id, code, qty, price, note) VALUES (1, 'late-order', 3, 2.50, '');\n\
                  SELECT LAST_INSERT_ID();";
    let source_id = value(Some(&source), insert);
    let target_id = value(Some(&target), insert);
    assert_eq!(source_id, "7");
    assert_eq!(target_id, source_id, "the next auto-increment id");
    assert_eq!(
        value(
            Some(&target),
            "SELECT CONCAT_WS('|', code, total, label, note) FROM orders WHERE id = 7"
        ),
        "LATE-ORDER|7.50|LATE-ORDER x3|none",
        "BEFORE INSERT trigger and generated columns"
    );
    assert_eq!(
        value(Some(&target), "SELECT action FROM audit WHERE order_id = 7"),
        "created LATE-ORDER",
        "AFTER INSERT trigger"
    );
    assert_eq!(
        value(
            Some(&target),
            "SELECT n FROM counters WHERE name = 'orders'"
        ),
        value(
            Some(&source),
            "SELECT n FROM counters WHERE name = 'orders'"
        ),
        "the second AFTER INSERT trigger"
    );
    assert_eq!(
        value(
            Some(&target),
            "SET @q = 2; CALL add_order(2, 'proc', @q, @id); SELECT CONCAT_WS('|', @q, @id, user_spent(2), greet('x'))"
        ),
        "4|8|3.50|héllo x 👋"
    );
    for (bad, why) in [
        (
            "INSERT INTO orders (code, qty, price) VALUES ('x', 0, 1)",
            "CONSTRAINT",
        ),
        (
            "INSERT INTO users (tenant_id, email, slug) VALUES (1, 'ann@acme.test', 'z')",
            "Duplicate entry",
        ),
        (
            "INSERT INTO users (tenant_id, email, slug) VALUES (2, 'new@globex.test', 'ann')",
            "Duplicate entry",
        ),
        (
            "INSERT INTO users (tenant_id, email, slug) VALUES (999, 'x@y.test', 'x')",
            "foreign key constraint fails",
        ),
        (
            "INSERT INTO users (tenant_id, email, slug) VALUES (1, 'no-at-sign', 'y')",
            "chk_email",
        ),
    ] {
        let err = try_sql(Some(&target), bad).expect_err(bad);
        assert!(err.contains(why), "{bad}: expected {why:?}, got {err}");
    }
    let next = |db: &str| -> i64 {
        value(Some(db), "SELECT NEXTVAL(invoice_seq)")
            .parse()
            .unwrap()
    };
    let (s, t) = (next(&source), next(&target));
    assert!(
        t >= s,
        "the copy's sequence would hand out {t}, which the source already used (next {s})"
    );
}

/// Runs the verify and restore steps of a restore job for an archive already stored.
async fn restore_archive(
    dir: &Path,
    key: &str,
    sha256: &str,
    target: Resource,
    overwrite: bool,
) -> Result<(), ShardError> {
    let storage = common::storage(dir);
    let mut verify = common::task(
        ShardOp::Verify {
            check_target: !overwrite,
            archive: true,
            read_data: false,
        },
        target.clone(),
        &storage,
        key,
    );
    verify.expected_sha256 = Some(sha256.to_owned());
    common::run(verify).await?;
    let mut restore = common::task(ShardOp::Restore, target, &storage, key);
    restore.expected_sha256 = Some(sha256.to_owned());
    restore.overwrite = overwrite;
    common::run(restore).await.map(drop)
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_naming_the_source_are_retargeted_and_the_source_is_never_touched() {
    require_mariadb();
    let mut dbs = Cleanup::default();
    let source = dbs.database("src");
    let copy = dbs.database("copy");
    let second = dbs.database("copy2");
    // Objects created under one database collation, the database then changed to another:
    // mysqldump wraps such objects in `ALTER DATABASE <source> …` to recreate them faithfully.
    // And triggers created with qualified names, which the server keeps verbatim.
    sql(
        None,
        &format!(
            "CREATE DATABASE {} CHARACTER SET latin1 COLLATE latin1_swedish_ci",
            ident(&source)
        ),
    );
    sql(
        None,
        &format!(
            "CREATE TABLE {q}.t (id INT PRIMARY KEY, s VARCHAR(20));
             CREATE TABLE {q}.fired (id INT);
             DELIMITER //
             CREATE TRIGGER {q}.t_bi BEFORE INSERT ON {q}.t FOR EACH ROW SET NEW.s = CONCAT(NEW.s, '!')//
             CREATE TRIGGER IF NOT EXISTS {bare}.t_ai
               AFTER INSERT
               ON {bare}.t FOR EACH ROW INSERT INTO fired VALUES (NEW.id)//
             CREATE PROCEDURE {q}.old_p() SELECT 'old'//
             CREATE EVENT {q}.old_e ON SCHEDULE EVERY 1 WEEK STARTS '2031-01-01 00:00:00' DISABLE DO DELETE FROM t//
             DELIMITER ;
             ALTER DATABASE {q} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
             CREATE FUNCTION {q}.new_f() RETURNS INT DETERMINISTIC RETURN 7;
             INSERT INTO {q}.t VALUES (1, 'a');",
            q = ident(&source),
            bare = source
        ),
    );
    let before = snapshot(&source);
    assert!(before["procedure old_p"].ends_with("latin1_swedish_ci"));
    assert!(before["trigger t_ai"].ends_with("latin1_swedish_ci"));
    assert!(before["function new_f"].ends_with("utf8mb4_unicode_ci"));
    assert_eq!(value(Some(&source), "SELECT COUNT(*) FROM fired"), "1");

    let dir = tempfile::tempdir().unwrap();
    let key = "shards/retarget.tar.zst";
    let backup = common::run(common::task(
        ShardOp::Backup,
        resource(&source),
        &common::storage(dir.path()),
        key,
    ))
    .await
    .expect("backup");
    let (_, dump) = stored_dump(dir.path());
    let text = String::from_utf8_lossy(&dump);
    assert!(
        text.contains(&format!("ALTER DATABASE `{source}` CHARACTER SET latin1")),
        "the scenario did not make the tool switch collations"
    );
    assert!(
        text.contains(&format!("ON `{source}`.t FOR EACH ROW")),
        "the scenario did not dump a qualified trigger"
    );
    assert_portable(&dump, &source);

    // A copy beside the original, on the same server: the restore must neither fail on the
    // source's triggers nor touch the source.
    restore_archive(dir.path(), key, &backup.sha256, resource(&copy), false)
        .await
        .expect("restore beside the source");
    assert_same(
        &before,
        &snapshot(&source),
        "the restore changed the source",
    );
    assert_same(&before, &snapshot(&copy), "source vs copy");
    // The copy's triggers fire on the copy's tables, not the source's.
    assert_eq!(
        value(
            Some(&copy),
            "INSERT INTO t VALUES (2, 'b'); SELECT CONCAT_WS('|', (SELECT s FROM t WHERE id = 2), (SELECT COUNT(*) FROM fired))"
        ),
        "b!|2"
    );
    assert_eq!(value(Some(&source), "SELECT COUNT(*) FROM fired"), "1");

    // The app is gone: the source no longer exists when another copy is restored.
    sql(None, &format!("DROP DATABASE {}", ident(&source)));
    restore_archive(dir.path(), key, &backup.sha256, resource(&second), false)
        .await
        .expect("restore after the source is gone");
    assert_same(
        &before,
        &snapshot(&second),
        "source vs copy of a dropped source",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_defaulting_to_nextval_restores_beside_the_original() {
    require_mariadb();
    let mut dbs = Cleanup::default();
    let source = dbs.database("seqsrc");
    let copy = dbs.database("seqcopy");
    sql(
        None,
        &format!(
            "CREATE DATABASE {q};
             CREATE SEQUENCE {q}.s START WITH 100;
             CREATE TABLE {q}.t (id BIGINT NOT NULL DEFAULT NEXTVAL({q}.s) PRIMARY KEY, v VARCHAR(10));
             INSERT INTO {q}.t (v) VALUES ('a'), ('b'), ('c');",
            q = ident(&source)
        ),
    );
    let rows = |db: &str| {
        value(
            Some(db),
            "SELECT GROUP_CONCAT(id, '=', v ORDER BY id) FROM t",
        )
    };
    let before = rows(&source);
    assert_eq!(before, "100=a,101=b,102=c");

    let dir = tempfile::tempdir().unwrap();
    let key = "shards/sequence.tar.zst";
    let backup = common::run(common::task(
        ShardOp::Backup,
        resource(&source),
        &common::storage(dir.path()),
        key,
    ))
    .await
    .expect("backup");
    let (_, dump) = stored_dump(dir.path());
    let text = String::from_utf8_lossy(&dump);
    assert!(
        !text.contains("LOCK TABLES"),
        "the dump locks tables without their sequences"
    );
    restore_archive(dir.path(), key, &backup.sha256, resource(&copy), false)
        .await
        .expect("restore beside the source");

    assert_eq!(rows(&copy), before);
    let create = value(Some(&copy), "SHOW CREATE TABLE t");
    assert!(
        create.contains(&format!("nextval(`{copy}`.`s`)")),
        "the copy's default must name the copy's sequence: {create}"
    );
    assert!(!create.contains(&source), "{create}");
    // The copy continues the source's sequence, and its own: the source's is untouched.
    let next_source = value(Some(&source), "SELECT NEXTVAL(s)");
    sql(Some(&copy), "INSERT INTO t (v) VALUES ('d')");
    let next_copy = value(Some(&copy), "SELECT MAX(id) FROM t");
    let (s, c): (i64, i64) = (next_source.parse().unwrap(), next_copy.parse().unwrap());
    assert!(
        c > 102,
        "the copy's next value {c} collides with restored rows"
    );
    assert!(
        c >= s,
        "the copy's next value {c} goes back behind the source's {s}"
    );
    assert_eq!(
        value(Some(&source), "SELECT COUNT(*) FROM t"),
        "3",
        "the restore wrote into the source"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_empty_target_is_refused_and_overwrite_replaces_it() {
    require_mariadb();
    let mut dbs = Cleanup::default();
    let source = dbs.database("src");
    let target = dbs.database("copy");
    create_source(&source);
    let dir = tempfile::tempdir().unwrap();
    common::round_trip(dir.path(), resource(&source), resource(&target), false)
        .await
        .expect("first restore");
    let restored = snapshot(&target);
    let objects: usize = [
        "table ",
        "view ",
        "sequence ",
        "procedure ",
        "function ",
        "trigger order ",
        "event ",
    ]
    .iter()
    .map(|kind| count_kind(&restored, kind))
    .sum();

    // Without --overwrite: the verify step refuses, naming the way out.
    let err = common::round_trip(dir.path(), resource(&source), resource(&target), false)
        .await
        .expect_err("restore into a non-empty target");
    let expected = format!(
        "target database \"{target}\" on {SERVER} is not empty ({objects} objects); restore into a \
         new database (--rewrite {target}=NEW) or replace it with --overwrite"
    );
    assert_eq!(err.message, expected);
    assert!(err.permanent, "{err:?}");
    // And the restore itself checks again (a target filled after the verify step).
    let storage = common::storage(dir.path());
    let key = "shards/again.tar.zst";
    let backup = common::run(common::task(
        ShardOp::Backup,
        resource(&source),
        &storage,
        key,
    ))
    .await
    .expect("backup");
    let mut restore = common::task(ShardOp::Restore, resource(&target), &storage, key);
    restore.expected_sha256 = Some(backup.sha256.clone());
    let err = common::run(restore.clone())
        .await
        .expect_err("restore without overwrite");
    assert_eq!(err.message, expected);
    assert!(err.permanent);
    assert_same(&restored, &snapshot(&target), "the refused target changed");

    // With --overwrite into a target holding junk (and damaged objects): exactly the source.
    sql(
        Some(&target),
        &format!(
            "CREATE TABLE junk (x INT); INSERT INTO junk VALUES (1);
             CREATE VIEW junk_v AS SELECT 1 AS one;
             CREATE PROCEDURE junk_p() SELECT 1;
             DROP TRIGGER orders_ai;
             UPDATE tenants SET name = 'damaged' WHERE id = 1;
             ALTER DATABASE {} COLLATE utf8mb4_bin;",
            ident(&target)
        ),
    );
    restore.overwrite = true;
    common::run(restore).await.expect("restore with overwrite");
    let replaced = snapshot(&target);
    assert_same(
        &snapshot(&source),
        &replaced,
        "source vs overwritten target",
    );
    assert!(!replaced.keys().any(|k| k.contains("junk")));
    // The verify step lets an overwrite through, and the result is the same again.
    common::round_trip(dir.path(), resource(&source), resource(&target), true)
        .await
        .expect("round trip with overwrite");
    assert_same(
        &snapshot(&source),
        &snapshot(&target),
        "after a second overwrite",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_refused_without_leaking_it() {
    require_mariadb();
    let mut dbs = Cleanup::default();
    let source = dbs.database("src");
    let target = dbs.database("copy");
    let user = format!("ferry_u_{}", common::uuid_like());
    dbs.users.push(user.clone());
    let right = format!("Right-{}", common::uuid_like());
    let wrong = format!("Wrong-{}", common::uuid_like());
    sql(
        None,
        &format!(
            "CREATE DATABASE {db};
             CREATE TABLE {db}.t (id INT PRIMARY KEY, s VARCHAR(10) DEFAULT 'd');
             INSERT INTO {db}.t VALUES (1, 'one'), (2, DEFAULT);
             CREATE VIEW {db}.v AS SELECT id FROM {db}.t;
             CREATE USER {u}@'%' IDENTIFIED BY {p};
             CREATE USER {u}@'localhost' IDENTIFIED BY {p};
             GRANT ALL PRIVILEGES ON {db}.* TO {u}@'%';
             GRANT ALL PRIVILEGES ON {db}.* TO {u}@'localhost';",
            db = ident(&source),
            u = literal(&user),
            p = literal(&right)
        ),
    );
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, format!("{wrong}\n")).unwrap();
    let mut as_user = spec(&source);
    as_user.user = Some(user.clone());
    as_user.password_file = Some(password_file.to_string_lossy().into_owned());

    let dir = tempfile::tempdir().unwrap();
    let storage = common::storage(dir.path());
    let err = common::run(common::task(
        ShardOp::Backup,
        resource_with(as_user.clone(), &source),
        &storage,
        "shards/wrong.tar.zst",
    ))
    .await
    .expect_err("backup with a wrong password");
    assert!(err.message.contains("Access denied"), "{err:?}");
    assert!(err.message.contains(SERVER), "{err:?}");
    assert!(
        !err.message.contains(&wrong),
        "the password leaked: {err:?}"
    );
    assert!(err.permanent, "{err:?}");
    // The verify step of a restore says the same.
    let mut verify = common::task(
        ShardOp::Verify {
            check_target: true,
            archive: true,
            read_data: false,
        },
        resource_with(as_user.clone(), &target),
        &storage,
        "shards/wrong.tar.zst",
    );
    verify.expected_sha256 = Some("0".repeat(64));
    let err = common::run(verify).await.expect_err("verify");
    assert!(err.message.contains("Access denied"), "{err:?}");
    assert!(
        !err.message.contains(&wrong),
        "the password leaked: {err:?}"
    );

    // The right password: the backup works, and restores (as root) into a copy.
    std::fs::write(&password_file, format!("{right}\n")).unwrap();
    common::round_trip(
        dir.path(),
        resource_with(as_user, &source),
        resource(&target),
        false,
    )
    .await
    .expect("round trip with the right password");
    assert_same(&snapshot(&source), &snapshot(&target), "source vs copy");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_that_fails_half_way_leaves_no_partial_copy() {
    require_mariadb();
    let mut dbs = Cleanup::default();
    let source = dbs.database("src");
    let target = dbs.database("copy");
    let user = format!("ferry_u_{}", common::uuid_like());
    dbs.users.push(user.clone());
    let password = format!("Pw-{}", common::uuid_like());
    // The restoring user may create the target but not objects running as root: the dump's
    // trigger (DEFINER=root) fails after its table was created and filled.
    sql(
        None,
        &format!(
            "CREATE DATABASE {src};
             CREATE TABLE {src}.t (id INT PRIMARY KEY, s VARCHAR(10));
             INSERT INTO {src}.t VALUES (1, 'one');
             CREATE TRIGGER {src}.t_bi BEFORE INSERT ON {src}.t FOR EACH ROW SET NEW.s = UPPER(NEW.s);
             CREATE USER {u}@'%' IDENTIFIED BY {p};
             CREATE USER {u}@'localhost' IDENTIFIED BY {p};
             GRANT ALL PRIVILEGES ON {dst}.* TO {u}@'%';
             GRANT ALL PRIVILEGES ON {dst}.* TO {u}@'localhost';",
            src = ident(&source),
            dst = ident(&target),
            u = literal(&user),
            p = literal(&password)
        ),
    );
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, &password).unwrap();
    let mut as_user = spec(&target);
    as_user.user = Some(user.clone());
    as_user.password_file = Some(password_file.to_string_lossy().into_owned());

    let dir = tempfile::tempdir().unwrap();
    let err = common::round_trip(
        dir.path(),
        resource(&source),
        resource_with(as_user, &target),
        false,
    )
    .await
    .expect_err("a restore needing privileges the user lacks");
    assert!(
        err.message.starts_with(&format!(
            "restoring into database \"{target}\" on {SERVER}: "
        )),
        "{err:?}"
    );
    assert!(err.message.contains("Access denied"), "{err:?}");
    assert!(
        !err.message.contains("--------------"),
        "the client's echo of the failing statement (which may hold rows) is left out: {err:?}"
    );
    assert!(
        err.message.contains("was dropped again"),
        "the error says what became of the target: {err:?}"
    );
    assert!(err.permanent, "{err:?}");
    assert!(!err.message.contains(&password), "the password leaked");
    assert_eq!(
        value(
            None,
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
                literal(&target)
            )
        ),
        "0",
        "the partly restored target is still there"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_a_clear_transient_error() {
    require_mariadb();
    let mut unreachable = spec("ferry_t_nowhere");
    unreachable.port = Some(1);
    let dir = tempfile::tempdir().unwrap();
    let storage = common::storage(dir.path());
    let err = common::run(common::task(
        ShardOp::Backup,
        resource_with(unreachable.clone(), "ferry_t_nowhere"),
        &storage,
        "shards/x.tar.zst",
    ))
    .await
    .expect_err("backup from a closed port");
    assert!(err.message.contains("Can't connect"), "{err:?}");
    assert!(err.message.contains("127.0.0.1:1"), "{err:?}");
    assert!(
        !err.permanent,
        "a server that is down may come back: {err:?}"
    );
    let mut verify = common::task(
        ShardOp::Verify {
            check_target: true,
            archive: true,
            read_data: false,
        },
        resource_with(unreachable, "ferry_t_nowhere"),
        &storage,
        "shards/x.tar.zst",
    );
    verify.expected_sha256 = Some("0".repeat(64));
    let err = common::run(verify).await.expect_err("verify");
    assert!(err.message.contains("Can't connect"), "{err:?}");
    assert!(!err.permanent, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_source_database_is_a_permanent_error_naming_it() {
    require_mariadb();
    let missing = format!("ferry_t_{}_missing", common::uuid_like());
    let dir = tempfile::tempdir().unwrap();
    let err = common::run(common::task(
        ShardOp::Backup,
        resource(&missing),
        &common::storage(dir.path()),
        "shards/m.tar.zst",
    ))
    .await
    .expect_err("backup of a missing database");
    assert!(
        err.message.contains(&format!(
            "database \"{missing}\" does not exist on {SERVER}"
        )),
        "{err:?}"
    );
    assert!(err.permanent, "{err:?}");
}
