//! A PostgreSQL database of the test's own on the local server.

use std::process::Command;

use crate::{sh, unique};

/// A PostgreSQL database of the test's own on the local server (unique name), dropped when the
/// test ends, also when it fails.
pub struct PgDb {
    pub name: String,
}

impl PgDb {
    /// Creates `PREFIX_UNIQUE`.
    pub fn create(prefix: &str) -> PgDb {
        let name = format!("{prefix}_{}", unique());
        sh("createdb", &["-h", "127.0.0.1", &name]);
        PgDb { name }
    }

    /// Runs SQL in it (psql, stopping at the first error) and returns the unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        sh(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-d",
                &self.name,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
        )
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("dropdb")
            .args(["-h", "127.0.0.1", "--if-exists", "--force", &self.name])
            .status();
    }
}

/// A second PostgreSQL server of the test's own (`initdb` into a temporary directory, started on
/// a free port, trust authentication, the current OS user as its superuser), stopped and removed
/// when the test ends: a fresh cluster that lacks the main server's roles, like the target of a
/// migration. initdb refuses to run as root, so as root it runs as the `postgres` user.
pub struct PgServer {
    pub port: u16,
    // Declared before `dir`: the server stops before its directory goes.
    proc: crate::Proc,
    dir: tempfile::TempDir,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: sessions end, the server exits cleanly.
        self.proc.signal(libc::SIGINT);
        self.proc.stop();
    }
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = pg_bin_dir();
        let dir = tempfile::tempdir().expect("a directory for the second PostgreSQL server");
        let data = dir.path().join("data");
        let me = sh("id", &["-un"]).trim().to_owned();
        let as_root = sh("id", &["-u"]).trim() == "0";
        // setpriv execs the program itself, so the process this test stops is the server.
        let run_as = |program: &std::path::Path| {
            let mut cmd = if as_root {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(program);
                c
            } else {
                Command::new(program)
            };
            cmd.env_remove("PGDATA");
            cmd
        };
        if as_root {
            sh("chown", &["postgres", &dir.path().to_string_lossy()]);
        }
        let status = run_as(&bin.join("initdb"))
            .args([
                "-D",
                &data.to_string_lossy(),
                "-U",
                &me,
                "--auth=trust",
                "-E",
                "UTF8",
            ])
            .args(["--locale=C.UTF-8", "--no-sync"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running initdb");
        assert!(
            status.success(),
            "initdb of the second PostgreSQL server failed"
        );
        let port = crate::free_port();
        let mut cmd = run_as(&bin.join("postgres"));
        cmd.args(["-D", &data.to_string_lossy(), "-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            // Physical replication for log streams and base backups (PostgreSQL 15's defaults,
            // said explicitly).
            .args(["-c", "wal_level=replica", "-c", "max_wal_senders=10"])
            .args(["-c", "max_replication_slots=10"])
            // Commit times, so that a test can tell exactly which rows a moment holds.
            .args(["-c", "track_commit_timestamp=on"])
            .args(["-k", &dir.path().to_string_lossy()]);
        let log = std::env::temp_dir().join(format!("ferry-pg-{port}.log"));
        let proc = crate::Proc::spawn("postgres (second server)", &mut cmd, log);
        crate::wait_for(
            std::time::Duration::from_secs(30),
            "the second PostgreSQL server",
            || {
                Command::new(bin.join("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            },
        );
        PgServer { port, proc, dir }
    }

    /// Runs SQL in `db` on this server and returns the unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        sh(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-d",
                db,
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
        )
    }

    /// The data directory's parent (for logs and sockets).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// Where the server binaries (initdb, postgres) are: `pg_config --bindir`, else Debian's newest
/// /usr/lib/postgresql/N/bin.
fn pg_bin_dir() -> std::path::PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries (/usr/lib/postgresql/N/bin) are needed")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}
