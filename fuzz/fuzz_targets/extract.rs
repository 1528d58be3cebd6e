//! Any byte stream given to the extractor: it may fail, but never panic, never write outside
//! its target, and never hold more than the stated bounds.
#![no_main]

use std::sync::atomic::AtomicU64;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temp dir");
    let target = dir.path().join("target");
    std::fs::create_dir(&target).expect("the target");
    let options = ferry_archive::ExtractOptions {
        // Bounds what a fuzzed sparse or large entry may make the extractor write.
        max_bytes: Some(1 << 20),
        ..Default::default()
    };
    let _ = ferry_archive::extract_tree(data, &target, &options, &AtomicU64::new(0));
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("the temp dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        beside,
        vec![std::ffi::OsString::from("target")],
        "wrote beside its target"
    );
});
