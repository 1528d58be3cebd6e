//! Cancel and delete: a running backup of a large volume cancelled within seconds leaves no
//! manifest, no archive and no unfinished upload; a deleted backup's objects are gone.

use std::time::{Duration, Instant};

use ferry_integration_tests::{Cluster, big_volume, listing, wait_for};

#[test]
fn cancelling_a_running_backup_stops_it_and_keeps_nothing() {
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    c.add_worker("dc-a", "node-1");
    let storage = c.add_local_storage("archives", "dc-a");
    let data = c.path().join("srv/big");
    big_volume(&data, 12, 64);
    c.apply_volume_app("big", "dc-a", ("store", "data"), &data);
    let id = c
        .ferry(&["backup", "create", "big", "-o", "json"])
        .expect_code(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(
        Duration::from_secs(60),
        "the shard to be moving bytes",
        || c.backup(&id)["shards"][0]["bytes"].as_u64().unwrap_or(0) > 0,
    );
    let asked = Instant::now();
    let job = c
        .ferry(&["backup", "cancel", &id, "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let took = asked.elapsed();
    assert_eq!(job["state"], "Cancelled", "{job:#}");
    assert_eq!(job["shards"][0]["state"], "Cancelled");
    assert!(took < Duration::from_secs(10), "cancel took {took:?}");
    eprintln!("cancelled in {took:?}");
    // Nothing of it in storage: no manifest, no archive, no unfinished upload — now, and after
    // the worker had time to notice.
    let dir = storage.join(format!("teams/default/apps/big/backups/{id}"));
    assert!(
        listing(&dir).iter().all(|p| !p.contains('.')),
        "left: {:?}",
        listing(&dir)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        listing(&dir).iter().all(|p| !p.contains('.')),
        "left: {:?}",
        listing(&dir)
    );
    // Cancelling again is refused (it ended); the worker is free for the next backup.
    c.ferry(&["backup", "cancel", &id]).expect_code(2);
    let next = c
        .ferry(&["backup", "create", "big", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(next["state"], "Completed");
}

#[test]
fn deleting_a_backup_removes_its_objects_and_entry() {
    let c = Cluster::start(&[]);
    let data = c.path().join("srv/app");
    ferry_archive::sample::generate(&data, 3).unwrap();
    c.apply(&format!(
        "name: app\ncomponents:\n  - name: web\n    config: {{a: 1}}\n    volumes:\n      - {{name: v, path: {}}}\n",
        data.display()
    ))
    .expect_code(0);
    let keep = c
        .ferry(&["backup", "create", "app", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let gone = c
        .ferry(&["backup", "create", "app", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let (keep, gone) = (keep["id"].as_str().unwrap(), gone["id"].as_str().unwrap());
    let root = c
        .path()
        .join("controller-data/storage/teams/default/apps/app/backups");
    assert_eq!(
        listing(&root.join(gone))
            .iter()
            .filter(|p| [".tar.zst", ".idx.zst", ".packs", ".json"]
                .iter()
                .any(|end| p.ends_with(end)))
            .count(),
        4,
        "manifest, config archive, volume index and packs list"
    );

    let run = c
        .ferry(&["backup", "delete", gone, "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(run["objects_deleted"], 4);
    assert!(
        listing(&root.join(gone)).is_empty(),
        "{:?}",
        listing(&root.join(gone))
    );
    let list = c
        .ferry(&["backup", "list", "-o", "json"])
        .expect_code(0)
        .json();
    let ids: Vec<&str> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![keep]);
    c.ferry(&["backup", "delete", gone]).expect_code(3);
    c.ferry(&["backup", "get", gone]).expect_code(3);
    // The other backup is untouched and still restores.
    let copy = c.path().join("copy");
    c.ferry(&[
        "restore",
        "create",
        keep,
        "--to-app",
        "copy",
        "--rewrite",
        &format!("{}={}", data.display(), copy.display()),
        "--wait",
    ])
    .expect_code(0);
    assert!(
        ferry_archive::compare_trees(&data, &copy)
            .unwrap()
            .is_empty()
    );
}

/// `restore create ID --to-app SAME --overwrite`: a safety backup of the current state first,
/// named in the result; restoring that safety backup brings the pre-restore state back —
/// files and a PostgreSQL database alike.
#[test]
fn in_place_restore_takes_a_safety_backup_that_rolls_back() {
    use ferry_integration_tests::{PgDb, sh};
    let pg = PgDb::create("ferry_inplace");
    let db = pg.name.clone();
    let psql = |sql: &str| pg.psql(sql);
    let digest = || psql("SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM t");

    let c = Cluster::start(&[]);
    let data = c.path().join("srv/app");
    ferry_archive::sample::generate(&data, 1).unwrap();
    ferry_archive::sample::generate(&c.path().join("ref-a"), 1).unwrap();
    psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'A' FROM generate_series(1, 100) g;",
    );
    let digest_a = digest();
    c.apply(&format!(
        "name: app\ncomponents:\n  - name: web\n    volumes:\n      - {{name: v, path: {}}}\n    databases:\n      - {{name: main, engine: postgres, host: 127.0.0.1, databases: [{db}]}}\n",
        data.display()
    ))
    .expect_code(0);
    let a = c
        .ferry(&["backup", "create", "app", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let a = a["id"].as_str().unwrap();

    // Life goes on: state B.
    ferry_archive::sample::damage(&data).unwrap();
    std::fs::write(data.join("b-only.txt"), b"written after the backup").unwrap();
    psql("UPDATE t SET v = 'B' WHERE id % 2 = 0; INSERT INTO t VALUES (1000, 'B only');");
    let digest_b = digest();
    let ref_b = c.path().join("ref-b");
    sh(
        "cp",
        &["-a", data.to_str().unwrap(), ref_b.to_str().unwrap()],
    );
    assert!(
        ferry_archive::compare_trees(&ref_b, &data)
            .unwrap()
            .is_empty(),
        "cp -a is not a faithful reference"
    );

    // In place without --overwrite: refused, nothing changes.
    c.ferry(&["restore", "create", a, "--wait", "-o", "json"])
        .expect_code(1);
    assert_eq!(digest(), digest_b);
    assert!(
        ferry_archive::compare_trees(&ref_b, &data)
            .unwrap()
            .is_empty()
    );

    // With --overwrite: a safety backup of B, then A is restored.
    let r = c
        .ferry(&[
            "restore",
            "create",
            a,
            "--overwrite",
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(r["state"], "Completed", "{r:#}");
    let safety = r["safety_backup"]
        .as_str()
        .expect("the result names the safety backup")
        .to_owned();
    let s = c.backup(&safety);
    assert_eq!(s["state"], "Completed");
    assert_eq!(
        s["trigger"],
        format!("safety/{}", r["id"].as_str().unwrap())
    );
    let diffs = ferry_archive::compare_trees(&c.path().join("ref-a"), &data).unwrap();
    assert!(diffs.is_empty(), "not back to A:\n{}", diffs.join("\n"));
    assert_eq!(digest(), digest_a);
    let text = c
        .ferry(&["restore", "get", r["id"].as_str().unwrap()])
        .expect_code(0)
        .stdout;
    assert!(
        text.contains(&format!("Safety backup:\t{safety}")),
        "{text}"
    );

    // Rolling back: restoring the safety backup brings B back.
    let back = c
        .ferry(&[
            "restore",
            "create",
            &safety,
            "--overwrite",
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(back["state"], "Completed", "{back:#}");
    let diffs = ferry_archive::compare_trees(&ref_b, &data).unwrap();
    assert!(diffs.is_empty(), "not back to B:\n{}", diffs.join("\n"));
    assert_eq!(digest(), digest_b);
}
