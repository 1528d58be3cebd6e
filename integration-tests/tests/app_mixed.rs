//! One application mixing every engine — PostgreSQL, MariaDB, Redis, a volume, an exec command
//! and config — backs up as one backup with one manifest, its shards spread over two worker
//! processes, and restores into a registered copy beside the original. Database passwords are
//! given by reference and appear in no log, API answer or manifest.

use ferry_integration_tests::{Cluster, Redis, sh, unique};

struct Dbs {
    pg: Vec<String>,
    maria: Vec<String>,
    maria_user: String,
}

impl Drop for Dbs {
    fn drop(&mut self) {
        for db in &self.pg {
            let _ = std::process::Command::new("dropdb")
                .args(["-h", "127.0.0.1", "--if-exists", "--force", db])
                .status();
        }
        for db in &self.maria {
            let _ = std::process::Command::new("mariadb")
                .args(["-uroot", "-e", &format!("DROP DATABASE IF EXISTS `{db}`")])
                .status();
        }
        let _ = std::process::Command::new("mariadb")
            .args([
                "-uroot",
                "-e",
                &format!(
                    "DROP USER IF EXISTS '{}'@'%', '{}'@'localhost'",
                    self.maria_user, self.maria_user
                ),
            ])
            .status();
    }
}

fn psql(db: &str, sql: &str) -> String {
    sh(
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ],
    )
}

fn maria(sql: &str) -> String {
    sh(
        "mariadb",
        &[
            "-uroot",
            "--default-character-set=utf8mb4",
            "-N",
            "-B",
            "-e",
            sql,
        ],
    )
}

#[test]
fn a_whole_app_backs_up_as_one_and_restores_beside_the_original() {
    let u = unique();
    let (pg, pg_copy) = (
        format!("ferry_e2e_pg_{u}"),
        format!("ferry_e2e_pg_{u}_copy"),
    );
    let (my, my_copy) = (
        format!("ferry_e2e_my_{u}"),
        format!("ferry_e2e_my_{u}_copy"),
    );
    let dbs = Dbs {
        pg: vec![pg.clone(), pg_copy.clone()],
        maria: vec![my.clone(), my_copy.clone()],
        maria_user: format!("ferry_e2e_{u}"),
    };
    let secret = format!("S3cret-{u}-never-logged");

    // Source data.
    sh("createdb", &["-h", "127.0.0.1", &pg]);
    psql(&pg, "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL DEFAULT 'thing', note text);
               INSERT INTO orders (item, note) SELECT 'item-' || g, 'grüße ✓' FROM generate_series(1, 500) g;
               CREATE VIEW big_orders AS SELECT * FROM orders WHERE id > 250;");
    maria(&format!(
        "CREATE DATABASE `{my}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
         CREATE TABLE `{my}`.users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50) UNIQUE, bio TEXT);
         INSERT INTO `{my}`.users (name, bio) VALUES ('ada', '🚀 emoji'), ('bob', '中文');
         CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}';
         CREATE USER '{user}'@'localhost' IDENTIFIED BY '{secret}';
         GRANT ALL ON `{my}`.* TO '{user}'@'%';  GRANT ALL ON `{my}_copy`.* TO '{user}'@'%';
         GRANT ALL ON `{my}`.* TO '{user}'@'localhost';  GRANT ALL ON `{my}_copy`.* TO '{user}'@'localhost';
         GRANT RELOAD, PROCESS ON *.* TO '{user}'@'%'; GRANT RELOAD, PROCESS ON *.* TO '{user}'@'localhost';",
        user = dbs.maria_user
    ));

    let mut c = Cluster::start(&["--no-embedded-worker"]);
    let env = [("FERRY_SECRET_SHOP_DB_PASSWORD", secret.as_str())];
    let allow = ["--allow-exec", "cat", "--allow-exec", "sh"];
    c.add_worker_args("dc-a", "node-1", 2, &env, &allow);
    c.add_worker_args("dc-a", "node-2", 2, &env, &allow);
    let storage = c.add_local_storage("archives", "dc-a");
    let redis = Redis::start(c.path());
    redis.cli(&["-n", "2", "SET", "session:1", "alice"]);
    redis.cli(&["-n", "2", "PEXPIRE", "session:1", "600000"]);
    redis.cli(&["-n", "2", "RPUSH", "queue", "a", "b", "c"]);
    redis.cli(&["-n", "2", "HSET", "cart:9", "apples", "3", "pears", "1"]);
    let uploads = c.path().join("srv/shop/uploads");
    ferry_archive::sample::generate(&uploads, 11).unwrap();
    ferry_archive::sample::generate(&c.path().join("ref/uploads"), 11).unwrap();
    let realm = c.path().join("realm.json");
    std::fs::write(&realm, br#"{"realm":"shop","users":2}"#).unwrap();
    let realm_out = c.path().join("realm-restored.json");

    let app = |name: &str, pg_db: &str, my_db: &str, redis_db: u32, vol: &str| {
        format!(
            "name: {name}\ncluster: dc-a\ncomponents:\n  - name: api\n    config: {{ingress_host: {name}.example.com}}\n    volumes:\n      - {{name: uploads, path: {vol}}}\n    databases:\n      - {{name: main, engine: postgres, host: 127.0.0.1, port: 5432, databases: [{pg_db}]}}\n      - {{name: legacy, engine: mariadb, host: 127.0.0.1, port: 3306, user: {user}, password_env: FERRY_SECRET_SHOP_DB_PASSWORD, databases: [{my_db}]}}\n      - {{name: cache, engine: redis, host: 127.0.0.1, port: {port}, db: {redis_db}}}\n  - name: realm\n    exec: {{backup: [cat, {realm}], restore: [sh, -c, 'cat > {out}']}}\n",
            user = dbs.maria_user,
            port = redis.port,
            realm = realm.display(),
            out = realm_out.display(),
        )
    };
    c.apply(&app("shop", &pg, &my, 2, uploads.to_str().unwrap()))
        .expect_code(0);

    let backup = c
        .ferry(&["backup", "create", "shop", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(backup["state"], "Completed", "{backup:#}");
    let shards = backup["shards"].as_array().unwrap();
    let kinds: Vec<&str> = shards.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    for kind in ["config", "volume", "postgres", "mariadb", "redis", "exec"] {
        assert!(kinds.contains(&kind), "no {kind} shard in {kinds:?}");
    }
    let workers: std::collections::BTreeSet<&str> = shards
        .iter()
        .map(|s| s["worker"].as_str().unwrap())
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "shards did not spread over both workers: {workers:?}"
    );
    let pg_shard = shards.iter().find(|s| s["kind"] == "postgres").unwrap();
    assert!(
        pg_shard["tool_version"]
            .as_str()
            .unwrap()
            .contains("pg_dump (PostgreSQL) 15"),
        "{pg_shard:#}"
    );

    // One manifest, naming every shard with its tool version.
    let id = backup["id"].as_str().unwrap();
    let manifest_text = std::fs::read_to_string(storage.join(format!(
        "teams/default/apps/shop/backups/{id}/manifest.json"
    )))
    .unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest_text).unwrap();
    assert_eq!(manifest["shards"].as_array().unwrap().len(), shards.len());
    let my_shard = manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "mariadb")
        .unwrap();
    assert!(
        my_shard["tool_version"].as_str().unwrap().contains("10.11"),
        "{my_shard:#}"
    );

    // The copy is declared first (so the Redis db number can differ), then restored into by name.
    let copy_vol = c.path().join("srv/shop-copy/uploads");
    c.apply(&app(
        "shop-copy",
        &pg_copy,
        &my_copy,
        4,
        copy_vol.to_str().unwrap(),
    ))
    .expect_code(0);
    std::fs::remove_file(&realm).unwrap();
    let restore = c
        .ferry(&[
            "restore",
            "create",
            id,
            "--to-app",
            "shop-copy",
            "--rewrite",
            "shop.example.com=shop-copy.example.com",
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(restore["state"], "Completed", "{restore:#}");

    // Everything is there, beside the original.
    let digest = |db: &str| {
        psql(
            db,
            "SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o",
        )
    };
    assert_eq!(digest(&pg), digest(&pg_copy));
    assert_eq!(
        psql(&pg_copy, "SELECT count(*) FROM big_orders").trim(),
        "250"
    );
    let users = |db: &str| {
        maria(&format!(
            "SELECT id, name, HEX(bio) FROM `{db}`.users ORDER BY id"
        ))
    };
    assert_eq!(users(&my), users(&my_copy));
    assert_eq!(redis.cli(&["-n", "4", "GET", "session:1"]).trim(), "alice");
    let ttl: i64 = redis
        .cli(&["-n", "4", "PTTL", "session:1"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 600_000, "ttl {ttl}");
    assert_eq!(
        redis.cli(&["-n", "4", "LRANGE", "queue", "0", "-1"]),
        "a\nb\nc\n"
    );
    assert_eq!(
        redis.cli(&["-n", "4", "HGET", "cart:9", "apples"]).trim(),
        "3"
    );
    assert_eq!(
        redis.cli(&["-n", "2", "DBSIZE"]).trim(),
        "3",
        "the source db changed"
    );
    let diffs = ferry_archive::compare_trees(&c.path().join("ref/uploads"), &copy_vol).unwrap();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert_eq!(
        std::fs::read(&realm_out).unwrap(),
        br#"{"realm":"shop","users":2}"#
    );
    let copy = c
        .ferry(&["app", "get", "shop-copy", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(
        copy["spec"]["components"][0]["config"]["ingress_host"],
        "shop-copy.example.com"
    );

    // The secret is nowhere: logs, API answers, manifest.
    for (what, text) in [
        ("logs", c.all_logs()),
        (
            "backup get",
            c.ferry(&["backup", "get", id, "-o", "json"]).stdout,
        ),
        (
            "restore get",
            c.ferry(&[
                "restore",
                "get",
                restore["id"].as_str().unwrap(),
                "-o",
                "json",
            ])
            .stdout,
        ),
        (
            "app get",
            c.ferry(&["app", "get", "shop", "-o", "json"]).stdout,
        ),
        ("manifest", manifest_text),
    ] {
        assert!(!text.contains(&secret), "the password leaked into {what}");
    }
    drop(dbs);
}
