//! PostgreSQL measures on a pgbench database: Ferry's backup ÷ `pg_dump -Fc`, Ferry's restore
//! into a new database ÷ `createdb` + `pg_restore`. Every database this creates is dropped at the
//! end, also when a step fails.

use std::ffi::OsStr;
use std::path::Path;

use anyhow::Context;

use crate::Config;
use crate::procs::{self, Ferry, require_tools};
use crate::report::{Row, Samples};

const CLUSTER: &str = "bench";

/// Drops the databases it names when dropped.
struct Databases(Vec<String>);

impl Databases {
    fn drop_now(&mut self, name: &str) {
        let _ = procs::run(
            "dropdb",
            ["-h", "127.0.0.1", "--if-exists", "--force", name],
        );
        self.0.retain(|n| n != name);
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        for name in self.0.clone() {
            self.drop_now(&name);
        }
    }
}

fn psql(db: &str, sql: &str) -> anyhow::Result<String> {
    Ok(procs::run(
        "psql",
        [
            "-h",
            "127.0.0.1",
            "-d",
            db,
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ],
    )?
    .trim()
    .to_owned())
}

fn accounts(db: &str) -> anyhow::Result<u64> {
    psql(db, "SELECT count(*) FROM pgbench_accounts")?
        .parse()
        .context("counting pgbench_accounts")
}

fn db_size_mib(db: &str) -> anyhow::Result<f64> {
    let bytes: f64 = psql(db, "SELECT pg_database_size(current_database())")?.parse()?;
    Ok(bytes / (1 << 20) as f64)
}

/// `createdb` + `pg_restore` of a `pg_dump -Fc` file; returns seconds.
fn baseline_restore(dump: &Path, db: &str) -> anyhow::Result<f64> {
    procs::timed_bash(
        r#"createdb -h 127.0.0.1 "$1" && pg_restore -h 127.0.0.1 -d "$1" "$2""#,
        &[OsStr::new(db), dump.as_os_str()],
        &[],
    )
}

pub fn run(cfg: &Config, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    // Names of this process's own, so that two runs never share a database.
    let prefix = format!("ferry_bench_{}", std::process::id());
    let source = format!("{prefix}_src");
    let source = source.as_str();
    require_tools(&[
        "pgbench",
        "pg_dump",
        "pg_restore",
        "psql",
        "createdb",
        "dropdb",
        "bash",
    ])?;
    procs::run("pg_isready", ["-h", "127.0.0.1", "-p", "5432"])
        .context("PostgreSQL on 127.0.0.1:5432 (scripts/setup starts it)")?;
    let mut dbs = Databases(Vec::new());
    dbs.0.push(source.into());
    let started = std::time::Instant::now();
    procs::run("createdb", ["-h", "127.0.0.1", source])?;
    let scale = cfg.pg_scale.to_string();
    procs::run(
        "pgbench",
        [
            "-h",
            "127.0.0.1",
            "-i",
            "-q",
            "-s",
            &scale,
            "--init-steps=dtGvp",
            source,
        ],
    )?;
    let rows = accounts(source)?;
    anyhow::ensure!(
        rows == cfg.pg_scale as u64 * 100_000,
        "pgbench made {rows} accounts"
    );
    let size = db_size_mib(source)?;
    eprintln!(
        "postgres: pgbench scale {scale}: {size:.0} MiB, {rows} accounts, in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let user = procs::run("id", ["-un"])?.trim().to_owned();
    let run_dir = tempfile::Builder::new()
        .prefix("postgres-")
        .tempdir_in(&cfg.work_dir)?;
    let mut ferry = Ferry::start(&cfg.bins, &run_dir.path().join("ferry"), &[], &[])?;
    ferry.add_worker(CLUSTER, "bench-1")?;
    ferry.add_local_storage("archives", CLUSTER)?;
    ferry.apply(
        "pg",
        &format!(
            "name: pg\ncluster: {CLUSTER}\ncomponents:\n  - name: db\n    databases:\n      - {{name: main, engine: postgres, host: 127.0.0.1, port: 5432, user: {user}, databases: [{source}]}}\n"
        ),
    )?;
    let dump = run_dir.path().join("bench.dump");
    let dump_args = [
        OsStr::new("-h"),
        OsStr::new("127.0.0.1"),
        OsStr::new("-Fc"),
        OsStr::new("-f"),
        dump.as_os_str(),
        OsStr::new(source),
    ];

    eprintln!("postgres: warm-up (one Ferry backup, one pg_dump -Fc)");
    let (_, id, _) = ferry.backup("pg", &[]).context("Ferry warm-up")?;
    ferry.delete_backup(&id)?;
    procs::timed_bash(r#"pg_dump "$@""#, &dump_args, &[])?;

    // CPU counts the worker with its pg_dump/pg_restore/psql children, the controller and the
    // CLI; or the baseline's tools. The PostgreSQL server's own work is in neither.
    let pids = [ferry.workers[0].pid(), ferry.controller.pid()];
    let [mut fb, mut fr, mut pb, mut pr] = [(); 4].map(|_| Samples::default());
    let (mut stored, mut dump_size) = (0u64, 0u64);
    for round in 1..=cfg.rounds {
        let ferry_first = round % 2 == 1;
        for ferry_turn in [ferry_first, !ferry_first] {
            if ferry_turn {
                let mut id = String::new();
                procs::settle()?;
                let b = fb.take(&pids, || {
                    let (secs, backup, job) = ferry.backup("pg", &[])?;
                    stored = job["stored_bytes"].as_u64().unwrap_or(0);
                    id = backup;
                    Ok(secs)
                })?;
                let target = format!("{prefix}_ferry_{round}");
                dbs.0.push(target.clone());
                procs::settle()?;
                let r = fr.take(&pids, || {
                    ferry.restore(
                        &id,
                        &format!("pg-copy-{round}"),
                        &[format!("{source}={target}")],
                    )
                })?;
                anyhow::ensure!(accounts(&target)? == rows, "Ferry's restore lost rows");
                dbs.drop_now(&target);
                ferry.delete_backup(&id)?;
                eprintln!("postgres round {round}: Ferry backup {b:.2} s, restore {r:.2} s");
            } else {
                procs::settle()?;
                let b = pb.take(&[], || {
                    procs::timed_bash(r#"pg_dump "$@""#, &dump_args, &[])
                })?;
                dump_size = std::fs::metadata(&dump)?.len();
                let target = format!("{prefix}_base_{round}");
                dbs.0.push(target.clone());
                procs::settle()?;
                let r = pr.take(&[], || baseline_restore(&dump, &target))?;
                anyhow::ensure!(accounts(&target)? == rows, "pg_restore lost rows");
                dbs.drop_now(&target);
                eprintln!("postgres round {round}: pg_dump -Fc {b:.2} s, pg_restore {r:.2} s");
            }
        }
    }
    let tool = procs::run("pg_dump", ["--version"])?;
    notes.push(format!(
        "postgres: pgbench scale {scale} ({size:.0} MiB database, {rows} accounts), {}; Ferry \
         archive {:.1} MiB, pg_dump -Fc file {:.1} MiB; the baseline restore is createdb + \
         pg_restore -d (Ferry creates the database too); row counts checked after every restore; \
         warm-up: one backup of each (the restores write, their caches do not matter); medians \
         per run (client side; the server's CPU is in neither) — Ferry backup {}, pg_dump {}, \
         Ferry restore {}, createdb + pg_restore {}",
        tool.trim(),
        stored as f64 / (1 << 20) as f64,
        dump_size as f64 / (1 << 20) as f64,
        fb.describe(),
        pb.describe(),
        fr.describe(),
        pr.describe(),
    ));
    Ok(vec![
        Row::ratio(
            "postgres backup ÷ pg_dump -Fc",
            fb.median(),
            pb.median(),
            1.05,
        ),
        Row::ratio(
            "postgres restore ÷ pg_restore",
            fr.median(),
            pr.median(),
            1.05,
        ),
    ])
}
