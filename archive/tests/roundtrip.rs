//! Round trips of the full fixture, and proof that compare_trees notices
//! each kind of difference it claims to check.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, symlink};
use std::path::Path;

use common::*;
use ferry_archive::{compare_trees, tree_size};

#[test]
fn round_trip_keeps_everything_and_compare_sees_each_change() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_fixture(&src);
    let total = tree_size(&src).unwrap();

    let tar_path = tmp.path().join("fixture.tar");
    let (wstats, wprogress) = archive_to_file(&src, &tar_path);
    assert_eq!(wprogress, total, "progress reaches tree_size");
    assert_eq!(wstats.bytes, total);
    assert_eq!(wstats.symlinks, 5);
    assert_eq!(wstats.hardlinks, 2);
    assert_eq!(wstats.skipped, 0);
    assert_eq!(wstats.warnings, 0);
    // 5 MiB of random data plus small things; the 1 GiB sparse file adds ~12 KiB.
    let tar_len = fs::metadata(&tar_path).unwrap().len();
    assert!(tar_len < 6 * MIB, "archive is {tar_len} bytes");

    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let (xstats, xprogress) = extract(File::open(&tar_path).unwrap(), &dst, false).unwrap();
    assert_eq!(xstats, wstats, "extract counts what write counted");
    assert_eq!(xprogress, total);

    let diffs = compare_trees(&src, &dst).unwrap();
    assert!(diffs.is_empty(), "differences after round trip: {diffs:#?}");

    // Things compare_trees does not look at, checked directly.
    let owned = fs::metadata(dst.join("owned.txt")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid()),
        (1234, 5678),
        "ownership restored as root"
    );
    assert!(
        allocated(&dst.join("sparse/big")) < MIB,
        "big sparse file stays sparse"
    );
    let three = fs::metadata(dst.join("a/three")).unwrap();
    assert_eq!(three.nlink(), 3);
    assert_eq!(
        fs::read_link(dst.join("links/unnormalised")).unwrap(),
        Path::new("./a//b/../c")
    );

    // Now break one property per entry; each must show up, and nothing else.
    // Content: flip a byte, keep size and mtime.
    let random = dst.join("data/random.bin");
    let before = fs::symlink_metadata(&random).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&random).unwrap();
    let mut byte = [0u8; 1];
    File::open(&random)
        .unwrap()
        .read_exact_at(&mut byte, 1234)
        .unwrap();
    f.write_all_at(&[byte[0] ^ 0xff], 1234).unwrap();
    drop(f);
    set_mtime(&random, before.mtime(), before.mtime_nsec() as u32);
    // Mode.
    chmod(&dst.join("modes/secret"), 0o644);
    // Mtime, by one nanosecond.
    let space = dst.join("names/sp ace");
    set_mtime(&space, BASE_SECS + 1, 1);
    let orig = fs::symlink_metadata(src.join("names/sp ace")).unwrap();
    set_mtime(&space, orig.mtime(), orig.mtime_nsec() as u32 + 1);
    // Symlink target (same mtime).
    let rel = dst.join("links/rel");
    let rel_meta = fs::symlink_metadata(&rel).unwrap();
    fs::remove_file(&rel).unwrap();
    symlink("../a/empty.txt", &rel).unwrap();
    set_mtime(&rel, rel_meta.mtime(), rel_meta.mtime_nsec() as u32);
    // Hard link broken: same content, mode and mtime, own inode.
    replace_with_copy(&dst.join("hl/two"), false);
    // Sparse file made dense.
    replace_with_copy(&dst.join("sparse/small"), true);
    // A missing entry.
    fs::remove_file(dst.join("a/empty.txt")).unwrap();
    // Directory mtimes are restored above; removing/renaming changed them again.
    for dir in ["data", "hl", "sparse", "a", "links"] {
        let m = fs::symlink_metadata(src.join(dir)).unwrap();
        set_mtime(&dst.join(dir), m.mtime(), m.mtime_nsec() as u32);
    }

    let diffs = compare_trees(&src, &dst).unwrap();
    let has = |path: &str, what: &str| diffs.iter().any(|d| d.contains(path) && d.contains(what));
    assert!(
        has("data/random.bin", "content differs (from byte 1234)"),
        "{diffs:#?}"
    );
    assert!(
        has("modes/secret", "mode differs (0600 vs 0644)"),
        "{diffs:#?}"
    );
    assert!(has("names/sp ace", "mtime differs"), "{diffs:#?}");
    assert!(has("links/rel", "symlink target differs"), "{diffs:#?}");
    assert!(has("hl/two", "hard links differ"), "{diffs:#?}");
    assert!(has("sparse/small", "sparse-ness lost"), "{diffs:#?}");
    assert!(has("a/empty.txt", "only in"), "{diffs:#?}");
    // The broken hard link shows up once per side ({a/three, hl/one, hl/two} in
    // src, {a/three, hl/one} in dst): 8 lines for 7 changes.
    assert_eq!(diffs.len(), 8, "{diffs:#?}");
}

/// Extraction resolves paths a component at a time when the whole path is longer
/// than PATH_MAX (4096 bytes), so deep trees restore.
#[test]
fn paths_longer_than_path_max_are_extracted() {
    let tmp = tempfile::tempdir().unwrap();
    let comps: Vec<String> = (0..30)
        .map(|i| format!("{i:02}{}", "d".repeat(200)))
        .collect();
    let dir = comps.join("/");
    let file = format!("{dir}/file");
    assert!(file.len() > 6000);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(BASE_SECS as u64);
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o750);
    header.set_size(0);
    builder
        .append_data(&mut header.clone(), &dir, &[][..])
        .unwrap();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o640);
    header.set_size(4);
    builder
        .append_data(&mut header, &file, &b"deep"[..])
        .unwrap();
    let data = builder.into_inner().unwrap();

    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let (stats, _) = extract(&data[..], &dst, false).unwrap();
    assert_eq!((stats.files, stats.dirs), (1, 1));
    // Checked the same way: a component at a time, relative to the directory above.
    let mut cur: std::os::fd::OwnedFd = File::open(&dst).unwrap().into();
    for comp in &comps {
        let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY;
        cur = rustix::fs::openat(&cur, comp.as_str(), flags, rustix::fs::Mode::empty()).unwrap();
    }
    let st = rustix::fs::fstat(&cur).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o750, "the deferred directory mode");
    let f = rustix::fs::openat(
        &cur,
        "file",
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let mut content = String::new();
    File::from(f).read_to_string(&mut content).unwrap();
    assert_eq!(content, "deep");
    // And an overwrite removes it again, as deep as it goes.
    let empty = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(BASE_SECS as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        b.append_data(&mut h, "new", &[][..]).unwrap();
        b.into_inner().unwrap()
    };
    extract(&empty[..], &dst, true).unwrap();
    assert_eq!(listing(&dst), vec![dst.join("new")]);
}

/// Replaces `p` by a fresh copy with the same content, mode and mtime; dense
/// writes every byte (zeros included) so holes become allocated blocks.
fn replace_with_copy(p: &Path, dense: bool) {
    let meta = fs::symlink_metadata(p).unwrap();
    let tmp = p.with_extension("copy");
    {
        let mut src = File::open(p).unwrap();
        let mut out = File::create(&tmp).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = src.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).unwrap();
        }
        assert!(dense || meta.blocks() * 512 >= meta.len());
        out.sync_all().unwrap();
    }
    fs::rename(&tmp, p).unwrap();
    chmod(p, meta.mode() & 0o7777);
    set_mtime(p, meta.mtime(), meta.mtime_nsec() as u32);
}

#[test]
fn compare_checks_root_mode_but_not_root_mtime() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    set_mtime(&a, 1, 0);
    set_mtime(&b, 2, 0);
    assert!(compare_trees(&a, &b).unwrap().is_empty());
    chmod(&b, 0o700);
    chmod(&a, 0o755);
    let diffs = compare_trees(&a, &b).unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(diffs[0].contains("\".\": mode differs"), "{diffs:?}");
}

#[test]
fn compare_reports_type_and_size_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir_all(a.join("x")).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(b.join("x"), b"now a file").unwrap();
    fs::write(a.join("s"), b"short").unwrap();
    fs::write(b.join("s"), b"longer").unwrap();
    let diffs = compare_trees(&a, &b).unwrap();
    assert!(
        diffs
            .iter()
            .any(|d| d.contains("\"x\": type differs (directory vs regular file)")),
        "{diffs:?}"
    );
    assert!(
        diffs
            .iter()
            .any(|d| d.contains("\"s\": size differs (5 vs 6)")),
        "{diffs:?}"
    );
}

#[test]
fn entries_are_sorted_by_name_bytes_and_output_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    for name in [&b"b"[..], b"a", b"B", b"caf\xe9", b"a.txt", b"_"] {
        fs::write(src.join(OsStr::from_bytes(name)), name).unwrap();
    }
    fs::create_dir(src.join("dir")).unwrap();
    fs::write(src.join("dir/z"), b"z").unwrap();
    fs::write(src.join("dir/y"), b"y").unwrap();
    let (first, ..) = archive(src);
    let (second, ..) = archive(src);
    assert_eq!(first, second, "same tree, same bytes");

    let mut ar = tar::Archive::new(&first[..]);
    let names: Vec<Vec<u8>> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    let expected: Vec<&[u8]> = vec![
        b".", b"B", b"_", b"a", b"a.txt", b"b", b"caf\xe9", b"dir", b"dir/y", b"dir/z",
    ];
    assert_eq!(names, expected);
}

#[test]
fn sockets_and_fifos_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("file"), b"data").unwrap();
    // mkfifo(1) rather than libc: the workspace denies unsafe code.
    let made = std::process::Command::new("mkfifo")
        .arg(src.join("fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let (data, stats, _) = archive(&src);
    assert_eq!(stats.skipped, 2);
    assert_eq!(stats.files, 1);
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    extract(&data[..], &dst, false).unwrap();
    let names: Vec<_> = listing(&dst)
        .into_iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec![OsStr::new("file")]);
}

#[test]
fn archive_uses_gnu_long_names_pax_mtime_and_sparse_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    let long = "n".repeat(150);
    fs::write(src.join(&long), b"long name").unwrap();
    symlink(long_link_target(), src.join("link")).unwrap();
    make_sparse(&src.join("sparse"), 64 * MIB, &[0]);
    set_mtime(&src.join(&long), BASE_SECS, BASE_NANOS);

    let (data, ..) = archive(src);
    // Raw view: extension entries are visible.
    let mut raw = tar::Archive::new(&data[..]);
    let kinds: Vec<u8> = raw
        .entries()
        .unwrap()
        .raw(true)
        .map(|e| e.unwrap().header().entry_type().as_byte())
        .collect();
    assert!(kinds.contains(&b'L'), "{kinds:?}");
    assert!(kinds.contains(&b'K'), "{kinds:?}");
    assert!(kinds.contains(&b'x'), "{kinds:?}");
    assert!(kinds.contains(&b'S'), "{kinds:?}");

    // Cooked view: the tar crate puts them together.
    let mut ar = tar::Archive::new(&data[..]);
    for entry in ar.entries().unwrap() {
        let mut e = entry.unwrap();
        let path = e.path_bytes().into_owned();
        if path == long.as_bytes() {
            let pax: Vec<(String, String)> = e
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|r| {
                    let r = r.unwrap();
                    (r.key().unwrap().to_owned(), r.value().unwrap().to_owned())
                })
                .collect();
            assert_eq!(
                pax,
                vec![("mtime".to_owned(), "1600000000.123456789".to_owned())]
            );
        } else if path == b"link" {
            assert_eq!(
                e.link_name_bytes().unwrap().as_ref(),
                long_link_target().as_bytes()
            );
        } else if path == b"sparse" {
            assert_eq!(e.header().entry_type(), tar::EntryType::GNUSparse);
            assert_eq!(e.size(), 64 * MIB);
        }
    }
}

/// A consumer that goes away after `left` bytes (an upload that failed).
struct FailAfter {
    left: usize,
}

impl Write for FailAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("consumer gone"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_failure_names_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("big.bin"),
        random_bytes(2 * MIB as usize, 9),
    )
    .unwrap();
    let progress = std::sync::atomic::AtomicU64::new(0);
    let err =
        ferry_archive::write_tree(tmp.path(), FailAfter { left: 300_000 }, &progress).unwrap_err();
    assert!(
        matches!(err, ferry_archive::ArchiveError::Output { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("big.bin") && err.to_string().contains("consumer gone"),
        "{err}"
    );
}
