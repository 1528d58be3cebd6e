//! The PostgreSQL engine against the real server: a database holding everything a dump tool can
//! carry (schemas, enums, domains, sequences, defaults, unique and expression and partial
//! indexes, views, a materialized view, functions, a procedure, triggers, generated and identity
//! columns, partitions, comments, policies, bytea, non-ASCII text, a large object, database
//! settings) is backed up and restored into a new database, and the copy is compared with the
//! original by catalog and content — NocoBase lost default values, unique indexes, views,
//! functions, procedures and triggers; Ferry must lose none. Then the copy must behave: triggers
//! fire, generated columns compute, sequences continue.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 reachable as the current user with the right to create
//! databases and roles (`scripts/setup` starts it) and its client tools; fails loudly otherwise.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use ferry_model::app::{DatabaseSpec, Engine};
use ferry_model::task::{Resource, ShardOp, ShardOutcome};
use ferry_worker::engines::ShardError;

const HOST: &str = "127.0.0.1";
const PORT: u16 = 5432;

// ---------------------------------------------------------------------------------------------
// Helpers: the server, databases that clean up after themselves, psql.

/// Panics, naming what is missing, unless the client tools and the server are there.
fn require_postgres() {
    for tool in ["psql", "pg_dump", "pg_restore", "dropdb"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "the PostgreSQL client tool `{tool}` is missing: these tests need PostgreSQL's client \
             tools (apt-get install postgresql-client) and a server (scripts/setup)"
        );
    }
    if let Err(e) = try_psql("postgres", "SELECT 1") {
        panic!(
            "PostgreSQL is not reachable on {HOST}:{PORT} as the current user: these tests need a \
             running PostgreSQL server (scripts/setup starts it).\n{e}"
        );
    }
}

fn psql_command(db: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", HOST])
        .args(["-p", &PORT.to_string(), "-d", db])
        .env("PGCONNECT_TIMEOUT", "10")
        // Fixed, so that both databases print names and times alike whatever their own
        // settings (which the comparison reads from the catalog instead).
        .env(
            "PGOPTIONS",
            "-c search_path=public -c timezone=UTC -c default_transaction_read_only=off",
        );
    cmd
}

/// Runs SQL (one or many statements) in `db`; the unaligned, tuples-only output or stderr.
fn try_psql(db: &str, sql: &str) -> Result<String, String> {
    let mut child = psql_command(db)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("psql could not start: {e}"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(sql.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs SQL in `db`, panicking with psql's error; returns the output without trailing newlines.
fn psql(db: &str, sql: &str) -> String {
    match try_psql(db, sql) {
        Ok(out) => out.trim_end_matches('\n').to_owned(),
        Err(e) => panic!("psql in {db} failed: {e}\nSQL:\n{sql}"),
    }
}

/// Runs SQL that must fail; returns psql's error.
fn psql_fails(db: &str, sql: &str) -> String {
    match try_psql(db, sql) {
        Ok(out) => panic!("expected this to fail in {db}, but it returned {out:?}:\n{sql}"),
        Err(e) => e,
    }
}

/// A database of this test, dropped when the test ends however it ends.
struct Db {
    name: String,
}

impl Db {
    /// A fresh name; the database itself is created by the test or by a restore.
    fn named(role: &str) -> Db {
        Db {
            name: format!("ferry_t_{role}_{}", common::uuid_like()),
        }
    }

    /// A new, empty database.
    fn create(role: &str) -> Db {
        let db = Db::named(role);
        psql("postgres", &format!("CREATE DATABASE \"{}\"", db.name));
        db
    }

    fn exists(&self) -> bool {
        psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{}'",
                self.name
            ),
        ) == "1"
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("dropdb")
            .args([
                "--if-exists",
                "--force",
                "-h",
                HOST,
                "-p",
                &PORT.to_string(),
            ])
            .arg(&self.name)
            .env("PGCONNECT_TIMEOUT", "10")
            .output();
    }
}

/// A cluster-wide role of this test, dropped at the end.
struct Role {
    name: String,
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = try_psql(
            "postgres",
            &format!("DROP ROLE IF EXISTS \"{}\"", self.name),
        );
    }
}

fn spec() -> DatabaseSpec {
    DatabaseSpec {
        name: "main".into(),
        engine: Engine::Postgres,
        host: Some(HOST.into()),
        port: Some(PORT),
        user: None,
        password_env: None,
        password_file: None,
        databases: Vec::new(),
        db: None,
        roles: false,
        role_passwords: false,
        pitr: false,
    }
}

fn resource_with(spec: DatabaseSpec, db: &str) -> Resource {
    Resource::Database {
        spec,
        database: Some(db.to_owned()),
    }
}

fn resource(db: &str) -> Resource {
    resource_with(spec(), db)
}

/// Backs `db` up into `key` of a storage directory.
async fn backup(dir: &std::path::Path, key: &str, db: &str) -> Result<ShardOutcome, ShardError> {
    let storage = common::storage(dir);
    common::run(common::task(ShardOp::Backup, resource(db), &storage, key)).await
}

/// Restores `key` into `db`, without the verify step.
async fn restore(
    dir: &std::path::Path,
    key: &str,
    sha256: &str,
    db: &str,
    overwrite: bool,
) -> Result<ShardOutcome, ShardError> {
    let storage = common::storage(dir);
    let mut task = common::task(ShardOp::Restore, resource(db), &storage, key);
    task.expected_sha256 = Some(sha256.to_owned());
    task.overwrite = overwrite;
    common::run(task).await
}

/// The verify step of a restore into `db`, with its empty-target check.
async fn verify_target(
    dir: &std::path::Path,
    key: &str,
    sha256: &str,
    db: &str,
) -> Result<ShardOutcome, ShardError> {
    let storage = common::storage(dir);
    let mut task = common::task(
        ShardOp::Verify {
            check_target: true,
            archive: true,
            read_data: false,
        },
        resource(db),
        &storage,
        key,
    );
    task.expected_sha256 = Some(sha256.to_owned());
    common::run(task).await
}

// ---------------------------------------------------------------------------------------------
// The source database.

/// Everything the copy must keep. Every table gets rows, every sequence is moved.
const FIXTURE: &str = r#"
CREATE SCHEMA sales;
CREATE SCHEMA audit;
COMMENT ON SCHEMA sales IS 'orders and products';

CREATE TYPE sales.order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
CREATE DOMAIN public.email AS text CHECK (VALUE ~ '^[^@\s]+@[^@\s]+$');
CREATE DOMAIN public.positive_amount AS numeric(12,2) NOT NULL CHECK (VALUE > 0);
CREATE TYPE public.address AS (street text, city text, zip text);
COMMENT ON TYPE sales.order_status IS 'life of an order';

CREATE SEQUENCE sales.invoice_no START 1000 INCREMENT 5;
CREATE SEQUENCE public.ticket_seq;
SELECT setval('public.ticket_seq', 4242);
CREATE SEQUENCE public.unused_seq START 7;
CREATE SEQUENCE public.reset_seq;
SELECT setval('public.reset_seq', 77, false);

CREATE TABLE public.customers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email public.email NOT NULL,
  name text NOT NULL DEFAULT 'anonymous',
  country char(2) NOT NULL DEFAULT 'DE' CONSTRAINT country_code CHECK (country ~ '^[A-Z]{2}$'),
  created_at timestamptz NOT NULL DEFAULT now(),
  search_name text GENERATED ALWAYS AS (lower(name)) STORED,
  address public.address,
  tags text[] NOT NULL DEFAULT '{}',
  ticket integer NOT NULL DEFAULT nextval('public.ticket_seq'),
  active boolean NOT NULL DEFAULT true
);
CREATE UNIQUE INDEX customers_email_lower ON public.customers (lower(email));
CREATE INDEX customers_active_name ON public.customers (name) WHERE active;
COMMENT ON TABLE public.customers IS 'Kunden — 顧客 👤';
COMMENT ON COLUMN public.customers.email IS 'login, unique case-insensitively';

CREATE TABLE sales.products (
  sku text PRIMARY KEY,
  title text NOT NULL CONSTRAINT products_title_unique UNIQUE,
  price public.positive_amount,
  stock integer NOT NULL DEFAULT 0 CHECK (stock >= 0),
  updated_on date DEFAULT CURRENT_DATE
);

CREATE TABLE sales.orders (
  id serial PRIMARY KEY,
  invoice_no bigint NOT NULL DEFAULT nextval('sales.invoice_no') UNIQUE,
  customer_id bigint NOT NULL REFERENCES public.customers (id) ON DELETE RESTRICT,
  status sales.order_status NOT NULL DEFAULT 'new',
  placed_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
  note text,
  total numeric(12,2) NOT NULL DEFAULT 0,
  total_with_vat numeric(12,2) GENERATED ALWAYS AS (round(total * 1.19, 2)) STORED
);
CREATE INDEX orders_open ON sales.orders (placed_at) WHERE status IN ('new', 'paid');

CREATE TABLE sales.order_lines (
  order_id integer NOT NULL REFERENCES sales.orders (id) ON DELETE CASCADE,
  line_no integer NOT NULL,
  sku text NOT NULL REFERENCES sales.products (sku),
  qty integer NOT NULL CHECK (qty > 0),
  unit_price numeric(12,2) NOT NULL,
  PRIMARY KEY (order_id, line_no)
);

CREATE TABLE audit.log (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT clock_timestamp(),
  table_name text NOT NULL,
  op text NOT NULL,
  row_data jsonb
);
ALTER TABLE audit.log ENABLE ROW LEVEL SECURITY;
CREATE POLICY log_readable ON audit.log FOR SELECT USING (op <> 'SECRET');

CREATE TABLE audit.events (
  id bigint GENERATED BY DEFAULT AS IDENTITY,
  happened date NOT NULL,
  kind text NOT NULL,
  payload jsonb NOT NULL DEFAULT '{}',
  PRIMARY KEY (id, happened)
) PARTITION BY RANGE (happened);
CREATE TABLE audit.events_2024 PARTITION OF audit.events
  FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE audit.events_2025 PARTITION OF audit.events
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE audit.events_other PARTITION OF audit.events DEFAULT;
CREATE INDEX events_kind ON audit.events (kind);

CREATE TABLE public.blobs (id integer PRIMARY KEY, data bytea NOT NULL, label text NOT NULL);
CREATE TABLE public.documents (id integer PRIMARY KEY, name text NOT NULL UNIQUE, content oid NOT NULL);

CREATE FUNCTION sales.normalize_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.note := coalesce(btrim(NEW.note), '');
  IF NEW.total < 0 THEN
    RAISE EXCEPTION 'negative total %', NEW.total;
  END IF;
  RETURN NEW;
END
$$;
CREATE FUNCTION audit.record_change() RETURNS trigger LANGUAGE plpgsql
  SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  INSERT INTO audit.log (table_name, op, row_data)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP, to_jsonb(NEW));
  RETURN NULL;
END
$$;
CREATE TRIGGER orders_normalize BEFORE INSERT OR UPDATE ON sales.orders
  FOR EACH ROW EXECUTE FUNCTION sales.normalize_order();
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON sales.orders
  FOR EACH ROW EXECUTE FUNCTION audit.record_change();
CREATE TRIGGER customers_audit AFTER INSERT ON public.customers
  FOR EACH ROW EXECUTE FUNCTION audit.record_change();

CREATE FUNCTION sales.order_total(p_order integer) RETURNS numeric LANGUAGE sql STABLE
  RETURN (SELECT coalesce(sum(qty * unit_price), 0) FROM sales.order_lines WHERE order_id = p_order);
COMMENT ON FUNCTION sales.order_total(integer) IS 'sum of an order''s lines';
CREATE FUNCTION public.slugify(t text) RETURNS text LANGUAGE sql IMMUTABLE STRICT
  AS $$ SELECT trim(both '-' from regexp_replace(lower(t), '[^a-z0-9]+', '-', 'g')) $$;
CREATE PROCEDURE sales.restock(p_sku text, p_qty integer) LANGUAGE plpgsql AS $$
BEGIN
  UPDATE sales.products SET stock = stock + p_qty WHERE sku = p_sku;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'unknown sku %', p_sku;
  END IF;
END
$$;

CREATE VIEW sales.order_summary AS
  SELECT o.id, c.email, o.status, sales.order_total(o.id) AS lines_total, o.total_with_vat
  FROM sales.orders o JOIN public.customers c ON c.id = o.customer_id;
CREATE VIEW public.active_customers AS
  SELECT id, name, email, active FROM public.customers WHERE active WITH CASCADED CHECK OPTION;
CREATE MATERIALIZED VIEW sales.revenue_by_status AS
  SELECT status, count(*) AS orders, sum(total) AS revenue FROM sales.orders GROUP BY status;
CREATE UNIQUE INDEX revenue_by_status_status ON sales.revenue_by_status (status);

INSERT INTO public.customers (email, name, country, address, tags) VALUES
  ('zoe@example.com', 'Zoë Ångström', 'SE', ROW('Storgatan 1', 'Göteborg', '41101'), '{vip}'),
  ('taro@example.jp', '山田太郎', 'JP', ROW('千代田1-1', '東京', '100-0001'), '{}'),
  ('party@example.com', 'Party 🎉🚀 Ünïcødé', 'DE', NULL, '{a,"b c"}'),
  ('eleni@example.gr', 'Ελένη', 'GR', NULL, '{}');
UPDATE public.customers SET active = false WHERE email = 'eleni@example.gr';
INSERT INTO sales.products (sku, title, price, stock) VALUES
  ('SKU-1', 'Kaffee ☕', 4.50, 10), ('SKU-2', 'お茶', 3.20, 0), ('SKU-3', 'Crème brûlée', 6.00, 5);
INSERT INTO sales.orders (customer_id, status, note, total) VALUES
  (1, 'paid', '  first  ', 9.00),
  (2, 'new', NULL, 3.20),
  (3, 'shipped', 'emoji 📦', 12.00),
  (1, 'cancelled', 'x', 0);
INSERT INTO sales.order_lines VALUES
  (1, 1, 'SKU-1', 2, 4.50), (2, 1, 'SKU-2', 1, 3.20), (3, 1, 'SKU-3', 2, 6.00);
UPDATE sales.orders SET status = 'shipped' WHERE id = 1;
SELECT nextval('sales.invoice_no'), nextval('sales.invoice_no');
INSERT INTO audit.events (happened, kind, payload) VALUES
  ('2024-03-01', 'signup', '{"who": "zoe"}'), ('2024-12-31', 'signup', '{"who": "taro"}'),
  ('2025-02-14', 'order', '{"id": 1}'), ('2025-07-01', 'order', '{"id": 3, "note": "ü"}'),
  ('2023-01-01', 'legacy', '{}');
INSERT INTO public.blobs VALUES
  (1, (SELECT decode(string_agg(lpad(to_hex(b), 2, '0'), '' ORDER BY b), 'hex')
       FROM generate_series(0, 255) b), 'all 256 byte values'),
  (2, '\x'::bytea, 'empty'),
  (3, convert_to('naïve café — 漢字 🦀', 'UTF8'), 'utf-8 text as bytes');
INSERT INTO public.documents VALUES (1, 'manual.bin', lo_from_bytea(0,
  (SELECT decode(repeat(string_agg(lpad(to_hex(b), 2, '0'), '' ORDER BY b), 1000), 'hex')
   FROM generate_series(0, 255) b)));
DO $$ BEGIN
  EXECUTE format('COMMENT ON LARGE OBJECT %s IS %L',
    (SELECT content FROM public.documents WHERE id = 1), 'the manual, 256 000 bytes');
END $$;
REFRESH MATERIALIZED VIEW sales.revenue_by_status;
"#;

/// The large object's known content: the 256 byte values, 1000 times.
const LO_CONTENT: &str = "decode(repeat((SELECT string_agg(lpad(to_hex(b), 2, '0'), '' ORDER BY b) \
                          FROM generate_series(0, 255) b), 1000), 'hex')";

/// A new source database filled with [`FIXTURE`] and carrying database-level settings, one of
/// which (read-only transactions) would break a restore that applied it before the content.
fn create_source() -> Db {
    let db = Db::create("src");
    psql(&db.name, FIXTURE);
    psql(
        "postgres",
        &format!(
            "ALTER DATABASE \"{0}\" SET search_path = sales, public, \"$user\";
             ALTER DATABASE \"{0}\" SET timezone = 'Asia/Tokyo';
             ALTER DATABASE \"{0}\" SET default_transaction_read_only = on;
             COMMENT ON DATABASE \"{0}\" IS 'the shop''s data';",
            db.name
        ),
    );
    db
}

// ---------------------------------------------------------------------------------------------
// Comparing two databases.

/// Every user object with its definition, from the server's own catalog and deparsers
/// (independent of pg_dump, the tool under test). One line per object, sorted.
const INVENTORY: &str = r#"
WITH ns AS (
  SELECT oid, nspname FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname !~ '^pg_(toast|temp_)'
)
SELECT line FROM (
  SELECT 'schema ' || nspname || ' comment=' || coalesce(obj_description(oid, 'pg_namespace'), '')
    FROM ns
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text
      || ' populated=' || c.relispopulated || ' rls=' || c.relrowsecurity
      || ' bound=' || coalesce(pg_get_expr(c.relpartbound, c.oid), '')
      || ' partkey=' || coalesce(pg_get_partkeydef(c.oid), '')
      || ' acl=' || coalesce(c.relacl::text, '')
      || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT 'column ' || c.oid::regclass || '.' || a.attname || ' #' || a.attnum
      || ' ' || format_type(a.atttypid, a.atttypmod)
      || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
      || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
      || ' collation=' || a.attcollation::regcollation
      || ' comment=' || coalesce(col_description(c.oid, a.attnum), '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'constraint ' || coalesce(nullif(con.conrelid, 0)::regclass::text, con.contypid::regtype::text)
      || ' ' || con.conname || ' ' || pg_get_constraintdef(con.oid)
      || ' deferrable=' || con.condeferrable || ' validated=' || con.convalidated
    FROM pg_constraint con JOIN ns ON ns.oid = con.connamespace
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid) || ' primary=' || i.indisprimary
      || ' valid=' || i.indisvalid
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns ON ns.oid = c.relnamespace
    WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'routine ' || p.oid::regprocedure || ' kind=' || p.prokind::text
      || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '') || E'\n'
      || CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) ELSE '' END
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
  UNION ALL
  SELECT 'view ' || c.oid::regclass || E'\n' || pg_get_viewdef(c.oid)
      || ' options=' || coalesce(array_to_string(c.reloptions, ','), '')
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace WHERE c.relkind IN ('v', 'm')
  UNION ALL
  SELECT 'type ' || t.oid::regtype || ' kind=' || t.typtype::text
      || ' labels=' || coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                 FROM pg_enum e WHERE e.enumtypid = t.oid), '')
      || ' base=' || CASE WHEN t.typbasetype = 0 THEN '' ELSE format_type(t.typbasetype, t.typtypmod) END
      || ' notnull=' || t.typnotnull || ' default=' || coalesce(t.typdefault, '')
      || ' comment=' || coalesce(obj_description(t.oid, 'pg_type'), '')
    FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
    WHERE t.typtype IN ('e', 'd', 'r', 'm')
       OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
  UNION ALL
  SELECT 'sequence ' || s.seqrelid::regclass || ' type=' || s.seqtypid::regtype
      || ' start=' || s.seqstart || ' increment=' || s.seqincrement || ' min=' || s.seqmin
      || ' max=' || s.seqmax || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT 'owned ' || d.objid::regclass || ' by ' || d.refobjid::regclass || '.' || a.attname
      || ' ' || d.deptype::text
    FROM pg_depend d JOIN pg_class c ON c.oid = d.objid AND c.relkind = 'S'
    JOIN ns ON ns.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.deptype IN ('a', 'i')
  UNION ALL
  SELECT 'policy ' || pol.polrelid::regclass || ' ' || pol.polname || ' cmd=' || pol.polcmd::text
      || ' permissive=' || pol.polpermissive
      || ' using=' || coalesce(pg_get_expr(pol.polqual, pol.polrelid), '')
      || ' check=' || coalesce(pg_get_expr(pol.polwithcheck, pol.polrelid), '')
    FROM pg_policy pol
  UNION ALL
  SELECT 'extension ' || extname || ' ' || extversion FROM pg_extension
  UNION ALL
  SELECT 'large object ' || oid || ' comment=' || coalesce(obj_description(oid, 'pg_largeobject'), '')
    FROM pg_largeobject_metadata
  UNION ALL
  SELECT 'database setting ' || array_to_string(s.setconfig, ' | ')
    FROM pg_db_role_setting s WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  UNION ALL
  SELECT 'database encoding=' || pg_encoding_to_char(d.encoding) || ' collate=' || d.datcollate
      || ' ctype=' || d.datctype || ' provider=' || d.datlocprovider::text
      || ' icu=' || coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale', '')
      || ' comment=' || coalesce(shobj_description(d.oid, 'pg_database'), '')
    FROM pg_database d WHERE d.datname = current_database()
) lines(line)
ORDER BY line;
"#;

fn inventory(db: &str) -> String {
    psql(db, INVENTORY)
}

/// Lines only in `a` and lines only in `b`, for a readable failure.
fn line_diff(a: &str, b: &str) -> String {
    let la: BTreeSet<&str> = a.lines().collect();
    let lb: BTreeSet<&str> = b.lines().collect();
    let mut out = String::new();
    for l in la.difference(&lb).take(40) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in lb.difference(&la).take(40) {
        out.push_str(&format!("+ {l}\n"));
    }
    if out.is_empty() {
        out.push_str("(same lines, different order or count)\n");
    }
    out
}

fn assert_same_text(what: &str, source: &str, target: &str) {
    assert!(
        source == target,
        "{what} differs between source and target (- only in source, + only in target):\n{}",
        line_diff(source, target)
    );
}

/// `pg_dump --schema-only --no-owner` without the lines that differ by nature: the header, the
/// random `\restrict` key, anything naming the database.
fn schema_dump(db: &str) -> String {
    let out = Command::new("pg_dump")
        .args([
            "--schema-only",
            "--no-owner",
            "-h",
            HOST,
            "-p",
            &PORT.to_string(),
        ])
        .args(["-d", db])
        .output()
        .expect("running pg_dump");
    assert!(
        out.status.success(),
        "pg_dump --schema-only {db} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            !l.starts_with("-- Dumped")
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
                && !l.contains(db)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every table, partition and materialized view of the source, quoted.
fn user_tables(db: &str) -> Vec<String> {
    psql(
        db,
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'm')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname !~ '^pg_(toast|temp_)'
          ORDER BY 1",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Per table: its name, row count and an md5 over every row, in one query.
fn table_digests(db: &str, tables: &[String]) -> Vec<String> {
    let parts: Vec<String> = tables
        .iter()
        .map(|table| {
            format!(
                "SELECT {name} || ' ' || count(*) || ' ' \
                   || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '-') FROM {table} t",
                name = quote_literal(table)
            )
        })
        .collect();
    psql(db, &parts.join("\nUNION ALL\n"))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sequences(db: &str) -> Vec<String> {
    psql(
        db,
        "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences
          WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

fn sequence_state(db: &str, seq: &str) -> String {
    psql(
        db,
        &format!("SELECT last_value || ' ' || is_called FROM {seq}"),
    )
}

/// Per sequence: its name, last value and whether it was called, in one query.
fn sequence_states(db: &str, seqs: &[String]) -> Vec<String> {
    let parts: Vec<String> = seqs
        .iter()
        .map(|seq| {
            format!(
                "SELECT {} || ' ' || last_value || ' ' || is_called FROM {seq}",
                quote_literal(seq)
            )
        })
        .collect();
    psql(db, &parts.join("\nUNION ALL\n"))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn large_objects(db: &str) -> String {
    psql(
        db,
        "SELECT coalesce(string_agg(oid || ':' || md5(lo_get(oid)), ',' ORDER BY oid), '')
           FROM pg_largeobject_metadata",
    )
}

/// Everything [`assert_same`] compares, for checking that a database did not change.
fn fingerprint(db: &str) -> String {
    let mut lines = vec![inventory(db)];
    lines.extend(table_digests(db, &user_tables(db)));
    lines.extend(sequence_states(db, &sequences(db)));
    lines.push(format!("large objects {}", large_objects(db)));
    lines.join("\n")
}

/// The target holds exactly what the source holds: catalog, schema dump, every row, sequence
/// positions, large objects, materialized views.
fn assert_same(source: &str, target: &str) {
    // (1) The catalog, read by the server itself.
    assert_same_text("the catalog", &inventory(source), &inventory(target));
    // (1) And as pg_dump sees it.
    assert_same_text(
        "pg_dump --schema-only",
        &schema_dump(source),
        &schema_dump(target),
    );
    // (2) Every row of every table, partition and materialized view (5).
    let tables = user_tables(source);
    assert_eq!(tables, user_tables(target), "the tables differ");
    assert_same_text(
        "the rows (table, count, md5)",
        &table_digests(source, &tables).join("\n"),
        &table_digests(target, &tables).join("\n"),
    );
    // (3) Sequences stand where they stood.
    let seqs = sequences(source);
    assert_eq!(seqs, sequences(target), "the sequences differ");
    assert_same_text(
        "the sequences (name, last value, called)",
        &sequence_states(source, &seqs).join("\n"),
        &sequence_states(target, &seqs).join("\n"),
    );
    // (4) Large objects, byte for byte.
    assert_eq!(
        large_objects(source),
        large_objects(target),
        "large objects differ"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_copy_keeps_everything_and_behaves_like_the_original() {
    require_postgres();
    let source = create_source();
    let target = Db::named("copy");
    let dir = tempfile::tempdir().unwrap();

    // The fixture is what we think it is: nothing trivially empty.
    let src = &source.name;
    assert_eq!(sequence_state(src, "sales.invoice_no"), "1025 true");
    assert_eq!(sequence_state(src, "public.ticket_seq"), "4246 true");
    assert_eq!(sequence_state(src, "public.reset_seq"), "77 false");
    assert_eq!(sequence_state(src, "public.unused_seq"), "7 false");
    assert_eq!(
        sequence_state(src, "public.customers_id_seq"),
        "4 true",
        "identity sequence"
    );
    for digest in table_digests(src, &user_tables(src)) {
        assert!(
            !digest.contains(" 0 -"),
            "a fixture table has no rows: {digest}"
        );
    }
    assert_eq!(
        psql(
            src,
            "SELECT string_agg(tableoid::regclass::text || '=' || n, ',' ORDER BY tableoid::regclass::text) FROM
               (SELECT tableoid, count(*) n FROM audit.events GROUP BY 1) x"
        ),
        "audit.events_2024=2,audit.events_2025=2,audit.events_other=1"
    );

    let outcome = common::round_trip(dir.path(), resource(src), resource(&target.name), false)
        .await
        .expect("backup, verify and restore");
    assert!(outcome.source_bytes > 256_000, "{outcome:?}");
    assert!(
        outcome
            .tool_version
            .as_deref()
            .is_some_and(|v| v.contains("pg_dump")),
        "{outcome:?}"
    );
    let dst = &target.name;
    assert!(target.exists());

    // Everything compared: catalog, schema dump, rows, sequences, large objects.
    assert_same(src, dst);

    // What NocoBase lost, spelled out, so that an empty comparison cannot pass by accident.
    let schema = schema_dump(dst);
    for expected in [
        "CREATE SCHEMA audit;",
        "CREATE TYPE sales.order_status AS ENUM (",
        "CREATE DOMAIN public.email AS text",
        "CREATE SEQUENCE sales.invoice_no",
        "DEFAULT nextval('sales.invoice_no'::regclass)",
        "DEFAULT now()",
        "DEFAULT 'anonymous'::text",
        "GENERATED ALWAYS AS (lower(name)) STORED",
        "GENERATED ALWAYS AS IDENTITY",
        "CONSTRAINT products_title_unique UNIQUE (title)",
        "CREATE UNIQUE INDEX customers_email_lower ON public.customers USING btree (lower((email)::text));",
        "CREATE INDEX orders_open ON sales.orders USING btree (placed_at) WHERE",
        "CREATE VIEW sales.order_summary AS",
        "CREATE MATERIALIZED VIEW sales.revenue_by_status AS",
        "CREATE FUNCTION sales.normalize_order() RETURNS trigger",
        "CREATE FUNCTION public.slugify(t text) RETURNS text",
        "CREATE PROCEDURE sales.restock(",
        "CREATE TRIGGER orders_normalize BEFORE INSERT OR UPDATE ON sales.orders",
        "CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON sales.orders",
        "ATTACH PARTITION audit.events_2025",
        "FOREIGN KEY (customer_id) REFERENCES public.customers(id)",
        "CHECK ((qty > 0))",
        "COMMENT ON TABLE public.customers IS",
        "COMMENT ON COLUMN public.customers.email IS",
        "COMMENT ON FUNCTION sales.order_total(p_order integer) IS",
        "CREATE POLICY log_readable ON audit.log",
    ] {
        assert!(
            schema.contains(expected),
            "the restored schema lacks {expected:?}:\n{schema}"
        );
    }

    // (2) Bytes and text survive exactly.
    assert_eq!(
        psql(
            dst,
            "SELECT length(data) || ' ' || (data = (SELECT decode(string_agg(lpad(to_hex(b), 2, '0'), '' ORDER BY b), 'hex') FROM generate_series(0, 255) b))
               FROM public.blobs WHERE id = 1"
        ),
        "256 true"
    );
    assert_eq!(
        psql(
            dst,
            "SELECT string_agg(name, '|' ORDER BY id) FROM public.customers"
        ),
        "Zoë Ångström|山田太郎|Party 🎉🚀 Ünïcødé|Ελένη"
    );
    // (4) The large object is the known content, with its comment.
    assert_eq!(
        psql(
            dst,
            &format!(
                "SELECT length(lo_get(content)) || ' ' || (lo_get(content) = {LO_CONTENT}) || ' ' || obj_description(content, 'pg_largeobject') FROM public.documents"
            )
        ),
        "256000 true the manual, 256 000 bytes"
    );
    // (5) The materialized view is populated with the same rows.
    assert_eq!(
        psql(
            dst,
            "SELECT relispopulated FROM pg_class WHERE oid = 'sales.revenue_by_status'::regclass"
        ),
        "t"
    );
    let revenue = "SELECT string_agg(t::text, ';' ORDER BY status) FROM sales.revenue_by_status t";
    assert_eq!(psql(src, revenue), psql(dst, revenue));
    assert_eq!(
        psql(dst, revenue),
        "(new,1,3.20);(shipped,2,21.00);(cancelled,1,0.00)"
    );
    // Database-level settings and comment came along (the inventory compared them too).
    assert_eq!(
        psql(
            dst,
            "SELECT array_to_string(setconfig, ' | ') || ' / ' || shobj_description(d.oid, 'pg_database')
               FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
              WHERE d.datname = current_database() AND s.setrole = 0"
        ),
        "search_path=sales, public, \"$user\" | TimeZone=Asia/Tokyo \
         | default_transaction_read_only=on / the shop's data"
    );

    // (6) The copy behaves: BEFORE trigger normalises, AFTER trigger audits, generated column
    // computes, serial and identity and sequences continue after the restored values.
    let audit_before: i64 = psql(dst, "SELECT count(*) FROM audit.log").parse().unwrap();
    assert_eq!(
        psql(
            dst,
            "INSERT INTO sales.orders (customer_id, note, total) VALUES (2, '  padded  ', 10.00)
             RETURNING id || ' ' || invoice_no || ' ' || note || ' ' || total_with_vat || ' ' || status"
        ),
        "5 1030 padded 11.90 new"
    );
    assert_eq!(
        psql(
            dst,
            "SELECT op || ' ' || table_name || ' ' || (row_data->>'note')
               FROM audit.log ORDER BY id DESC LIMIT 1"
        ),
        "INSERT sales.orders padded"
    );
    let audit_after: i64 = psql(dst, "SELECT count(*) FROM audit.log").parse().unwrap();
    assert_eq!(
        audit_after,
        audit_before + 1,
        "the AFTER trigger did not fire"
    );
    assert_eq!(
        psql(
            dst,
            "INSERT INTO public.customers (email, name) VALUES ('new@example.com', 'New PERSON')
             RETURNING id || ' ' || search_name || ' ' || country || ' ' || ticket"
        ),
        "5 new person DE 4247"
    );
    assert_eq!(
        psql(
            dst,
            "INSERT INTO audit.events (happened, kind) VALUES ('2025-09-09', 'restored')
             RETURNING tableoid::regclass || ' ' || id"
        ),
        "audit.events_2025 6"
    );
    assert_eq!(
        psql(
            dst,
            "SELECT nextval('public.reset_seq') || ' ' || nextval('public.unused_seq')"
        ),
        "77 7"
    );
    psql(dst, "CALL sales.restock('SKU-2', 7)");
    assert_eq!(
        psql(dst, "SELECT stock FROM sales.products WHERE sku = 'SKU-2'"),
        "7"
    );
    assert_eq!(
        psql(
            dst,
            "SELECT lines_total FROM sales.order_summary WHERE id = 3"
        ),
        "12.00"
    );
    assert_eq!(
        psql(dst, "SELECT public.slugify('Hello, Wörld!')"),
        "hello-w-rld"
    );
    psql(
        dst,
        "REFRESH MATERIALIZED VIEW CONCURRENTLY sales.revenue_by_status",
    );
    assert_eq!(
        psql(
            dst,
            "SELECT orders FROM sales.revenue_by_status WHERE status = 'new'"
        ),
        "2"
    );
    // Constraints still bite: the unique expression index, the domain, the foreign key, the
    // check constraint, the view's check option.
    let err = psql_fails(
        dst,
        "INSERT INTO public.customers (email) VALUES ('ZOE@example.com')",
    );
    assert!(err.contains("customers_email_lower"), "{err}");
    let err = psql_fails(
        dst,
        "INSERT INTO public.customers (email) VALUES ('not-an-email')",
    );
    assert!(err.contains("domain email"), "{err}");
    let err = psql_fails(dst, "INSERT INTO sales.orders (customer_id) VALUES (999)");
    assert!(err.contains("foreign key"), "{err}");
    let err = psql_fails(
        dst,
        "INSERT INTO sales.order_lines VALUES (1, 9, 'SKU-1', 0, 1)",
    );
    assert!(err.contains("order_lines_qty_check"), "{err}");
    let err = psql_fails(
        dst,
        "INSERT INTO public.active_customers (name, email, active) VALUES ('x', 'x@y.z', false)",
    );
    assert!(err.contains("check option"), "{err}");
    // The source was not touched by any of this.
    assert_eq!(sequence_state(src, "sales.orders_id_seq"), "4 true");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_empty_target_is_refused_unless_overwrite_which_replaces_it_exactly() {
    require_postgres();
    let source = create_source();
    let target = Db::named("busy");
    let dir = tempfile::tempdir().unwrap();
    common::round_trip(
        dir.path(),
        resource(&source.name),
        resource(&target.name),
        false,
    )
    .await
    .expect("first restore into a new database");

    // A second restore into the now non-empty target is refused, before and while writing.
    let key = "shards/again.tar.zst";
    let backed = backup(dir.path(), key, &source.name).await.unwrap();
    let before = fingerprint(&target.name);
    let err = verify_target(dir.path(), key, &backed.sha256, &target.name)
        .await
        .unwrap_err();
    assert!(err.permanent, "{err:?}");
    assert!(
        err.message.contains(&format!(
            "target database \"{}\" on {HOST}:{PORT} is not empty (",
            target.name
        )) && err.message.contains("--overwrite")
            && err.message.contains("--rewrite"),
        "{err:?}"
    );
    let err = restore(dir.path(), key, &backed.sha256, &target.name, false)
        .await
        .unwrap_err();
    assert!(err.permanent, "{err:?}");
    assert!(err.message.contains("is not empty"), "{err:?}");
    assert_eq!(
        before,
        fingerprint(&target.name),
        "a refused restore changed the target"
    );

    // Junk in the target, and an application still connected to it: --overwrite replaces all.
    psql(
        &target.name,
        "CREATE TABLE public.junk (x int); INSERT INTO public.junk VALUES (1);
         CREATE SCHEMA junkyard; CREATE FUNCTION junkyard.f() RETURNS int LANGUAGE sql AS 'SELECT 1';
         UPDATE sales.products SET stock = 999; DELETE FROM audit.events_other;
         SELECT setval('sales.invoice_no', 5000);",
    );
    let mut app = psql_command(&target.name)
        .args(["-c", "SELECT pg_sleep(60)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        let connected = psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'",
                target.name
            ),
        );
        if connected != "0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let result = common::round_trip(
        dir.path(),
        resource(&source.name),
        resource(&target.name),
        true,
    )
    .await;
    let _ = app.kill();
    let _ = app.wait();
    result.expect("restore with overwrite");
    assert_same(&source.name, &target.name);
    assert_eq!(
        psql(
            &target.name,
            "SELECT (to_regclass('public.junk') IS NULL) || ' ' || (to_regnamespace('junkyard') IS NULL)"
        ),
        "true true"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_empty_target_is_restored_into() {
    require_postgres();
    let source = create_source();
    let target = Db::create("empty");
    let dir = tempfile::tempdir().unwrap();
    common::round_trip(
        dir.path(),
        resource(&source.name),
        resource(&target.name),
        false,
    )
    .await
    .expect("restore into an existing empty database");
    // The content is the source's; database settings are the target owner's business.
    assert_eq!(
        fingerprint_without_database(&source.name),
        fingerprint_without_database(&target.name)
    );
}

/// [`fingerprint`] without the database-level lines (settings, comment).
fn fingerprint_without_database(db: &str) -> String {
    fingerprint(db)
        .lines()
        .filter(|l| !l.starts_with("database "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn encoding_and_locale_of_the_source_are_recreated() {
    require_postgres();
    let latin1 = Db::named("latin1");
    psql(
        "postgres",
        &format!(
            "CREATE DATABASE \"{}\" TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'",
            latin1.name
        ),
    );
    let icu = Db::named("icu");
    psql(
        "postgres",
        &format!(
            "CREATE DATABASE \"{}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' \
             LC_CTYPE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'de-DE'",
            icu.name
        ),
    );
    for db in [&latin1, &icu] {
        psql(
            &db.name,
            "CREATE TABLE words (w text PRIMARY KEY);
             INSERT INTO words VALUES ('café'), ('Äpfel'), ('zebra'), ('apple'), ('Öl');",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate || ' ' || datctype
                      || ' ' || datlocprovider::text
                      || ' ' || coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale', '-')
                    FROM pg_database d WHERE datname = current_database()";
    let order = "SELECT string_agg(w, ',' ORDER BY w) FROM words";
    for (source, expected) in [
        (&latin1, "LATIN1 C C c -"),
        (&icu, "UTF8 C.UTF-8 C.UTF-8 i de-DE"),
    ] {
        let target = Db::named("copy");
        common::round_trip(
            dir.path(),
            resource(&source.name),
            resource(&target.name),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("round trip of {}: {e:?}", source.name));
        assert_eq!(psql(&source.name, settings), expected);
        assert_eq!(psql(&target.name, settings), expected);
        // The collation decides the order; the same order means the same collation.
        assert_eq!(psql(&source.name, order), psql(&target.name, order));
        assert_eq!(
            psql(
                &source.name,
                "SELECT md5(string_agg(convert_to(w, 'UTF8')::text, ',' ORDER BY w)) FROM words"
            ),
            psql(
                &target.name,
                "SELECT md5(string_agg(convert_to(w, 'UTF8')::text, ',' ORDER BY w)) FROM words"
            )
        );
    }
    assert_eq!(
        psql(&icu.name, order),
        "Äpfel,apple,café,Öl,zebra",
        "ICU de-DE sorts umlauts with their base letters"
    );
    assert_eq!(psql(&latin1.name, order), "apple,café,zebra,Äpfel,Öl");
}

/// Privileges on the test table, `grantee:privilege` sorted, on a server reached by `psql`.
const GRANTS_SQL: &str = "SELECT string_agg(grantee || ':' || privilege_type, ',' ORDER BY grantee, privilege_type) \
     FROM information_schema.role_table_grants WHERE table_name = 't' AND grantee <> current_user";

#[tokio::test(flavor = "multi_thread")]
async fn grants_to_roles_a_fresh_server_lacks_come_along_or_are_named_as_left_out() {
    require_postgres();
    let reader = Role {
        name: format!("ferry_t_reader_{}", common::uuid_like()),
    };
    let writer = Role {
        name: format!("ferry_t_Writer_{}", common::uuid_like()),
    };
    psql(
        "postgres",
        &format!(
            "CREATE ROLE \"{r}\" NOLOGIN CONNECTION LIMIT 7; COMMENT ON ROLE \"{r}\" IS 'reads';
             CREATE ROLE \"{w}\" LOGIN; GRANT \"{r}\" TO \"{w}\";",
            r = reader.name,
            w = writer.name
        ),
    );
    let source = Db::create("roles");
    psql(
        &source.name,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 500) g;
             GRANT SELECT ON t TO \"{r}\";
             GRANT SELECT, INSERT, UPDATE ON t TO \"{w}\" WITH GRANT OPTION;
             GRANT USAGE ON SCHEMA public TO \"{r}\";
             GRANT SELECT ON t TO PUBLIC;",
            r = reader.name,
            w = writer.name
        ),
    );
    let source_grants = psql(&source.name, GRANTS_SQL);
    assert!(source_grants.contains(&reader.name), "{source_grants}");
    // A fresh server, as a migration meets it: none of these roles exist there.
    let fresh = ferry_test_support::pg::PgServer::start();
    let target_spec = || DatabaseSpec {
        port: Some(fresh.port),
        ..spec()
    };
    let dir = tempfile::tempdir().unwrap();
    let storage = common::storage(dir.path());
    let round_trip = |with_roles: bool, key: &'static str, target: &'static str| {
        let source_spec = DatabaseSpec {
            roles: with_roles,
            ..spec()
        };
        let storage = storage.clone();
        let source = source.name.clone();
        let target_spec = target_spec();
        async move {
            let backed = common::run(common::task(
                ShardOp::Backup,
                resource_with(source_spec, &source),
                &storage,
                key,
            ))
            .await
            .expect("backup");
            let mut task = common::task(
                ShardOp::Restore,
                resource_with(target_spec, target),
                &storage,
                key,
            );
            task.expected_sha256 = Some(backed.sha256);
            common::run(task).await
        }
    };

    // Without the roles: the data arrives, the grants to the missing roles are named as left out.
    let outcome = round_trip(false, "shards/no-roles.tar.zst", "copy_without_roles")
        .await
        .expect("a restore without the roles still restores the data");
    assert!(
        outcome.detail.contains("left out")
            && outcome.detail.contains(&reader.name)
            && outcome.detail.contains(&writer.name),
        "{}",
        outcome.detail
    );
    assert_eq!(
        fresh
            .psql("copy_without_roles", "SELECT count(*) FROM t")
            .trim(),
        "500"
    );
    assert_eq!(
        fresh.psql("copy_without_roles", GRANTS_SQL).trim(),
        "PUBLIC:SELECT",
        "only the grants to roles that exist there"
    );
    assert_eq!(
        fresh
            .psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_roles WHERE rolname = '{}'",
                    reader.name
                )
            )
            .trim(),
        "0"
    );

    // With `roles: true`: the roles are created first, the grants come back equal.
    let outcome = round_trip(true, "shards/roles.tar.zst", "copy_with_roles")
        .await
        .expect("a restore with the roles");
    assert!(
        outcome.detail.contains("created role(s)") && outcome.detail.contains(&reader.name),
        "{}",
        outcome.detail
    );
    assert!(!outcome.detail.contains("left out"), "{}", outcome.detail);
    assert_eq!(
        fresh.psql("copy_with_roles", GRANTS_SQL).trim(),
        source_grants
    );
    let attributes = "SELECT rolcanlogin || ',' || rolconnlimit || ',' || coalesce(shobj_description(oid, 'pg_authid'), '') \
        FROM pg_roles WHERE rolname = '{}'";
    assert_eq!(
        fresh
            .psql("postgres", &attributes.replace("{}", &reader.name))
            .trim(),
        "false,7,reads"
    );
    assert_eq!(
        fresh
            .psql(
                "postgres",
                &format!(
                    "SELECT pg_has_role('{}', '{}', 'MEMBER')",
                    writer.name, reader.name
                )
            )
            .trim(),
        "t",
        "memberships come along"
    );
    // No password hash travelled: the role exists without one.
    assert_eq!(
        fresh.psql("postgres", &format!("SELECT count(*) FROM pg_authid WHERE rolname = '{}' AND rolpassword IS NOT NULL", writer.name)).trim(),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_restore_rolls_back_and_leaves_no_database() {
    require_postgres();
    let role = Role {
        name: format!("ferry_t_role_{}", common::uuid_like()),
    };
    psql("postgres", &format!("CREATE ROLE \"{}\"", role.name));
    let source = Db::create("grants");
    psql(
        &source.name,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g;
             ALTER TABLE t ENABLE ROW LEVEL SECURITY;
             CREATE POLICY readers ON t FOR SELECT TO \"{}\" USING (id > 10);",
            role.name
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let key = "shards/grants.tar.zst";
    let backed = backup(dir.path(), key, &source.name).await.unwrap();
    // The role a row security policy names disappears before the restore: the restore fails
    // half-way (a policy is the application's security: it is never left out).
    psql(&source.name, "DROP POLICY readers ON t");
    psql("postgres", &format!("DROP ROLE \"{}\"", role.name));

    let target = Db::named("rolled_back");
    verify_target(dir.path(), key, &backed.sha256, &target.name)
        .await
        .expect("verify of a new target");
    let err = restore(dir.path(), key, &backed.sha256, &target.name, false)
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains(&format!("role \"{}\" does not exist", role.name)),
        "{err:?}"
    );
    assert!(
        err.permanent,
        "a missing role cannot be fixed by retrying: {err:?}"
    );
    assert!(
        !target.exists(),
        "the failed restore left the database it created behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_fails_clearly_and_never_shows_the_password() {
    require_postgres();
    let secret = format!("s3cr3t-{}", common::uuid_like());
    let var = format!("FERRY_T_PG_PASSWORD_{}", common::uuid_like());
    // SAFETY: nextest runs every test in its own process, and nothing else in this one reads
    // the environment while it is set.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(&var, &secret);
    }
    let mut unreachable = spec();
    unreachable.port = Some(1);
    unreachable.user = Some("shop".into());
    unreachable.password_env = Some(var.clone());
    let dir = tempfile::tempdir().unwrap();
    let storage = common::storage(dir.path());

    let task = common::task(
        ShardOp::Backup,
        resource_with(unreachable.clone(), "shop"),
        &storage,
        "shards/x.tar.zst",
    );
    let err = common::run(task).await.unwrap_err();
    assert!(
        err.message.contains("connection to server") && err.message.contains("127.0.0.1:1"),
        "the error should say the connection failed, and where: {err:?}"
    );
    assert!(
        !err.permanent,
        "an unreachable server may come back: {err:?}"
    );
    assert!(
        !err.message.contains(&secret),
        "the password leaked: {err:?}"
    );

    let mut verify = common::task(
        ShardOp::Verify {
            check_target: true,
            archive: true,
            read_data: false,
        },
        resource_with(unreachable.clone(), "shop"),
        &storage,
        "shards/x.tar.zst",
    );
    verify.expected_sha256 = Some("00".repeat(32));
    let err = common::run(verify).await.unwrap_err();
    assert!(err.message.contains("connection to server"), "{err:?}");
    assert!(
        !err.message.contains(&secret),
        "the password leaked: {err:?}"
    );

    // A password variable that is not set is a permanent error naming the variable only.
    let mut unset = unreachable;
    unset.password_env = Some(format!("{var}_UNSET"));
    let task = common::task(
        ShardOp::Backup,
        resource_with(unset, "shop"),
        &storage,
        "shards/y.tar.zst",
    );
    let err = common::run(task).await.unwrap_err();
    assert!(
        err.permanent && err.message.contains(&format!("{var}_UNSET")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_source_database_is_a_permanent_error_naming_it() {
    require_postgres();
    let missing = format!("ferry_t_missing_{}", common::uuid_like());
    let dir = tempfile::tempdir().unwrap();
    let err = backup(dir.path(), "shards/m.tar.zst", &missing)
        .await
        .unwrap_err();
    assert!(err.permanent, "{err:?}");
    assert!(
        err.message.contains(&format!(
            "source database \"{missing}\" does not exist on {HOST}:{PORT}"
        )),
        "{err:?}"
    );
    // check_empty on a missing target is fine: the restore creates it.
    let key = "shards/nothing.tar.zst";
    let err = verify_target(dir.path(), key, &"00".repeat(32), &missing)
        .await
        .unwrap_err();
    assert!(
        !err.message.contains("not empty") && !err.message.contains(&missing),
        "a missing target must pass the empty check (the missing archive fails instead): {err:?}"
    );
}
