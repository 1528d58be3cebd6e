//! Repository backups over a real local store: the replayed tar stream equals a full
//! archive's byte for byte, restores compare equal, a second backup reads only what changed
//! and stores only new chunks, damage is refused, and collection keeps what is referenced.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use ferry_repo::{BackupPlan, BackupStats, backup_tree, gc, open_tar};
use ferry_storage::ObjectStore;
use ferry_storage::local::LocalStore;
use tokio_util::sync::CancellationToken;

const PACKS: &str = "teams/t/repo/packs/";

struct Repo {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    _dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        Repo {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            store: Arc::new(LocalStore::new(dir.path().join("store"))),
            _dir: dir,
        }
    }

    fn plan(n: u32, parent: Option<u32>) -> BackupPlan {
        BackupPlan {
            pack_prefix: PACKS.into(),
            index_key: format!("teams/t/apps/a/backups/b{n}/shards/v.1.idx.zst"),
            packs_key: format!("teams/t/apps/a/backups/b{n}/shards/v.1.packs"),
            parent_index: parent.map(|p| format!("teams/t/apps/a/backups/b{p}/shards/v.1.idx.zst")),
        }
    }

    fn backup(&self, root: &Path, n: u32, parent: Option<u32>) -> BackupStats {
        backup_tree(
            self.rt.handle(),
            self.store.clone(),
            root,
            &Repo::plan(n, parent),
            &CancellationToken::new(),
            &AtomicU64::new(0),
        )
        .unwrap()
    }

    fn tar_of(&self, n: u32) -> std::io::Result<Vec<u8>> {
        let mut stream = open_tar(
            self.rt.handle(),
            self.store.clone(),
            PACKS,
            &Repo::plan(n, None).index_key,
            None,
        )
        .map_err(std::io::Error::other)?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out)?;
        Ok(out)
    }

    fn stored_pack_bytes(&self) -> u64 {
        self.rt
            .block_on(self.store.list(PACKS))
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum()
    }
}

fn full_tar(root: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    ferry_archive::write_tree(root, &mut out, &AtomicU64::new(0)).unwrap();
    out
}

/// Deterministic bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn tree(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("vol");
    ferry_archive::sample::generate(&root, 11).unwrap();
    std::fs::create_dir_all(root.join("big")).unwrap();
    for i in 0..4u64 {
        std::fs::write(root.join(format!("big/blob{i}")), noise(3 << 20, i + 1)).unwrap();
    }
    root
}

#[test]
fn a_repository_backup_replays_the_full_archive_and_restores_equal() {
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let first = repo.backup(&root, 1, None);
    assert_eq!(
        repo.tar_of(1).unwrap(),
        full_tar(&root),
        "byte-identical tar stream"
    );
    assert!(first.new_chunks > 4 && first.read_files > 4, "{first:?}");
    assert_eq!(first.unchanged_files, 0);

    // Restored through the archive's extractor: everything compares equal.
    let target = dir.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    let stream = open_tar(
        repo.rt.handle(),
        repo.store.clone(),
        PACKS,
        &Repo::plan(1, None).index_key,
        Some(&first.index.sha256),
    )
    .unwrap();
    ferry_archive::extract_tree(stream, &target, &Default::default(), &AtomicU64::new(0)).unwrap();
    assert_eq!(
        ferry_archive::compare_trees(&root, &target).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn a_second_backup_reads_and_stores_only_what_changed() {
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let first = repo.backup(&root, 1, None);
    let stored_after_first = repo.stored_pack_bytes();

    // Unchanged: nothing read, nothing stored, the same stream.
    let second = repo.backup(&root, 2, Some(1));
    assert_eq!(second.read_files, 0, "{second:?}");
    assert_eq!(second.unchanged_files, first.read_files);
    assert_eq!(second.new_chunks, 0);
    assert_eq!(repo.stored_pack_bytes(), stored_after_first);
    assert_eq!(repo.tar_of(2).unwrap(), full_tar(&root));

    // One big file gets bytes appended, one is replaced, one new file: only their new chunks
    // are stored.
    let mut appended = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("big/blob0"))
        .unwrap();
    std::io::Write::write_all(&mut appended, &noise(100_000, 99)).unwrap();
    drop(appended);
    std::fs::write(root.join("big/blob1"), noise(3 << 20, 77)).unwrap();
    std::fs::write(root.join("new.txt"), "new").unwrap();
    let third = repo.backup(&root, 3, Some(2));
    assert_eq!(third.read_files, 3, "{third:?}");
    let grew = repo.stored_pack_bytes() - stored_after_first;
    assert!(
        grew < (3 << 20) + (2 << 20),
        "stored {grew} new bytes for 3 MiB replaced and 100 kB appended"
    );
    assert_eq!(repo.tar_of(3).unwrap(), full_tar(&root));
    // The older backups still read back as they were.
    assert_eq!(repo.tar_of(1).unwrap(), repo.tar_of(2).unwrap());
}

#[test]
fn damage_is_refused_and_collection_keeps_what_is_referenced() {
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let stats = repo.backup(&root, 1, None);
    let rt = &repo.rt;
    let store = &*repo.store;

    // Nothing to collect while the backup references every pack, even with no grace.
    let keys = vec![Repo::plan(1, None).packs_key];
    let referenced = rt.block_on(gc::referenced_packs(store, &keys)).unwrap();
    assert_eq!(
        referenced,
        stats.packs.iter().cloned().collect::<HashSet<_>>()
    );
    let plan = rt
        .block_on(gc::collect(store, PACKS, &referenced, 0, None, false))
        .unwrap();
    assert!(plan.delete.is_empty(), "{plan:?}");
    assert!(
        rt.block_on(gc::missing_packs(store, PACKS, &keys[0]))
            .unwrap()
            .is_empty()
    );

    // A flipped byte in a pack: the read fails naming the chunk, not garbage.
    let pack = ferry_repo::layout::pack_key(PACKS, &stats.packs[0]);
    let mut bytes = rt.block_on(store.get_bytes(&pack, 1 << 30)).unwrap();
    bytes[1000] ^= 0x55;
    rt.block_on(store.put_bytes(&pack, bytes)).unwrap();
    let err = repo.tar_of(1).unwrap_err();
    assert!(
        err.to_string().contains("chunk") || err.to_string().contains("decompress"),
        "{err}"
    );

    // Unreferenced (the backup is gone): collected; the backup's check then names the pack.
    let plan = rt
        .block_on(gc::collect(store, PACKS, &HashSet::new(), 0, None, true))
        .unwrap();
    assert_eq!(plan.delete.len(), stats.packs.len(), "dry run lists them");
    assert_eq!(
        rt.block_on(store.list(PACKS)).unwrap().len(),
        stats.packs.len()
    );
    rt.block_on(gc::collect(store, PACKS, &HashSet::new(), 0, None, false))
        .unwrap();
    assert!(rt.block_on(store.list(PACKS)).unwrap().is_empty());
    let missing = rt
        .block_on(gc::missing_packs(store, PACKS, &keys[0]))
        .unwrap();
    assert_eq!(missing, stats.packs);

    // A truncated index is refused.
    let index = Repo::plan(1, None).index_key;
    let bytes = rt.block_on(store.get_bytes(&index, 1 << 30)).unwrap();
    rt.block_on(store.put_bytes(&index, bytes[..bytes.len() / 2].to_vec()))
        .unwrap();
    assert!(repo.tar_of(1).is_err());
}
