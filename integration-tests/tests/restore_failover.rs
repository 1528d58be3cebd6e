//! Restores survive what backups survive: a worker SIGKILLed in the middle of writing a volume
//! (five times in a row) or a database; the shard re-runs on another worker, the target ends
//! bit-exact, and nothing of a dead attempt stays beside it.

use std::time::Duration;

use ferry_integration_tests::{Cluster, PgDb, big_volume, listing, wait_for};
use serde_json::Value;

/// Waits until the restore's (single) shard moves bytes in `step` (`stage` for a volume, whose
/// archive is extracted into its staging directory; `restore` for a database) on some worker;
/// returns (worker, attempt).
fn wait_writing(c: &Cluster, id: &str, step: &str) -> (String, u64) {
    let mut seen = (String::new(), 0);
    wait_for(
        Duration::from_secs(120),
        "the restore to be writing",
        || {
            let r = c
                .ferry(&["restore", "get", id, "-o", "json"])
                .expect_code(0)
                .json();
            let s = &r["shards"][0];
            seen = (
                s["worker"].as_str().unwrap_or("").to_owned(),
                s["attempt"].as_u64().unwrap_or(0),
            );
            s["phase"] == step && s["state"] == "Running" && s["bytes"].as_u64().unwrap_or(0) > 0
        },
    );
    seen
}

/// Kills the worker process running `victim` and starts a fresh one in its place.
fn replace_worker(c: &mut Cluster, nodes: &mut Vec<(String, usize)>, victim: &str, round: usize) {
    let i = nodes
        .iter()
        .position(|(node, _)| victim.starts_with(&format!("dc-a-{node}-")))
        .unwrap_or_else(|| panic!("no worker process for {victim}"));
    let (_, proc_index) = nodes.remove(i);
    c.workers[proc_index].kill();
    let fresh = format!("node-r{round}");
    let index = c.add_worker("dc-a", &fresh);
    nodes.push((fresh, index));
}

fn finished(c: &Cluster, id: &str) -> Value {
    c.ferry(&["restore", "watch", id, "-o", "json"])
        .expect_code(0)
        .json()
}

#[test]
fn a_volume_restore_survives_its_worker_dying_five_times() {
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    let mut nodes = Vec::new();
    for n in 0..2 {
        nodes.push((
            format!("node-{n}"),
            c.add_worker("dc-a", &format!("node-{n}")),
        ));
    }
    c.add_local_storage("archives", "dc-a");
    let data = c.path().join("srv/big");
    big_volume(&data, 8, 64);
    c.apply_volume_app("big", "dc-a", ("store", "data"), &data);
    let backup = c
        .ferry(&["backup", "create", "big", "--wait", "-o", "json"])
        .expect_code(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for round in 0..5 {
        let copy = c.path().join(format!("srv/copy-{round}"));
        let run = c
            .ferry(&[
                "restore",
                "create",
                &backup,
                "--to-app",
                &format!("copy-{round}"),
                "--rewrite",
                &format!("{}={}", data.display(), copy.display()),
                "-o",
                "json",
            ])
            .expect_code(0);
        let id = run.json()["id"].as_str().unwrap().to_owned();
        let (victim, attempt) = wait_writing(&c, &id, "stage");
        replace_worker(&mut c, &mut nodes, &victim, round);
        let done = finished(&c, &id);
        assert_eq!(done["state"], "Completed", "round {round}: {done:#}");
        let shard = &done["shards"][0];
        assert!(shard["attempt"].as_u64().unwrap() > attempt, "{shard:#}");
        assert_ne!(shard["worker"], victim.as_str());
        let diffs = ferry_archive::compare_trees(&data, &copy).unwrap();
        assert!(diffs.is_empty(), "round {round}: {diffs:#?}");
        let left: Vec<String> = listing(&copy)
            .into_iter()
            .filter(|p| p.contains(".ferry-restore"))
            .collect();
        assert!(left.is_empty(), "round {round}: left behind: {left:?}");
        let beside: Vec<String> = listing(copy.parent().unwrap())
            .into_iter()
            .filter(|p| p.contains("ferry"))
            .collect();
        assert!(
            beside.is_empty(),
            "round {round}: beside the target: {beside:?}"
        );
    }
}

#[test]
fn a_database_restore_survives_its_worker_dying() {
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    let mut nodes = Vec::new();
    for n in 0..2 {
        nodes.push((
            format!("node-{n}"),
            c.add_worker("dc-a", &format!("node-{n}")),
        ));
    }
    c.add_local_storage("archives", "dc-a");
    let db = PgDb::create("ferry_rf");
    // Enough rows that the restore runs for a while.
    db.psql(
        "CREATE TABLE t (id bigint PRIMARY KEY, payload text NOT NULL DEFAULT 'x');
         INSERT INTO t SELECT g, md5(g::text) || repeat(md5((g*7)::text), 20) FROM generate_series(1, 600000) g;
         CREATE VIEW v AS SELECT count(*) AS n FROM t;",
    );
    c.apply(&format!(
        "name: pg\ncluster: dc-a\ncomponents:\n  - name: db\n    databases:\n      - {{name: main, engine: postgres, host: 127.0.0.1, databases: [{}]}}\n",
        db.name
    ))
    .expect_code(0);
    let backup = c
        .ferry(&["backup", "create", "pg", "--wait", "-o", "json"])
        .expect_code(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = PgDb {
        name: format!("{}_copy", db.name),
    };
    let run = c
        .ferry(&[
            "restore",
            "create",
            &backup,
            "--to-app",
            "pg-copy",
            "--rewrite",
            &format!("{}={}", db.name, target.name),
            "-o",
            "json",
        ])
        .expect_code(0);
    let id = run.json()["id"].as_str().unwrap().to_owned();
    let (victim, attempt) = wait_writing(&c, &id, "restore");
    replace_worker(&mut c, &mut nodes, &victim, 0);
    let done = finished(&c, &id);
    assert_eq!(done["state"], "Completed", "{done:#}");
    assert!(done["shards"][0]["attempt"].as_u64().unwrap() > attempt);
    let query = "SELECT count(*), sum(length(payload)), (SELECT n FROM v) FROM t";
    assert_eq!(target.psql(query), db.psql(query));
}
