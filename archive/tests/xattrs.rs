//! Extended attributes, ACLs, file capabilities and owners by name: round trips through Ferry's
//! own extraction and through GNU tar `--xattrs --acls`, compared attribute by attribute.
//! These tests need root (file capabilities, chown, users) and the acl/libcap2-bin tools, which
//! scripts/setup installs; they fail, never skip, without them.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicU64;

use common::*;
use ferry_archive::{ExtractOptions, compare_trees, extract_tree};

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is required (scripts/setup installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_root() {
    let uid = fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        uid, 0,
        "these tests set file capabilities and owners: run them as root (CI does)"
    );
}

fn setfattr(path: &Path, name: &str, value: &[u8]) {
    xattr::set(path, name, value).unwrap_or_else(|e| panic!("{name} on {path:?}: {e}"));
}

/// A tree with what a real server has: user attributes (many, empty and binary values) on the
/// root, directories and files; access and default ACLs on nested directories and a file; a
/// file capability on a setuid-less binary; setuid/setgid/sticky bits.
fn build_attr_tree(root: &Path) {
    let p = |rel: &str| root.join(rel);
    fs::create_dir_all(p("srv/www/uploads")).unwrap();
    fs::create_dir_all(p("shared/team")).unwrap();
    fs::create_dir(p("tmp")).unwrap();
    fs::write(p("srv/www/index.html"), b"<html>hello</html>").unwrap();
    fs::write(p("srv/www/uploads/a.bin"), random_bytes(70_000, 3)).unwrap();
    fs::write(p("shared/team/notes.txt"), b"notes").unwrap();
    fs::write(p("httpd"), b"#!/bin/sh\necho binary\n").unwrap();
    fs::write(p("suid"), b"suid").unwrap();

    setfattr(root, "user.volume", b"root attribute");
    for i in 0..40 {
        setfattr(
            &p("srv/www/index.html"),
            &format!("user.k{i:02}"),
            format!("v{i}").as_bytes(),
        );
    }
    setfattr(&p("srv/www/index.html"), "user.empty", b"");
    setfattr(
        &p("srv/www/uploads/a.bin"),
        "user.binary",
        &[0, 1, 2, 255, b'\n', b'=', 0],
    );
    setfattr(&p("srv/www"), "user.dir", b"on a directory");

    run(
        "setfacl",
        &[
            "-m",
            "u:nobody:rwx,g:nogroup:rx",
            p("shared").to_str().unwrap(),
        ],
    );
    run(
        "setfacl",
        &[
            "-d",
            "-m",
            "u:nobody:rwx,g:nogroup:r-x",
            p("shared").to_str().unwrap(),
        ],
    );
    run(
        "setfacl",
        &["-m", "u:nobody:r-x", p("shared/team").to_str().unwrap()],
    );
    run(
        "setfacl",
        &[
            "-d",
            "-m",
            "u:nobody:rw",
            p("shared/team").to_str().unwrap(),
        ],
    );
    run(
        "setfacl",
        &[
            "-m",
            "u:nobody:rw",
            p("shared/team/notes.txt").to_str().unwrap(),
        ],
    );
    run("setfacl", &["-d", "-m", "o::r", root.to_str().unwrap()]);

    chmod(&p("httpd"), 0o755);
    run(
        "setcap",
        &["cap_net_bind_service=+ep", p("httpd").to_str().unwrap()],
    );
    chmod(&p("suid"), 0o6755);
    chmod(&p("tmp"), 0o1777);
}

fn attr_names(path: &Path) -> Vec<String> {
    xattr::list(path)
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn attributes_acls_and_capabilities_round_trip() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_attr_tree(&src);
    // The fixture really has what the test claims (a tool that silently did nothing would make
    // the comparison below meaningless).
    assert!(attr_names(&src.join("shared")).contains(&"system.posix_acl_default".to_string()));
    assert!(attr_names(&src.join("httpd")).contains(&"security.capability".to_string()));
    assert_eq!(attr_names(&src.join("srv/www/index.html")).len(), 41);

    let (data, wstats, _) = archive(&src);
    assert_eq!(wstats.warnings, 0);
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let (stats, _) = extract(&data[..], &dst, false).unwrap();
    assert!(stats.attr_warnings.is_empty(), "{:?}", stats.attr_warnings);

    let diffs = compare_trees(&src, &dst).unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");
    // Spelled out for the three that matter most in production.
    assert_eq!(
        run("getcap", &[dst.join("httpd").to_str().unwrap()])
            .split_whitespace()
            .nth(1),
        Some("cap_net_bind_service=ep")
    );
    let acl = |p: &Path| {
        run(
            "getfacl",
            &["--omit-header", "--absolute-names", p.to_str().unwrap()],
        )
    };
    assert_eq!(acl(&src.join("shared")), acl(&dst.join("shared")));
    assert_eq!(acl(&src.join("shared/team")), acl(&dst.join("shared/team")));
    assert_eq!(acl(&src), acl(&dst), "the volume root's default ACL");
    assert_eq!(
        fs::metadata(dst.join("suid")).unwrap().mode() & 0o7777,
        0o6755
    );

    // A change to any attribute is a difference the comparison reports.
    setfattr(&dst.join("srv/www/uploads/a.bin"), "user.binary", b"other");
    let diffs = compare_trees(&src, &dst).unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert!(diffs[0].contains("user.binary"), "{diffs:#?}");
}

#[test]
fn gnu_tar_with_xattrs_and_acls_extracts_the_same_tree() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_attr_tree(&src);
    let tar_path = tmp.path().join("ours.tar");
    archive_to_file(&src, &tar_path);

    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    run(
        "tar",
        &[
            "-x",
            "-p",
            "--same-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "-f",
            tar_path.to_str().unwrap(),
            "-C",
            dst.to_str().unwrap(),
        ],
    );
    let diffs = compare_trees(&src, &dst).unwrap();
    assert!(diffs.is_empty(), "GNU tar saw something else: {diffs:#?}");
}

#[test]
fn a_target_without_attribute_support_warns_per_kind() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_attr_tree(&src);
    let (data, _, _) = archive(&src);
    // ramfs keeps no extended attributes at all: every kind is refused there.
    let mnt = tmp.path().join("ramfs");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "ramfs", "ferry-ramfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(mounted, "mounting a ramfs needs root and mount(8)");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    let dst = mnt.join("dst");
    fs::create_dir(&dst).unwrap();
    let (stats, _) = extract(&data[..], &dst, false).unwrap();
    let mut kinds: Vec<&str> = stats
        .attr_warnings
        .iter()
        .map(|w| w.kind.as_str())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "POSIX ACLs",
            "file capabilities",
            "user extended attributes"
        ],
        "{:?}",
        stats.attr_warnings
    );
    // Content and everything the target does support came back.
    assert_eq!(
        fs::read(dst.join("shared/team/notes.txt")).unwrap(),
        b"notes"
    );
    let w = stats
        .attr_warnings
        .iter()
        .find(|w| w.kind == "POSIX ACLs")
        .unwrap();
    assert!(w.count >= 5, "{w}");
    assert!(w.to_string().contains("not restored"), "{w}");
}

#[test]
fn owners_are_restored_by_name_unless_numeric() {
    require_root();
    let user = ferry_test_support::TempUser::create("arch");
    let old_uid = user.uid();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("owned"), b"data").unwrap();
    std::os::unix::fs::chown(src.join("owned"), Some(old_uid), None).unwrap();
    let (data, _, _) = archive(&src);

    // The target host knows the name under another uid.
    let new_uid = old_uid + 1000;
    user.renumber(new_uid);

    let by_name = tmp.path().join("by-name");
    fs::create_dir(&by_name).unwrap();
    extract(&data[..], &by_name, false).unwrap();
    assert_eq!(fs::metadata(by_name.join("owned")).unwrap().uid(), new_uid);

    let numeric = tmp.path().join("numeric");
    fs::create_dir(&numeric).unwrap();
    let options = ExtractOptions {
        numeric_owner: true,
        ..ExtractOptions::default()
    };
    extract_tree(&data[..], &numeric, &options, &AtomicU64::new(0)).unwrap();
    assert_eq!(fs::metadata(numeric.join("owned")).unwrap().uid(), old_uid);

    // A name the target does not know falls back to the number.
    drop(user);
    let unknown = tmp.path().join("unknown");
    fs::create_dir(&unknown).unwrap();
    extract(&data[..], &unknown, false).unwrap();
    assert_eq!(fs::metadata(unknown.join("owned")).unwrap().uid(), old_uid);
    let _ = File::open(unknown.join("owned")).unwrap();
}

/// A symlink's owner, mtime and attributes are set on the link itself (relative to its held
/// parent directory), never on what it points at.
#[test]
fn a_symlinks_owner_time_and_attributes_are_its_own() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/file"), b"pointed at").unwrap();
    let link = src.join("d/link");
    std::os::unix::fs::symlink("file", &link).unwrap();
    // user.* is not allowed on symlinks; trusted.* is (for root).
    setfattr(&link, "trusted.ferry", b"on the link");
    std::os::unix::fs::lchown(&link, Some(1234), Some(5678)).unwrap();
    set_mtime(&link, BASE_SECS, BASE_NANOS);

    let (data, ..) = archive(&src);
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let (stats, _) = extract(&data[..], &dst, false).unwrap();
    assert!(stats.attr_warnings.is_empty(), "{:?}", stats.attr_warnings);
    let got = dst.join("d/link");
    assert_eq!(
        xattr::get(&got, "trusted.ferry").unwrap().as_deref(),
        Some(&b"on the link"[..])
    );
    assert!(attr_names(&dst.join("d/file")).is_empty());
    let meta = fs::symlink_metadata(&got).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (BASE_SECS, i64::from(BASE_NANOS))
    );
    let file = fs::symlink_metadata(dst.join("d/file")).unwrap();
    assert_eq!((file.uid(), file.gid()), (0, 0));
    assert!(compare_trees(&src, &dst).unwrap().is_empty());
}
