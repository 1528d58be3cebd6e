//! Point-in-time restore: the archive lag of a PostgreSQL log stream under a steady writer, and
//! the worker's memory while it streams (issue #19).
//!
//! A PostgreSQL cluster of the measure's own (`ferry_test_support::pg::PgServer`: a free port,
//! `wal_level=replica`), an app with one `pitr: true` database entry, a Ferry installation with
//! one worker and a local location. Once the stream archived its first chunk, `pgbench -R RATE
//! -T SECONDS` inserts rows of ≈ 1 KiB (one per transaction); every 250 ms the measure samples the
//! server's clock and `pg_current_wal_lsn()`. A sample's lag is how long after it the archive
//! first held its LSN: the chunk files under `logs/COMPONENT.ENTRY/FILE/OFFSET-END.RECEIVED_MS.
//! ATTEMPT` say which LSN they reach (FILE's segment × 16 MiB + END), and their ctime when they
//! got their name (the local backend renames a complete, synced chunk into place). Everything
//! started here is stopped when the measure ends, also when a step fails.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Config;
use crate::procs::{self, Ferry, Proc, require_tools};
use crate::report::{Row, Target, Unit};

const CLUSTER: &str = "bench";
const NODE: &str = "bench-1";
const APP: &str = "pitr";
const COMPONENT: &str = "db";
const ENTRY: &str = "main";
const DB: &str = "bench";
/// PostgreSQL's WAL segment size (Ferry streams only 16 MiB segments).
const WAL_SEGMENT: u64 = 16 << 20;
/// How often the writer's position is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// One sample: the server's clock (ms since the epoch) and its WAL write position.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ms: i64,
    lsn: u64,
}

/// An archived chunk: the LSN it reaches and when it appeared (ms since the epoch).
#[derive(Debug, Clone, Copy)]
struct Archived {
    end_lsn: u64,
    at_ms: i64,
}

/// `X/Y` (hex) as PostgreSQL writes an LSN.
fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The LSN where a WAL file (`TTTTTTTTLLLLLLLLSSSSSSSS`, 16 MiB segments) starts.
fn segment_start(file: &str) -> Option<u64> {
    if file.len() != 24 || !file.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let log = u64::from_str_radix(&file[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&file[16..24], 16).ok()?;
    Some((log << 32) + seg * WAL_SEGMENT)
}

/// Every chunk under a stream's directory in the local location.
fn archived(stream_dir: &Path) -> anyhow::Result<Vec<Archived>> {
    let mut out = Vec::new();
    let files = match std::fs::read_dir(stream_dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", stream_dir.display())),
    };
    for file in files {
        let file = file?;
        let name = file.file_name().to_string_lossy().into_owned();
        let Some(start) = segment_start(&name) else {
            continue;
        };
        for chunk in std::fs::read_dir(file.path())? {
            let chunk = chunk?;
            let key = format!("{name}/{}", chunk.file_name().to_string_lossy());
            // Partial uploads (`….partial-RANDOM`) are no chunks.
            let Some(parsed) = ferry_model::pitr::Chunk::parse("", &key) else {
                continue;
            };
            if parsed.end == parsed.offset {
                continue; // a file's end or a mark: no log bytes
            }
            // Gone between the listing and the look: a chunk is never removed mid-run, but a
            // partial file is.
            let Ok(meta) = chunk.metadata() else {
                continue;
            };
            out.push(Archived {
                end_lsn: start + parsed.end,
                at_ms: meta.ctime() * 1000 + meta.ctime_nsec() / 1_000_000,
            });
        }
    }
    Ok(out)
}

/// How many bytes of WAL the server had at the sample that the archive did not hold then.
fn bytes_behind(chunks: &[Archived], s: &Sample) -> u64 {
    let held = chunks
        .iter()
        .filter(|c| c.at_ms <= s.ms)
        .map(|c| c.end_lsn)
        .max()
        .unwrap_or(0);
    s.lsn.saturating_sub(held)
}

/// When the archive first held `lsn` (ms since the epoch), if it does.
fn covered_at(chunks: &[Archived], lsn: u64) -> Option<i64> {
    chunks
        .iter()
        .filter(|c| c.end_lsn >= lsn)
        .map(|c| c.at_ms)
        .min()
}

/// The nearest-rank percentile `p` (0–100) of some values.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn psql(port: u16, db: &str, sql: &str) -> anyhow::Result<String> {
    Ok(procs::run(
        "psql",
        [
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
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

/// The server's clock and WAL write position, in one statement.
fn sample(port: u16) -> anyhow::Result<Sample> {
    let out = psql(
        port,
        DB,
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint, pg_current_wal_lsn()",
    )?;
    let (ms, lsn) = out
        .split_once('|')
        .with_context(|| format!("psql said {out:?}"))?;
    Ok(Sample {
        ms: ms.parse().with_context(|| format!("a time: {ms:?}"))?,
        lsn: parse_lsn(lsn).with_context(|| format!("an LSN: {lsn:?}"))?,
    })
}

/// `PgServer::start` asserts; a failure becomes this measure's error (the panic message went
/// to stderr already).
fn start_server() -> anyhow::Result<ferry_test_support::pg::PgServer> {
    std::panic::catch_unwind(ferry_test_support::pg::PgServer::start)
        .map_err(|_| anyhow::anyhow!("starting a PostgreSQL server of the measure's own failed"))
}

/// Peak RSS (MiB) of the worker's `pg_receivewal` child, if one runs.
fn receivewal_peak(worker: u32) -> Option<f64> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (name, rest) = stat.rsplit_once(')')?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == worker && name.ends_with("(pg_receivewal"))
            .then(|| procs::peak_rss_mib(pid).ok())
            .flatten()
    })
}

/// What pgbench printed after `label` (e.g. `tps = `), up to the end of that line.
fn pgbench_field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(str::trim)
        .unwrap_or("?")
}

pub fn run(cfg: &Config, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    require_tools(&["pgbench", "psql", "pg_receivewal"])?;
    let (secs, rate) = (cfg.pitr_secs, cfg.pitr_rate);
    // Dropped last: the server outlives the worker streaming from it.
    let pg = start_server()?;
    let port = pg.port;
    psql(port, "postgres", &format!("CREATE DATABASE {DB}"))?;
    psql(
        port,
        DB,
        "CREATE TABLE rows (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT \
         clock_timestamp(), payload text NOT NULL)",
    )?;

    let user = procs::run("id", ["-un"])?.trim().to_owned();
    let run_dir = tempfile::Builder::new()
        .prefix("pitr-")
        .tempdir_in(&cfg.work_dir)?;
    let mut ferry = Ferry::start(&cfg.bins, &run_dir.path().join("ferry"), &[], &[])?;
    ferry.add_worker(CLUSTER, NODE)?;
    let location = ferry.add_local_storage("archives", CLUSTER)?;
    ferry.apply(
        APP,
        &format!(
            "name: {APP}\ncluster: {CLUSTER}\ncomponents:\n  - name: {COMPONENT}\n    databases:\n      - {{name: {ENTRY}, engine: postgres, host: 127.0.0.1, port: {port}, user: {user}, databases: [{DB}], pitr: true}}\n"
        ),
    )?;
    let stream_dir = location
        .join(ferry_model::pitr::stream_prefix(
            "default",
            APP,
            &ferry_model::task::stream_name(COMPONENT, ENTRY),
        ))
        .to_path_buf();

    // The stream job starts within a heartbeat; its first chunk holds the WAL written so far.
    let started = Instant::now();
    while archived(&stream_dir)?.is_empty() {
        ferry.workers[0].check_alive()?;
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "no chunk under {} within 60 s; worker log:\n{}",
                stream_dir.display(),
                ferry.workers[0].log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "pitr: the stream archived its first chunk {:.1} s after the app was applied",
        started.elapsed().as_secs_f64()
    );

    // ≈ 1 KiB of random hex per row: stored inline (under the TOAST threshold), uncompressed.
    let script = run_dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO rows (payload) SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 32);\n",
    )?;
    let worker = ferry.workers[0].pid();
    let sampler = procs::RssSampler::start(worker);
    let mut cmd = Command::new("pgbench");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-n", "-c", "2"])
        .args(["-R", &rate.to_string(), "-T", &secs.to_string(), "-f"])
        .arg(&script)
        .arg(DB);
    let pgbench_log = run_dir.path().join("pgbench.log");
    let mut writer = Proc::spawn("pgbench", &mut cmd, pgbench_log.clone())?;
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs + 60);
    let status = loop {
        let tick = Instant::now();
        samples.push(sample(port)?);
        if let Some(status) = writer.try_wait()? {
            break status;
        }
        ferry.workers[0].check_alive()?;
        if Instant::now() > deadline {
            bail!("pgbench did not end within {} s", secs + 60);
        }
        std::thread::sleep(SAMPLE_EVERY.saturating_sub(tick.elapsed()));
    };
    let pgbench_out = std::fs::read_to_string(&pgbench_log).unwrap_or_default();
    if !status.success() {
        bail!("pgbench failed ({status}):\n{pgbench_out}");
    }
    // The position after the writer's last commit.
    samples.push(sample(port)?);
    let last = samples.iter().map(|s| s.lsn).max().unwrap_or(0);

    // Wait until the archive holds everything the writer wrote.
    let waited = Instant::now();
    let chunks = loop {
        let chunks = archived(&stream_dir)?;
        if chunks.iter().any(|c| c.end_lsn >= last) {
            break chunks;
        }
        ferry.workers[0].check_alive()?;
        if waited.elapsed() > Duration::from_secs(60) {
            bail!(
                "the archive did not reach the writer's last position within 60 s; worker log:\n{}",
                ferry.workers[0].log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rss = sampler.finish();
    let server_version = psql(port, DB, "SHOW server_version").unwrap_or_else(|_| "?".into());
    let worker_peak = ferry.workers[0].peak_rss_mib()?;
    let receivewal = receivewal_peak(worker);
    let lags: Vec<f64> = samples
        .iter()
        .map(|s| {
            let at = covered_at(&chunks, s.lsn).unwrap_or(s.ms);
            (at - s.ms).max(0) as f64 / 1000.0
        })
        .collect();
    let (p50, p99, max) = (
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        percentile(&lags, 100.0),
    );
    // The same samples in bytes: how much of the server's WAL the archive did not hold yet.
    let behind: Vec<f64> = samples
        .iter()
        .map(|s| bytes_behind(&chunks, s) as f64 / 1024.0)
        .collect();
    let behind_p99 = percentile(&behind, 99.0);
    let wal_mib = (last - samples[0].lsn) as f64 / (1 << 20) as f64;
    eprintln!(
        "pitr: {} samples over {secs} s at {rate} tx/s: lag p50 {p50:.2} s, p99 {p99:.2} s, max \
         {max:.2} s; {wal_mib:.1} MiB of WAL in {} chunks; worker VmHWM {worker_peak:.1} MiB",
        samples.len(),
        chunks.len()
    );
    notes.push(format!(
        "pitr: a PostgreSQL {} server of the measure's own (initdb, a free port, fsync off), an \
         app with one pitr database entry, one worker, a local location; pgbench -R {rate} -T {secs} -c 2 inserting ≈ 1 KiB \
         rows (one per transaction; {} transactions, tps {}, rate-limit schedule lag {}); {} \
         samples of (clock_timestamp(), pg_current_wal_lsn()) every 250 ms, each sample's lag \
         = when the first chunk reaching its LSN got its name in the location (ctime) − the \
         sample's time: p50 {p50:.2} s, p99 {p99:.2} s, max {max:.2} s (in bytes: p99 \
         {behind_p99:.0} KiB of WAL not yet archived at a sample); {wal_mib:.1} MiB of WAL \
         in {} chunks in all; worker VmHWM {worker_peak:.1} MiB (VmRSS highest per quarter \
         {}), its pg_receivewal child's VmHWM {} (not in the worker's row)",
        server_version,
        pgbench_field(&pgbench_out, "number of transactions actually processed:"),
        pgbench_field(&pgbench_out, "tps ="),
        pgbench_field(&pgbench_out, "rate limit schedule lag:"),
        samples.len(),
        chunks.len(),
        procs::by_quarter(&rss),
        receivewal
            .map(|m| format!("{m:.1} MiB"))
            .unwrap_or_else(|| "unknown".into()),
    ));
    Ok(vec![
        Row {
            measure: format!("PITR archive lag p99 (PostgreSQL, {rate} tx/s)"),
            ferry: Some(p99),
            baseline: None,
            unit: Unit::Seconds,
            target: Some(Target::AtMost(5.0)),
            timing: true,
            error: None,
        },
        Row {
            measure: format!("worker peak RSS, streaming WAL at {rate} tx/s"),
            ferry: Some(worker_peak),
            baseline: None,
            unit: Unit::MiB,
            target: Some(Target::AtMost(64.0)),
            timing: false,
            error: None,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x300_0060));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(
            segment_start("000000010000000000000003"),
            Some(3 * WAL_SEGMENT)
        );
        assert_eq!(
            segment_start("000000010000000100000002"),
            Some((1 << 32) + 2 * WAL_SEGMENT)
        );
        assert_eq!(segment_start("00000001000000000000000"), None);
    }

    #[test]
    fn lag_of_a_sample() {
        let chunks = [
            Archived {
                end_lsn: 100,
                at_ms: 1_000,
            },
            Archived {
                end_lsn: 200,
                at_ms: 2_000,
            },
            Archived {
                end_lsn: 300,
                at_ms: 2_500,
            },
        ];
        assert_eq!(covered_at(&chunks, 150), Some(2_000));
        assert_eq!(covered_at(&chunks, 100), Some(1_000));
        assert_eq!(covered_at(&chunks, 301), None);
        let at = |ms, lsn| Sample { ms, lsn };
        assert_eq!(bytes_behind(&chunks, &at(2_100, 250)), 50);
        assert_eq!(
            bytes_behind(&chunks, &at(500, 80)),
            80,
            "nothing archived yet"
        );
        assert_eq!(bytes_behind(&chunks, &at(3_000, 300)), 0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), 4.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
    }
}
