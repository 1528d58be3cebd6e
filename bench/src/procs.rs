//! Processes: a Ferry installation (controller, separate workers, the CLI), etcd, the S3 test
//! server, shell pipelines; each process's peak RSS (VmHWM) and CPU time from /proc.

use std::ffi::OsStr;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The three Ferry binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    pub controller: PathBuf,
    pub worker: PathBuf,
    pub ferry: PathBuf,
}

impl Bins {
    /// The binaries in `dir`; an error names the missing one.
    pub fn in_dir(dir: &Path) -> anyhow::Result<Bins> {
        let bins = Bins {
            controller: dir.join("ferry-controller"),
            worker: dir.join("ferry-worker"),
            ferry: dir.join("ferry"),
        };
        for b in [&bins.controller, &bins.worker, &bins.ferry] {
            if !b.is_file() {
                bail!(
                    "{} is missing: build it (cargo build --release -p ferry-controller -p ferry-worker -p ferry-cli) or pass --bin-dir",
                    b.display()
                );
            }
        }
        Ok(bins)
    }
}

/// Fails naming every tool of `tools` that is not on PATH: a benchmark never skips a measure.
pub fn require_tools(tools: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if !missing.is_empty() {
        bail!(
            "not installed: {} (scripts/setup installs them)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The path of a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

pub use ferry_test_support::free_port;

/// Runs a program to completion; returns its stdout, or fails with its stderr.
pub fn run<I, S>(program: &str, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first line of `program --version` (or `program version`, restic's way), or "version
/// unknown".
pub fn tool_version(program: &str) -> String {
    ["--version", "version"]
        .into_iter()
        .find_map(|arg| {
            run(program, [arg])
                .ok()
                .and_then(|out| out.lines().next().map(|l| l.trim().to_owned()))
                .filter(|l| !l.is_empty())
        })
        .unwrap_or_else(|| format!("{program}, version unknown"))
}

/// Runs `script` with bash (`set -o pipefail`), `args` as `$1`, `$2`, …; returns the wall time.
pub fn timed_bash(script: &str, args: &[&OsStr], env: &[(&str, &str)]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail; {script}"))
        .arg("bash")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .context("starting bash")?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "`{script}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(secs)
}

/// Writes back whatever earlier steps left dirty (`sync`), so that no timed run pays for another
/// run's writeback.
pub fn settle() -> anyhow::Result<()> {
    let started = Instant::now();
    run("sync", std::iter::empty::<&str>())?;
    SETTLE_MS.fetch_add(
        started.elapsed().as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    Ok(())
}

/// Milliseconds spent in [`settle`] so far.
pub static SETTLE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A `kB` field of /proc/PID/status (`VmHWM`, `VmRSS`), in MiB.
fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

/// Peak resident set size (VmHWM) of a live process, in MiB.
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmHWM")
}

/// Samples a process's VmRSS every 100 ms on a thread of its own, until [`RssSampler::finish`].
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<f64>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(rss) = status_mib(pid, "VmRSS") {
                    samples.push(rss);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        RssSampler { stop, thread }
    }

    /// The samples, in order.
    pub fn finish(self) -> Vec<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The highest sample of each quarter of a run: `a / b / c / d MiB` — flat, or growing.
pub fn by_quarter(samples: &[f64]) -> String {
    if samples.len() < 4 {
        return "too few samples".into();
    }
    let n = samples.len();
    (0..4)
        .map(|q| {
            let part = &samples[q * n / 4..(q + 1) * n / 4];
            format!("{:.1}", part.iter().copied().fold(0.0, f64::max))
        })
        .collect::<Vec<_>>()
        .join(" / ")
        + " MiB"
}

/// Sums fields of /proc/PID/stat counted after the command name (which may hold spaces), in
/// seconds (the fields are in USER_HZ, 100 on Linux).
fn stat_secs(pid: &str, fields: std::ops::Range<usize>) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("bad /proc/PID/stat")?;
    let all: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = all
        .get(fields)
        .context("short /proc/PID/stat")?
        .iter()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    Ok(ticks / 100.0)
}

/// User + system CPU time of a process and of its waited-for children so far, in seconds (stat
/// fields 14–17): a worker's pg_dump counts.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    stat_secs(&pid.to_string(), 11..15)
}

/// CPU seconds used so far by this process, by its waited-for children (CLI runs, bash
/// pipelines and everything they waited for: stat fields 14–17) and by `pids`: take the
/// difference around a run to know what it cost in all.
pub fn cpu_total(pids: &[u32]) -> f64 {
    let own = cpu_secs(std::process::id()).unwrap_or(0.0);
    own + pids
        .iter()
        .map(|p| cpu_secs(*p).unwrap_or(0.0))
        .sum::<f64>()
}

/// A process started by the benchmark, killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> anyhow::Result<Proc> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.into(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak RSS so far, in MiB.
    pub fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        peak_rss_mib(self.pid())
    }

    /// CPU time so far, in seconds.
    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        cpu_secs(self.pid())
    }

    /// Its exit status once it has exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("waiting for {}", self.name))
    }

    /// Fails with the end of its log if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("{} exited ({status}):\n{}", self.name, self.log_tail(30));
        }
        Ok(())
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `ferry` CLI invocation.
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub secs: f64,
}

/// A Ferry installation: one controller and separate worker processes, in `dir`.
pub struct Ferry {
    pub url: String,
    pub dir: PathBuf,
    bins: Bins,
    env: Vec<(String, String)>,
    pub controller: Proc,
    pub workers: Vec<Proc>,
}

impl Ferry {
    /// Starts a controller without an embedded worker (every worker is a process of its own, so
    /// that its memory can be read), with `extra` flags and `env` for it and every worker.
    pub fn start(
        bins: &Bins,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Ferry> {
        std::fs::create_dir_all(dir)?;
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(&bins.controller);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.join("controller-data"))
            .arg("--no-embedded-worker")
            .args(extra)
            .envs(env.iter().copied())
            .current_dir(dir);
        let controller = Proc::spawn("ferry-controller", &mut cmd, dir.join("controller.log"))?;
        // The first start writes the admin token: every CLI call of the benchmark carries it.
        let token = dir.join("controller-data").join("admin.token");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "FERRY_TOKEN_FILE".into(),
            token.to_string_lossy().into_owned(),
        ));
        env.push((
            "FERRY_CONFIG_DIR".into(),
            dir.join("cli-config").to_string_lossy().into_owned(),
        ));
        let mut ferry = Ferry {
            url,
            dir: dir.to_path_buf(),
            bins: bins.clone(),
            env,
            controller,
            workers: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            ferry.controller.check_alive()?;
            if ferry.cli(&["cluster", "list"])?.code == 0 {
                return Ok(ferry);
            }
            if Instant::now() > deadline {
                bail!(
                    "the controller did not answer within 30 s:\n{}",
                    ferry.controller.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a `ferry-worker` process for `cluster` on `node` and waits until it is listed;
    /// returns its index in `workers`.
    pub fn add_worker(&mut self, cluster: &str, node: &str) -> anyhow::Result<usize> {
        let n = self.workers.len();
        let token = self.dir.join(format!("join-{cluster}.token"));
        if !token.exists() {
            std::fs::write(&token, self.join_token(cluster)?)?;
        }
        let mut cmd = Command::new(&self.bins.worker);
        cmd.arg("--controller")
            .arg(&self.url)
            .arg("--token-file")
            .arg(&token)
            // Benchmark data lives wherever its cache is.
            .arg("--allow-path")
            .arg("/")
            .arg("--cluster")
            .arg(cluster)
            .arg("--node")
            .arg(node)
            .arg("--work-dir")
            .arg(self.dir.join(format!("worker-{n}")))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dir);
        let before = self.worker_count(cluster, node)?;
        self.workers.push(Proc::spawn(
            &format!("ferry-worker {cluster}/{node}"),
            &mut cmd,
            self.dir.join(format!("worker-{n}.log")),
        )?);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.worker_count(cluster, node)? <= before {
            self.workers[n].check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "the worker did not register within 30 s:\n{}",
                    self.workers[n].log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(n)
    }

    /// A new join token for `cluster`'s workers (its secret).
    pub fn join_token(&self, cluster: &str) -> anyhow::Result<String> {
        let name = format!("join-{cluster}-{}", free_port());
        let run = self.cli_ok(&[
            "token",
            "create",
            &name,
            "--worker",
            "--cluster",
            cluster,
            "-o",
            "json",
        ])?;
        let v: Value = serde_json::from_str(&run.stdout)?;
        v["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in the answer")
    }

    fn worker_count(&self, cluster: &str, node: &str) -> anyhow::Result<usize> {
        let run = self.cli(&["worker", "list", "--cluster", cluster, "-o", "json"])?;
        if run.code != 0 {
            return Ok(0);
        }
        let v: Value = serde_json::from_str(&run.stdout)?;
        Ok(v["workers"]
            .as_array()
            .map(|ws| ws.iter().filter(|w| w["node"] == node).count())
            .unwrap_or(0))
    }

    /// Runs the CLI against this controller, timing it.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<CliRun> {
        let started = Instant::now();
        let out = Command::new(&self.bins.ferry)
            .arg("--controller")
            .arg(&self.url)
            .args(args)
            .env_remove("FERRY_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .context("running ferry")?;
        Ok(CliRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            secs: started.elapsed().as_secs_f64(),
        })
    }

    /// Runs the CLI and fails unless it exits 0.
    pub fn cli_ok(&self, args: &[&str]) -> anyhow::Result<CliRun> {
        let run = self.cli(args)?;
        if run.code != 0 {
            bail!(
                "ferry {} exited {}: {}{}\ncontroller log:\n{}",
                args.join(" "),
                run.code,
                run.stderr.trim(),
                run.stdout.trim(),
                self.controller.log_tail(20)
            );
        }
        Ok(run)
    }

    /// Writes an app manifest and applies it.
    pub fn apply(&self, name: &str, yaml: &str) -> anyhow::Result<()> {
        let path = self.dir.join(format!("app-{name}.yaml"));
        std::fs::write(&path, yaml)?;
        self.cli_ok(&["app", "apply", "-f", &path.to_string_lossy()])?;
        Ok(())
    }

    /// `ferry storage add NAME --local DIR --cluster C`, DIR inside the installation.
    pub fn add_local_storage(&self, name: &str, cluster: &str) -> anyhow::Result<PathBuf> {
        self.add_local_storage_with(name, cluster, &[])
    }

    /// `ferry storage add NAME --local DIR --cluster C EXTRA…` (e.g. `--encrypt-to R`).
    pub fn add_local_storage_with(
        &self,
        name: &str,
        cluster: &str,
        extra: &[&str],
    ) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join(format!("storage-{name}"));
        let path = dir.to_string_lossy();
        let mut args = vec![
            "storage",
            "add",
            name,
            "--local",
            &path,
            "--cluster",
            cluster,
        ];
        args.extend_from_slice(extra);
        self.cli_ok(&args)?;
        Ok(dir)
    }

    /// `ferry storage add NAME --s3` for `bucket` on the benchmark's S3 server (path-style, the
    /// keys from the environment variables [`Ferry::start`] was given).
    pub fn add_s3_storage(&self, name: &str, endpoint: &str, bucket: &str) -> anyhow::Result<()> {
        self.cli_ok(&[
            "storage",
            "add",
            name,
            "--s3",
            "--endpoint",
            endpoint,
            "--bucket",
            bucket,
            "--path-style",
            "--access-key-env",
            S3_ACCESS_KEY_ENV,
            "--secret-key-env",
            S3_SECRET_KEY_ENV,
        ])?;
        Ok(())
    }

    /// `ferry backup create APP --wait -o json [extra]`, timed as a whole; fails unless the
    /// backup completed. Returns (seconds, backup id, the job as JSON).
    pub fn backup(&self, app: &str, extra: &[&str]) -> anyhow::Result<(f64, String, Value)> {
        let mut args = vec!["backup", "create", app, "--wait", "-o", "json"];
        args.extend_from_slice(extra);
        let run = self.cli_ok(&args)?;
        let job: Value = serde_json::from_str(&run.stdout).context("backup JSON")?;
        if job["state"] != "Completed" {
            bail!("backup of {app} did not complete: {job:#}");
        }
        let id = job["id"].as_str().context("backup id")?.to_owned();
        Ok((run.secs, id, job))
    }

    /// `ferry restore create ID --to-app APP --rewrite … --wait -o json`, timed as a whole; fails
    /// unless the restore completed.
    pub fn restore(&self, id: &str, to_app: &str, rewrites: &[String]) -> anyhow::Result<f64> {
        let mut args = vec!["restore", "create", id, "--to-app", to_app];
        for r in rewrites {
            args.push("--rewrite");
            args.push(r);
        }
        args.extend_from_slice(&["--wait", "-o", "json"]);
        let run = self.cli_ok(&args)?;
        let job: Value = serde_json::from_str(&run.stdout).context("restore JSON")?;
        if job["state"] != "Completed" {
            bail!("restore of {id} did not complete: {job:#}");
        }
        Ok(run.secs)
    }

    /// `ferry backup delete ID` (archives and catalog entry), so that rounds do not pile up.
    pub fn delete_backup(&self, id: &str) -> anyhow::Result<()> {
        self.cli_ok(&["backup", "delete", id])?;
        Ok(())
    }
}

/// A real etcd on free ports with its data in `dir`.
pub struct Etcd {
    pub url: String,
    pub proc_: Proc,
}

impl Etcd {
    pub fn start(dir: &Path) -> anyhow::Result<Etcd> {
        require_tools(&["etcd", "etcdctl"])?;
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let mut cmd = Command::new("etcd");
        cmd.arg("--data-dir")
            .arg(dir.join("etcd-data"))
            .args(["--name", "bench"])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("bench={peer}")]);
        let mut proc_ = Proc::spawn("etcd", &mut cmd, dir.join("etcd.log"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            proc_.check_alive()?;
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &url, "--command-timeout=2s", "get", "/probe"])
                .stdin(Stdio::null())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return Ok(Etcd { url, proc_ });
            }
            if Instant::now() > deadline {
                bail!("etcd did not answer within 30 s:\n{}", proc_.log_tail(20));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The S3 test server `ferry-s3s-fs` (built by scripts/setup) over a directory.
pub struct S3Server {
    pub endpoint: String,
    /// Killed when the server is dropped.
    proc_: Proc,
}

/// Credentials of the benchmark's S3 server, and the variables Ferry reads them from.
pub const S3_ACCESS_KEY: &str = "ferry-bench-access";
pub const S3_SECRET_KEY: &str = "ferry-bench-secret-7c41";
pub const S3_ACCESS_KEY_ENV: &str = "FERRY_SECRET_BENCH_S3_ACCESS_KEY";
pub const S3_SECRET_KEY_ENV: &str = "FERRY_SECRET_BENCH_S3_SECRET_KEY";

impl S3Server {
    pub fn pid(&self) -> u32 {
        self.proc_.pid()
    }

    pub fn start(dir: &Path) -> anyhow::Result<S3Server> {
        // The same lookup (and version check) as the tests: `scripts/setup` builds it.
        let bin = ferry_test_support::s3::server_binary();
        let data = dir.join("s3-data");
        std::fs::create_dir_all(&data)?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(&data);
        let mut proc_ = Proc::spawn("ferry-s3s-fs", &mut cmd, dir.join("s3.log"))?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            proc_.check_alive()?;
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("ferry-s3s-fs did not answer within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            proc_,
        })
    }
}

/// A fresh age identity from Debian's `age-keygen`, in `dir`: (identity file, recipient).
pub fn age_key(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let file = dir.join("bench-age.key");
    if !file.exists() {
        run("age-keygen", [OsStr::new("-o"), file.as_os_str()])?;
    }
    let recipient = run("age-keygen", [OsStr::new("-y"), file.as_os_str()])?;
    Ok((file, recipient.trim().to_owned()))
}
