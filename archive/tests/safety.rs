//! Hostile archives: nothing may be written outside the target, and the
//! target's old content is only replaced when asked, after a valid header.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use common::*;
use ferry_archive::{ArchiveError, ExtractOptions, compare_trees, extract_tree};
use tar::EntryType;

/// A base dir holding an empty "target" and an "outside" dir with one file.
fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    let outside = tmp.path().join("outside");
    fs::create_dir(&target).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("precious"), b"keep me").unwrap();
    (tmp, target, outside)
}

fn unsafe_reason(err: ArchiveError, path: &str) -> String {
    let msg = err.to_string();
    match err {
        ArchiveError::Unsafe { path: p, reason } => {
            assert_eq!(p, Path::new(path), "{msg}");
            assert!(msg.contains(path), "message names the path: {msg}");
            reason
        }
        other => panic!("expected Unsafe for {path}, got {other}"),
    }
}

#[test]
fn parent_dir_entry_is_refused() {
    let (tmp, target, outside) = setup();
    let before = listing(tmp.path());
    for name in [&b"../evil"[..], b"a/../../evil", b"./../evil"] {
        let data = hostile(&[(name, EntryType::Regular, None, b"pwned")]);
        let err = extract(&data[..], &target, true).unwrap_err();
        let reason = unsafe_reason(err, std::str::from_utf8(name).unwrap());
        assert!(reason.contains(".."), "{reason}");
        assert_eq!(
            listing(tmp.path()),
            before,
            "nothing created next to the target"
        );
        assert_eq!(listing(&outside).len(), 1);
    }
    // A directory entry is refused the same way.
    let data = hostile(&[(b"../evil_dir", EntryType::Directory, None, b"")]);
    unsafe_reason(
        extract(&data[..], &target, true).unwrap_err(),
        "../evil_dir",
    );
    assert_eq!(listing(tmp.path()), before);
}

#[test]
fn absolute_path_is_refused() {
    let (_tmp, target, _outside) = setup();
    let victim = format!("/tmp/{}", unique("x-evil"));
    let data = hostile(&[(victim.as_bytes(), EntryType::Regular, None, b"pwned")]);
    let err = extract(&data[..], &target, false).unwrap_err();
    let reason = unsafe_reason(err, &victim);
    assert!(reason.contains("absolute"), "{reason}");
    assert!(!Path::new(&victim).exists());
    assert!(listing(&target).is_empty());
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let (_tmp, target, outside) = setup();
    let out = outside.to_str().unwrap().as_bytes();
    for link_target in [out, b".."] {
        let data = hostile(&[
            (b"link", EntryType::Symlink, Some(link_target), b""),
            (b"link/evil.txt", EntryType::Regular, None, b"pwned"),
        ]);
        let err = extract(&data[..], &target, true).unwrap_err();
        let reason = unsafe_reason(err, "link/evil.txt");
        assert!(reason.contains("symlink escape"), "{reason}");
        assert_eq!(listing(&outside), vec![outside.join("precious")]);
        assert!(!target.parent().unwrap().join("evil.txt").exists());
    }
    // Deeper: a directory, then a symlink inside it, then a dir through it.
    let data = hostile(&[
        (b"d", EntryType::Directory, None, b""),
        (b"d/l", EntryType::Symlink, Some(out), b""),
        (b"d/l/sub", EntryType::Directory, None, b""),
    ]);
    let reason = unsafe_reason(extract(&data[..], &target, true).unwrap_err(), "d/l/sub");
    assert!(reason.contains("symlink escape"), "{reason}");
    assert_eq!(listing(&outside), vec![outside.join("precious")]);
}

#[test]
fn planted_symlink_at_the_final_component_is_not_followed() {
    let (_tmp, target, outside) = setup();
    let precious = outside.join("precious");
    // Same name twice: first a symlink to an outside file, then a file.
    let data = hostile(&[
        (
            b"x",
            EntryType::Symlink,
            Some(precious.to_str().unwrap().as_bytes()),
            b"",
        ),
        (b"x", EntryType::Regular, None, b"pwned"),
    ]);
    let reason = unsafe_reason(extract(&data[..], &target, true).unwrap_err(), "x");
    assert!(reason.contains("already exists"), "{reason}");
    assert_eq!(fs::read(&precious).unwrap(), b"keep me");
    // A dangling symlink must not be followed to create its target either.
    let victim = outside.join("created-through-dangling-link");
    let data = hostile(&[
        (
            b"y",
            EntryType::Symlink,
            Some(victim.to_str().unwrap().as_bytes()),
            b"",
        ),
        (b"y", EntryType::Regular, None, b"pwned"),
    ]);
    unsafe_reason(extract(&data[..], &target, true).unwrap_err(), "y");
    assert!(!victim.exists());
}

#[test]
fn hostile_hard_links_are_refused() {
    let (_tmp, target, outside) = setup();
    let precious = outside.join("precious");
    let out = outside.to_str().unwrap().as_bytes().to_vec();
    let abs = precious.to_str().unwrap().as_bytes().to_vec();
    let cases: Vec<(Vec<RawEntry<'_>>, &str, &str)> = vec![
        (
            vec![(b"hl", EntryType::Link, Some(b"../../etc/passwd"), b"")],
            "hl",
            "..",
        ),
        (
            vec![(b"hl", EntryType::Link, Some(b"../outside/precious"), b"")],
            "hl",
            "..",
        ),
        (
            vec![(b"hl", EntryType::Link, Some(&abs), b"")],
            "hl",
            "absolute",
        ),
        (
            vec![
                (b"sl", EntryType::Symlink, Some(&out), b""),
                (b"hl", EntryType::Link, Some(b"sl/precious"), b""),
            ],
            "hl",
            "symlink escape",
        ),
        (
            vec![
                (b"sl", EntryType::Symlink, Some(&abs), b""),
                (b"hl", EntryType::Link, Some(b"sl"), b""),
            ],
            "hl",
            "not a regular file",
        ),
        (
            vec![(b"hl", EntryType::Link, Some(b"missing"), b"")],
            "hl",
            "not a regular file",
        ),
        (
            vec![(b"../hl", EntryType::Link, Some(b"x"), b"")],
            "../hl",
            "..",
        ),
    ];
    for (entries, path, why) in cases {
        let data = hostile(&entries);
        let reason = unsafe_reason(extract(&data[..], &target, true).unwrap_err(), path);
        assert!(reason.contains(why), "{path}: {reason}");
        assert_eq!(
            fs::metadata(&precious).unwrap().nlink(),
            1,
            "outside file not linked"
        );
        assert_eq!(fs::read(&precious).unwrap(), b"keep me");
    }
    // A link to a regular file inside the target is fine.
    let data = hostile(&[
        (b"f", EntryType::Regular, None, b"ok"),
        (b"g", EntryType::Link, Some(b"f"), b""),
    ]);
    let (stats, _) = extract(&data[..], &target, true).unwrap();
    assert_eq!((stats.files, stats.hardlinks), (1, 1));
    assert_eq!(
        fs::metadata(target.join("g")).unwrap().ino(),
        fs::metadata(target.join("f")).unwrap().ino()
    );
}

#[test]
fn non_empty_target_needs_overwrite() {
    let (tmp, target, outside) = setup();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("new.txt"), b"new").unwrap();
    let (data, ..) = archive(&src);

    fs::write(target.join("old.txt"), b"old").unwrap();
    let err = extract(&data[..], &target, false).unwrap_err();
    assert!(matches!(err, ArchiveError::TargetNotEmpty { .. }), "{err}");
    assert!(err.to_string().contains(target.to_str().unwrap()));
    assert_eq!(listing(&target), vec![target.join("old.txt")]);
    assert_eq!(fs::read(target.join("old.txt")).unwrap(), b"old");
    assert_eq!(listing(&outside), vec![outside.join("precious")]);
}

#[test]
fn overwrite_replaces_content_without_touching_the_outside() {
    let (tmp, target, outside) = setup();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("new.txt"), b"new").unwrap();
    let (data, ..) = archive(&src);

    fs::write(target.join("old.txt"), b"old").unwrap();
    fs::create_dir_all(target.join("olddir/sub")).unwrap();
    fs::write(target.join("olddir/sub/file"), b"old").unwrap();
    chmod(&target.join("olddir/sub"), 0o555);
    symlink(&outside, target.join("escape_dir")).unwrap();
    symlink(outside.join("precious"), target.join("escape_file")).unwrap();
    symlink(&outside, target.join("olddir/escape")).unwrap();

    extract(&data[..], &target, true).unwrap();
    assert!(compare_trees(&src, &target).unwrap().is_empty());
    assert_eq!(listing(&target), vec![target.join("new.txt")]);
    assert_eq!(listing(&outside), vec![outside.join("precious")]);
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep me");
}

#[test]
fn overwrite_keeps_old_content_when_the_stream_is_not_an_archive() {
    let (tmp, target, _outside) = setup();
    fs::write(target.join("old.txt"), b"old").unwrap();
    let garbage = random_bytes(4096, 1);
    for (what, data) in [
        ("empty", Vec::new()),
        ("zeros", vec![0u8; 1024]),
        ("garbage", garbage),
    ] {
        let err = extract(&data[..], &target, true).unwrap_err();
        assert!(matches!(err, ArchiveError::Input { .. }), "{what}: {err}");
        assert_eq!(listing(&target), vec![target.join("old.txt")], "{what}");
    }
    drop(tmp);
}

#[test]
fn truncated_streams_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), random_bytes(10_000, 3)).unwrap();
    fs::write(src.join("b"), b"b").unwrap();
    let (data, ..) = archive(&src);
    // Cut mid-data, at a header boundary (end marker missing), and inside the marker is fine.
    let header_boundary = data.len() - 1024;
    for cut in [700, 512 * 5, header_boundary] {
        let target = tmp.path().join(format!("t{cut}"));
        fs::create_dir(&target).unwrap();
        let err = extract(&data[..cut], &target, false).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Input { .. }),
            "cut {cut}: {err}"
        );
    }
    let target = tmp.path().join("ok");
    fs::create_dir(&target).unwrap();
    extract(&data[..], &target, false).unwrap();
}

#[test]
fn devices_are_refused_fifos_and_unknown_types_skipped() {
    let (_tmp, target, _outside) = setup();
    let data = hostile(&[(b"dev", EntryType::Char, None, b"")]);
    let reason = unsafe_reason(extract(&data[..], &target, true).unwrap_err(), "dev");
    assert!(reason.contains("device"), "{reason}");
    let data = hostile(&[(b"blk", EntryType::Block, None, b"")]);
    unsafe_reason(extract(&data[..], &target, true).unwrap_err(), "blk");

    let data = hostile(&[
        (b"fifo", EntryType::Fifo, None, b""),
        (b"label", EntryType::new(b'V'), None, b""),
        (b"odd", EntryType::new(b'Z'), None, b"payload"),
        (b"file", EntryType::Regular, None, b"ok"),
    ]);
    let (stats, _) = extract(&data[..], &target, true).unwrap();
    assert_eq!(stats.skipped, 3);
    assert_eq!(listing(&target), vec![target.join("file")]);
}

#[test]
fn root_entry_must_be_a_directory() {
    let (_tmp, target, _outside) = setup();
    let mut data = Vec::new();
    raw_entry(&mut data, b".", EntryType::Regular, None, b"x");
    end_archive(&mut data);
    let reason = unsafe_reason(extract(&data[..], &target, true).unwrap_err(), ".");
    assert!(reason.contains("must be a directory"), "{reason}");
}

#[test]
fn target_must_exist_and_be_a_directory() {
    let (tmp, _target, _outside) = setup();
    let data = hostile(&[]);
    let missing = tmp.path().join("missing");
    let err = extract(&data[..], &missing, false).unwrap_err();
    assert!(matches!(err, ArchiveError::TargetMissing { .. }), "{err}");
    assert!(err.to_string().contains("missing"));
    let file = tmp.path().join("file");
    fs::write(&file, b"").unwrap();
    let err = extract(&data[..], &file, true).unwrap_err();
    assert!(
        matches!(err, ArchiveError::TargetNotDirectory { .. }),
        "{err}"
    );
}

/// A target that is itself a symlink is not followed: with overwrite, following it
/// would wipe whatever it points at.
#[test]
fn a_target_that_is_a_symlink_is_refused() {
    let (tmp, target, outside) = setup();
    let data = hostile(&[(b"evil", EntryType::Regular, None, b"pwned")]);
    let to_outside = tmp.path().join("to-outside");
    symlink(&outside, &to_outside).unwrap();
    let to_target = tmp.path().join("to-target");
    symlink(&target, &to_target).unwrap();
    let with_slash = |p: &Path| PathBuf::from(format!("{}/", p.to_str().unwrap()));
    for given in [
        to_outside.clone(),
        with_slash(&to_outside),
        to_target.clone(),
        with_slash(&to_target),
    ] {
        for overwrite in [false, true] {
            let err = extract(&data[..], &given, overwrite).unwrap_err();
            assert!(
                matches!(err, ArchiveError::TargetIsSymlink { .. }),
                "{given:?}: {err}"
            );
            assert!(err.to_string().contains("symbolic link"), "{err}");
            assert_eq!(listing(&outside), vec![outside.join("precious")]);
            assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep me");
            assert!(listing(&target).is_empty());
        }
    }
    // Symlinks above the target are the administrator's business: followed as before.
    let alias = tmp.path().join("alias");
    symlink(tmp.path(), &alias).unwrap();
    extract(&data[..], &alias.join("target"), false).unwrap();
    assert_eq!(fs::read(target.join("evil")).unwrap(), b"pwned");
    // And a trailing slash on a real directory is fine.
    extract(&data[..], &with_slash(&target), true).unwrap();
    assert_eq!(listing(&target), vec![target.join("evil")]);
}

/// `clear_setid` drops setuid and setgid from files, directories and the root, and keeps every
/// other bit (sticky included); without it they are all restored.
#[test]
fn clear_setid_drops_setuid_and_setgid_only() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let modes: &[(&str, bool, u32)] = &[
        ("suid", false, 0o4755),
        ("sgid", false, 0o2711),
        ("both", false, 0o6750),
        ("plain", false, 0o640),
        ("sgid_dir", true, 0o2775),
        ("sticky_dir", true, 0o1777),
        ("all_dir", true, 0o7755),
    ];
    for &(name, dir, mode) in modes {
        let p = src.join(name);
        if dir {
            fs::create_dir(&p).unwrap();
        } else {
            fs::write(&p, name).unwrap();
        }
        chmod(&p, mode);
    }
    chmod(&src, 0o2750);
    let (data, ..) = archive(&src);
    for clear_setid in [false, true] {
        let target = tmp.path().join(format!("dst-{clear_setid}"));
        fs::create_dir(&target).unwrap();
        let options = ExtractOptions {
            clear_setid,
            ..ExtractOptions::default()
        };
        extract_tree(&data[..], &target, &options, &AtomicU64::new(0)).unwrap();
        let expect = |mode: u32| if clear_setid { mode & !0o6000 } else { mode };
        for &(name, _, mode) in modes.iter().chain([&("", true, 0o2750)]) {
            let got = fs::symlink_metadata(target.join(name)).unwrap().mode() & 0o7777;
            assert_eq!(
                got,
                expect(mode),
                "{name:?} with clear_setid={clear_setid}: {got:o}"
            );
        }
    }
}

#[test]
fn missing_parents_are_created_inside_the_target() {
    let (_tmp, target, _outside) = setup();
    let data = hostile(&[(b"a/b/c.txt", EntryType::Regular, None, b"c")]);
    extract(&data[..], &target, true).unwrap();
    assert_eq!(fs::read(target.join("a/b/c.txt")).unwrap(), b"c");
}

/// A tiny stream whose PAX header or GNU long name declares gigabytes fails at that header,
/// before anything reads (and allocates) its data.
#[test]
fn huge_metadata_headers_fail_fast() {
    for (kind, size) in [
        (EntryType::XHeader, 4u64 << 30),
        (EntryType::XGlobalHeader, 4u64 << 30),
        (EntryType::GNULongName, 1u64 << 30),
        (EntryType::GNULongLink, 1u64 << 30),
    ] {
        let (_tmp, target, _outside) = setup();
        let mut header = tar::Header::new_ustar();
        header.set_path("x").unwrap();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_cksum();
        let mut data = header.as_bytes().to_vec();
        data.extend_from_slice(&[b'a'; 512]);
        assert!(data.len() <= 1024);
        // Refused at the header itself (without the cap, the crate would try to read the
        // declared gigabytes and fail later on the short stream, or allocate them).
        let err = extract(&data[..], &target, false).unwrap_err();
        assert!(
            err.to_string().contains("refused as hostile"),
            "{kind:?}: {err}"
        );
        assert!(listing(&target).is_empty());
    }
}
