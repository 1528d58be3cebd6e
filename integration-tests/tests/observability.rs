//! Prometheus metrics of a controller and a worker process after a backup: the job and byte
//! counters hold the right values, and the text parses as Prometheus/OpenMetrics.

use std::time::Duration;

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

/// One backup across a controller process and two worker processes is one trace: the root span
/// on the controller, a hand-out span per shard, the workers' shard spans beneath them, and the
/// stage spans (archive, dump, compress, upload) with bytes; results reported back carry the
/// context in gRPC metadata. No secret appears in any span attribute or log line.
#[test]
fn one_trace_per_job_across_processes() {
    use ferry_integration_tests::{OtlpReceiver, PgDb, unique, wait_for};
    let receiver = OtlpReceiver::start();
    let secret = format!("otel-secret-{}", unique());
    let pg = PgDb::create("ferry_otel");
    let db = pg.name.clone();
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");

    let mut c = Cluster::start(&["--no-embedded-worker", "--otlp-endpoint", &receiver.url]);
    let env = [("FERRY_SECRET_TEST_DB_PASSWORD", secret.as_str())];
    for node in ["node-1", "node-2"] {
        c.add_worker_args("dc-a", node, 1, &env, &["--otlp-endpoint", &receiver.url]);
    }
    c.add_local_storage("archives", "dc-a");
    let data = c.path().join("srv/app");
    ferry_archive::sample::generate(&data, 4).unwrap();
    c.apply(&format!(
        "name: app\ncluster: dc-a\ncomponents:\n  - name: web\n    volumes:\n      - {{name: v, path: {}}}\n    databases:\n      - {{name: main, engine: postgres, host: 127.0.0.1, password_env: FERRY_SECRET_TEST_DB_PASSWORD, databases: [{db}]}}\n",
        data.display()
    ))
    .expect_code(0);
    let backup = c
        .ferry(&["backup", "create", "app", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let trace = backup["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(trace.len(), 32, "{backup:#}");
    let text = c
        .ferry(&["backup", "get", backup["id"].as_str().unwrap()])
        .expect_code(0)
        .stdout;
    assert!(text.contains(&format!("Trace:\t{trace}")), "{text}");

    let shard_count = backup["shards"].as_array().unwrap().len();
    wait_for(Duration::from_secs(30), "the job's spans to arrive", || {
        let spans = receiver.spans();
        spans
            .iter()
            .any(|s| s.name == "backup" && s.trace_id == trace)
            && ["record_result", "shard"].iter().all(|name| {
                spans
                    .iter()
                    .filter(|s| s.name == *name && s.trace_id == trace)
                    .count()
                    >= shard_count
            })
    });
    let spans: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace)
        .collect();
    let one = |name: &str| {
        spans
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let root = one("backup");
    assert_eq!(root.len(), 1, "{spans:#?}");
    let root = &root[0];
    assert_eq!(root.service, "ferry-controller");
    assert_eq!(root.parent_span_id, "", "the root has no parent");
    let assigns = one("assign");
    assert_eq!(assigns.len(), shard_count);
    assert!(
        assigns
            .iter()
            .all(|a| a.parent_span_id == root.span_id && a.service == "ferry-controller")
    );
    let shards = one("shard");
    assert_eq!(shards.len(), shard_count);
    for s in &shards {
        assert_eq!(s.service, "ferry-worker");
        assert!(
            assigns.iter().any(|a| a.span_id == s.parent_span_id),
            "shard span not under a hand-out: {s:#?}"
        );
    }
    let under_shard = |name: &str| {
        let stage = one(name);
        assert!(!stage.is_empty(), "no {name} span");
        for s in &stage {
            assert!(
                shards.iter().any(|p| p.span_id == s.parent_span_id),
                "{name} not under a shard span"
            );
        }
        stage
    };
    // Byte counts arrive as integers, which a dashboard can sum.
    let bytes = |s: &ferry_integration_tests::ReceivedSpan| {
        s.int_attributes.get("bytes").copied().unwrap_or(0)
    };
    assert!(under_shard("archive").iter().all(|s| bytes(s) > 0));
    assert!(under_shard("dump").iter().all(|s| bytes(s) > 0));
    assert!(under_shard("upload").iter().all(|s| bytes(s) > 0));
    under_shard("compress");
    for r in one("record_result") {
        assert_eq!(r.service, "ferry-controller");
        assert!(
            shards.iter().any(|s| s.span_id == r.parent_span_id),
            "result not under its shard: {r:#?}"
        );
    }
    // Both worker processes took part.
    let workers: std::collections::BTreeSet<&str> = backup["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["worker"].as_str().unwrap())
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");

    // The password is in no span attribute and no log line.
    for s in receiver.spans() {
        for (k, v) in &s.attributes {
            assert!(
                !v.contains(&secret),
                "secret in span {} attribute {k}",
                s.name
            );
        }
    }
    assert!(!c.all_logs().contains(&secret), "secret in a log line");
}
