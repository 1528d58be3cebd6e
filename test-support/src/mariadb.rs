//! A MariaDB server of the test's own, with its binary log on (row format), for point-in-time
//! restores: `mariadb-install-db` into a temporary directory, `mariadbd --no-defaults` on a free
//! port (root with an empty password, TCP on 127.0.0.1), killed and removed when the test ends.
//! As root, the server runs as the `mysql` user.

use std::process::Command;
use std::time::Duration;

use crate::{Proc, free_port, sh, wait_for};

pub struct MariaServer {
    pub port: u16,
    // Declared before `dir`: the server stops before its directory goes.
    proc_: Proc,
    dir: tempfile::TempDir,
}

impl MariaServer {
    /// Starts one and waits until it answers.
    pub fn start() -> MariaServer {
        let dir = tempfile::Builder::new()
            .prefix("ferry-mariadb-")
            .tempdir()
            .expect("a directory for the MariaDB server");
        let data = dir.path().join("data");
        let as_root = sh("id", &["-u"]).trim() == "0";
        if as_root {
            sh("chown", &["mysql", &dir.path().to_string_lossy()]);
        }
        let user: &[&str] = if as_root { &["--user=mysql"] } else { &[] };
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .args(user)
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .expect("running mariadb-install-db (is MariaDB installed?)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        // `mariadbd` lives in /usr/sbin, which a test's PATH may lack.
        let program = which("mariadbd").unwrap_or_else(|| "/usr/sbin/mariadbd".into());
        let mut cmd = Command::new(program);
        cmd.arg("--no-defaults")
            .args(user)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.path().join("my.sock").display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("my.pid").display()
            ))
            .arg(format!("--log-bin={}", data.join("binlog").display()))
            .args(["--server-id=1", "--binlog-format=ROW"])
            .args(["--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0"]);
        let log = std::env::temp_dir().join(format!("ferry-mariadb-{port}.log"));
        let proc_ = Proc::spawn("mariadbd (test server)", &mut cmd, log);
        let server = MariaServer { port, proc_, dir };
        wait_for(Duration::from_secs(60), "the test MariaDB server", || {
            server.try_sql("", "SELECT 1").is_some()
        });
        server
    }

    fn try_sql(&self, db: &str, sql: &str) -> Option<String> {
        let out = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", &self.port.to_string(), "-uroot"])
            .args(["--default-character-set=utf8mb4", "-N", "-B"])
            .args((!db.is_empty()).then_some(db))
            .args(["-e", sql])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs SQL (in `db`, unless empty) and returns the tab-separated output; panics on error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let mut args = vec![
            "-h".to_owned(),
            "127.0.0.1".into(),
            "-P".into(),
            self.port.to_string(),
            "-uroot".into(),
            "--default-character-set=utf8mb4".into(),
            "-N".into(),
            "-B".into(),
        ];
        if !db.is_empty() {
            args.push(db.into());
        }
        args.extend(["-e".into(), sql.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sh("mariadb", &args)
    }

    /// The server's directory (data, socket, pid file).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The server process.
    pub fn process(&self) -> &Proc {
        &self.proc_
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}
