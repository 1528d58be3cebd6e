//! The embedded store survives a controller restart: what was listed before is listed after,
//! and a backup taken before the restart restores after it.

use ferry_integration_tests::Cluster;
use std::time::Duration;

#[test]
fn backups_survive_a_controller_restart() {
    let mut c = Cluster::start(&[]);
    let data = c.path().join("srv/notes");
    ferry_archive::sample::generate(&data, 5).unwrap();
    ferry_archive::sample::generate(&c.path().join("ref"), 5).unwrap();
    c.apply(&format!(
        "name: notes\ncomponents:\n  - name: web\n    volumes:\n      - {{name: data, path: {}}}\n",
        data.display()
    ))
    .expect_code(0);
    let backup = c
        .ferry(&["backup", "create", "notes", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let id = backup["id"].as_str().unwrap().to_owned();
    let before = c
        .ferry(&["backup", "list", "-o", "json"])
        .expect_code(0)
        .json();

    c.controller(0).stop();
    c.ferry(&["backup", "list"]).expect_code(5);
    c.start_controller();

    let after = c
        .ferry(&["backup", "list", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(before["backups"].as_array().unwrap().len(), 1);
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&before), ids(&after));
    assert_eq!(after["backups"][0]["state"], "Completed");
    assert_eq!(
        after["backups"][0]["stored_bytes"],
        before["backups"][0]["stored_bytes"]
    );
    c.ferry(&["app", "get", "notes"]).expect_code(0);
    c.ferry(&["storage", "list"]).expect_code(0);

    let copy = c.path().join("copy");
    c.ferry(&[
        "restore",
        "create",
        &id,
        "--to-app",
        "notes-copy",
        "--rewrite",
        &format!("{}={}", data.display(), copy.display()),
        "--wait",
        "-o",
        "json",
    ])
    .expect_code(0);
    let diffs = ferry_archive::compare_trees(&c.path().join("ref"), &copy).unwrap();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn a_job_in_flight_resumes_after_the_controller_is_killed() {
    let mut c = Cluster::start(&[]);
    let data = c.path().join("srv/big");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..4 {
        ferry_integration_tests::write_random_file(&data.join(format!("blob-{i}.bin")), 128 << 20);
    }
    c.apply(&format!(
        "name: big\ncomponents:\n  - name: store\n    volumes:\n      - {{name: data, path: {}}}\n",
        data.display()
    ))
    .expect_code(0);
    let id = c
        .ferry(&["backup", "create", "big", "-o", "json"])
        .expect_code(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ferry_integration_tests::wait_for(
        std::time::Duration::from_secs(60),
        "the shard to start",
        || c.backup(&id)["shards"][0]["bytes"].as_u64().unwrap_or(0) > 0,
    );
    // The embedded worker dies with the controller; the new controller finds the job in the
    // store, sees the lost assignment and runs the shard again.
    c.controller(0).kill();
    c.start_controller();
    let done = c
        .ferry(&["backup", "watch", &id, "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(done["state"], "Completed", "{done:#}");
    assert!(
        done["shards"][0]["attempt"].as_u64().unwrap() >= 2,
        "{done:#}"
    );
    assert_eq!(done["bytes"].as_u64().unwrap(), 4 * (128 << 20));
}

/// The in-process worker ends with its controller, also when the controller is SIGKILLed (which
/// gives it no chance to stop its children).
#[test]
fn the_embedded_worker_ends_with_a_killed_controller() {
    let mut c = Cluster::start(&[]);
    let data = c.path().join("controller-data");
    let worker_pid = || -> Option<u32> {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            let running = std::fs::read_to_string(e.path().join("stat"))
                .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").starts_with(" Z"));
            (running
                && cmdline.contains("ferry-worker")
                && cmdline.contains(&*data.to_string_lossy()))
            .then_some(pid)
        })
    };
    ferry_test_support::wait_for(Duration::from_secs(30), "the in-process worker", || {
        worker_pid().is_some()
    });
    c.controller(0).kill();
    ferry_test_support::wait_for(
        Duration::from_secs(10),
        "the in-process worker to exit after its controller was SIGKILLed",
        || worker_pid().is_none(),
    );
}
