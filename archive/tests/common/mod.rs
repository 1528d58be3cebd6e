//! Shared test helpers: the full-fidelity fixture tree, archive helpers and
//! raw (hostile) tar entry writers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_archive::{ArchiveError, ArchiveStats, ExtractOptions, extract_tree, write_tree};
use filetime::FileTime;

pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;

/// Base mtime used throughout: seconds with a nanosecond part.
pub const BASE_SECS: i64 = 1_600_000_000;
pub const BASE_NANOS: u32 = 123_456_789;

pub fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    let t = FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift64*), no extra crates needed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A sparse file of `size` bytes with 4 KiB of data at each offset in `at`.
pub fn make_sparse(p: &Path, size: u64, at: &[u64]) {
    let f = File::create(p).unwrap();
    f.set_len(size).unwrap();
    for (i, &off) in at.iter().enumerate() {
        let block = random_bytes(4096, off ^ (i as u64 + 7));
        let off = off.min(size - 4096);
        f.write_all_at(&block, off).unwrap();
    }
    f.sync_all().unwrap();
}

pub fn allocated(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().blocks() * 512
}

/// Path of the long name in the fixture: a 200-byte file name at the end of a
/// path longer than 300 bytes.
pub fn deep_path() -> PathBuf {
    PathBuf::from("deep")
        .join("x".repeat(60))
        .join("y".repeat(60))
        .join("z".repeat(200))
}

pub fn long_link_target() -> String {
    "t/".repeat(75)
}

/// Builds the fixture tree with everything a backup must keep, then sets
/// explicit nanosecond mtimes on every entry (deepest first, so writing
/// children does not disturb a parent's time).
pub fn build_fixture(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    };
    w("a/b/c/deep.txt", b"deep\n");
    w("a/empty.txt", b"");
    fs::create_dir_all(root.join("empty_dir")).unwrap();

    w("modes/suid", b"#!/bin/sh\n");
    chmod(&root.join("modes/suid"), 0o4755);
    w("modes/secret", b"secret");
    chmod(&root.join("modes/secret"), 0o600);
    fs::create_dir_all(root.join("modes/sticky")).unwrap();
    chmod(&root.join("modes/sticky"), 0o1777);

    w("ro/inside.txt", b"inside a read-only dir");

    fs::create_dir_all(root.join("links")).unwrap();
    symlink("../a/b/c/deep.txt", root.join("links/rel")).unwrap();
    symlink("does/not/exist", root.join("links/dangling")).unwrap();
    symlink("/etc/hostname", root.join("links/abs")).unwrap();
    symlink("./a//b/../c", root.join("links/unnormalised")).unwrap();
    symlink(long_link_target(), root.join("links/long")).unwrap();

    // Hard-link group of 3 across directories; "a/three" is first in name order.
    w("hl/one", b"linked content");
    fs::hard_link(root.join("hl/one"), root.join("hl/two")).unwrap();
    fs::hard_link(root.join("hl/one"), root.join("a/three")).unwrap();

    fs::create_dir_all(root.join("sparse")).unwrap();
    make_sparse(&root.join("sparse/big"), GIB, &[0, 512 * MIB, GIB]);
    make_sparse(&root.join("sparse/small"), 16 * MIB, &[0, 8 * MIB]);

    fs::create_dir_all(root.join("names")).unwrap();
    fs::write(
        root.join("names").join(OsStr::from_bytes(b"caf\xe9")),
        b"latin-1 name",
    )
    .unwrap();
    fs::write(root.join("names/new\nline"), b"newline in name").unwrap();
    fs::write(root.join("names/sp ace"), b"space").unwrap();

    let deep = root.join(deep_path());
    fs::create_dir_all(deep.parent().unwrap()).unwrap();
    fs::write(&deep, b"far down").unwrap();
    assert!(deep_path().as_os_str().len() > 300);

    w("data/random.bin", &random_bytes(5 * MIB as usize, 42));

    w("times/old.txt", b"before 1970");
    w("times/whole.txt", b"whole seconds");

    w("owned.txt", b"owned by someone else");
    std::os::unix::fs::lchown(root.join("owned.txt"), Some(1234), Some(5678)).unwrap();

    // Mtimes last: every entry gets its own nanosecond time, deepest first.
    let mut all = Vec::new();
    collect(root, Path::new(""), &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, rel) in all.iter().enumerate() {
        set_mtime(&root.join(rel), BASE_SECS + i as i64, BASE_NANOS);
    }
    set_mtime(&root.join("times/old.txt"), -31_536_000, 250_000_000);
    set_mtime(&root.join("times/whole.txt"), BASE_SECS, 0);
    // Read-only dir: its content exists already; mode after content (root ignores it anyway).
    chmod(&root.join("ro"), 0o555);
    chmod(root, 0o750);
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(root.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let child = rel.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            collect(root, &child, out);
        }
        out.push(child);
    }
}

pub fn archive(root: &Path) -> (Vec<u8>, ArchiveStats, u64) {
    let progress = AtomicU64::new(0);
    let mut out = Vec::new();
    let stats = write_tree(root, &mut out, &progress).unwrap();
    (out, stats, progress.load(Ordering::Relaxed))
}

/// Archives into a temporary file (keeps big fixtures out of memory).
pub fn archive_to_file(root: &Path, file: &Path) -> (ArchiveStats, u64) {
    let progress = AtomicU64::new(0);
    let out = File::create(file).unwrap();
    let stats = write_tree(root, out, &progress).unwrap();
    (stats, progress.load(Ordering::Relaxed))
}

pub fn extract(
    data: impl Read,
    target: &Path,
    overwrite: bool,
) -> Result<(ArchiveStats, u64), ArchiveError> {
    let progress = AtomicU64::new(0);
    let options = ExtractOptions {
        overwrite,
        ..ExtractOptions::default()
    };
    let stats = extract_tree(data, target, &options, &progress)?;
    Ok((stats, progress.load(Ordering::Relaxed)))
}

/// Streams two files and says whether their bytes are equal.
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 18], vec![0u8; 1 << 18]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

pub fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Writes a header whose name (and link name) bytes are put in raw, bypassing
/// the `tar` crate's path checks, which refuse `..` and absolute paths.
pub fn raw_entry(
    out: &mut Vec<u8>,
    name: &[u8],
    kind: tar::EntryType,
    link: Option<&[u8]>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    if let Some(link) = link {
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// Two zero blocks: the end-of-archive marker.
pub fn end_archive(out: &mut Vec<u8>) {
    out.extend(std::iter::repeat_n(0u8, 1024));
}

/// One raw entry: name, type, link name, data.
pub type RawEntry<'a> = (&'a [u8], tar::EntryType, Option<&'a [u8]>, &'a [u8]);

/// A hostile archive: a root entry followed by `entries`.
pub fn hostile(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    raw_entry(&mut out, b".", tar::EntryType::Directory, None, b"");
    for (name, kind, link, data) in entries {
        raw_entry(&mut out, name, *kind, *link, data);
    }
    end_archive(&mut out);
    out
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn rewind(f: &mut File) -> io::Result<u64> {
    f.seek(SeekFrom::Start(0))
}
