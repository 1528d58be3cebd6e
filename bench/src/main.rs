//! `ferry-bench`: the DESIGN.md §9 table. Every measure runs Ferry (the real binaries, as separate
//! processes) and its baseline side by side on the same generated data, alternating, several
//! rounds, and reports medians: measure | Ferry | baseline | ratio | target | pass/fail.

mod control_plane;
mod data;
mod incremental;
mod pitr;
mod postgres;
mod procs;
mod report;
mod s3;
mod volume;

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};

use crate::report::Row;

/// Which measures to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    All,
    Volume,
    Incremental,
    Postgres,
    Rss,
    ControlPlane,
    S3,
    Pitr,
}

/// A measure: its rows, and notes on how they were taken.
type Measure = fn(&Config, &mut Vec<String>) -> anyhow::Result<Vec<Row>>;

/// Every measure, in the order they run.
const MEASURES: [(Which, &str, Measure); 7] = [
    (Which::Volume, "volume", volume::run),
    (Which::Incremental, "incremental", incremental::run),
    (Which::Postgres, "postgres", postgres::run),
    (Which::Rss, "worker RSS", volume::run_rss),
    (Which::ControlPlane, "control plane", control_plane::run),
    (Which::S3, "s3", s3::run),
    (Which::Pitr, "pitr", pitr::run),
];

/// Ferry beside the plain tools, side by side, on generated data.
#[derive(Debug, Parser)]
#[command(
    name = "ferry-bench",
    version,
    after_help = "Examples:\n  \
        scripts/bench                          # release build, every measure, default sizes\n  \
        ferry-bench all --quick                # small sizes, no verdict on timings (what CI runs)\n  \
        ferry-bench volume --tree-size 256MiB --rounds 5 --out table.md"
)]
struct Args {
    /// The measures to run.
    #[arg(value_enum, default_value_t = Which::All)]
    which: Which,
    /// Small sizes, one round, no pass/fail verdict on timings.
    #[arg(long)]
    quick: bool,
    /// Timed rounds per measure (after one untimed warm-up) [default: 3; --quick: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Where ferry-controller, ferry-worker and ferry are [default: beside this executable].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Scratch space: generated data (cached across runs), archives, restores
    /// [default: $TMPDIR/ferry-bench].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Size of the mixed tree [default: 1GiB; --quick: 32MiB].
    #[arg(long, value_parser = parse_size)]
    tree_size: Option<u64>,
    /// Size of the small worker-RSS backup [default: 1GiB; --quick: 64MiB].
    #[arg(long, value_parser = parse_size)]
    rss_size: Option<u64>,
    /// Size of the large worker-RSS backup [default: 10GiB; --quick: 128MiB].
    #[arg(long, value_parser = parse_size)]
    big_size: Option<u64>,
    /// pgbench scale of the PostgreSQL database [default: 70 (≈1 GiB); --quick: 1].
    #[arg(long)]
    pg_scale: Option<u32>,
    /// Simulated workers of the control-plane measure [default: 500; --quick: 20].
    #[arg(long)]
    sim_workers: Option<usize>,
    /// Shards of the control-plane measure [default: 10000; --quick: 200].
    #[arg(long)]
    shards: Option<usize>,
    /// Where volume restores are written [default: /dev/shm when it has room, else the work
    /// dir]. ext4 creates files slowly for minutes after many were deleted (the
    /// `recently_deleted` check of its inode allocator), which makes restores into a disk
    /// directory depend on what ran before; tmpfs does not.
    #[arg(long)]
    restore_dir: Option<PathBuf>,
    /// Seconds of the point-in-time-restore measure's steady writer [default: 60; --quick: 10].
    #[arg(long)]
    pitr_seconds: Option<u64>,
    /// Transactions per second of that writer (pgbench -R) [default: 200; --quick: 50].
    #[arg(long)]
    pitr_rate: Option<u32>,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print no pass/fail verdicts at all.
    #[arg(long)]
    no_verdict: bool,
    /// Also write the table (and notes) as markdown to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Sizes and places every measure works with.
#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    pub rounds: usize,
    pub bins: procs::Bins,
    pub work_dir: PathBuf,
    pub tree_size: u64,
    pub rss_size: u64,
    pub big_size: u64,
    pub pg_scale: u32,
    pub sim_workers: usize,
    pub shards: usize,
    /// The PITR writer: seconds, transactions per second.
    pub pitr_secs: u64,
    pub pitr_rate: u32,
    pub seed: u64,
    pub restore_dir: Option<PathBuf>,
}

impl Config {
    /// Where to restore a tree of `bytes`: `--restore-dir`, else /dev/shm if it has room for
    /// three such trees, else the work dir.
    pub fn restore_dir(&self, bytes: u64) -> PathBuf {
        if let Some(d) = &self.restore_dir {
            return d.clone();
        }
        let shm = PathBuf::from("/dev/shm");
        let free = procs::run("df", ["-B1", "--output=avail", "/dev/shm"])
            .ok()
            .and_then(|out| {
                out.lines()
                    .nth(1)
                    .and_then(|l| l.trim().parse::<u64>().ok())
            });
        match free {
            Some(free) if shm.is_dir() && free > 3 * bytes => shm,
            _ => self.work_dir.clone(),
        }
    }
}

/// `1GiB`, `32MiB`, `10G`, `512k`, `4096`: binary units, `B`/`iB` optional.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1GiB, 32MiB)"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (use KiB, MiB, GiB, TiB)")),
    };
    Ok((num * mult as f64) as u64)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-bench: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let want = |w: Which| args.which == Which::All || args.which == w;
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = vec![
        format!(
            "rounds: {} timed, Ferry and baseline alternating (the order flips every round); medians reported",
            config.rounds
        ),
        "caches: the page cache cannot be dropped (no root guarantee), so one untimed warm-up pass of \
         Ferry and of the baseline runs first and every timed run reads warm data"
            .into(),
    ];
    let mut failed = false;
    for (which, name, measure) in MEASURES {
        if !want(which) {
            continue;
        }
        eprintln!("== {name}");
        let t = Instant::now();
        match measure(&config, &mut notes) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("ferry-bench: {name} failed: {e:#}");
                failed = true;
                rows.push(Row::error(name, &format!("{e:#}")));
            }
        }
        eprintln!(
            "== {name}: {:.0} s (of which {:.0} s in sync between runs)",
            t.elapsed().as_secs_f64(),
            procs::SETTLE_MS.swap(0, std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0
        );
    }
    // A measure may report a failed row beside good ones.
    failed |= rows.iter().any(|r| r.error.is_some());
    notes.push(format!("Ferry under test: {}", source_version()));
    notes.push(format!(
        "machine: {} CPUs, {}; whole run {:.0} s",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        report::memory_summary(),
        started.elapsed().as_secs_f64()
    ));
    let verdicts = if args.no_verdict {
        report::Verdicts::None
    } else if config.quick {
        report::Verdicts::MemoryOnly
    } else {
        report::Verdicts::All
    };
    let table = report::render(&rows, verdicts);
    println!("{table}");
    for n in &notes {
        println!("- {n}");
    }
    if let Some(out) = &args.out {
        let md = report::markdown(&rows, &notes, verdicts);
        if let Err(e) = std::fs::write(out, md) {
            eprintln!("ferry-bench: writing {}: {e}", out.display());
            failed = true;
        }
    }
    if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// The commit the binaries were presumably built from, and whether the tree had changes: read
/// from git in the current directory, when there is one.
fn source_version() -> String {
    let head = procs::run("git", ["rev-parse", "--short", "HEAD"]);
    let dirty = procs::run("git", ["status", "--porcelain", "--untracked-files=no"]);
    match (head, dirty) {
        (Ok(h), Ok(d)) => {
            let changed = d.lines().count();
            if changed == 0 {
                format!("git {}", h.trim())
            } else {
                format!(
                    "git {} with {changed} changed files (the working tree's binaries)",
                    h.trim()
                )
            }
        }
        _ => "unknown (not run from a git checkout)".into(),
    }
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let q = args.quick;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("no directory of the running executable"))?,
    };
    let bins = procs::Bins::in_dir(&bin_dir)?;
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("ferry-bench"));
    std::fs::create_dir_all(&work_dir)?;
    let rounds = args.rounds.unwrap_or(if q { 1 } else { 3 }).max(1);
    Ok(Config {
        quick: q,
        rounds,
        bins,
        work_dir: std::fs::canonicalize(&work_dir)?,
        tree_size: args.tree_size.unwrap_or(if q { 32 << 20 } else { 1 << 30 }),
        rss_size: args.rss_size.unwrap_or(if q { 64 << 20 } else { 1 << 30 }),
        big_size: args
            .big_size
            .unwrap_or(if q { 128 << 20 } else { 10 << 30 }),
        pg_scale: args.pg_scale.unwrap_or(if q { 1 } else { 70 }),
        sim_workers: args.sim_workers.unwrap_or(if q { 20 } else { 500 }).max(1),
        shards: args.shards.unwrap_or(if q { 200 } else { 10_000 }).max(1),
        pitr_secs: args.pitr_seconds.unwrap_or(if q { 10 } else { 60 }).max(1),
        pitr_rate: args.pitr_rate.unwrap_or(if q { 50 } else { 200 }).max(1),
        seed: args.seed,
        restore_dir: args.restore_dir.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert!(parse_size("1 parsec").is_err());
    }
}
