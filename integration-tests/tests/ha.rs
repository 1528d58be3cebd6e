//! Failures with etcd as the store, over real processes: workers SIGKILLed mid-shard again and
//! again, the leader controller SIGKILLed with two standbys, etcd stopped mid-job, a partitioned
//! (SIGSTOPped) worker whose lease expired, and a job no worker can take.

use std::time::{Duration, Instant};

use ferry_integration_tests::{Cluster, Etcd, big_volume, ferry_with_env, listing, wait_for};

fn setup_app(c: &Cluster, name: &str, data: &std::path::Path) -> std::path::PathBuf {
    let storage = c.add_local_storage("archives", "dc-a");
    c.apply_volume_app(name, "dc-a", ("store", "data"), data);
    storage
}

fn start_backup(c: &Cluster, app: &str) -> String {
    start_backup_with(c, app, &[])
}

fn start_backup_with(c: &Cluster, app: &str, extra: &[&str]) -> String {
    let mut args = vec!["backup", "create", app, "-o", "json"];
    args.extend_from_slice(extra);
    c.ferry(&args).expect_code(0).json()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the (single) shard of a backup is moving bytes; returns its worker and attempt.
fn wait_running(c: &Cluster, id: &str) -> (String, u64) {
    let mut seen = (String::new(), 0);
    wait_for(
        Duration::from_secs(60),
        "the shard to be moving bytes",
        || {
            let b = c.backup(id);
            let s = &b["shards"][0];
            seen = (
                s["worker"].as_str().unwrap_or("").to_owned(),
                s["attempt"].as_u64().unwrap_or(0),
            );
            s["state"] == "Running" && s["bytes"].as_u64().unwrap_or(0) > 0
        },
    );
    seen
}

fn restore_and_compare(c: &Cluster, id: &str, data: &std::path::Path, n: usize) {
    let copy = c.path().join(format!("copy-{n}"));
    c.ferry(&[
        "restore",
        "create",
        id,
        "--to-app",
        &format!("copy-{n}"),
        "--rewrite",
        &format!("{}={}", data.display(), copy.display()),
        "--wait",
        "-o",
        "json",
    ])
    .expect_code(0);
    let diffs = ferry_archive::compare_trees(data, &copy).unwrap();
    assert!(
        diffs.is_empty(),
        "restore {n} differs: {}",
        diffs.join("\n")
    );
    std::fs::remove_dir_all(&copy).unwrap();
}

#[test]
fn workers_killed_mid_shard_ten_times_in_a_row() {
    let etcd_dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(etcd_dir.path());
    let mut args = etcd.controller_args();
    args.push("--no-embedded-worker".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start(&args);
    let mut nodes = Vec::new();
    for n in 0..2 {
        nodes.push((
            format!("node-{n}"),
            c.add_worker("dc-a", &format!("node-{n}")),
        ));
    }
    let data = c.path().join("srv/big");
    big_volume(&data, 6, 64);
    let storage = setup_app(&c, "big", &data);
    let mut requeue_times = Vec::new();
    for round in 0..10 {
        // Self-contained archives: an incremental backup of the unchanged volume would end
        // before a worker could be killed in the middle of it (incremental.rs kills one there).
        let id = start_backup_with(&c, "big", &["--full"]);
        let (victim, attempt) = wait_running(&c, &id);
        let (i, (node, proc_index)) = nodes
            .iter()
            .enumerate()
            .find(|(_, (node, _))| victim.starts_with(&format!("dc-a-{node}-")))
            .map(|(i, n)| (i, n.clone()))
            .unwrap_or_else(|| panic!("no worker process for {victim}"));
        let killed = Instant::now();
        c.workers[proc_index].kill();
        nodes.remove(i);
        let fresh = format!("node-{}", round + 2);
        let index = c.add_worker("dc-a", &fresh);
        nodes.push((fresh, index));
        wait_for(Duration::from_secs(30), "the shard to be re-queued", || {
            c.backup(&id)["shards"][0]["attempt"].as_u64().unwrap_or(0) > attempt
        });
        requeue_times.push(killed.elapsed());
        let done = c
            .ferry(&["backup", "watch", &id, "-o", "json"])
            .expect_code(0)
            .json();
        assert_eq!(
            done["state"], "Completed",
            "round {round} ({node} killed): {done:#}"
        );
        let shard = &done["shards"][0];
        assert!(
            shard["attempt"].as_u64().unwrap() > attempt,
            "round {round}: not re-run: {shard:#}"
        );
        assert_ne!(shard["worker"], victim.as_str());
        // Only the winner's archive is left.
        let shards = storage.join(format!("teams/default/apps/big/backups/{id}/shards"));
        assert_eq!(
            listing(&shards),
            vec![format!("store.volume.data.{}.tar.zst", shard["attempt"])]
        );
        restore_and_compare(&c, &id, &data, round);
    }
    let worst = requeue_times.iter().max().unwrap();
    eprintln!("SIGKILL → shard re-queued: {requeue_times:?} (worst {worst:?})");
    // Lease TTL (1.5 s, 2 s on etcd's whole seconds) + 2 s: the target of the design.
    assert!(
        *worst < Duration::from_secs(4) + Duration::from_secs(2),
        "re-queue took {worst:?}"
    );
}

#[test]
fn leader_killed_mid_job_with_two_standbys() {
    let etcd_dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(etcd_dir.path());
    let mut args = etcd.controller_args();
    args.push("--no-embedded-worker".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start_n(3, &args);
    c.add_worker("dc-a", "node-1");
    c.add_worker("dc-a", "node-2");
    let data = c.path().join("srv/big");
    big_volume(&data, 8, 64);
    setup_app(&c, "big", &data);
    let id = start_backup(&c, "big");
    wait_running(&c, &id);

    // A CLI already following the job must keep following it through the change.
    let (url, env) = (c.url.clone(), c.cli_env());
    let watch_id = id.clone();
    let watcher = std::thread::spawn(move || {
        ferry_with_env(&url, &["backup", "watch", &watch_id, "-o", "json"], &env)
    });
    let leader = etcd.leader_url().expect("a leader");
    let index = c
        .controller_index(&leader)
        .expect("the leader is one of ours");
    let killed = Instant::now();
    c.controller(index).kill();
    let mut new_leader = None;
    wait_for(Duration::from_secs(30), "a new leader", || {
        new_leader = etcd.leader_url().filter(|l| *l != leader);
        new_leader.is_some()
    });
    let failover = killed.elapsed();
    eprintln!(
        "leader SIGKILL → new leader {:?} in {failover:?}",
        new_leader.unwrap()
    );
    // Election TTL 1.5 s (2 s on etcd): the design's bound is 2 × TTL.
    assert!(
        failover <= Duration::from_secs(4) + Duration::from_secs(1),
        "failover took {failover:?}"
    );

    let watched = watcher.join().unwrap().expect_code(0).json();
    assert_eq!(watched["state"], "Completed", "{watched:#}");
    // The CLI works through the list of controllers, the dead one included.
    let list = c
        .ferry(&["backup", "list", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(list["backups"][0]["state"], "Completed");
    restore_and_compare(&c, &id, &data, 0);
}

#[test]
fn etcd_stopped_mid_job_then_back() {
    let etcd_dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(etcd_dir.path());
    let mut args = etcd.controller_args();
    args.push("--no-embedded-worker".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start(&args);
    c.add_worker("dc-a", "node-1");
    let data = c.path().join("srv/big");
    big_volume(&data, 6, 64);
    setup_app(&c, "big", &data);
    let id = start_backup(&c, "big");
    wait_running(&c, &id);
    assert_eq!(c.health(&c.url), Some(true));

    etcd.kill();
    wait_for(Duration::from_secs(15), "health to say NOT_SERVING", || {
        c.health(&c.url) == Some(false)
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.health(&c.url), Some(false), "still down: NOT_SERVING");
    etcd.restart();
    wait_for(
        Duration::from_secs(30),
        "health to say SERVING again",
        || c.health(&c.url) == Some(true),
    );

    let done = c
        .ferry(&["backup", "watch", &id, "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(done["state"], "Completed", "{done:#}");
    restore_and_compare(&c, &id, &data, 0);
}

#[test]
fn a_partitioned_worker_cannot_commit_its_stale_attempt() {
    let etcd_dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(etcd_dir.path());
    let mut args = etcd.controller_args();
    args.push("--no-embedded-worker".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start(&args);
    let zombie = c.add_worker("dc-a", "node-1");
    let data = c.path().join("srv/big");
    big_volume(&data, 6, 64);
    let storage = setup_app(&c, "big", &data);
    let id = start_backup(&c, "big");
    let (first_worker, first_attempt) = wait_running(&c, &id);
    assert!(first_worker.starts_with("dc-a-node-1-"));

    c.workers[zombie].signal(libc::SIGSTOP);
    c.add_worker("dc-a", "node-2");
    let done = c
        .ferry(&["backup", "watch", &id, "-o", "json"])
        .expect_code(0)
        .json();
    let shard = done["shards"][0].clone();
    assert!(
        shard["attempt"].as_u64().unwrap() > first_attempt,
        "{shard:#}"
    );
    assert!(
        shard["worker"]
            .as_str()
            .unwrap()
            .starts_with("dc-a-node-2-"),
        "{shard:#}"
    );
    let manifest_path = storage.join(format!("teams/default/apps/big/backups/{id}/manifest.json"));
    let manifest = std::fs::read(&manifest_path).unwrap();

    // The zombie wakes up and finishes its stale attempt: nothing it does may count.
    c.workers[zombie].signal(libc::SIGCONT);
    wait_for(
        Duration::from_secs(60),
        "the zombie to give up its stale attempt",
        || {
            let log = c.workers[zombie].log_tail(200);
            log.contains("result refused") || log.contains("shard failed")
        },
    );
    let after = c.backup(&id);
    assert_eq!(after["state"], "Completed");
    assert_eq!(after["shards"][0]["attempt"], shard["attempt"]);
    assert_eq!(after["shards"][0]["sha256"], shard["sha256"]);
    assert_eq!(
        std::fs::read(&manifest_path).unwrap(),
        manifest,
        "the manifest changed"
    );
    let shards = storage.join(format!("teams/default/apps/big/backups/{id}/shards"));
    assert_eq!(
        listing(&shards),
        repository_objects("store.volume.data", &shard["attempt"])
    );
    restore_and_compare(&c, &id, &data, 0);
}

#[test]
fn a_job_no_worker_can_take_says_why_and_fails() {
    let c = Cluster::start(&["--unschedulable-timeout", "3s"]);
    c.add_local_storage("dcx", "dc-x");
    let data = c.path().join("srv/x");
    std::fs::create_dir_all(&data).unwrap();
    c.apply_volume_app("x", "dc-x", ("c", "v"), &data);
    let id = start_backup(&c, "x");
    wait_for(
        Duration::from_secs(10),
        "the job to say what it waits for",
        || {
            c.backup(&id)["message"]
                .as_str()
                .unwrap_or("")
                .contains("waiting for a worker of cluster \"dc-x\"")
        },
    );
    let done = c
        .ferry(&["backup", "watch", &id, "-o", "json"])
        .expect_code(1)
        .json();
    assert_eq!(done["state"], "Failed");
    let error = done["shards"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("no live worker could take this shard for 3s")
            && error.contains("a worker of cluster \"dc-x\""),
        "{error}"
    );
}

/// What a volume backed up into the repository leaves in its backup's directory: the index and
/// the list of packs it references (the packs themselves live in the team's repository).
fn repository_objects(shard: &str, attempt: &serde_json::Value) -> Vec<String> {
    vec![
        format!("{shard}.{attempt}.idx.zst"),
        format!("{shard}.{attempt}.packs"),
    ]
}
