//! A concurrent attacker inside the target: while a restore runs, a thread keeps
//! exchanging a directory of the target with a symlink to a directory outside it.
//! Whatever the restore's outcome, nothing may be written (or changed) outside.

mod common;

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use ferry_archive::ArchiveError;
use rustix::fs::{CWD, RenameFlags, renameat_with};
use tar::EntryType;

/// Leaf directories a/b/c0 .. a/b/c{DIRS-1}, each with FILES small files.
const DIRS: usize = 4;
const FILES: usize = 500;
/// Restores raced; each starts with a fresh target and attacker. (The path-based
/// extraction this replaced wrote outside in the first round of every trial run.)
const ROUNDS: usize = 12;
/// The reader waits for the attacker's next swap every this many bytes (two
/// 512-byte blocks per file entry), so the swaps are spread over the whole restore.
const GATE_BYTES: u64 = 16 * 1024;
/// Mode of the outside directories: the archive says 0755 for its directories.
const OUTSIDE_MODE: u32 = 0o700;

/// `a`, `a/b`, `a/b/cK` directory entries, then `a/b/cK/file-N` files.
fn race_archive() -> Vec<u8> {
    let names: Vec<(String, EntryType)> = ["a".to_owned(), "a/b".to_owned()]
        .into_iter()
        .chain((0..DIRS).map(|k| format!("a/b/c{k}")))
        .map(|n| (n, EntryType::Directory))
        .chain((0..DIRS).flat_map(|k| {
            (0..FILES).map(move |n| (format!("a/b/c{k}/file-{n}"), EntryType::Regular))
        }))
        .collect();
    let entries: Vec<RawEntry<'_>> = names
        .iter()
        .map(|(n, kind)| {
            let data: &[u8] = if *kind == EntryType::Regular {
                b"pwned"
            } else {
                b""
            };
            (n.as_bytes(), *kind, None, data)
        })
        .collect();
    hostile(&entries)
}

/// Everything below `dir`, relative, with its mode; directories are followed,
/// symlinks are not.
fn tree(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            }
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            out.push((rel, meta.permissions().mode() & 0o7777));
        }
    }
    out.sort();
    out
}

/// What the attacker thread and the restore share.
#[derive(Default)]
struct Attack {
    /// Set when the restore has returned.
    stop: AtomicBool,
    /// Exchanges tried (the gate waits on these: they go on whatever happens).
    tries: AtomicU64,
    /// Exchanges done.
    swaps: AtomicU64,
    /// Set when the attacker has returned.
    done: AtomicBool,
}

/// Keeps exchanging `target/a/b` (once the restore made it) with a symlink to
/// `outside`, atomically (`RENAME_EXCHANGE`), until `stop`.
fn attacker(target: &Path, outside: &Path, attack: &Attack) {
    let dir = target.join("a/b");
    let link = target.join("a/b.swap");
    while fs::symlink_metadata(&dir).is_err() {
        if attack.stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::yield_now();
    }
    // A failure shows as no swaps at all, which the test refuses.
    if symlink(outside, &link).is_err() {
        return;
    }
    while !attack.stop.load(Ordering::Relaxed) {
        if renameat_with(CWD, &dir, CWD, &link, RenameFlags::EXCHANGE).is_ok() {
            attack.swaps.fetch_add(1, Ordering::Relaxed);
        }
        attack.tries.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hands the archive over, waiting every [`GATE_BYTES`] until the attacker has
/// tried again: the restore cannot outrun the attacker, whatever the scheduling.
struct Gated<'a> {
    data: &'a [u8],
    pos: u64,
    attack: &'a Attack,
    seen: u64,
}

impl Read for Gated<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The first gate comes after the directory entries, so a/b exists by then.
        if self.pos > 0 && self.pos.is_multiple_of(GATE_BYTES) {
            while self.attack.tries.load(Ordering::Relaxed) == self.seen
                && !self.attack.done.load(Ordering::Relaxed)
            {
                std::thread::yield_now();
            }
            self.seen = self.attack.tries.load(Ordering::Relaxed);
        }
        let room = ((GATE_BYTES - self.pos % GATE_BYTES) as usize).min(buf.len());
        let n = self.data.read(&mut buf[..room])?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[test]
fn a_parent_swapped_for_a_symlink_during_restore_never_leads_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // The same subdirectories as under a/b, so a path-based restore that follows the
    // swapped-in link finds somewhere to write.
    for k in 0..DIRS {
        let d = outside.join(format!("c{k}"));
        fs::create_dir(&d).unwrap();
        chmod(&d, OUTSIDE_MODE);
    }
    let before = tree(&outside);
    let data = race_archive();
    let (mut succeeded, mut refused, mut total_swaps) = (0, 0, 0);
    for round in 0..ROUNDS {
        let target = tmp.path().join(format!("target-{round}"));
        fs::create_dir(&target).unwrap();
        let attack = Attack::default();
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                attacker(&target, &outside, &attack);
                attack.done.store(true, Ordering::Relaxed);
            });
            let input = Gated {
                data: &data,
                pos: 0,
                attack: &attack,
                seen: 0,
            };
            let result = extract(input, &target, false);
            attack.stop.store(true, Ordering::Relaxed);
            result
        });
        let after = tree(&outside);
        let changed: Vec<_> = after.iter().filter(|e| !before.contains(e)).collect();
        assert!(
            changed.is_empty() && after.len() == before.len(),
            "round {round}: the outside directory was written to or changed: {} new or \
             changed entries, the first {:?}",
            changed.len(),
            &changed[..changed.len().min(8)]
        );
        total_swaps += attack.swaps.load(Ordering::Relaxed);
        // Refusing the swapped-in link is as good as never meeting it; no other error.
        match result {
            Ok(_) => succeeded += 1,
            Err(ArchiveError::Unsafe { reason, .. }) => {
                assert!(reason.contains("symlink escape"), "round {round}: {reason}");
                refused += 1;
            }
            Err(e) => panic!("round {round}: unexpected error {e}"),
        }
    }
    eprintln!("{ROUNDS} rounds: {succeeded} restored, {refused} refused, {total_swaps} swaps");
    assert!(total_swaps > 0, "the attacker never swapped");
}
