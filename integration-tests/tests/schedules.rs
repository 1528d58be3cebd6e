//! Schedules: on time, keeping exactly N (objects of the others deleted), pause and resume,
//! skipped ticks while a backup still runs, no double fire across a leader change, and clear
//! errors for bad expressions and zones.

use std::collections::BTreeSet;
use std::time::Duration;

use ferry_integration_tests::{Cluster, Etcd, big_volume, listing, wait_for};

fn scheduled(c: &Cluster, name: &str) -> Vec<serde_json::Value> {
    let list = c
        .ferry(&["backup", "list", "-o", "json"])
        .expect_code(0)
        .json();
    list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["trigger"] == format!("schedule/{name}"))
        .cloned()
        .collect()
}

fn schedule(c: &Cluster, name: &str) -> serde_json::Value {
    c.ferry(&["schedule", "get", name, "-o", "json"])
        .expect_code(0)
        .json()
}

#[test]
fn a_schedule_runs_on_time_keeps_n_and_pauses() {
    let c = Cluster::start(&[]);
    let data = c.path().join("srv/app");
    ferry_archive::sample::generate(&data, 9).unwrap();
    c.apply(&format!(
        "name: app\ncomponents:\n  - name: web\n    volumes:\n      - {{name: v, path: {}}}\n",
        data.display()
    ))
    .expect_code(0);

    // Bad input first: clear messages, exit 2, nothing created.
    let run = c
        .ferry(&[
            "schedule",
            "create",
            "bad",
            "--app",
            "app",
            "--cron",
            "61 * * * *",
        ])
        .expect_code(2);
    assert!(
        run.stderr
            .contains("invalid cron expression \"61 * * * *\""),
        "{}",
        run.stderr
    );
    let run = c
        .ferry(&[
            "schedule",
            "create",
            "bad",
            "--app",
            "app",
            "--cron",
            "0 * * * *",
            "--tz",
            "Mars/Olympus",
        ])
        .expect_code(2);
    assert!(
        run.stderr.contains("unknown time zone \"Mars/Olympus\""),
        "{}",
        run.stderr
    );
    c.ferry(&[
        "schedule", "create", "bad", "--app", "nope", "--every", "daily",
    ])
    .expect_code(3);
    c.ferry(&[
        "schedule",
        "create",
        "bad",
        "--app",
        "app",
        "--every",
        "fortnightly",
    ])
    .expect_code(2);
    assert_eq!(
        c.ferry(&["schedule", "list", "-o", "json"])
            .expect_code(0)
            .json()["schedules"],
        serde_json::json!([])
    );

    // A daily schedule in a named zone shows its next run.
    let daily = c
        .ferry(&[
            "schedule",
            "create",
            "nightly",
            "--app",
            "app",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(daily["tz"], "Europe/Berlin");
    assert!(
        daily["next_run"].as_str().unwrap().contains("T00:30:00")
            || daily["next_run"].as_str().unwrap().contains("T01:30:00"),
        "{daily:#}"
    );
    let table = c.ferry(&["schedule", "list"]).expect_code(0).stdout;
    assert!(
        table.contains("NEXT RUN") && table.contains("nightly"),
        "{table}"
    );

    // Every 2 seconds, keeping 2.
    c.ferry(&[
        "schedule",
        "create",
        "fast",
        "--app",
        "app",
        "--cron",
        "*/2 * * * * *",
        "--keep",
        "2",
    ])
    .expect_code(0);
    wait_for(Duration::from_secs(40), "four scheduled runs", || {
        schedule(&c, "fast")["runs"].as_u64().unwrap() >= 4
    });
    c.ferry(&["schedule", "pause", "fast"]).expect_code(0);
    let runs_at_pause = schedule(&c, "fast")["runs"].as_u64().unwrap();
    // Retention catches up: exactly two completed backups remain, and only their objects.
    wait_for(
        Duration::from_secs(30),
        "retention to keep exactly 2",
        || {
            let mine = scheduled(&c, "fast");
            mine.len() == 2 && mine.iter().all(|b| b["state"] == "Completed")
        },
    );
    let kept: BTreeSet<String> = scheduled(&c, "fast")
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    let root = c
        .path()
        .join("controller-data/storage/teams/default/apps/app/backups");
    let dirs: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| !listing(&e.path()).is_empty())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        dirs, kept,
        "objects of deleted backups are still in storage"
    );
    // Ticks were two seconds apart.
    let ticks: Vec<i64> = scheduled(&c, "fast")
        .iter()
        .map(|b| {
            b["labels"]["ferry.schedule/tick"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(ticks.iter().all(|t| t % 2000 == 0), "{ticks:?}");

    // Paused: nothing new.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        schedule(&c, "fast")["runs"].as_u64().unwrap(),
        runs_at_pause
    );
    assert_eq!(schedule(&c, "fast")["next_run"], serde_json::Value::Null);
    // Resumed: it goes on.
    c.ferry(&["schedule", "resume", "fast"]).expect_code(0);
    wait_for(Duration::from_secs(20), "a run after resuming", || {
        schedule(&c, "fast")["runs"].as_u64().unwrap() > runs_at_pause
    });
    c.ferry(&["schedule", "delete", "fast"]).expect_code(0);
    c.ferry(&["schedule", "get", "fast"]).expect_code(3);

    // A keep window instead of a count: what a restore to a moment of the last 4 s needs.
    let windowed = c
        .ferry(&[
            "schedule",
            "create",
            "windowed",
            "--app",
            "app",
            "--cron",
            "*/2 * * * * *",
            "--keep-window",
            "4s",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(windowed["keep_window_seconds"], 4, "{windowed:#}");
    wait_for(Duration::from_secs(40), "four windowed runs", || {
        schedule(&c, "windowed")["runs"].as_u64().unwrap() >= 4
    });
    c.ferry(&["schedule", "pause", "windowed"]).expect_code(0);
    // Once the window has passed the last run, only that run is needed (a moment of the
    // window restores from it): the others go.
    wait_for(
        Duration::from_secs(30),
        "the window to keep only the newest backup",
        || {
            let mine = scheduled(&c, "windowed");
            mine.len() == 1 && mine[0]["state"] == "Completed"
        },
    );
}

#[test]
fn ticks_fire_once_across_a_leader_change_and_busy_ticks_are_skipped() {
    let etcd_dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(etcd_dir.path());
    let mut args = etcd.controller_args();
    args.push("--no-embedded-worker".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start_n(2, &args);
    c.add_worker_args("dc-a", "node-1", 1, &[], &["--allow-exec", "sleep"]);
    c.add_local_storage("archives", "dc-a");
    let data = c.path().join("srv/big");
    big_volume(&data, 1, 8);
    // Every backup takes at least two seconds (incremental ones of an unchanged volume are
    // otherwise instant): its pre-backup hook sleeps.
    c.apply(&format!(
        "name: big\ncluster: dc-a\ncomponents:\n  - name: store\n    hooks: {{pre_backup: [sleep, \"2\"]}}\n    volumes:\n      - {{name: data, path: {}}}\n",
        data.display()
    ))
    .expect_code(0);
    // Every second, with backups that take longer than that: some ticks must be skipped.
    c.ferry(&[
        "schedule",
        "create",
        "often",
        "--app",
        "big",
        "--cron",
        "* * * * * *",
    ])
    .expect_code(0);
    wait_for(Duration::from_secs(60), "runs and skips", || {
        let s = schedule(&c, "often");
        s["runs"].as_u64().unwrap() >= 2 && s["skipped"].as_u64().unwrap() >= 1
    });
    let s = schedule(&c, "often");
    assert!(
        s["last_skip"].as_str().unwrap().contains("already running"),
        "{s:#}"
    );

    let leader = etcd.leader_url().unwrap();
    let index = c.controller_index(&leader).unwrap();
    c.controller(index).kill();
    wait_for(Duration::from_secs(30), "a new leader", || {
        etcd.leader_url().is_some_and(|l| l != leader)
    });
    let runs_before = schedule(&c, "often")["runs"].as_u64().unwrap();
    wait_for(Duration::from_secs(60), "runs under the new leader", || {
        schedule(&c, "often")["runs"].as_u64().unwrap() >= runs_before + 2
    });
    c.ferry(&["schedule", "pause", "often"]).expect_code(0);
    // Every tick produced at most one backup.
    let ticks: Vec<String> = scheduled(&c, "often")
        .iter()
        .map(|b| {
            b["labels"]["ferry.schedule/tick"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let unique: BTreeSet<&String> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick fired twice: {ticks:?}");
}
