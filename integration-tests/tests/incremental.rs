//! Incremental volume backups (DESIGN §10) over real processes: the second backup of an
//! unchanged tree reads no file and stores no chunk, a changed file is all a third backup
//! reads, every backup in the chain restores equal, an export is a self-contained tar.zst that
//! `zstd` and `tar` open, and deleting a backup frees its packs through `ferry storage gc`.
//! Safety: a collection forced into the middle of a backup that reuses old chunks, and a
//! worker killed mid-backup, never leave a backup that cannot be restored.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use ferry_integration_tests::{Cluster, big_volume, wait_for, write_random_file};

fn packs(storage: &Path) -> Vec<String> {
    let dir = storage.join("teams/default/repo/packs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn volume_shard(backup: &serde_json::Value) -> &serde_json::Value {
    backup["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "volume")
        .unwrap_or_else(|| panic!("no volume shard: {backup:#}"))
}

fn backup(c: &Cluster, extra: &[&str]) -> serde_json::Value {
    c.backup_completed("shop", extra)
}

fn restore_into(c: &Cluster, id: &str, copy: &str, from: &Path, to: &Path) {
    let r = c.restore_copy(id, copy, from, to, 0).json();
    assert_eq!(r["state"], "Completed", "{r:#}");
}

fn assert_same(a: &Path, b: &Path, what: &str) {
    let diffs = ferry_archive::compare_trees(a, b).unwrap();
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

#[test]
fn a_chain_of_incremental_backups_restores_exports_and_collects() {
    let c = Cluster::start(&["--gc-grace", "0s"]);
    let storage = c.path().join("controller-data/storage");
    let data = c.path().join("srv/shop");
    ferry_archive::sample::generate(&data, 5).unwrap();
    std::fs::create_dir_all(data.join("media")).unwrap();
    write_random_file(&data.join("media/big.bin"), 6 << 20);
    // The state of the first two backups, copied aside by Ferry-independent means.
    let first_state = c.path().join("ref/first");
    std::fs::create_dir_all(first_state.parent().unwrap()).unwrap();
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&first_state)
        .status()
        .unwrap();
    assert!(cp.success());
    c.apply_volume_app("shop", "local", ("web", "data"), &data);

    // First backup: everything read.
    let first = backup(&c, &[]);
    let shard = volume_shard(&first);
    assert!(
        shard["object_key"].as_str().unwrap().ends_with(".idx.zst"),
        "{shard:#}"
    );
    let after_first = packs(&storage);
    assert!(!after_first.is_empty(), "the first backup wrote packs");

    // Second, nothing changed: no file read, no chunk stored, no pack written.
    let second = backup(&c, &[]);
    let detail = volume_shard(&second)["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains(" read; 0 of ") && !detail.contains(" 0 files unchanged"),
        "{detail}"
    );
    assert!(detail.contains("0 read;"), "{detail}");
    assert_eq!(
        packs(&storage),
        after_first,
        "no pack for an unchanged tree"
    );
    let (first_id, second_id) = (
        first["id"].as_str().unwrap().to_owned(),
        second["id"].as_str().unwrap().to_owned(),
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(storage.join(format!(
            "teams/default/apps/shop/backups/{second_id}/manifest.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["version"], 2);
    let repo = &manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "volume")
        .unwrap()["repo"];
    assert_eq!(repo["new_chunks"], 0, "{repo:#}");
    assert!(
        repo["parent_index"].as_str().unwrap().contains(&first_id),
        "{repo:#}"
    );

    // Third: one file replaced; only it is read, and it gets a new pack.
    write_random_file(&data.join("media/big.bin"), 6 << 20);
    let third = backup(&c, &[]);
    let detail = volume_shard(&third)["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains(", 1 read;"), "{detail}");
    let after_third = packs(&storage);
    assert_eq!(after_third.len(), after_first.len() + 1, "{after_third:?}");
    let third_id = third["id"].as_str().unwrap().to_owned();

    // Each backup restores as it was.
    let copy3 = c.path().join("srv/copy3");
    restore_into(&c, &third_id, "copy3", &data, &copy3);
    assert_same(&data, &copy3, "the third backup differs from the tree");
    let copy2 = c.path().join("srv/copy2");
    restore_into(&c, &second_id, "copy2", &data, &copy2);
    assert_same(
        &first_state,
        &copy2,
        "the second backup differs from its tree",
    );
    c.ferry(&["backup", "verify", &second_id]).expect_code(0);

    // An export is self-contained: its volume archive opens with zstd and tar alone.
    let file = c.path().join("third.ferry");
    c.ferry(&["backup", "export", &third_id, "-f", file.to_str().unwrap()])
        .expect_code(0);
    let unpacked = c.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = |args: &[&str], dir: &Path| {
        let out = std::process::Command::new("tar")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "tar {args:?}: {out:?}");
    };
    tar(&["-xf", file.to_str().unwrap()], &unpacked);
    let archive = std::fs::read_dir(unpacked.join("shards"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.to_string_lossy().contains(".volume.") && p.to_string_lossy().ends_with(".tar.zst")
        })
        .expect("the volume's archive in the export");
    let by_hand = c.path().join("by-hand");
    std::fs::create_dir_all(&by_hand).unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc '{}' | tar --xattrs --xattrs-include='*' -xpf - -C '{}'",
            archive.display(),
            by_hand.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let file_data = std::fs::read(data.join("media/big.bin")).unwrap();
    assert_eq!(
        std::fs::read(by_hand.join("media/big.bin")).unwrap(),
        file_data
    );

    // Deleting the third backup leaves its pack unreferenced: a dry run names it, a
    // collection deletes it and nothing else, and the older backups still restore.
    c.ferry(&["backup", "delete", &third_id]).expect_code(0);
    let dry = c
        .ferry(&["storage", "gc", "local", "--dry-run", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(dry["packs_deleted"], 1, "{dry:#}");
    assert_eq!(packs(&storage), after_third, "a dry run deletes nothing");
    let done = c
        .ferry(&["storage", "gc", "local", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(done["packs_deleted"], 1, "{done:#}");
    assert_eq!(packs(&storage), after_first);
    c.ferry(&["backup", "verify", &first_id]).expect_code(0);
    let copy1 = c.path().join("srv/copy1");
    restore_into(&c, &first_id, "copy1", &data, &copy1);
    assert_same(&first_state, &copy1, "the first backup after a collection");

    // --full still writes a self-contained archive, and does not break the chain: the next
    // incremental backup builds on the newest backup that has an index (the second).
    let full = backup(&c, &["--full"]);
    assert!(
        volume_shard(&full)["object_key"]
            .as_str()
            .unwrap()
            .ends_with(".tar.zst")
    );
    let fifth = backup(&c, &[]);
    let detail = volume_shard(&fifth)["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains(", 1 read;"),
        "only the replaced file is read: {detail}"
    );

    // Its ancestors deleted and collected, the fifth backup still restores exactly: the packs
    // it reuses stay because it references them.
    c.ferry(&["backup", "delete", &first_id]).expect_code(0);
    c.ferry(&["backup", "delete", &second_id]).expect_code(0);
    let gc = c
        .ferry(&["storage", "gc", "local", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(gc["packs_deleted"], 0, "{gc:#}");
    let copy5 = c.path().join("srv/copy5");
    restore_into(&c, fifth["id"].as_str().unwrap(), "copy5", &data, &copy5);
    assert_same(
        &data,
        &copy5,
        "the fifth backup after its parents were collected",
    );

    // One flipped byte inside a pack the fifth backup references: the default verify (every
    // pack exists) cannot see it, `--read-data` (every chunk's hash) names it.
    let fifth_id = fifth["id"].as_str().unwrap();
    c.ferry(&["backup", "verify", fifth_id, "--read-data"])
        .expect_code(0);
    // The newest pack it references is its own: the replaced file, every byte of it in use.
    let pack = storage.join("teams/default/repo/packs").join(
        referenced(&storage, &fifth)
            .into_iter()
            .next_back()
            .unwrap(),
    );
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&pack, bytes).unwrap();
    c.ferry(&["backup", "verify", fifth_id]).expect_code(0);
    let damaged = c
        .ferry(&["backup", "verify", fifth_id, "--read-data", "-o", "json"])
        .expect_code(1);
    assert!(damaged.stdout.contains("damaged"), "{}", damaged.stdout);
}

/// The finished packs of the default team, and the unfinished uploads beside them.
fn packs_and_partials(storage: &Path) -> (BTreeSet<String>, Vec<String>) {
    let (partial, whole): (Vec<String>, Vec<String>) = packs(storage)
        .into_iter()
        .partition(|n| n.contains(".partial-"));
    (whole.into_iter().collect(), partial)
}

/// The packs a committed backup's volume references (its packs list), as file names.
fn referenced(storage: &Path, backup: &serde_json::Value) -> BTreeSet<String> {
    let index = volume_shard(backup)["object_key"].as_str().unwrap();
    let list = index.strip_suffix(".idx.zst").unwrap().to_owned() + ".packs";
    std::fs::read_to_string(storage.join(list))
        .unwrap()
        .lines()
        .map(|name| format!("{name}.pack"))
        .collect()
}

fn start(c: &Cluster, app: &str) -> String {
    c.ferry(&["backup", "create", app, "-o", "json"])
        .expect_code(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_collection_in_the_middle_of_a_backup_never_leaves_an_unrestorable_backup() {
    let mut c = Cluster::start(&["--gc-grace", "0s", "--no-embedded-worker"]);
    let worker = c.add_worker("dc-a", "node-1");
    let storage = c.add_local_storage("archives", "dc-a");
    let data = c.path().join("srv/gc");
    ferry_archive::sample::generate(&data, 9).unwrap();
    write_random_file(&data.join("old.bin"), 8 << 20);
    c.apply_volume_app("gc", "dc-a", ("web", "data"), &data);
    let first = c.backup_completed("gc", &[]);
    let first_id = first["id"].as_str().unwrap().to_owned();
    let old_bytes = volume_shard(&first)["bytes"].as_u64().unwrap();

    // The second backup reuses every old file's chunks (the first backup's packs) and reads a
    // large new file. In the middle of that file its worker is stopped, the first backup is
    // deleted and a collection (grace 0) removes the packs the second one reuses.
    write_random_file(&data.join("new.bin"), 512 << 20);
    let second_id = start(&c, "gc");
    wait_for(
        Duration::from_secs(60),
        "the backup in its new file",
        || {
            let s = volume_shard(&c.backup(&second_id)).clone();
            s["state"] == "Running" && s["bytes"].as_u64().unwrap_or(0) > old_bytes + (64 << 20)
        },
    );
    c.workers[worker].signal(libc::SIGSTOP);
    c.ferry(&["backup", "delete", &first_id]).expect_code(0);
    let gc = c
        .ferry(&["storage", "gc", "archives", "-o", "json"])
        .expect_code(0)
        .json();
    let during = c.backup(&second_id)["state"].clone();
    c.workers[worker].signal(libc::SIGCONT);
    assert!(gc["packs_deleted"].as_u64().unwrap() >= 1, "{gc:#}");
    assert!(
        !["Completed", "Failed", "PartiallyFailed"].contains(&during.as_str().unwrap()),
        "the collection did not run during the backup: {during}"
    );

    // Either the backup completes and restores exactly, or it fails saying why.
    let second = c
        .ferry(&["backup", "watch", &second_id, "-o", "json"])
        .json();
    eprintln!(
        "backup across the collection: {} {}",
        second["state"], second["message"]
    );
    if second["state"] == "Completed" {
        let copy = c.path().join("srv/copy-second");
        restore_into(&c, &second_id, "copy-second", &data, &copy);
        assert_same(&data, &copy, "the backup completed across the collection");
    } else {
        assert_eq!(second["state"], "Failed", "{second:#}");
        let message = second["message"].to_string() + &volume_shard(&second)["error"].to_string();
        assert!(
            message.contains("no longer in storage") && message.contains("back up again"),
            "{second:#}"
        );
    }

    // The next backup completes and restores, and nothing a committed backup references is
    // gone: every listed pack exists.
    let third = c.backup_completed("gc", &[]);
    let copy = c.path().join("srv/copy-third");
    restore_into(
        &c,
        third["id"].as_str().unwrap(),
        "copy-third",
        &data,
        &copy,
    );
    assert_same(&data, &copy, "the backup after the collection");
    let (present, _) = packs_and_partials(&storage);
    let mut committed = vec![third];
    if second["state"] == "Completed" {
        committed.push(second);
    }
    for b in &committed {
        let missing: Vec<_> = referenced(&storage, b)
            .difference(&present)
            .cloned()
            .collect();
        assert!(missing.is_empty(), "{} lost {missing:?}", b["id"]);
        c.ferry(&["backup", "verify", b["id"].as_str().unwrap()])
            .expect_code(0);
    }
}

#[test]
fn a_worker_killed_mid_backup_leaves_only_unreferenced_packs_which_gc_removes() {
    let mut c = Cluster::start(&["--gc-grace", "0s", "--no-embedded-worker"]);
    let mut procs = vec![
        ("dc-a-node-1-", c.add_worker("dc-a", "node-1")),
        ("dc-a-node-2-", c.add_worker("dc-a", "node-2")),
    ];
    let storage = c.add_local_storage("archives", "dc-a");
    let data = c.path().join("srv/big");
    big_volume(&data, 6, 64);
    c.apply_volume_app("big", "dc-a", ("store", "data"), &data);
    let id = start(&c, "big");
    // Killed once it has written a pack of its own.
    let mut victim = String::new();
    wait_for(
        Duration::from_secs(60),
        "a pack of the first attempt",
        || {
            let s = volume_shard(&c.backup(&id)).clone();
            victim = s["worker"].as_str().unwrap_or("").to_owned();
            s["state"] == "Running" && !packs_and_partials(&storage).0.is_empty()
        },
    );
    let at = procs
        .iter()
        .position(|(prefix, _)| victim.starts_with(prefix))
        .unwrap_or_else(|| panic!("no process for {victim}"));
    let (_, index) = procs.remove(at);
    c.workers[index].kill();
    let (orphans_before, _) = packs_and_partials(&storage);

    let done = c.ferry(&["backup", "watch", &id, "-o", "json"]).json();
    assert_eq!(done["state"], "Completed", "{done:#}");
    let shard = volume_shard(&done);
    assert!(shard["attempt"].as_u64().unwrap() > 1, "{shard:#}");
    assert_ne!(shard["worker"], victim.as_str(), "{shard:#}");
    let used = referenced(&storage, &done);
    let (present, _) = packs_and_partials(&storage);
    let orphans: BTreeSet<String> = present.difference(&used).cloned().collect();
    assert!(
        !orphans.is_empty() && orphans.is_subset(&orphans_before),
        "the killed attempt's packs: {orphans:?} (seen when it was killed: {orphans_before:?})"
    );

    // A dry run names exactly the orphans; a collection removes them, and any unfinished
    // upload the killed worker left, and nothing else.
    let dry = c
        .ferry(&["storage", "gc", "archives", "--dry-run", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(dry["packs_deleted"], orphans.len() as u64, "{dry:#}");
    let gc = c
        .ferry(&["storage", "gc", "archives", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(gc["packs_deleted"], orphans.len() as u64, "{gc:#}");
    eprintln!("collection after the kill: {gc}");
    let (after, partials) = packs_and_partials(&storage);
    assert_eq!(after, used);
    assert!(partials.is_empty(), "unfinished uploads left: {partials:?}");
    let copy = c.path().join("srv/copy");
    restore_into(&c, &id, "copy", &data, &copy);
    assert_same(&data, &copy, "the backup whose first attempt was killed");
}
