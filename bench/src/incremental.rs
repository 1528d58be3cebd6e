//! Incremental volume measures (DESIGN §10) on a copy of the mixed tree and local storage: the
//! second backup of an unchanged tree ÷ the first, and ÷ restic's second backup; a backup after
//! 1 % of the files changed against a self-contained (`--full`) backup, in stored bytes and in
//! wall time; and the restore of the 10th backup of a chain ÷ the restore of a full archive.
//! Every round starts from an empty repository: the previous round's backups are deleted and
//! their packs collected.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Config;
use crate::data::{self, Dataset, Rng};
use crate::procs::{self, Ferry, require_tools};
use crate::report::{Row, Samples, Target, Unit, median};
use crate::volume::mib;

const CLUSTER: &str = "bench";
const NODE: &str = "bench-1";
const APP: &str = "inc";
/// Backups in the chain whose last one is restored.
const CHAIN: usize = 10;
/// One file in this many changes between two backups of the chain.
const CHANGE_EVERY: usize = 100;

#[derive(Debug, Default)]
struct Runs {
    full: Samples,
    first: Samples,
    second: Samples,
    restic_second: Samples,
    changed: Samples,
    restore_chain: Samples,
    restore_full: Samples,
    full_stored: Vec<f64>,
    changed_stored: Vec<f64>,
}

/// Every regular file under `root`, sorted: the population the 1 % is drawn from.
fn regular_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Changes every `CHANGE_EVERY`-th file (from `step`): its first 4 KiB rewritten with new
/// random bytes, its size kept (so the tree's file and byte counts still check restores).
fn change_files(files: &[PathBuf], step: usize, rng: &mut Rng) -> anyhow::Result<usize> {
    use std::io::{Seek, SeekFrom, Write};
    let mut changed = 0;
    for path in files.iter().skip(step % CHANGE_EVERY).step_by(CHANGE_EVERY) {
        let len = std::fs::metadata(path)?.len().min(4096) as usize;
        if len == 0 {
            continue;
        }
        let mut block = vec![0u8; len];
        rng.fill(&mut block);
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&block)?;
        changed += 1;
    }
    Ok(changed)
}

/// One timed Ferry backup; returns its id and stored bytes.
fn timed_backup(
    ferry: &Ferry,
    samples: &mut Samples,
    extra: &[&str],
) -> anyhow::Result<(String, u64)> {
    let pids = [ferry.workers[0].pid(), ferry.controller.pid()];
    let mut out = (String::new(), 0);
    procs::settle()?;
    samples.take(&pids, || {
        let (secs, id, job) = ferry.backup(APP, extra)?;
        out = (id, job["stored_bytes"].as_u64().unwrap_or(0));
        Ok(secs)
    })?;
    Ok(out)
}

/// One timed restore into `restores`, checked against the tree's counts, then removed.
fn timed_restore(
    ferry: &Ferry,
    samples: &mut Samples,
    tree: &Dataset,
    id: &str,
    target: &Path,
) -> anyhow::Result<f64> {
    let pids = [ferry.workers[0].pid(), ferry.controller.pid()];
    let to_app = format!(
        "copy-{}",
        target.file_name().unwrap_or_default().to_string_lossy()
    );
    procs::settle()?;
    let secs = samples.take(&pids, || {
        ferry.restore(
            id,
            &to_app,
            &[format!("{}={}", tree.root.display(), target.display())],
        )
    })?;
    data::check_same(&tree.stats, target, "incremental restore")?;
    std::fs::remove_dir_all(target)?;
    Ok(secs)
}

/// restic's second backup of the tree (its first, untimed, into a fresh repository).
fn restic_second(tree: &Dataset, scratch: &Path, runs: &mut Runs) -> anyhow::Result<f64> {
    let repo = scratch.join("restic-repo");
    let cache = scratch.join("restic-cache");
    let env = [("RESTIC_PASSWORD", "x")];
    let args = [repo.as_os_str(), cache.as_os_str(), tree.root.as_os_str()];
    procs::timed_bash(r#"restic init -q --repo "$1""#, &args[..1], &env)?;
    let backup = r#"restic backup -q --repo "$1" --cache-dir "$2" "$3""#;
    procs::timed_bash(backup, &args, &env)?;
    procs::settle()?;
    let secs = runs
        .restic_second
        .take(&[], || procs::timed_bash(backup, &args, &env))?;
    std::fs::remove_dir_all(&repo)?;
    let _ = std::fs::remove_dir_all(&cache);
    Ok(secs)
}

/// One round: a full backup, a chain of `CHAIN` incremental ones (the third after 1 % of the
/// files changed, each later one after another 1 %), restic's second backup, and the restores
/// of the full archive and of the chain's last backup; then every backup deleted and its packs
/// collected.
fn round(
    ferry: &Ferry,
    tree: &Dataset,
    files: &[PathBuf],
    dirs: (&Path, &Path),
    n: usize,
    runs: &mut Runs,
) -> anyhow::Result<()> {
    let (scratch, restores) = dirs;
    let mut rng = Rng::new(0xC4A1 + n as u64);
    let (full_id, full_stored) = timed_backup(ferry, &mut runs.full, &["--full"])?;
    runs.full_stored.push(mib(full_stored));
    let (first, _) = timed_backup(ferry, &mut runs.first, &[])?;
    let (second, _) = timed_backup(ferry, &mut runs.second, &[])?;
    let restic = restic_second(tree, scratch, runs)?;
    let changed = change_files(files, 0, &mut rng)?;
    let (third, stored) = timed_backup(ferry, &mut runs.changed, &[])?;
    runs.changed_stored.push(mib(stored));
    let mut ids = vec![full_id.clone(), first, second, third];
    for step in 1..=CHAIN - 3 {
        change_files(files, step, &mut rng)?;
        let (_, id, _) = ferry.backup(APP, &[])?;
        ids.push(id);
    }
    let last = ids.last().context("the chain")?.clone();
    let chain = timed_restore(
        ferry,
        &mut runs.restore_chain,
        tree,
        &last,
        &restores.join(format!("chain-{n}")),
    )?;
    let full = timed_restore(
        ferry,
        &mut runs.restore_full,
        tree,
        &full_id,
        &restores.join(format!("full-{n}")),
    )?;
    eprintln!(
        "incremental round {n}: full {:.2} s ({:.1} MiB), first {:.2} s, second {:.2} s \
         (restic second {restic:.2} s), {changed} files changed: {:.2} s ({:.2} MiB stored); \
         restore of backup {CHAIN} {chain:.2} s, of the full archive {full:.2} s",
        runs.full.last(),
        mib(full_stored),
        runs.first.last(),
        runs.second.last(),
        runs.changed.last(),
        mib(stored),
    );
    for id in &ids {
        ferry.delete_backup(id)?;
    }
    ferry.cli_ok(&["storage", "gc", "archives"])?;
    Ok(())
}

/// Incremental backups and restores against their full counterparts and restic.
pub fn run(cfg: &Config, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    require_tools(&["restic", "bash", "cp", "cat", "tar"])?;
    let source = data::mixed_tree(&cfg.work_dir, cfg.tree_size, cfg.seed)?;
    let run_dir = tempfile::Builder::new()
        .prefix("incremental-")
        .tempdir_in(&cfg.work_dir)?;
    let scratch = run_dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    // A copy: its files change between the backups of a chain.
    let root = run_dir.path().join("tree");
    procs::run(
        "cp",
        [
            std::ffi::OsStr::new("-a"),
            source.root.as_os_str(),
            root.as_os_str(),
        ],
    )?;
    let tree = Dataset {
        root,
        stats: source.stats,
    };
    let files = regular_files(&tree.root)?;
    let restores = tempfile::Builder::new()
        .prefix("ferry-bench-restores-")
        .tempdir_in(cfg.restore_dir(tree.stats.bytes))?;
    let mut ferry = Ferry::start(
        &cfg.bins,
        &run_dir.path().join("ferry"),
        &["--gc-grace", "0s"],
        &[],
    )?;
    ferry.add_worker(CLUSTER, NODE)?;
    ferry.add_local_storage("archives", CLUSTER)?;
    ferry.apply(
        APP,
        &format!(
            "name: {APP}\ncluster: {CLUSTER}\ncomponents:\n  - name: data\n    volumes:\n      - {{name: tree, path: {}, node: {NODE}}}\n",
            tree.root.display()
        ),
    )?;
    // The copy is in the page cache from `cp`; read it once more, as every timed run does.
    procs::timed_bash(
        r#"tar -cf - -C "$1" . | cat > /dev/null"#,
        &[tree.root.as_os_str()],
        &[],
    )?;
    let mut runs = Runs::default();
    for n in 1..=cfg.rounds {
        round(
            &ferry,
            &tree,
            &files,
            (&scratch, restores.path()),
            n,
            &mut runs,
        )?;
    }
    let worker_hwm = ferry.workers[0].peak_rss_mib()?;
    notes.push(format!(
        "incremental: a copy of the mixed tree ({}), local storage, a fresh repository per round; \
         medians per run — full (--full) backup {}, first incremental {}, second (unchanged) {}, \
         restic's second backup {} (its first untimed, same round), after {} % of the files \
         changed (4 KiB rewritten at the start of each, {} of {} files) {}, stored {:.2} MiB vs \
         {:.1} MiB for the full archive; restore of the {CHAIN}th backup of a chain (1 % more \
         changed before each) {}, of the full archive {}; the worker's VmHWM after every round \
         {worker_hwm:.1} MiB",
        tree.stats,
        runs.full.describe(),
        runs.first.describe(),
        runs.second.describe(),
        runs.restic_second.describe(),
        100 / CHANGE_EVERY,
        files.len().div_ceil(CHANGE_EVERY),
        files.len(),
        runs.changed.describe(),
        median(&runs.changed_stored),
        median(&runs.full_stored),
        runs.restore_chain.describe(),
        runs.restore_full.describe(),
    ));
    Ok(vec![
        Row::ratio(
            "incremental: second backup (nothing changed) ÷ first backup",
            runs.second.median(),
            runs.first.median(),
            0.10,
        ),
        Row::ratio(
            "incremental: second backup ÷ restic second backup",
            runs.second.median(),
            runs.restic_second.median(),
            0.50,
        ),
        Row {
            measure: "incremental: stored after 1 % of files changed ÷ full archive".into(),
            ferry: Some(median(&runs.changed_stored)),
            baseline: Some(median(&runs.full_stored)),
            unit: Unit::MiB,
            target: Some(Target::RatioAtMost(0.02)),
            timing: false,
            error: None,
        },
        Row::ratio(
            "incremental: backup after 1 % of files changed ÷ full backup",
            runs.changed.median(),
            runs.full.median(),
            0.15,
        ),
        Row::ratio(
            "incremental: restore of the 10th backup of a chain ÷ restore of a full archive",
            runs.restore_chain.median(),
            runs.restore_full.median(),
            1.20,
        ),
    ])
}
