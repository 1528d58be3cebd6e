//! An app of 1,000 volumes on etcd — far beyond etcd's 128 operations per transaction — backs
//! up, restores into a copy exactly, verifies, restores in place (safety backup included) and
//! is deleted.

use ferry_integration_tests::{Cluster, Etcd};

const VOLUMES: usize = 1000;

fn id_of(run: ferry_integration_tests::Run) -> String {
    run.json()["id"].as_str().expect("an id").to_owned()
}

#[test]
fn an_app_of_a_thousand_volumes_round_trips_on_etcd() {
    let etcd_dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(etcd_dir.path());
    let mut args = etcd.controller_args();
    args.push("--no-embedded-worker".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start(&args);
    c.add_worker_with("dc-a", "node-1", 8, &[]);
    c.add_worker_with("dc-a", "node-2", 8, &[]);
    c.add_local_storage("archives", "dc-a");

    let root = c.path().join("srv/fleet");
    let mut yaml =
        "name: fleet\ncluster: dc-a\ncomponents:\n  - name: c\n    volumes:\n".to_owned();
    for i in 0..VOLUMES {
        let dir = root.join(format!("v{i:04}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data.txt"), format!("volume {i}\n")).unwrap();
        yaml.push_str(&format!(
            "      - {{name: v{i:04}, path: {}}}\n",
            dir.display()
        ));
    }
    c.apply(&yaml).expect_code(0);

    let backup = c
        .ferry(&["backup", "create", "fleet", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(backup["state"], "Completed", "{}", backup["message"]);
    assert_eq!(backup["shards"].as_array().unwrap().len(), VOLUMES);
    let id = backup["id"].as_str().unwrap().to_owned();

    // Into a copy beside the original, exactly.
    let copy = c.path().join("srv/fleet-copy");
    let rewrite = format!("{}={}", root.display(), copy.display());
    let restore = c
        .ferry(&[
            "restore",
            "create",
            &id,
            "--to-app",
            "fleet-copy",
            "--rewrite",
            &rewrite,
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(restore["state"], "Completed", "{}", restore["message"]);
    let diffs = ferry_archive::compare_trees(&root, &copy).unwrap();
    assert!(diffs.is_empty(), "{:?}", &diffs[..diffs.len().min(10)]);

    let verify = c
        .ferry(&["backup", "verify", &id, "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(verify["state"], "Completed", "{}", verify["message"]);

    // In place over the copy, after damaging it: a safety backup of 1,000 shards first.
    for i in [0, 499, 999] {
        std::fs::write(copy.join(format!("v{i:04}/data.txt")), "damaged").unwrap();
    }
    let in_place = id_of(
        c.ferry(&[
            "restore",
            "create",
            &id,
            "--to-app",
            "fleet-copy",
            "--overwrite",
            "-o",
            "json",
        ])
        .expect_code(0),
    );
    let done = c
        .ferry(&["restore", "watch", &in_place, "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(done["state"], "Completed", "{}", done["message"]);
    let safety = done["safety_backup"]
        .as_str()
        .expect("a safety backup")
        .to_owned();
    let safety_job = c.backup(&safety);
    assert_eq!(safety_job["state"], "Completed");
    assert_eq!(safety_job["shards"].as_array().unwrap().len(), VOLUMES);
    let diffs = ferry_archive::compare_trees(&root, &copy).unwrap();
    assert!(diffs.is_empty(), "{:?}", &diffs[..diffs.len().min(10)]);

    // Deleted: objects and 1,000 shard records, across many transactions.
    c.ferry(&["backup", "delete", &id]).expect_code(0);
    c.ferry(&["backup", "get", &id]).expect_code(3);
    let left = etcd.etcdctl(&[
        "get",
        "--prefix",
        "--keys-only",
        &format!("/ferry/v1/shards/{id}/"),
    ]);
    assert!(
        left.trim().is_empty(),
        "shard records left: {}",
        &left[..left.len().min(300)]
    );
}
