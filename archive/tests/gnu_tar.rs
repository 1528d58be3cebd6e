//! Interoperability with GNU tar (required: it is how an operator opens an archive by hand): our archives unpack
//! with GNU tar to the same tree, and GNU tar's own GNU-format archives
//! (sparse, long names, hard links) unpack with extract_tree.

mod common;

use std::fs::{self, File};
use std::process::Command;

use common::*;
use ferry_archive::compare_trees;

/// Fails loudly when GNU tar is missing: these tests never skip.
fn require_gnu_tar() {
    let ok = Command::new("tar")
        .arg("--version")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("GNU tar"))
        .unwrap_or(false);
    assert!(
        ok,
        "GNU tar is required for the interoperability tests (apt-get install tar)"
    );
}

#[test]
fn gnu_tar_unpacks_our_archive_identically() {
    require_gnu_tar();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_fixture(&src);
    let tar_path = tmp.path().join("ours.tar");
    archive_to_file(&src, &tar_path);

    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let status = Command::new("tar")
        .args(["-x", "-p", "--same-owner", "--warning=no-timestamp", "-f"])
        .arg(&tar_path)
        .arg("-C")
        .arg(&dst)
        .status()
        .unwrap();
    assert!(status.success());
    let diffs = compare_trees(&src, &dst).unwrap();
    assert!(diffs.is_empty(), "GNU tar saw something else: {diffs:#?}");
}

#[test]
fn we_unpack_gnu_tar_archives() {
    require_gnu_tar();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_fixture(&src);
    let tar_path = tmp.path().join("gnu.tar");
    let status = Command::new("tar")
        .args([
            "-c",
            "--format=gnu",
            "--sparse",
            "--warning=no-timestamp",
            "-f",
        ])
        .arg(&tar_path)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    assert!(fs::metadata(&tar_path).unwrap().len() < 8 * MIB);

    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let (stats, _) = extract(File::open(&tar_path).unwrap(), &dst, false).unwrap();
    assert_eq!(stats.hardlinks, 2);
    // GNU format keeps whole seconds; compare_trees then compares seconds.
    let diffs = compare_trees(&src, &dst).unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");
    assert!(allocated(&dst.join("sparse/big")) < MIB);
}
