//! What tests (and the benchmark) start and share: free ports, processes killed on drop, polling,
//! and launchers of the real services Ferry's tests talk to — etcd (TLS with client
//! certificates, or plain), the S3 test server, PostgreSQL databases, Redis servers — plus a
//! test PKI, and a headless Chromium for the web console. One copy of each, for every crate's tests.

#[cfg(feature = "browser")]
pub mod browser;
pub mod etcd;
pub mod mariadb;
pub mod pg;
pub mod pki;
pub mod redis;
pub mod s3;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use etcd::Etcd;
pub use mariadb::MariaServer;
pub use pg::PgDb;
pub use redis::Redis;
pub use s3::S3Server;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

/// A process started by a test, killed on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with its output in `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("creating a log file");
        let err = out.try_clone().expect("cloning a log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends a signal; nothing once the process was reaped (its pid would be 0, and kill(0, …)
    /// signals the test's own process group).
    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        if pid <= 0 {
            return;
        }
        // SAFETY: kill(2) on a pid this test started; no memory is involved.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} log (tail) -----\n{}\n",
                self.name,
                self.log_tail(60)
            );
        }
        self.kill();
    }
}

/// Polls `check` until it holds, or panics saying what it waited for.
pub fn wait_for(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command and returns its stdout, panicking with its stderr when it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} could not start ({e}): is it installed?"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A unique suffix for database names.
pub fn unique() -> String {
    format!("{}_{}", std::process::id(), free_port())
}

/// A system user of the test's own, removed when the test ends: for owners by name, whose uid a
/// test can change between a backup and a restore (as when the target host numbers users
/// otherwise). Needs root.
pub struct TempUser {
    pub name: String,
}

impl TempUser {
    /// `fyPID_TAG` (short: user names are limited to 32 bytes).
    pub fn create(tag: &str) -> TempUser {
        let name = format!("fy{}_{tag}", std::process::id() % 100_000);
        let _ = Command::new("userdel").arg(&name).output();
        sh(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ],
        );
        TempUser { name }
    }

    pub fn uid(&self) -> u32 {
        sh("id", &["-u", &self.name])
            .trim()
            .parse()
            .expect("a numeric uid")
    }

    /// Gives the user another uid (files keep the old number).
    pub fn renumber(&self, uid: u32) {
        sh("usermod", &["-u", &uid.to_string(), &self.name]);
        assert_eq!(self.uid(), uid);
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}
