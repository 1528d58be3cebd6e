//! A MariaDB server of the test's own, with its binlog on.

use std::process::Command;

use crate::sh;

/// A MariaDB server of the test's own (`mariadb-install-db` into a temporary directory,
/// `mariadbd --no-defaults` on a free port with `--log-bin --server-id=1 --binlog-format=ROW`,
/// root without a password), killed and removed when the test ends. `--no-defaults` keeps the
/// system server's configuration out.
pub struct MariaServer {
    pub port: u16,
    // Declared before `dir`: the server stops before its directory goes.
    proc: crate::Proc,
    dir: tempfile::TempDir,
}

impl MariaServer {
    pub fn start() -> MariaServer {
        let dir = tempfile::tempdir().expect("a directory for the MariaDB server");
        let data = dir.path().join("data");
        let as_root = sh("id", &["-u"]).trim() == "0";
        let user = if as_root {
            // The server runs as mysql: its directory (socket, pid, binlog) must be its own.
            sh("chown", &["mysql", &dir.path().to_string_lossy()]);
            "mysql".to_owned()
        } else {
            sh("id", &["-un"]).trim().to_owned()
        };
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", &format!("--user={user}")])
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .expect("mariadb-install-db could not start: is mariadb-server installed?");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::free_port();
        let dirs = dir.path().to_string_lossy().into_owned();
        let mut cmd = Command::new("mariadbd");
        cmd.args(["--no-defaults", &format!("--user={user}")])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={dirs}/mariadb.sock"))
            .arg(format!("--pid-file={dirs}/mariadb.pid"))
            .arg(format!("--log-bin={}/binlog", data.display()))
            .args(["--server-id=1", "--binlog-format=ROW"])
            .args(["--innodb-buffer-pool-size=32M", "--skip-name-resolve"]);
        let log = std::env::temp_dir().join(format!("ferry-mariadb-{port}.log"));
        let proc = crate::Proc::spawn("mariadbd (test server)", &mut cmd, log);
        let server = MariaServer { port, proc, dir };
        crate::wait_for(
            std::time::Duration::from_secs(60),
            "the MariaDB test server",
            || {
                Command::new("mariadb")
                    .args(server.args())
                    .args(["-e", "SELECT 1"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            },
        );
        server
    }

    /// Connection flags for the `mariadb` client.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--no-defaults".into(),
            "-h127.0.0.1".into(),
            format!("-P{}", self.port),
            "-uroot".into(),
            "--protocol=TCP".into(),
        ]
    }

    /// Runs SQL and returns the tab-separated output, without column names.
    pub fn sql(&self, sql: &str) -> String {
        let args = self.args();
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["--batch", "--skip-column-names", "-e", sql]);
        sh("mariadb", &all)
    }

    /// The server's directory (its data under `data/`).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for MariaServer {
    fn drop(&mut self) {
        self.proc.stop();
    }
}
