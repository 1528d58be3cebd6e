//! Any bytes as a `redis-cli --rdb` dump read back from storage: the parser may refuse them but
//! never panic, loop forever or allocate beyond what the input can justify (a length field
//! claiming 4 GiB must not allocate 4 GiB: libFuzzer's -rss_limit_mb/-malloc_limit_mb catch it).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser's own source, compiled into this target: it depends on `std` only, so the fuzz
// build needs none of ferry-worker's dependency tree (see ../README.md).
#[allow(dead_code)]
#[path = "../../worker/src/engines/rdb.rs"]
mod rdb;

/// Reads every key of database `only` (all when `None`), then the rest of the input.
fn parse(data: &[u8], only: Option<u64>) {
    let Ok(mut parser) = rdb::RdbParser::new(data) else {
        return;
    };
    let version = parser.version();
    assert!((1..=rdb::MAX_VERSION).contains(&version));
    loop {
        match parser.next_entry(only) {
            Ok(Some(entry)) => {
                assert!(only.is_none_or(|db| db == entry.db));
                assert_eq!(entry.value().first(), Some(&entry.rdb_type));
                let value_len = entry.value().len();
                let payload = entry.into_dump_payload(version as u16);
                assert_eq!(payload.len(), value_len + 10);
            }
            Ok(None) => {
                let _ = parser.finish();
                return;
            }
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Every key handed out, and every key skipped (no database has this number).
    parse(data, None);
    parse(data, Some(u64::MAX));
});
