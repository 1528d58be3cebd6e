//! Access control end to end, over the real binaries with TLS on: tokens, roles and teams; the
//! audit trail; TLS failures; workers that join with a token and cannot speak for another; the
//! worker's own policy; client certificates; plain HTTP beyond loopback refused.

use std::time::Duration;

use ferry_integration_tests::pki::Pki;
use ferry_integration_tests::{
    Cluster, big_volume, bin_dir, ferry_with_env, free_port, listing, wait_for,
};
use serde_json::Value;

/// Creates a caller token as the admin; returns its secret.
fn token(c: &Cluster, name: &str, team: &str, role: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "token", "create", name, "--team", team, "--role", role, "-o", "json",
    ];
    args.extend_from_slice(extra);
    let run = c.ferry(&args).expect_code(0);
    let secret = run.json()["token"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("fry_"), "{secret}");
    secret
}

fn id_of(run: ferry_integration_tests::Run) -> String {
    run.json()["id"].as_str().expect("an id").to_owned()
}

fn audit(c: &Cluster) -> Vec<Value> {
    c.ferry(&["audit", "list", "--since", "1h", "-o", "json"])
        .expect_code(0)
        .json()["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

#[test]
fn tokens_roles_and_teams_are_enforced_and_audited() {
    let c = Cluster::start(&[]);
    let b_admin = token(&c, "b-admin", "b", "admin", &[]);
    let a_admin = token(&c, "a-admin", "a", "admin", &[]);
    let a_op = token(&c, "a-op", "a", "operator", &[]);
    let a_view = token(&c, "a-view", "a", "viewer", &[]);

    // Team B's app and backup, made with team B's admin token (the team comes from the token).
    let data = c.path().join("srv/b-shop");
    ferry_archive::sample::generate(&data, 3).unwrap();
    let manifest = c.path().join("b-shop.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: shop\ncomponents:\n  - name: web\n    volumes:\n      - {{name: files, path: {}}}\n",
            data.display()
        ),
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    c.ferry_as(&b_admin, &["app", "apply", "-f", m])
        .expect_code(0);
    let b_backup = id_of(
        c.ferry_as(
            &b_admin,
            &["backup", "create", "shop", "--wait", "-o", "json"],
        )
        .expect_code(0),
    );
    let listed = c
        .ferry_as(&b_admin, &["backup", "list", "-o", "json"])
        .expect_code(0);
    assert!(listed.stdout.contains(&b_backup));

    // No token, a wrong token: exit 4.
    let anonymous = ferry_with_env(
        &c.url,
        &["backup", "list"],
        &[(
            "FERRY_CA_CERT".into(),
            c.pki.ca.to_string_lossy().into_owned(),
        )],
    )
    .expect_code(4);
    assert!(
        anonymous.stderr.contains("no token"),
        "{}",
        anonymous.stderr
    );
    // The same token with its last hex digit changed (never to itself).
    let last = if a_op.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &a_op[..a_op.len() - 1]);
    let wrong = c.ferry_as(&forged, &["backup", "list"]).expect_code(4);
    assert!(wrong.stderr.contains("not valid"), "{}", wrong.stderr);
    assert!(
        !wrong.stderr.contains(&forged),
        "the secret must not be echoed"
    );

    // Team A cannot see or touch team B's things: exactly like missing ones (exit 3).
    let target = c.path().join("stolen");
    let target_s = target.to_str().unwrap();
    for args in [
        vec!["backup", "list", "--team", "b"],
        vec!["backup", "get", &b_backup],
        vec!["app", "get", "shop"],
        vec!["backup", "verify", &b_backup],
        vec!["backup", "export", &b_backup, "-f", "/dev/null"],
        vec![
            "restore",
            "create",
            &b_backup,
            "--to-app",
            "loot",
            "--rewrite",
            &format!("{}={target_s}", data.display()),
            "--wait",
        ],
    ] {
        let run = c.ferry_as(&a_op, &args).expect_code(3);
        assert!(run.stderr.contains("not found"), "{args:?}: {}", run.stderr);
    }
    for args in [
        vec!["backup", "delete", &b_backup],
        vec!["app", "delete", "shop"],
    ] {
        c.ferry_as(&a_admin, &args).expect_code(3);
    }
    // Nothing of team B was written anywhere, and B still has everything.
    assert!(!target.exists(), "team B's data was restored for team A");
    let a_restores = c
        .ferry_as(&a_admin, &["restore", "list", "-o", "json"])
        .expect_code(0);
    assert_eq!(
        a_restores.json()["restores"].as_array().map(Vec::len),
        Some(0)
    );
    c.ferry_as(&b_admin, &["backup", "get", &b_backup])
        .expect_code(0);
    c.ferry_as(&b_admin, &["app", "get", "shop"]).expect_code(0);

    // Roles: a viewer cannot back up; an operator cannot apply an app or restore in place.
    c.ferry_as(&a_admin, &["app", "apply", "-f", m])
        .expect_code(0);
    let run = c
        .ferry_as(&a_view, &["backup", "create", "shop"])
        .expect_code(4);
    assert!(run.stderr.contains("operator"), "{}", run.stderr);
    let run = c.ferry_as(&a_op, &["app", "apply", "-f", m]).expect_code(4);
    assert!(run.stderr.contains("admin"), "{}", run.stderr);
    let a_backup = id_of(
        c.ferry_as(&a_op, &["backup", "create", "shop", "--wait", "-o", "json"])
            .expect_code(0),
    );
    let run = c
        .ferry_as(&a_op, &["restore", "create", &a_backup, "--overwrite"])
        .expect_code(4);
    assert!(
        run.stderr
            .contains("restore --overwrite needs the admin role"),
        "{}",
        run.stderr
    );
    // What every team shares needs an admin of every team.
    let run = c
        .ferry_as(
            &a_admin,
            &[
                "storage",
                "add",
                "x",
                "--local",
                "/tmp/x",
                "--cluster",
                "local",
            ],
        )
        .expect_code(4);
    assert!(run.stderr.contains("every team"), "{}", run.stderr);
    let run = c
        .ferry_as(
            &a_admin,
            &["token", "create", "w", "--worker", "--cluster", "local"],
        )
        .expect_code(4);
    assert!(run.stderr.contains("every team"), "{}", run.stderr);
    // A team admin makes tokens of its own team only, and sees only those.
    let made = c
        .ferry_as(
            &a_admin,
            &["token", "create", "a-ci", "--role", "viewer", "-o", "json"],
        )
        .expect_code(0)
        .json();
    assert_eq!(made["team"], "a");
    let seen = c
        .ferry_as(&a_admin, &["token", "list", "-o", "json"])
        .expect_code(0);
    assert!(seen.stdout.contains("a-ci") && !seen.stdout.contains("b-admin"));
    c.ferry_as(&a_admin, &["token", "revoke", "b-admin"])
        .expect_code(3);

    // Revocation takes effect on the next call; an expired token is refused.
    c.ferry_as(&a_view, &["backup", "list"]).expect_code(0);
    c.ferry(&["token", "revoke", "a-view"]).expect_code(0);
    c.ferry_as(&a_view, &["backup", "list"]).expect_code(4);
    let short = token(&c, "short", "a", "viewer", &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let run = c.ferry_as(&short, &["backup", "list"]).expect_code(4);
    assert!(run.stderr.contains("expired"), "{}", run.stderr);

    // whoami says who a token is.
    let me = c
        .ferry_as(&a_op, &["whoami", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(
        (
            me["token"].as_str(),
            me["team"].as_str(),
            me["role"].as_str()
        ),
        (Some("a-op"), Some("a"), Some("operator"))
    );

    // The audit trail names who did what, denied calls included; secrets never appear in it.
    let entries = audit(&c);
    let has = |token: &str, call: &str, result: &str| {
        entries.iter().any(|e| {
            e["token"] == token && e["call"] == call && e["result"].as_str() == Some(result)
        })
    };
    assert!(has("b-admin", "CreateBackup", "ok"), "{entries:#?}");
    assert!(has("a-op", "CreateRestore", "NotFound"), "{entries:#?}");
    assert!(has("a-admin", "DeleteBackup", "NotFound"), "{entries:#?}");
    assert!(
        has("a-view", "CreateBackup", "PermissionDenied"),
        "{entries:#?}"
    );
    assert!(has("a-op", "ApplyApp", "PermissionDenied"), "{entries:#?}");
    assert!(has("", "ListBackups", "Unauthenticated"), "{entries:#?}");
    let restore = entries
        .iter()
        .find(|e| e["token"] == "a-op" && e["call"] == "CreateRestore")
        .unwrap();
    assert!(
        restore["target"].as_str().unwrap().contains(&b_backup),
        "{restore:#?}"
    );
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [&a_op, &b_admin, &a_admin] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret is in the audit trail"
        );
    }
    // A team admin reads its own team's entries only; by token too.
    let a_entries = c
        .ferry_as(
            &a_admin,
            &["audit", "list", "--token", "a-op", "-o", "json"],
        )
        .expect_code(0)
        .json();
    let a_entries = a_entries["entries"].as_array().unwrap();
    assert!(!a_entries.is_empty());
    assert!(
        a_entries
            .iter()
            .all(|e| e["token"] == "a-op" && e["team"] == "a")
    );
    c.ferry_as(&a_op, &["audit", "list"]).expect_code(4);
    // Nothing leaked into the logs either.
    let logs = c.all_logs();
    for secret in [&a_op, &b_admin, &a_admin, &a_view] {
        assert!(!logs.contains(secret.as_str()), "a token is in the logs");
    }
}

#[test]
fn tls_failures_and_saved_logins_say_what_is_wrong() {
    let c = Cluster::start(&[]);
    let port = c.url.rsplit(':').next().unwrap().to_owned();
    let token_file = c.admin_token_file();
    let token_file = token_file.to_str().unwrap();
    // Plain HTTP against the TLS API.
    let run = ferry_with_env(
        &format!("http://127.0.0.1:{port}"),
        &["app", "list"],
        &[("FERRY_TOKEN_FILE".into(), token_file.into())],
    )
    .expect_code(5);
    assert!(run.stderr.contains("https://"), "{}", run.stderr);
    // A CA that did not sign the controller's certificate.
    let other = Pki::generate(&c.path().join("other-pki"), "other");
    let run = ferry_with_env(
        &c.url,
        &["app", "list"],
        &[
            ("FERRY_TOKEN_FILE".into(), token_file.into()),
            (
                "FERRY_CA_CERT".into(),
                other.ca.to_string_lossy().into_owned(),
            ),
        ],
    )
    .expect_code(5);
    assert!(run.stderr.contains("--ca-cert"), "{}", run.stderr);

    // `ferry login` checks the token, saves a context; later commands need no flags.
    let config = c.path().join("login-config");
    let env = |extra: &[(&str, &str)]| {
        let mut e: Vec<(String, String)> = vec![(
            "FERRY_CONFIG_DIR".into(),
            config.to_string_lossy().into_owned(),
        )];
        e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        e
    };
    let ferry = |args: &[&str], extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(bin_dir().join("ferry"));
        cmd.args(args)
            .env_remove("FERRY_TOKEN")
            .env_remove("FERRY_TOKEN_FILE")
            .env_remove("FERRY_CONTROLLER")
            .env_remove("FERRY_CA_CERT")
            .envs(env(extra));
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let bad = c.path().join("bad.token");
    std::fs::write(
        &bad,
        "fry_nobody_0000000000000000000000000000000000000000000000000000000000000000",
    )
    .unwrap();
    let ca = c.pki.ca.to_str().unwrap();
    let (code, _, err) = ferry(
        &[
            "login",
            &c.url,
            "--token-file",
            bad.to_str().unwrap(),
            "--ca-cert",
            ca,
        ],
        &[],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("nothing saved"), "{err}");
    let (code, out, err) = ferry(
        &[
            "login",
            &c.url,
            "--token-file",
            token_file,
            "--ca-cert",
            ca,
            "--name",
            "it",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("admin of every team"), "{out}");
    let (code, out, err) = ferry(&["whoami"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("token admin"), "{out}");
    let (code, out, _) = ferry(&["context", "list"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("* ") && out.contains("it"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(config.join("tokens/it.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, _, _) = ferry(&["logout"], &[]);
    assert_eq!(code, 0);
    let (code, _, err) = ferry(&["whoami"], &[]);
    assert_eq!(
        code, 5,
        "after logout the default controller is used: {err}"
    );
}

/// A gRPC client of the worker API, as a forger would write one.
mod forger {
    use ferry_proto::transport::{ClientTls, endpoint};
    use ferry_proto::v1;
    use ferry_proto::v1::worker_service_client::WorkerServiceClient;
    use tonic::transport::Channel;

    pub struct Forger {
        pub rt: tokio::runtime::Runtime,
        pub client: WorkerServiceClient<Channel>,
        token: String,
    }

    impl Forger {
        pub fn connect(url: &str, ca: &std::path::Path, token: &str) -> Forger {
            ferry_proto::transport::install_crypto_provider();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let tls = ClientTls {
                ca_cert: Some(ca.to_path_buf()),
                ..Default::default()
            };
            let channel = rt
                .block_on(endpoint(url, &tls).unwrap().connect())
                .expect("connecting");
            Forger {
                client: WorkerServiceClient::new(channel),
                rt,
                token: token.to_owned(),
            }
        }

        pub fn request<T>(&self, msg: T, session: Option<(&str, &str)>) -> tonic::Request<T> {
            let mut req = tonic::Request::new(msg);
            let md = req.metadata_mut();
            md.insert(
                "authorization",
                format!("Bearer {}", self.token).parse().unwrap(),
            );
            if let Some((id, key)) = session {
                md.insert(ferry_proto::WORKER_ID_HEADER, id.parse().unwrap());
                md.insert(ferry_proto::SESSION_HEADER, key.parse().unwrap());
            }
            req
        }

        pub fn register(&mut self, cluster: &str) -> Result<v1::RegisterResponse, tonic::Status> {
            let req = self.request(
                v1::RegisterRequest {
                    cluster: cluster.into(),
                    node: "forger".into(),
                    max_shards: 1,
                    ..Default::default()
                },
                None,
            );
            let mut client = self.client.clone();
            self.rt
                .block_on(client.register(req))
                .map(|r| r.into_inner())
        }
    }
}

#[test]
fn workers_join_with_a_token_of_their_cluster_and_speak_only_for_themselves() {
    use ferry_proto::v1;
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    let storage = c.add_local_storage("archives", "dc-a");
    // Without a join token a worker does not start; with another cluster's it is refused.
    let no_token = c.spawn_worker("dc-a", "bare", 1, &[], &[], false);
    let dc_b = c.join_token("dc-b");
    let dc_b_s = dc_b.to_str().unwrap().to_owned();
    let wrong = c.spawn_worker("dc-a", "wrong", 1, &[], &["--token-file", &dc_b_s], false);
    c.add_worker("dc-a", "node-1");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.worker_ids("dc-a").len(), 1, "only the real worker joined");
    assert!(c.worker_ids("dc-b").is_empty());
    let log = c.workers[no_token].log_tail(20);
    assert!(log.contains("no join token"), "{log}");
    let log = c.workers[wrong].log_tail(20);
    assert!(log.contains("is for cluster \"dc-b\""), "{log}");

    // A forger with a valid join token of dc-a opens its own session...
    let token = std::fs::read_to_string(c.join_token("dc-a")).unwrap();
    let mut f = forger::Forger::connect(&c.url, &c.pki.ca, token.trim());
    let mine = f.register("dc-a").expect("a session of its own");
    let real_id = c
        .worker_ids("dc-a")
        .into_iter()
        .find(|w| w.contains("node-1"))
        .unwrap();
    // ...while a real backup runs on the real worker.
    let data = c.path().join("srv/big");
    big_volume(&data, 4, 32);
    c.apply_volume_app("big", "dc-a", ("store", "data"), &data);
    let id = id_of(
        c.ferry(&["backup", "create", "big", "-o", "json"])
            .expect_code(0),
    );
    let mut shard = Value::Null;
    wait_for(
        Duration::from_secs(60),
        "the shard on the real worker",
        || {
            shard = c.backup(&id)["shards"][0].clone();
            shard["worker"] == real_id.as_str()
        },
    );
    let shard_ref = v1::ShardRef {
        job_id: id.clone(),
        shard_id: shard["id"].as_str().unwrap().into(),
        attempt: shard["attempt"].as_u64().unwrap() as u32,
    };
    let fake_result = v1::ShardResult {
        worker_id: real_id.clone(),
        shard: Some(shard_ref.clone()),
        ok: false,
        error: "forged".into(),
        permanent: true,
        ..Default::default()
    };
    // Naming the real worker in the message, with its own session: refused.
    let mut client = f.client.clone();
    let own = Some((mine.worker_id.as_str(), mine.session_key.as_str()));
    let req = f.request(fake_result.clone(), own);
    let e = f.rt.block_on(client.report_result(req)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // Its own id in the message, for a shard that is not its: refused.
    let req = f.request(
        v1::ShardResult {
            worker_id: String::new(),
            ..fake_result.clone()
        },
        own,
    );
    let e = f.rt.block_on(client.report_result(req)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // The real worker's id in the headers without its key: refused, for every call.
    let theirs = Some((real_id.as_str(), mine.session_key.as_str()));
    let req = f.request(fake_result.clone(), theirs);
    let e = f.rt.block_on(client.report_result(req)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let req = f.request(
        v1::ProgressReport {
            worker_id: real_id.clone(),
            shard: Some(shard_ref.clone()),
            bytes_done: 1,
            bytes_total: 1,
        },
        theirs,
    );
    let e = f.rt.block_on(client.report_progress(req)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let req = f.request(
        v1::AssignmentsRequest {
            worker_id: real_id.clone(),
        },
        theirs,
    );
    let e = f.rt.block_on(client.assignments(req)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let req = f.request(
        v1::AssignmentsRequest {
            worker_id: real_id.clone(),
        },
        own,
    );
    let e = f.rt.block_on(client.assignments(req)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // A caller token cannot open a worker session, nor a join token call the CLI API.
    let admin = std::fs::read_to_string(c.admin_token_file()).unwrap();
    let mut as_caller = forger::Forger::connect(&c.url, &c.pki.ca, admin.trim());
    assert_eq!(
        as_caller.register("dc-a").unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    c.ferry_as(token.trim(), &["app", "list"]).expect_code(4);

    // The real job is unaffected.
    wait_for(Duration::from_secs(120), "the backup to complete", || {
        c.backup(&id)["state"] == "Completed"
    });
    assert!(
        listing(&storage)
            .iter()
            .any(|p| p.ends_with("manifest.json"))
    );
}

#[test]
fn a_revoked_worker_loses_its_session_and_its_shard_runs_elsewhere() {
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    c.add_local_storage("archives", "dc-a");
    // Two join tokens for one cluster: revoking one ends only its worker.
    let made = c
        .ferry(&[
            "token",
            "create",
            "dc-a-one",
            "--worker",
            "--cluster",
            "dc-a",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    let one = c.path().join("one.token");
    std::fs::write(&one, made["token"].as_str().unwrap()).unwrap();
    let allow = c.path().to_string_lossy().into_owned();
    let one_s = one.to_str().unwrap().to_owned();
    c.spawn_worker(
        "dc-a",
        "node-1",
        1,
        &[],
        &[
            "--token-file",
            &one_s,
            "--allow-path",
            &allow,
            "--allow-exec",
            "sh",
        ],
        true,
    );
    // A shard that takes a while whatever the machine: its dump sleeps before it writes.
    c.apply(
        "name: slow\ncluster: dc-a\ncomponents:\n  - name: tool\n    exec: {backup: [sh, -c, 'sleep 6; echo dumped'], restore: [sh, -c, 'cat >/dev/null']}\n",
    )
    .expect_code(0);
    let id = id_of(
        c.ferry(&["backup", "create", "slow", "-o", "json"])
            .expect_code(0),
    );
    wait_for(
        Duration::from_secs(30),
        "the shard to be handed to node-1",
        || {
            let s = c.backup(&id)["shards"][0].clone();
            s["worker"].as_str().unwrap_or_default().contains("node-1")
        },
    );
    c.add_worker_args("dc-a", "node-2", 1, &[], &["--allow-exec", "sh"]);
    c.ferry(&["token", "revoke", "dc-a-one"]).expect_code(0);
    // Within a lease TTL (5 heartbeats of 300 ms) node-1's session is gone.
    wait_for(Duration::from_secs(5), "node-1's session to end", || {
        !c.worker_ids("dc-a").iter().any(|w| w.contains("node-1"))
    });
    wait_for(Duration::from_secs(60), "the backup to complete", || {
        c.backup(&id)["state"] == "Completed"
    });
    let b = c.backup(&id);
    let s = &b["shards"][0];
    assert!(s["worker"].as_str().unwrap().contains("node-2"), "{b:#}");
    assert!(s["attempt"].as_u64().unwrap() >= 2, "{b:#}");
    // node-1 keeps being refused: it cannot register again with the revoked token.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!c.worker_ids("dc-a").iter().any(|w| w.contains("node-1")));
    let log = c.workers[0].log_tail(40);
    assert!(log.contains("refused this worker"), "{log}");
}

#[test]
fn workers_refuse_what_their_policy_does_not_allow() {
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    let allowed = c.path().join("allowed");
    let secrets = c.path().join("secrets");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("pg"), "pw").unwrap();
    let outside_file = c.path().join("pg-password");
    std::fs::write(&outside_file, "pw").unwrap();
    let token = c.join_token("dc-a");
    let token = token.to_str().unwrap().to_owned();
    let (allowed_s, secrets_s) = (
        allowed.to_string_lossy().into_owned(),
        secrets.to_string_lossy().into_owned(),
    );
    c.spawn_worker(
        "dc-a",
        "node-1",
        2,
        &[("FERRY_SECRET_PG", "pw")],
        &[
            "--token-file",
            &token,
            "--allow-path",
            &allowed_s,
            "--secrets-dir",
            &secrets_s,
            "--allow-exec",
            "cat",
        ],
        true,
    );
    c.add_local_storage("archives", "dc-a");
    let outside = c.path().join("outside");
    ferry_archive::sample::generate(&outside, 1).unwrap();
    let marker = c.path().join("exec-ran");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "vol",
            format!(
                "  - name: web\n    volumes:\n      - {{name: v, path: {}}}\n",
                outside.display()
            ),
            "--allow-path",
        ),
        (
            "tool",
            format!(
                "  - name: t\n    exec: {{backup: [sh, -c, 'touch {}'], restore: [cat]}}\n",
                marker.display()
            ),
            "--allow-exec sh",
        ),
        (
            "env",
            "  - name: db\n    databases:\n      - {name: main, engine: postgres, host: 127.0.0.1, password_env: HOME, databases: [postgres]}\n".into(),
            "FERRY_SECRET_",
        ),
        (
            "file",
            format!(
                "  - name: db\n    databases:\n      - {{name: main, engine: postgres, host: 127.0.0.1, password_file: {}, databases: [postgres]}}\n",
                outside_file.display()
            ),
            "--secrets-dir",
        ),
        (
            "hook",
            format!(
                "  - name: web\n    hooks: {{pre_backup: [touch, {}]}}\n    volumes:\n      - {{name: v, path: {}}}\n",
                marker.display(),
                allowed.display()
            ),
            "--allow-exec touch",
        ),
    ];
    for (app, component, flag) in cases {
        c.apply(&format!(
            "name: {app}\ncluster: dc-a\ncomponents:\n{component}"
        ))
        .expect_code(0);
        let run = c.ferry(&["backup", "create", app, "--wait", "-o", "json"]);
        assert_eq!(run.code, 1, "{app}: {}\n{}", run.stdout, run.stderr);
        let job = run.json();
        let error = job["shards"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains(flag), "{app}: {error}");
        assert!(error.contains("does not"), "{app}: {error}");
        assert_eq!(
            job["shards"][0]["attempt"], 1,
            "a refusal is final: {job:#}"
        );
    }
    assert!(!marker.exists(), "a refused program ran");
    // What the policy allows still works.
    c.apply(&format!(
        "name: ok\ncluster: dc-a\ncomponents:\n  - name: web\n    volumes:\n      - {{name: v, path: {}}}\n",
        allowed.display()
    ))
    .expect_code(0);
    c.ferry(&["backup", "create", "ok", "--wait"])
        .expect_code(0);
}

#[test]
fn client_certificates_and_plain_http_beyond_loopback() {
    // With --tls-client-ca, every client needs a certificate of that CA (the harness's CLI
    // calls present one); the embedded worker presents the controller's own.
    let c = Cluster::start_mtls(&[]);
    // The in-process worker registers a moment after the controller serves.
    ferry_integration_tests::wait_for(
        std::time::Duration::from_secs(30),
        "the in-process worker to register over mTLS",
        || {
            let workers = c
                .ferry(&["worker", "list", "-o", "json"])
                .expect_code(0)
                .json();
            workers["workers"].as_array().map(Vec::len) == Some(1)
        },
    );
    let token = c.admin_token_file();
    let without = ferry_with_env(
        &c.url,
        &["worker", "list"],
        &[
            (
                "FERRY_CA_CERT".into(),
                c.pki.ca.to_string_lossy().into_owned(),
            ),
            (
                "FERRY_TOKEN_FILE".into(),
                token.to_string_lossy().into_owned(),
            ),
        ],
    )
    .expect_code(5);
    assert!(
        without.stderr.contains("client certificate") || without.stderr.contains("--client-cert"),
        "{}",
        without.stderr
    );

    // Plain HTTP on an address other machines reach is refused unless --insecure, which warns.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = std::process::Command::new(bin_dir().join("ferry-controller"))
        .args([
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--no-embedded-worker",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--insecure") && text.contains("--tls-cert"),
        "{text}"
    );
    let log = dir.path().join("insecure.log");
    let mut child = std::process::Command::new(bin_dir().join("ferry-controller"))
        .args([
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--no-embedded-worker",
            "--insecure",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("insecure.err")).unwrap())
        .spawn()
        .unwrap();
    let admin = dir.path().join("d/admin.token");
    wait_for(Duration::from_secs(30), "the insecure controller", || {
        ferry_with_env(
            &format!("http://127.0.0.1:{port}"),
            &["cluster", "list"],
            &[(
                "FERRY_TOKEN_FILE".into(),
                admin.to_string_lossy().into_owned(),
            )],
        )
        .code
            == 0
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(dir.path().join("insecure.err")).unwrap();
    assert!(text.contains("WITHOUT TLS"), "{text}");
}

/// The capabilities the worker's systemd unit gives it, as `setpriv` spells them.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/systemd/ferry-worker.service"
    ))
    .unwrap();
    let line = unit
        .lines()
        .find(|l| l.starts_with("AmbientCapabilities="))
        .expect("the unit grants ambient capabilities");
    assert!(
        unit.contains("User=ferry"),
        "the worker must not run as root"
    );
    line.trim_start_matches("AmbientCapabilities=")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// The worker as its systemd unit runs it — user `ferry`, only the unit's capabilities — backs
/// up files of other users it could not read otherwise and restores them with their owners and
/// modes. Every capability of the unit is explained in the README.
#[test]
fn an_unprivileged_worker_with_the_units_capabilities_backs_up_and_restores_any_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test drops from root to the ferry user: run the suite as root"
    );
    assert!(
        std::process::Command::new("id")
            .arg("ferry")
            .output()
            .unwrap()
            .status
            .success(),
        "the ferry user is missing: scripts/setup creates it"
    );
    let caps = unit_capabilities();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for cap in &caps {
        let name = format!("CAP_{}", cap.to_ascii_uppercase());
        assert!(readme.contains(&name), "README must say what {name} is for");
    }
    let list = caps
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    c.worker_wrapper = [
        "setpriv",
        "--reuid",
        "ferry",
        "--regid",
        "ferry",
        "--clear-groups",
        "--inh-caps",
        &list,
        "--ambient-caps",
        &list,
        "--bounding-set",
        &format!("-all,{list}"),
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.add_worker("dc-a", "node-1");
    c.add_local_storage("archives", "dc-a");

    // Files only their owners (root, nobody) may read, a setgid directory, odd modes.
    let data = c.path().join("srv/private");
    std::fs::create_dir_all(data.join("nobody")).unwrap();
    std::fs::write(data.join("root-only"), "root secret").unwrap();
    std::fs::set_permissions(data.join("root-only"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(data.join("nobody/notes"), "nobody's notes").unwrap();
    std::fs::set_permissions(data.join("nobody/notes"), PermissionsExt::from_mode(0o640)).unwrap();
    chown(data.join("nobody/notes"), Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(data.join("nobody"), PermissionsExt::from_mode(0o2750)).unwrap();
    chown(data.join("nobody"), Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&data, PermissionsExt::from_mode(0o700)).unwrap();

    c.apply_volume_app("private", "dc-a", ("store", "data"), &data);
    let backup = id_of(
        c.ferry(&["backup", "create", "private", "--wait", "-o", "json"])
            .expect_code(0),
    );
    let copy = c.path().join("srv/private-copy");
    c.ferry(&[
        "restore",
        "create",
        &backup,
        "--to-app",
        "private-copy",
        "--rewrite",
        &format!("{}={}", data.display(), copy.display()),
        "--wait",
    ])
    .expect_code(0);
    let diffs = ferry_archive::compare_trees(&data, &copy).unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");
    for rel in ["root-only", "nobody", "nobody/notes"] {
        let (a, b) = (
            std::fs::metadata(data.join(rel)).unwrap(),
            std::fs::metadata(copy.join(rel)).unwrap(),
        );
        assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "owner of {rel}");
    }
    // The worker really ran as ferry.
    let pid = c.workers[0].pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_owned();
    let ferry_uid = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", "ferry"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // The wrapper execs the worker, so the pid is the worker's.
    assert!(uid_line.contains(ferry_uid.trim()), "{uid_line}");
}

/// etcd with its own authentication on: the controller logs in with a user whose password it
/// reads from a file (never a flag); a wrong password stops it at start with a clear error.
#[test]
fn the_controller_logs_in_to_an_etcd_with_authentication() {
    let etcd_dir = tempfile::tempdir().unwrap();
    let etcd = ferry_integration_tests::Etcd::start(etcd_dir.path());
    etcd.etcdctl(&["user", "add", "root", "--new-user-password", "etcd-root-pw"]);
    etcd.etcdctl(&[
        "user",
        "add",
        "ferry",
        "--new-user-password",
        "etcd-ferry-pw",
    ]);
    etcd.etcdctl(&["role", "add", "ferry"]);
    etcd.etcdctl(&[
        "role",
        "grant-permission",
        "ferry",
        "--prefix=true",
        "readwrite",
        "/ferry/",
    ]);
    etcd.etcdctl(&["user", "grant-role", "ferry", "ferry"]);
    etcd.etcdctl(&["auth", "enable"]);
    let pw = etcd_dir.path().join("etcd-password");
    std::fs::write(&pw, "etcd-ferry-pw\n").unwrap();
    let mut args = etcd.controller_args();
    args.extend([
        "--etcd-user".to_owned(),
        "ferry".to_owned(),
        "--etcd-password-file".to_owned(),
        pw.to_string_lossy().into_owned(),
        "--no-embedded-worker".to_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start(&args);
    c.add_worker("dc-a", "node-1");
    c.add_local_storage("archives", "dc-a");
    let data = c.path().join("srv/app");
    ferry_archive::sample::generate(&data, 2).unwrap();
    c.apply_volume_app("app", "dc-a", ("web", "files"), &data);
    c.ferry(&["backup", "create", "app", "--wait"])
        .expect_code(0);
    assert!(
        !c.all_logs().contains("etcd-ferry-pw"),
        "the etcd password leaked"
    );

    // A wrong password: the controller does not start, and says why.
    std::fs::write(&pw, "wrong").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin_dir().join("ferry-controller"))
        .args(&args)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("authentication failed") || text.contains("invalid"),
        "{text}"
    );
    assert!(
        !text.contains("wrong\n") && !text.contains("etcd-ferry-pw"),
        "{text}"
    );
}
