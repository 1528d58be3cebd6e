//! The benchmark in its quick mode (small sizes, one round, no verdict on timings), over the debug
//! binaries, so that it cannot rot: it must finish, exit 0 and print a row for every measure.
//! A missing tool (etcd, restic, pgbench, ferry-s3s-fs, PostgreSQL) fails it: run scripts/setup.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the Ferry binaries (a no-op when they are fresh) and returns their directory:
/// target/debug, two levels above this test executable (target/debug/deps/quick-…).
fn bin_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "ferry-controller",
            "-p",
            "ferry-worker",
            "-p",
            "ferry-cli",
            "--bins",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the Ferry binaries failed");
    std::env::current_exe()
        .expect("current_exe")
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

#[test]
fn quick_run_prints_every_measure() {
    let bins = bin_dir();
    let work = tempfile::Builder::new()
        .prefix("ferry-bench-quick-")
        .tempdir()
        .expect("tempdir");
    let table = work.path().join("table.md");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(["all", "--quick", "--rounds", "1", "--bin-dir"])
        .arg(&bins)
        .arg("--work-dir")
        .arg(work.path())
        .arg("--out")
        .arg(&table)
        .output()
        .expect("running ferry-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ferry-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let markdown = std::fs::read_to_string(&table)
        .expect("the markdown table")
        .replace("\\|", "|");
    for measure in [
        "volume backup ÷ tar|zstd",
        "volume restore ÷ zstd -d|tar -x",
        "volume backup ÷ restic backup",
        "volume backup: stored size ÷ restic's repository",
        "encrypted volume backup ÷ unencrypted",
        "encrypted volume restore ÷ unencrypted",
        "worker peak RSS, 64 MiB encrypted backup",
        "incremental: second backup (nothing changed) ÷ first backup",
        "incremental: second backup ÷ restic second backup",
        "incremental: stored after 1 % of files changed ÷ full archive",
        "incremental: backup after 1 % of files changed ÷ full backup",
        "incremental: restore of the 10th backup of a chain ÷ restore of a full archive",
        "worker peak RSS, 128 MiB incremental backup",
        "postgres backup ÷ pg_dump -Fc",
        "postgres restore ÷ pg_restore",
        "worker peak RSS, 64 MiB backup",
        "worker peak RSS, 128 MiB backup",
        "worker peak RSS, 128 MiB backup to S3",
        "control plane: assignments/s (200 shards",
        "control plane: assignments/s (600 shards",
        "control plane: controller peak RSS",
        "control plane: pass time with 500 finished jobs",
        "S3 backup ÷ tar|zstd -3 -T2|rclone rcat",
        "PITR archive lag p99 (PostgreSQL, 50 tx/s)",
        "worker peak RSS, streaming WAL at 50 tx/s",
    ] {
        assert!(stdout.contains(measure), "no {measure:?} row in:\n{stdout}");
        assert!(
            markdown.contains(measure),
            "no {measure:?} row in:\n{markdown}"
        );
    }
    assert!(!stdout.contains("ERROR"), "{stdout}");
    assert!(stdout.contains("n/a (quick)"), "{stdout}");
}
