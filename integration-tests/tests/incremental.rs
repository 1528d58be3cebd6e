//! Incremental volume backups (DESIGN §10) over real processes: the second backup of an
//! unchanged tree reads no file and stores no chunk, a changed file is all a third backup
//! reads, every backup in the chain restores equal, an export is a self-contained tar.zst that
//! `zstd` and `tar` open, and deleting a backup frees its packs through `ferry storage gc`.

use std::path::Path;

use ferry_integration_tests::{Cluster, write_random_file};

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
    let mut args = vec!["backup", "create", "shop", "--wait", "-o", "json"];
    args.extend_from_slice(extra);
    let b = c.ferry(&args).expect_code(0).json();
    assert_eq!(b["state"], "Completed", "{b:#}");
    b
}

fn restore_into(c: &Cluster, id: &str, copy: &str, from: &Path, to: &Path) {
    let r = c
        .ferry(&[
            "restore",
            "create",
            id,
            "--to-app",
            copy,
            "--rewrite",
            &format!("{}={}", from.display(), to.display()),
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
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
}
