//! Harness for end-to-end tests: the real `ferry-controller`, `ferry-worker` and `ferry` binaries
//! as separate processes, each test in its own directory with its own ports. Processes are killed
//! when the test ends; when it fails, their logs are printed.

use std::io::Read;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use ferry_test_support::{
    Etcd, PgDb, Proc, Redis, S3Server, free_port, pki, s3 as s3_server, sh, unique, wait_for,
};

/// Heartbeat of test controllers: every timing derives from it, so failover takes seconds.
pub const TEST_HEARTBEAT: &str = "300ms";

/// Builds the three binaries once per test process (a no-op when they are fresh) and returns
/// the directory holding them.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "ferry-controller",
                "-p",
                "ferry-worker",
                "-p",
                "ferry-cli",
                "--bins",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build for the binaries under test");
        assert!(status.success(), "building the binaries under test failed");
        // target/debug/deps/this-test → target/debug
        let exe = std::env::current_exe().expect("current_exe");
        exe.parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf()
    })
}

/// The outcome of one `ferry` invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// A test installation: controller processes, worker processes, a scratch directory. Access
/// control is on, as in production: the API speaks TLS with a certificate of the cluster's own
/// test CA, the CLI calls carry the admin token the first start wrote, and every worker joins
/// with a join token of its cluster and may touch only the scratch directory.
pub struct Cluster {
    /// Every controller's URL, comma-separated (what workers and the CLI are given).
    pub url: String,
    pub controllers: Vec<Option<Proc>>,
    pub workers: Vec<Proc>,
    /// The certificates of this installation.
    pub pki: pki::Pki,
    ports: Vec<u16>,
    controller_args: Vec<String>,
    starts: usize,
    join_tokens: std::collections::BTreeMap<String, PathBuf>,
    /// The API asks every client for a certificate of the test CA.
    mtls: bool,
    /// A command worker processes are started through (e.g. `setpriv` to drop privileges).
    pub worker_wrapper: Vec<String>,
    /// Last, so that processes are stopped (and their logs printed) before it is removed.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// A controller with the given extra flags, on a fresh port and data dir.
    pub fn start(controller_args: &[&str]) -> Cluster {
        Cluster::start_n(1, controller_args)
    }

    /// `n` controllers with the same extra flags (e.g. one `--store etcd:URL`), each on its own
    /// port and data dir.
    pub fn start_n(n: usize, controller_args: &[&str]) -> Cluster {
        Cluster::launch(n, controller_args, false)
    }

    /// One controller that asks every client and worker for a certificate of the test CA
    /// (`--tls-client-ca`); the harness's CLI calls and workers present one.
    pub fn start_mtls(controller_args: &[&str]) -> Cluster {
        Cluster::launch(1, controller_args, true)
    }

    fn launch(n: usize, controller_args: &[&str], mtls: bool) -> Cluster {
        bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("ferry-it-")
            .tempdir()
            .expect("creating a test directory");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let pki = pki::Pki::generate(&dir.path().join("pki"), "ferry");
        let mut cluster = Cluster {
            url: ports
                .iter()
                .map(|p| format!("https://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(","),
            dir,
            pki,
            controllers: (0..n).map(|_| None).collect(),
            workers: Vec::new(),
            ports,
            controller_args: controller_args.iter().map(|s| s.to_string()).collect(),
            starts: 0,
            join_tokens: Default::default(),
            mtls,
            worker_wrapper: Vec::new(),
        };
        for i in 0..n {
            cluster.start_controller_n(i);
        }
        cluster
    }

    /// The URL of controller `i`.
    pub fn controller_url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.ports[i])
    }

    /// Which controller serves on `url`.
    pub fn controller_index(&self, url: &str) -> Option<usize> {
        (0..self.ports.len()).find(|i| self.controller_url(*i) == url)
    }

    /// Controller `i`'s process.
    pub fn controller(&mut self, i: usize) -> &mut Proc {
        self.controllers[i].as_mut().expect("controller running")
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The installation's admin token (every team), as the first start wrote it.
    pub fn admin_token_file(&self) -> PathBuf {
        self.path().join("admin.token")
    }

    /// (Re)starts the (first) controller on the same port and data dir.
    pub fn start_controller(&mut self) {
        self.start_controller_n(0);
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        if i == 0 {
            self.path().join("controller-data")
        } else {
            self.path().join(format!("controller-data-{i}"))
        }
    }

    /// (Re)starts controller `i` on its port and data dir, and waits until it answers.
    pub fn start_controller_n(&mut self, i: usize) {
        let data = self.data_dir(i);
        self.starts += 1;
        let log = self
            .path()
            .join(format!("controller-{i}-{}.log", self.starts));
        let mut cmd = Command::new(bin_dir().join("ferry-controller"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.ports[i]))
            .arg("--data-dir")
            .arg(&data)
            .arg("--heartbeat-interval")
            .arg(TEST_HEARTBEAT)
            .arg("--tls-cert")
            .arg(&self.pki.server_cert)
            .arg("--tls-key")
            .arg(&self.pki.server_key)
            .arg("--ca-cert")
            .arg(&self.pki.ca)
            .args(if self.mtls {
                vec!["--tls-client-ca".into(), self.pki.ca.clone()]
            } else {
                vec![]
            })
            // The web console only where a test asks for it (parallel tests would all try
            // the one-machine default address).
            .args(
                if self.controller_args.iter().any(|a| a == "--http-listen") {
                    vec![]
                } else {
                    vec!["--http-listen", "off"]
                },
            )
            .args(&self.controller_args)
            .env("RUST_LOG", "info")
            .env("OTEL_BSP_SCHEDULE_DELAY", "200");
        self.controllers[i] = Some(Proc::spawn(
            &format!("ferry-controller #{i}"),
            &mut cmd,
            log,
        ));
        self.find_admin_token();
        self.wait_until_serving(i);
    }

    /// Copies the admin token the first start wrote (in whichever data dir) to a known place.
    fn find_admin_token(&self) {
        if self.admin_token_file().exists() {
            return;
        }
        wait_for(Duration::from_secs(30), "the admin token file", || {
            (0..self.ports.len()).any(|i| {
                let file = self.data_dir(i).join("admin.token");
                std::fs::copy(&file, self.admin_token_file()).is_ok()
            })
        });
    }

    fn wait_until_serving(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run = self.ferry_at(&self.controller_url(i), &["cluster", "list"]);
            if run.code == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the controller did not start: {}",
                run.stderr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A join token for the workers of `cluster` (created once, as the admin), as a file.
    pub fn join_token(&mut self, cluster: &str) -> PathBuf {
        if let Some(file) = self.join_tokens.get(cluster) {
            return file.clone();
        }
        let name = format!("join-{cluster}");
        let run = self
            .ferry(&[
                "token",
                "create",
                &name,
                "--worker",
                "--cluster",
                cluster,
                "-o",
                "json",
            ])
            .expect_code(0);
        let secret = run.json()["token"]
            .as_str()
            .expect("the secret as `token`")
            .to_owned();
        let file = self.path().join(format!("{name}.token"));
        std::fs::write(&file, secret).expect("writing the join token");
        self.join_tokens.insert(cluster.to_owned(), file.clone());
        file
    }

    /// Starts a worker process and waits until it is listed.
    pub fn add_worker(&mut self, cluster: &str, node: &str) -> usize {
        self.add_worker_with(cluster, node, 1, &[])
    }

    /// Starts a worker with a shard capacity and extra environment (e.g. database passwords
    /// referenced by `password_env`), and waits until it is listed.
    pub fn add_worker_with(
        &mut self,
        cluster: &str,
        node: &str,
        max_shards: u32,
        env: &[(&str, &str)],
    ) -> usize {
        self.add_worker_args(cluster, node, max_shards, env, &[])
    }

    /// Starts a worker with extra flags too. It joins with its cluster's join token and may
    /// touch volumes beneath the scratch directory (`--allow-path`); more flags add to that.
    pub fn add_worker_args(
        &mut self,
        cluster: &str,
        node: &str,
        max_shards: u32,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> usize {
        let token = self.join_token(cluster);
        let mut all: Vec<String> = vec![
            "--token-file".into(),
            token.to_string_lossy().into_owned(),
            "--allow-path".into(),
            self.path().to_string_lossy().into_owned(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.spawn_worker(cluster, node, max_shards, env, &all, true)
    }

    /// Starts a worker with exactly these flags (besides controller, cluster, node, CA and work
    /// dir): no join token or policy unless given. When `wait` is set, waits until it is listed.
    pub fn spawn_worker(
        &mut self,
        cluster: &str,
        node: &str,
        max_shards: u32,
        env: &[(&str, &str)],
        args: &[&str],
        wait: bool,
    ) -> usize {
        let n = self.workers.len();
        let log = self.path().join(format!("worker-{n}-{cluster}-{node}.log"));
        let worker = bin_dir().join("ferry-worker");
        let mut cmd = match self.worker_wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&worker);
                cmd
            }
            None => Command::new(&worker),
        };
        cmd.arg("--controller")
            .arg(&self.url)
            .arg("--cluster")
            .arg(cluster)
            .arg("--node")
            .arg(node)
            .arg("--max-shards")
            .arg(max_shards.to_string())
            .arg("--ca-cert")
            .arg(&self.pki.ca)
            .args(if self.mtls {
                vec![
                    "--client-cert".into(),
                    self.pki.client_cert.clone(),
                    "--client-key".into(),
                    self.pki.client_key.clone(),
                ]
            } else {
                vec![]
            })
            .args(args)
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env_remove("FERRY_TOKEN")
            .envs(env.iter().copied())
            .arg("--work-dir")
            .arg(self.path().join(format!("work-{n}")))
            .env("RUST_LOG", "info");
        // Ids are new at every registration: wait for one not listed before (a count could miss
        // it while a killed worker's lease expires at the same time).
        let before = self.worker_ids(cluster);
        self.workers.push(Proc::spawn(
            &format!("ferry-worker {cluster}/{node}"),
            &mut cmd,
            log,
        ));
        if wait {
            wait_for(Duration::from_secs(30), "the worker to register", || {
                self.worker_ids(cluster)
                    .iter()
                    .any(|id| !before.contains(id))
            });
        }
        n
    }

    /// Ids of the live workers of a cluster.
    pub fn worker_ids(&self, cluster: &str) -> Vec<String> {
        let run = self.ferry(&["worker", "list", "--cluster", cluster, "-o", "json"]);
        if run.code != 0 {
            return Vec::new();
        }
        run.json()["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter_map(|w| w["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs the CLI against this installation as its admin.
    pub fn ferry(&self, args: &[&str]) -> Run {
        self.ferry_at(&self.url, args)
    }

    /// Runs the CLI as the admin against one URL of this installation.
    pub fn ferry_at(&self, url: &str, args: &[&str]) -> Run {
        self.ferry_env(url, args, &[])
    }

    /// Runs the CLI as the holder of `token` (a secret) instead of the admin.
    pub fn ferry_as(&self, token: &str, args: &[&str]) -> Run {
        let mut env: Vec<(String, String)> = self
            .cli_env()
            .into_iter()
            .filter(|(k, _)| k != "FERRY_TOKEN_FILE")
            .collect();
        env.push(("FERRY_TOKEN".into(), token.into()));
        ferry_with_env(&self.url, args, &env)
    }

    /// Runs the CLI against `url` trusting this installation's CA, with extra environment (and
    /// a config directory of the test's own, so no saved login of the machine is used).
    pub fn ferry_env(&self, url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = self.cli_env();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ferry_with_env(url, args, &all)
    }

    /// The environment of an admin CLI call (CA, token file, a config dir of the test's own), to
    /// run one from another thread with [`ferry_with_env`].
    pub fn cli_env(&self) -> Vec<(String, String)> {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let mut env = vec![
            ("FERRY_CA_CERT".into(), text(&self.pki.ca)),
            (
                "FERRY_CONFIG_DIR".into(),
                text(&self.path().join("cli-config")),
            ),
            ("FERRY_TOKEN_FILE".into(), text(&self.admin_token_file())),
        ];
        if self.mtls {
            env.push(("FERRY_CLIENT_CERT".into(), text(&self.pki.client_cert)));
            env.push(("FERRY_CLIENT_KEY".into(), text(&self.pki.client_key)));
        }
        env
    }

    /// Writes an app manifest into the scratch dir and applies it.
    pub fn apply(&self, yaml: &str) -> Run {
        let path = self.path().join(format!("app-{}.yaml", free_port()));
        std::fs::write(&path, yaml).expect("writing a manifest");
        self.ferry(&["app", "apply", "-f", path.to_str().expect("utf-8 path")])
    }

    /// `backup create APP --wait -o json EXTRA…`; fails the test unless the backup completed.
    pub fn backup_completed(&self, app: &str, extra: &[&str]) -> Value {
        let mut args = vec!["backup", "create", app, "--wait", "-o", "json"];
        args.extend_from_slice(extra);
        let backup = self.ferry(&args).expect_code(0).json();
        assert_eq!(backup["state"], "Completed", "{backup:#}");
        backup
    }

    /// `restore create ID --to-app TO_APP --rewrite FROM=TO --wait -o json`, expecting exit
    /// `code` (0: completed, 1: the job failed, 2: refused).
    pub fn restore_copy(&self, id: &str, to_app: &str, from: &Path, to: &Path, code: i32) -> Run {
        self.ferry(&[
            "restore",
            "create",
            id,
            "--to-app",
            to_app,
            "--rewrite",
            &format!("{}={}", from.display(), to.display()),
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(code)
    }

    /// `backup get ID -o json`.
    pub fn backup(&self, id: &str) -> Value {
        self.ferry(&["backup", "get", id, "-o", "json"])
            .expect_code(0)
            .json()
    }

    /// The `grpc.health.v1` status of controller URL `url` (see [`health`]).
    pub fn health(&self, url: &str) -> Option<bool> {
        health_with(url, &self.pki.ca)
    }
}

/// Runs the CLI against `url` with exactly this environment for its credentials.
pub fn ferry_with_env(url: &str, args: &[&str], env: &[(String, String)]) -> Run {
    let mut cmd = Command::new(bin_dir().join("ferry"));
    cmd.arg("--controller")
        .arg(url)
        .args(args)
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_TOKEN_FILE")
        .env_remove("FERRY_TEAM")
        .env_remove("FERRY_CA_CERT")
        .env_remove("FERRY_CLIENT_CERT")
        .env_remove("FERRY_CLIENT_KEY")
        .env_remove("FERRY_CONTROLLER")
        .env_remove("FERRY_DATA_DIR")
        .env("FERRY_CONFIG_DIR", "/nonexistent/ferry-test-config")
        .envs(env.iter().map(|(k, v)| (k, v)));
    run(cmd)
}

fn run(mut cmd: Command) -> Run {
    let out = cmd.stdin(Stdio::null()).output().expect("running ferry");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the CLI against any controller URL with no credentials (and no saved login).
pub fn ferry_at(url: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin_dir().join("ferry"));
    cmd.arg("--controller")
        .arg(url)
        .args(args)
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_TOKEN_FILE")
        .env("FERRY_CONFIG_DIR", "/nonexistent/ferry-test-config");
    run(cmd)
}

/// Every log line the test's processes wrote so far (to check that no secret leaked).
impl Cluster {
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for p in self.controllers.iter().flatten().chain(self.workers.iter()) {
            out.push_str(&std::fs::read_to_string(&p.log).unwrap_or_default());
        }
        out
    }
}

/// Writes `len` bytes of incompressible data.
pub fn write_random_file(path: &Path, len: u64) {
    let mut src = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    let mut dst = std::fs::File::create(path).expect("creating a data file");
    std::io::copy(&mut (&mut src).take(len), &mut dst).expect("writing random data");
}

/// Every entry under `dir`, relative, sorted: to prove nothing appeared or vanished.
pub fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(
                p.strip_prefix(root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned(),
            );
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The `grpc.health.v1` status of a controller's API (over TLS, trusting `ca`): `Some(true)`
/// SERVING, `Some(false)` anything else, `None` when it does not answer. Health needs no token.
pub fn health_with(url: &str, ca: &Path) -> Option<bool> {
    ferry_proto::transport::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tls = ferry_proto::transport::ClientTls {
            ca_cert: Some(ca.to_path_buf()),
            ..Default::default()
        };
        let channel = ferry_proto::transport::endpoint(url, &tls)
            .ok()?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let req = tonic_health::pb::HealthCheckRequest {
            service: "ferry.v1.ControlService".into(),
        };
        let resp = tokio::time::timeout(Duration::from_secs(3), client.check(req))
            .await
            .ok()?
            .ok()?;
        Some(
            resp.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
        )
    })
}

/// A directory of `files` × `mib` MiB of random data, for shards that run long enough to be
/// interrupted.
pub fn big_volume(dir: &Path, files: usize, mib: u64) {
    std::fs::create_dir_all(dir).expect("creating a volume");
    for i in 0..files {
        write_random_file(&dir.join(format!("blob-{i}.bin")), mib << 20);
    }
}

impl Cluster {
    /// `ferry storage add NAME --local DIR --cluster C` with DIR in the scratch directory;
    /// returns DIR.
    pub fn add_local_storage(&self, name: &str, cluster: &str) -> PathBuf {
        let dir = self.path().join(name);
        let path = dir.to_str().expect("utf-8 path");
        self.ferry(&[
            "storage",
            "add",
            name,
            "--local",
            path,
            "--cluster",
            cluster,
        ])
        .expect_code(0);
        dir
    }

    /// Applies an app of one component with one volume at `path`.
    pub fn apply_volume_app(
        &self,
        app: &str,
        cluster: &str,
        (component, volume): (&str, &str),
        path: &Path,
    ) {
        self.apply(&format!(
            "name: {app}\ncluster: {cluster}\ncomponents:\n  - name: {component}\n    volumes:\n      - {{name: {volume}, path: {}}}\n",
            path.display()
        ))
        .expect_code(0);
    }
}

/// `GET /metrics` over plain HTTP/1.0; returns the body.
pub fn scrape(addr: &str) -> String {
    use std::io::Write;
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("metrics at {addr}: {e}"));
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("sending the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// Checks that every line is valid Prometheus/OpenMetrics text and returns the samples.
pub fn parse_metrics(text: &str) -> Vec<prometheus_parse::Sample> {
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
        }
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line:?}"
        );
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text must end with # EOF"
    );
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus text")
        .samples
}

/// The value of one series (counter, gauge or untyped), matching every given label.
pub fn metric(
    samples: &[prometheus_parse::Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples.iter().find_map(|s| {
        let matches = s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
        match (&s.value, matches) {
            (prometheus_parse::Value::Counter(v), true)
            | (prometheus_parse::Value::Gauge(v), true)
            | (prometheus_parse::Value::Untyped(v), true) => Some(*v),
            _ => None,
        }
    })
}

/// One exported span, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// Attribute key → value as text.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// The attributes that arrived as integers (what a dashboard can sum).
    pub int_attributes: std::collections::BTreeMap<String, i64>,
}

/// An in-process OTLP/gRPC trace receiver (opentelemetry-proto's collector service).
pub struct OtlpReceiver {
    pub url: String,
    spans: std::sync::Arc<std::sync::Mutex<Vec<ReceivedSpan>>>,
    _runtime: tokio::runtime::Runtime,
}

struct Collector(std::sync::Arc<std::sync::Mutex<Vec<ReceivedSpan>>>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(V::StringValue(s)) => s.clone(),
            Some(V::IntValue(i)) => i.to_string(),
            Some(V::BoolValue(b)) => b.to_string(),
            Some(V::DoubleValue(d)) => d.to_string(),
            other => format!("{other:?}"),
        };
        let mut out = self.0.lock().expect("spans lock");
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name.clone(),
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), text(&a.value)))
                            .collect(),
                        int_attributes: span
                            .attributes
                            .iter()
                            .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
                                V::IntValue(i) => Some((a.key.clone(), *i)),
                                _ => None,
                            })
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

impl OtlpReceiver {
    /// Starts listening on a free port.
    pub fn start() -> OtlpReceiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding the receiver");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let service = opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
            Collector(spans.clone()),
        );
        runtime.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        OtlpReceiver {
            url,
            spans,
            _runtime: runtime,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("spans lock").clone()
    }
}

impl Cluster {
    /// `ferry storage add NAME --s3 …` for `bucket` of the test server (credentials by the test
    /// variables, which every process started here inherits).
    pub fn add_s3_storage(&self, name: &str, s3: &S3Server, bucket: &str) {
        let endpoint = s3.endpoint();
        self.ferry(&[
            "storage",
            "add",
            name,
            "--s3",
            "--endpoint",
            &endpoint,
            "--bucket",
            bucket,
            "--path-style",
            "--access-key-env",
            s3_server::ACCESS_KEY_ENV,
            "--secret-key-env",
            s3_server::SECRET_KEY_ENV,
        ])
        .expect_code(0);
    }
}

/// `age-keygen -o DIR/NAME.key`; returns the file and its public recipient.
pub fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.key"));
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&file)
        .output()
        .expect("age-keygen (Debian package age; scripts/setup installs it)");
    assert!(out.status.success(), "{out:?}");
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&file)
        .output()
        .unwrap();
    assert!(public.status.success(), "{public:?}");
    let recipient = String::from_utf8(public.stdout).unwrap().trim().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (file, recipient)
}

/// Every file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
