//! `ferry backup verify` re-reads every archive and checks its checksum without restoring; a
//! shard corrupted in storage is named, and a restore of it refuses before writing anything.

use ferry_integration_tests::{Cluster, listing};

#[test]
fn verify_names_a_corrupted_shard_and_restore_writes_nothing() {
    let c = Cluster::start(&[]);
    let data = c.path().join("srv/app");
    ferry_archive::sample::generate(&data, 6).unwrap();
    c.apply(&format!(
        "name: app\ncomponents:\n  - name: web\n    config: {{a: 1}}\n    volumes:\n      - {{name: v, path: {}}}\n",
        data.display()
    ))
    .expect_code(0);
    let backup = c
        .ferry(&["backup", "create", "app", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let id = backup["id"].as_str().unwrap();
    let ok = c
        .ferry(&["backup", "verify", id, "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(ok["state"], "Completed", "{ok:#}");
    assert_eq!(ok["kind"], "verify");
    assert_eq!(ok["backup_id"], id);
    assert!(
        ok["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "Succeeded")
    );

    // One byte flipped in the middle of the volume's archive.
    let root = c.path().join("controller-data/storage");
    let key = backup["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "volume")
        .unwrap()["object_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let object = root.join(&key);
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&object, &bytes).unwrap();

    let bad = c
        .ferry(&["backup", "verify", id, "-o", "json"])
        .expect_code(1)
        .json();
    assert_eq!(bad["state"], "Failed");
    let message = bad["message"].as_str().unwrap();
    assert!(
        message.contains("web.volume.v") && message.contains("corrupt"),
        "{message}"
    );
    assert!(
        !message.contains("web.config"),
        "the good shard is blamed: {message}"
    );
    let shards = bad["shards"].as_array().unwrap();
    let state = |id: &str| shards.iter().find(|s| s["id"] == id).unwrap()["state"].clone();
    assert_eq!(state("web.volume.v"), "Failed");
    assert_eq!(state("web.config"), "Succeeded");

    // A restore checks every archive before writing: nothing appears at the target.
    let target = c.path().join("srv/copy");
    let restore = c
        .ferry(&[
            "restore",
            "create",
            id,
            "--to-app",
            "copy",
            "--rewrite",
            &format!("{}={}", data.display(), target.display()),
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(1)
        .json();
    assert_eq!(restore["state"], "Failed");
    assert!(
        restore["message"]
            .as_str()
            .unwrap()
            .contains("nothing was restored"),
        "{restore:#}"
    );
    assert!(
        listing(&target).is_empty() && !target.exists(),
        "the restore wrote {:?}",
        listing(&target)
    );
    c.ferry(&["app", "get", "copy"]).expect_code(3);
}
