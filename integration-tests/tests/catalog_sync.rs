//! Sync keeps the catalog honest without losing anything: a local location whose directory is
//! briefly missing changes nothing, and an entry of this installation that sync brings back
//! keeps its trigger (a schedule's keep-N counts it) and its expiry.

use ferry_integration_tests::{Cluster, Etcd};

#[test]
fn sync_never_drops_for_a_missing_directory_and_restores_entries_exactly() {
    let etcd_dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(etcd_dir.path());
    let args = etcd.controller_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = Cluster::start(&args);
    let storage = c.add_local_storage("archives", "local");
    let data = c.path().join("srv/app");
    ferry_archive::sample::generate(&data, 2).unwrap();
    c.apply_volume_app("app", "local", ("web", "files"), &data);
    let backup = c
        .ferry(&[
            "backup",
            "create",
            "app",
            "--storage",
            "archives",
            "--ttl",
            "7d",
            "--label",
            "keep=me",
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    let id = backup["id"].as_str().unwrap().to_owned();
    let expires = backup["expires_at"].clone();
    assert!(expires.is_string(), "{backup:#}");

    // The directory goes away for a moment: sync refuses, the catalog keeps the backup.
    let moved = c.path().join("archives-away");
    std::fs::rename(&storage, &moved).unwrap();
    let run = c.ferry(&["storage", "sync", "archives"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("missing"), "{}", run.stderr);
    c.ferry(&["backup", "get", &id]).expect_code(0);
    std::fs::rename(&moved, &storage).unwrap();

    // The entry is lost from the catalog (as by an older Ferry); sync brings it back whole.
    etcd.etcdctl(&["del", &format!("/ferry/v1/jobs/{id}")]);
    c.ferry(&["backup", "get", &id]).expect_code(3);
    let synced = c
        .ferry(&["storage", "sync", "archives", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(synced["added"], 1, "{synced:#}");
    let back = c.backup(&id);
    assert_eq!(back["trigger"], "manual", "{back:#}");
    assert_eq!(back["expires_at"], expires, "{back:#}");
    assert_eq!(back["labels"]["keep"], "me");
}
