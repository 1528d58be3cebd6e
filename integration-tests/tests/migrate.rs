//! `ferry migrate`: an app with a database and a volume moves from cluster dc-a to dc-b (and to
//! another team) through a real S3 server, with rewrites; the data arrives equal, each half ran
//! on its own cluster's workers, and the source is untouched.

use ferry_integration_tests::{Cluster, PgDb, S3Server, listing};
use serde_json::Value;

fn workers_of(job: &Value) -> Vec<String> {
    job["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["worker"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn migrate_moves_an_app_between_clusters_and_teams_with_rewrites() {
    let s3 = S3Server::start(); // first: every process below inherits its credential variables
    s3.bucket("ferry");
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    c.add_worker("dc-a", "a1");
    c.add_worker("dc-b", "b1");
    let (dc_a, dc_b) = (c.worker_ids("dc-a"), c.worker_ids("dc-b"));
    c.add_local_storage("nas-a", "dc-a");

    let src = c.path().join("dc-a/srv/shop");
    ferry_archive::sample::generate(&src, 11).unwrap();
    let db = PgDb::create("ferry_mig_src");
    db.psql(
        "create table orders (id serial primary key, item text not null default 'x', qty int);
         insert into orders (item, qty) select 'item-' || g, g from generate_series(1, 500) g;
         create view big_orders as select * from orders where qty > 250;",
    );
    let dst_db = PgDb {
        name: format!("{}_b", db.name),
    };
    let dst = c.path().join("dc-b/srv/shop");
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    c.apply(&format!(
        "name: shop\ncluster: dc-a\ncomponents:\n  - name: api\n    config: {{ingress_host: shop.dc-a.example.com, db_host: db-a.internal}}\n    volumes:\n      - {{name: uploads, path: {}}}\n    databases:\n      - {{name: main, engine: postgres, host: 127.0.0.1, port: 5432, user: {user}, databases: [{}]}}\n",
        src.display(),
        db.name
    ))
    .expect_code(0);

    // A local directory cannot carry a migration: refused, nothing started.
    let refused = c
        .ferry(&[
            "migrate",
            "shop",
            "--to-cluster",
            "dc-b",
            "--storage",
            "nas-a",
        ])
        .expect_code(2);
    assert!(
        refused.stderr.contains("local directory") && refused.stderr.contains("s3"),
        "{}",
        refused.stderr
    );
    // No s3 location yet either.
    let none = c
        .ferry(&["migrate", "shop", "--to-cluster", "dc-b"])
        .expect_code(2);
    assert!(none.stderr.contains("--s3"), "{}", none.stderr);
    assert_eq!(
        c.ferry(&["backup", "list", "-o", "json"]).json()["backups"],
        serde_json::json!([])
    );

    c.add_s3_storage("offsite", &s3, "ferry");
    // An earlier backup into the same s3 location: the migration's backup builds on it and
    // uploads no chunk of the unchanged volume again.
    let earlier = c
        .ferry(&[
            "backup",
            "create",
            "shop",
            "--storage",
            "offsite",
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(earlier["state"], "Completed", "{earlier:#}");
    let src_path = src.display().to_string();
    let dst_path = dst.display().to_string();
    let out = c
        .ferry(&[
            "migrate",
            "shop",
            "--to-cluster",
            "dc-b",
            "--to-team",
            "team-b",
            "--rewrite",
            &format!("{src_path}={dst_path}"),
            "--rewrite",
            &format!("{}={}", db.name, dst_db.name),
            "--rewrite",
            "shop.dc-a.example.com=shop.dc-b.example.com",
            "--rewrite",
            "db-a.internal=db-b.internal",
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    let (backup, restore) = (&out["backup"], &out["restore"]);
    assert_eq!(backup["state"], "Completed", "{backup:#}");
    assert_eq!(restore["state"], "Completed", "{restore:#}");
    assert_eq!(backup["storage"], "offsite");
    let volume = backup["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "volume")
        .unwrap();
    let detail = volume["detail"].as_str().unwrap();
    assert!(
        detail.contains(", 0 read;") && detail.contains(" 0 of "),
        "the migration re-read or re-uploaded the volume: {detail}"
    );

    // Each half ran on its own cluster's workers.
    for w in workers_of(backup) {
        assert!(
            dc_a.contains(&w),
            "backup shard ran on {w}, not dc-a {dc_a:?}"
        );
    }
    for w in workers_of(restore) {
        assert!(
            dc_b.contains(&w),
            "restore shard ran on {w}, not dc-b {dc_b:?}"
        );
    }

    // The data arrived equal.
    assert_eq!(
        ferry_archive::compare_trees(&src, &dst).unwrap(),
        Vec::<String>::new()
    );
    let q = "select id, item, qty from orders order by id";
    assert_eq!(dst_db.psql(q), db.psql(q));
    assert_eq!(
        dst_db.psql("select count(*) from big_orders"),
        db.psql("select count(*) from big_orders")
    );
    assert_eq!(
        dst_db
            .psql("insert into orders (qty) values (1) returning item, id > 500")
            .lines()
            .next(),
        Some("x|t"),
        "the default value and the sequence came along"
    );

    // The app is registered in team-b, cluster dc-b, with every rewrite applied.
    let moved = c
        .ferry(&["--team", "team-b", "app", "get", "shop", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(moved["cluster"], "dc-b", "{moved:#}");
    let spec = moved["spec"].to_string();
    for want in [
        dst_path.as_str(),
        dst_db.name.as_str(),
        "shop.dc-b.example.com",
        "db-b.internal",
    ] {
        assert!(spec.contains(want), "{want} missing from {spec}");
    }
    for gone in ["shop.dc-a.example.com", "db-a.internal", &src_path] {
        assert!(!spec.contains(gone), "{gone} still in {spec}");
    }

    // The source is untouched: still registered in dc-a, its data unchanged.
    let source = c
        .ferry(&["app", "get", "shop", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(source["cluster"], "dc-a");
    assert_eq!(db.psql("select count(*) from orders").trim(), "500");
    assert!(!listing(&src).is_empty());

    // Migrating into a team that already has the app is refused.
    let again = c
        .ferry(&[
            "migrate",
            "shop",
            "--to-cluster",
            "dc-b",
            "--to-team",
            "team-b",
        ])
        .expect_code(2);
    assert!(
        again.stderr.contains("already has an app"),
        "{}",
        again.stderr
    );
}
