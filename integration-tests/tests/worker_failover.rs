//! A worker process killed in the middle of a shard: the controller notices the missed
//! heartbeats (the session lease expires), re-queues the shard under a new attempt on the other
//! worker, and the backup completes and restores bit-exact.

use std::time::Duration;

use ferry_integration_tests::{Cluster, wait_for, write_random_file};

#[test]
fn killed_worker_shard_is_retried_on_the_other_worker() {
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    let first = c.add_worker("dc-a", "node-1");
    let storage = c.add_local_storage("archives", "dc-a");
    let data = c.path().join("srv/big");
    std::fs::create_dir_all(&data).unwrap();
    // Incompressible, so the shard takes long enough to be killed in the middle.
    for i in 0..6 {
        write_random_file(&data.join(format!("blob-{i}.bin")), 96 << 20);
    }
    let reference = c.path().join("ref");
    std::fs::create_dir_all(&reference).unwrap();
    for i in 0..6 {
        std::fs::copy(
            data.join(format!("blob-{i}.bin")),
            reference.join(format!("blob-{i}.bin")),
        )
        .unwrap();
    }
    // Same mtimes and modes on both sides.
    for e in std::fs::read_dir(&data).unwrap().flatten() {
        let m = e.metadata().unwrap();
        let t = filetime::FileTime::from_last_modification_time(&m);
        filetime::set_file_mtime(reference.join(e.file_name()), t).unwrap();
    }
    let t = filetime::FileTime::from_last_modification_time(&std::fs::metadata(&data).unwrap());
    filetime::set_file_mtime(&reference, t).unwrap();

    c.apply_volume_app("big", "dc-a", ("store", "data"), &data);
    let created = c
        .ferry(&["backup", "create", "big", "-o", "json"])
        .expect_code(0)
        .json();
    let id = created["id"].as_str().unwrap().to_owned();

    // Only node-1 exists: wait until it is in the middle of the shard, then add node-2 and kill node-1.
    wait_for(
        Duration::from_secs(60),
        "the shard to be half-way on node-1",
        || {
            let b = c.backup(&id);
            let s = &b["shards"][0];
            s["state"] == "Running" && s["bytes"].as_u64().unwrap_or(0) > (64 << 20)
        },
    );
    c.add_worker("dc-a", "node-2");
    let victim = c.backup(&id)["shards"][0]["worker"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(victim.starts_with("dc-a-node-1"), "{victim}");
    c.workers[first].kill();

    let done = c
        .ferry(&["backup", "watch", &id, "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(done["state"], "Completed", "{done:#}");
    let shard = &done["shards"][0];
    assert!(
        shard["attempt"].as_u64().unwrap() >= 2,
        "not re-run: {shard:#}"
    );
    assert!(
        shard["worker"].as_str().unwrap().starts_with("dc-a-node-2"),
        "{shard:#}"
    );

    // Only the winning attempt's archive is left.
    let shards_dir = storage.join(format!("teams/default/apps/big/backups/{id}/shards"));
    let objects: Vec<_> = std::fs::read_dir(&shards_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let mut objects: Vec<String> = objects
        .iter()
        .map(|o| o.to_string_lossy().into_owned())
        .collect();
    objects.sort();
    assert_eq!(
        objects,
        [
            format!("store.volume.data.{}.idx.zst", shard["attempt"]),
            format!("store.volume.data.{}.packs", shard["attempt"])
        ],
        "the index and packs list of the winning attempt, nothing else"
    );

    let copy = c.path().join("copy");
    c.ferry(&[
        "restore",
        "create",
        &id,
        "--to-app",
        "big-copy",
        "--rewrite",
        &format!("{}={}", data.display(), copy.display()),
        "--wait",
        "-o",
        "json",
    ])
    .expect_code(0);
    let diffs = ferry_archive::compare_trees(&reference, &copy).unwrap();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
