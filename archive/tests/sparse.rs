//! Sparse files: tiny archives, holes kept on restore, every map shape.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;

use common::*;
use ferry_archive::compare_trees;

#[test]
fn one_gib_sparse_file_gives_a_tiny_archive_and_stays_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_sparse(&src.join("big"), GIB, &[0, 512 * MIB, GIB]);
    assert!(allocated(&src.join("big")) < MIB);

    let (data, stats, progress) = archive(&src);
    assert!((data.len() as u64) < MIB, "archive is {} bytes", data.len());
    assert_eq!(stats.bytes, GIB);
    assert_eq!(progress, GIB, "holes count as progress");

    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let (_, xprogress) = extract(&data[..], &dst, false).unwrap();
    assert_eq!(xprogress, GIB);
    let restored = dst.join("big");
    assert_eq!(fs::metadata(&restored).unwrap().len(), GIB);
    assert!(same_bytes(&src.join("big"), &restored), "content differs");
    assert!(
        allocated(&restored) < MIB,
        "restored file allocates {} bytes",
        allocated(&restored)
    );
    assert!(compare_trees(&src, &dst).unwrap().is_empty());
}

#[test]
fn map_shapes_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    // Only holes.
    File::create(src.join("all_hole"))
        .unwrap()
        .set_len(100 * MIB)
        .unwrap();
    // Data then a trailing hole: the map needs its terminating empty region.
    make_sparse(&src.join("trailing_hole"), 32 * MIB, &[0]);
    // Leading hole, data at the very end with an unaligned size.
    let f = File::create(src.join("unaligned_end")).unwrap();
    f.set_len(8 * MIB + 1234).unwrap();
    f.write_all_at(b"tail", 8 * MIB + 1230).unwrap();
    drop(f);
    // 30 regions: four in the header, the rest in two extension blocks.
    let offsets: Vec<u64> = (0..30).map(|i| i * MIB).collect();
    make_sparse(&src.join("many_regions"), 31 * MIB, &offsets);
    // A long name on a sparse entry needs a GNU long-name entry.
    make_sparse(&src.join("s".repeat(180)), 16 * MIB, &[4 * MIB]);

    let (data, stats, _) = archive(&src);
    assert_eq!(stats.files, 5);
    assert!(
        (data.len() as u64) < 2 * MIB,
        "archive is {} bytes",
        data.len()
    );
    let sparse_entries = tar::Archive::new(&data[..])
        .entries()
        .unwrap()
        .filter(|e| e.as_ref().unwrap().header().entry_type() == tar::EntryType::GNUSparse)
        .count();
    assert_eq!(sparse_entries, 5);

    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    extract(&data[..], &dst, false).unwrap();
    let diffs = compare_trees(&src, &dst).unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");
    for name in ["all_hole", "trailing_hole", "unaligned_end", "many_regions"] {
        assert!(same_bytes(&src.join(name), &dst.join(name)), "{name}");
    }
    assert_eq!(allocated(&dst.join("all_hole")), 0);
}

#[test]
fn dense_file_with_zero_runs_is_a_regular_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    // Written zeros are allocated: not sparse, stored and restored plainly.
    fs::write(src.join("zeros"), vec![0u8; 3 * MIB as usize]).unwrap();
    let (data, ..) = archive(&src);
    let mut ar = tar::Archive::new(&data[..]);
    let kinds: Vec<_> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().header().entry_type())
        .collect();
    assert_eq!(
        kinds,
        vec![tar::EntryType::Directory, tar::EntryType::Regular]
    );
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    extract(&data[..], &dst, false).unwrap();
    assert!(compare_trees(&src, &dst).unwrap().is_empty());
}
