//! Backups crossing installations, each with its own controller and store: export to a `.ferry`
//! file and import elsewhere; sync of a bucket another installation writes; a shard corrupted
//! in the bucket; the S3 server killed during an upload.

use std::time::Duration;

use ferry_integration_tests::{Cluster, S3Server, listing, wait_for};
use serde_json::Value;

fn backup_ids(c: &Cluster) -> Vec<String> {
    c.ferry(&["backup", "list", "-o", "json"])
        .expect_code(0)
        .json()["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

fn restore_copy(c: &Cluster, id: &str, from: &std::path::Path, to: &std::path::Path) -> Value {
    let rewrite = format!("{}={}", from.display(), to.display());
    c.ferry(&[
        "restore",
        "create",
        id,
        "--to-app",
        "copy",
        "--rewrite",
        &rewrite,
        "--wait",
        "-o",
        "json",
    ])
    .json()
}

#[test]
fn export_then_import_into_another_installation_restores_equal() {
    let a = Cluster::start(&[]);
    let data = a.path().join("srv/app");
    ferry_archive::sample::generate(&data, 21).unwrap();
    a.apply(&format!(
        "name: app\ncomponents:\n  - name: web\n    config: {{greeting: hello}}\n    volumes:\n      - {{name: files, path: {}}}\n",
        data.display()
    ))
    .expect_code(0);
    // The exported backup is incremental: a second one, whose volume builds on the first's.
    a.ferry(&["backup", "create", "app", "--wait"])
        .expect_code(0);
    std::fs::write(data.join("changed.txt"), b"after the first backup").unwrap();
    let backup = a
        .ferry(&["backup", "create", "app", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let id = backup["id"].as_str().unwrap();
    let volume = backup["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "volume")
        .unwrap();
    let detail = volume["detail"].as_str().unwrap();
    assert!(
        detail.contains("unchanged since the parent") && !detail.contains("; 0 files unchanged"),
        "{volume:#}"
    );
    let file = a.path().join("app.ferry");
    let file_arg = file.to_str().unwrap();
    a.ferry(&["backup", "export", id, "-f", file_arg])
        .expect_code(0);
    // A plain tar: the manifest first, then the archives, as in the bucket.
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&file).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names[0], "manifest.json", "{names:?}");
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names[1..].iter().all(|n| n.starts_with("shards/")),
        "{names:?}"
    );

    // A second installation, its own controller, store and storage, in another team.
    let b = Cluster::start(&[]);
    let imported = b
        .ferry(&[
            "--team",
            "ops",
            "backup",
            "import",
            file_arg,
            "--storage",
            "local",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(imported["id"], id);
    assert_eq!(imported["state"], "Completed");
    assert_eq!(imported["team"], "ops");
    let again = b
        .ferry(&[
            "--team",
            "ops",
            "backup",
            "import",
            file_arg,
            "--storage",
            "local",
        ])
        .expect_code(2);
    assert!(again.stderr.contains("already"), "{}", again.stderr);

    let copy = b.path().join("srv/copy");
    let rewrite = format!("{}={}", data.display(), copy.display());
    let restored = b
        .ferry(&[
            "--team",
            "ops",
            "restore",
            "create",
            id,
            "--to-app",
            "copy",
            "--rewrite",
            &rewrite,
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(restored["state"], "Completed", "{restored:#}");
    assert_eq!(
        ferry_archive::compare_trees(&data, &copy).unwrap(),
        Vec::<String>::new()
    );
    let app = b
        .ferry(&["--team", "ops", "app", "get", "copy", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(
        app["spec"]["components"][0]["config"]["greeting"], "hello",
        "{app:#}"
    );

    // A damaged file is refused and leaves nothing behind, in the catalog or in storage.
    let c = Cluster::start(&[]);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 4096; // inside the last archive, before the tar's end blocks
    bytes[at] ^= 0x5a;
    let damaged = c.path().join("damaged.ferry");
    std::fs::write(&damaged, &bytes).unwrap();
    let refused = c
        .ferry(&[
            "backup",
            "import",
            damaged.to_str().unwrap(),
            "--storage",
            "local",
        ])
        .expect_code(2);
    assert!(
        refused.stderr.contains("corrupt") || refused.stderr.contains("checksum"),
        "{}",
        refused.stderr
    );
    assert!(backup_ids(&c).is_empty());
    let storage = c.path().join("controller-data/storage");
    let left: Vec<String> = listing(&storage)
        .into_iter()
        .filter(|p| p.contains(id))
        .filter(|p| !p.ends_with('/'))
        .collect();
    assert!(left.is_empty(), "the refused import left {left:?}");
    let not_tar = c.path().join("junk.ferry");
    std::fs::write(&not_tar, b"this is not a tar file at all").unwrap();
    let junk = c
        .ferry(&[
            "backup",
            "import",
            not_tar.to_str().unwrap(),
            "--storage",
            "local",
        ])
        .expect_code(2);
    assert!(junk.stderr.contains("not a .ferry file"), "{}", junk.stderr);
}

#[test]
fn a_second_installation_syncs_the_bucket_restores_and_forgets_deleted_backups() {
    let s3 = S3Server::start();
    s3.bucket("shared");
    let a = Cluster::start(&[]);
    a.add_s3_storage("offsite", &s3, "shared");
    let data = a.path().join("srv/app");
    ferry_archive::sample::generate(&data, 5).unwrap();
    a.apply_volume_app("app", "local", ("web", "files"), &data);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let b = a
            .ferry(&[
                "backup",
                "create",
                "app",
                "--storage",
                "offsite",
                "--wait",
                "-o",
                "json",
            ])
            .expect_code(0)
            .json();
        ids.push(b["id"].as_str().unwrap().to_owned());
    }

    // Installation B names the same bucket differently; adding it syncs at once.
    let b = Cluster::start(&[]);
    b.add_s3_storage("from-a", &s3, "shared");
    wait_for(Duration::from_secs(20), "B to list A's backups", || {
        let mut seen = backup_ids(&b);
        seen.sort();
        let mut want = ids.clone();
        want.sort();
        seen == want
    });
    let listed = b.backup(&ids[0]);
    assert_eq!(listed["state"], "Completed");
    assert_eq!(listed["storage"], "from-a");

    let copy = b.path().join("srv/copy");
    let restored = restore_copy(&b, &ids[0], &data, &copy);
    assert_eq!(restored["state"], "Completed", "{restored:#}");
    assert_eq!(
        ferry_archive::compare_trees(&data, &copy).unwrap(),
        Vec::<String>::new()
    );

    // A shard object corrupted in the bucket: verify names it; a restore writes nothing.
    let shard = &b.backup(&ids[1])["shards"][0];
    let object = s3.object_path("shared", shard["object_key"].as_str().unwrap());
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&object, &bytes).unwrap();
    let bad = b
        .ferry(&["backup", "verify", &ids[1], "-o", "json"])
        .expect_code(1)
        .json();
    let message = bad["message"].as_str().unwrap();
    assert!(
        message.contains(shard["id"].as_str().unwrap()) && message.contains("corrupt"),
        "{message}"
    );
    let target = b.path().join("srv/copy2");
    let refused = restore_copy(&b, &ids[1], &data, &target);
    assert_eq!(refused["state"], "Failed", "{refused:#}");
    assert!(!target.exists(), "a refused restore wrote {target:?}");

    // A deletes its first backup from the bucket: B's next sync forgets it, keeps the other.
    a.ferry(&["backup", "delete", &ids[0]]).expect_code(0);
    let sync = b
        .ferry(&["storage", "sync", "from-a", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(sync["removed"], 1, "{sync:#}");
    assert_eq!(sync["listed"], 1, "{sync:#}");
    assert_eq!(backup_ids(&b), vec![ids[1].clone()]);
    b.ferry(&["backup", "get", &ids[0]]).expect_code(3);
}

#[test]
fn an_s3_outage_during_upload_ends_clean() {
    let mut s3 = S3Server::start();
    s3.bucket("ferry");
    let c = Cluster::start(&[]);
    c.add_s3_storage("offsite", &s3, "ferry");
    let data = c.path().join("srv/big");
    ferry_integration_tests::big_volume(&data, 4, 48);
    c.apply_volume_app("big", "local", ("web", "blobs"), &data);
    let created = c
        .ferry(&[
            "backup",
            "create",
            "big",
            "--storage",
            "offsite",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    let id = created["id"].as_str().unwrap().to_owned();
    wait_for(Duration::from_secs(60), "the upload to start", || {
        !s3.open_uploads("ferry").is_empty()
    });
    s3.kill();
    std::thread::sleep(Duration::from_secs(15));
    s3.restart();
    let done = c.ferry(&["backup", "watch", &id, "-o", "json"]).json();
    let state = done["state"].as_str().unwrap().to_owned();
    assert!(
        state == "Completed" || state == "Failed",
        "the backup ended {state}: {done:#}"
    );
    if state == "Failed" {
        assert!(
            !done["message"].as_str().unwrap().is_empty(),
            "a failure says why"
        );
    }
    // Whatever the outcome: no multipart upload left, and a listed backup has its manifest.
    wait_for(Duration::from_secs(20), "no open multipart upload", || {
        s3.open_uploads("ferry").is_empty()
    });
    let manifest = s3.object_path(
        "ferry",
        &format!("teams/default/apps/big/backups/{id}/manifest.json"),
    );
    let listed = c.ferry(&["backup", "list", "-o", "json"]).json()["backups"].clone();
    for b in listed.as_array().unwrap() {
        if b["state"] == "Completed" {
            assert!(
                manifest.exists(),
                "backup {} is listed without its manifest",
                b["id"]
            );
        }
    }
    if state == "Completed" {
        let copy = c.path().join("srv/copy");
        let restored = restore_copy(&c, &id, &data, &copy);
        assert_eq!(restored["state"], "Completed", "{restored:#}");
        assert_eq!(
            ferry_archive::compare_trees(&data, &copy).unwrap(),
            Vec::<String>::new()
        );
    } else {
        assert!(!manifest.exists(), "a failed backup left its manifest");
    }
}
