//! Prometheus metrics of a controller and a worker process after a backup: the job and byte
//! counters hold the right values, and the text parses as Prometheus/OpenMetrics.

use ferry_integration_tests::{Cluster, free_port, metric, parse_metrics, scrape};

#[test]
fn metrics_count_jobs_and_bytes() {
    let controller_metrics = format!("127.0.0.1:{}", free_port());
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let mut c = Cluster::start(&[
        "--no-embedded-worker",
        "--metrics-listen",
        &controller_metrics,
    ]);
    c.add_worker_args(
        "dc-a",
        "node-1",
        2,
        &[],
        &["--metrics-listen", &worker_metrics],
    );
    c.add_local_storage("archives", "dc-a");
    let data = c.path().join("srv/app");
    ferry_archive::sample::generate(&data, 4).unwrap();
    c.apply(&format!(
        "name: app\ncluster: dc-a\ncomponents:\n  - name: web\n    config: {{a: 1}}\n    volumes:\n      - {{name: v, path: {}}}\n",
        data.display()
    ))
    .expect_code(0);
    let backup = c
        .ferry(&["backup", "create", "app", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let shard = |kind: &str| {
        backup["shards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == kind)
            .unwrap()
            .clone()
    };
    let volume = shard("volume");

    let m = parse_metrics(&scrape(&controller_metrics));
    assert_eq!(
        metric(&m, "ferry_jobs_started_total", &[("kind", "backup")]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "ferry_jobs_finished_total",
            &[("kind", "backup"), ("state", "completed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "ferry_shard_source_bytes_total",
            &[("kind", "volume"), ("op", "backup")]
        ),
        volume["bytes"].as_f64()
    );
    assert_eq!(
        metric(
            &m,
            "ferry_shard_stored_bytes_total",
            &[("kind", "volume"), ("op", "backup")]
        ),
        volume["stored_bytes"].as_f64()
    );
    assert_eq!(
        metric(&m, "ferry_workers", &[("cluster", "dc-a")]),
        Some(1.0)
    );
    assert_eq!(metric(&m, "ferry_lease_expiries_total", &[]), Some(0.0));
    let histogram_count = m.iter().any(|s| {
        s.metric == "ferry_shard_duration_seconds"
            && s.labels.get("kind") == Some("volume")
            && matches!(&s.value, prometheus_parse::Value::Histogram(b) if b.last().map(|c| c.count) == Some(1.0))
    });
    assert!(
        histogram_count,
        "no duration observation for the volume shard"
    );

    let w = parse_metrics(&scrape(&worker_metrics));
    assert_eq!(
        metric(
            &w,
            "ferry_worker_shards_total",
            &[("op", "backup"), ("result", "ok")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&w, "ferry_worker_source_bytes_total", &[("op", "backup")]),
        backup["bytes"].as_f64()
    );
    assert_eq!(metric(&w, "ferry_worker_running_shards", &[]), Some(0.0));
}

/// Without a terminal, `--wait` prints plain progress lines on stderr and the result on stdout;
/// with `-o json`, stdout holds exactly one JSON document and stderr no progress.
#[test]
fn progress_lines_and_json_output() {
    let c = Cluster::start(&[]);
    let data = c.path().join("srv/app");
    ferry_archive::sample::generate(&data, 4).unwrap();
    c.apply_volume_app("app", "local", ("web", "v"), &data);
    let run = c
        .ferry(&["backup", "create", "app", "--wait"])
        .expect_code(0);
    let id = run
        .stdout
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("Backup:\t")
        .to_owned();
    assert!(run.stdout.contains("State:\tCompleted"), "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!("{id} created (1 shards)")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("shard web.volume.v backup Succeeded ("),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("backup {id} Completed: 1/1 shards")),
        "{}",
        run.stderr
    );
    for line in run.stderr.lines() {
        assert!(
            !line.contains('\u{1b}'),
            "terminal escapes without a terminal: {line:?}"
        );
    }

    let run = c
        .ferry(&["backup", "create", "app", "--wait", "-o", "json"])
        .expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    for field in ["id", "state", "app", "team", "shards", "bytes"] {
        assert!(!doc[field].is_null(), "{field} missing");
    }
    assert!(
        !run.stderr.contains("shard "),
        "progress with -o json: {}",
        run.stderr
    );
    let list = c.ferry(&["backup", "list", "-o", "json"]).expect_code(0);
    let all: serde_json::Value = serde_json::from_str(&list.stdout).expect("one JSON document");
    assert_eq!(all["backups"].as_array().unwrap().len(), 2);
}
