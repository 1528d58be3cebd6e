//! The dump tools this worker has, reported at registration so that the controller hands a
//! database shard only to a worker that can run it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every external tool an engine may need.
pub const KNOWN_TOOLS: &[&str] = &[
    "pg_dump",
    "pg_restore",
    "psql",
    "mariadb-dump",
    "mariadb",
    "mysqldump",
    "mysql",
    "redis-cli",
    "pg_basebackup",
    "pg_receivewal",
    "mariadb-binlog",
    "mysqlbinlog",
];

/// Where Debian keeps each PostgreSQL version's client tools (`15/bin/psql`, …).
const PG_LIB: &str = "/usr/lib/postgresql";

/// The program to run for `tool`. On Debian, PostgreSQL's tools on PATH are links to
/// `pg_wrapper`, a Perl script that picks a version at every call — 0.2 s per call on a loaded
/// machine, and a restore makes several. When exactly one version has the tool, the wrapper can
/// only pick that one, so it is run directly; otherwise (several versions, another system) the
/// name on PATH is, and the wrapper keeps choosing by cluster as before.
pub fn program(tool: &str) -> std::ffi::OsString {
    let direct = on_path(tool)
        .and_then(|found| std::fs::canonicalize(found).ok())
        .filter(|target| target.file_name().is_some_and(|n| n == "pg_wrapper"))
        .and_then(|_| only_one(installed_versions(Path::new(PG_LIB), tool)));
    match direct {
        Some(path) => path.into_os_string(),
        None => tool.into(),
    }
}

/// The first `tool` in `$PATH`.
fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// `LIB/VERSION/bin/TOOL` for every version that has the tool.
fn installed_versions(lib: &Path, tool: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(lib) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path().join("bin").join(tool))
        .filter(|p| p.is_file())
        .collect()
}

/// The one candidate, if there is exactly one.
fn only_one(mut candidates: Vec<PathBuf>) -> Option<PathBuf> {
    if candidates.len() == 1 {
        candidates.pop()
    } else {
        None
    }
}

/// Runs `TOOL --version` for every known tool, all at once; the first line of what it prints is
/// its version. Tools that are missing or fail are left out. The timeout is generous: a tool
/// wrongly reported missing on a loaded machine would keep its shards from this worker.
pub async fn detect() -> BTreeMap<String, String> {
    let probes = KNOWN_TOOLS.iter().map(|tool| async move {
        let run = tokio::process::Command::new(program(tool))
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(30), run).await {
            Ok(Ok(out)) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                text.lines()
                    .next()
                    .map(|line| ((*tool).to_owned(), line.trim().to_owned()))
            }
            _ => None,
        }
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_installed_version_is_run_directly() {
        let lib = tempfile::tempdir().unwrap();
        assert_eq!(
            installed_versions(&lib.path().join("none"), "psql"),
            Vec::<PathBuf>::new()
        );
        let bin15 = lib.path().join("15/bin");
        std::fs::create_dir_all(&bin15).unwrap();
        std::fs::write(bin15.join("psql"), "").unwrap();
        // A version without the tool does not count.
        std::fs::create_dir_all(lib.path().join("16/bin")).unwrap();
        let found = installed_versions(lib.path(), "psql");
        assert_eq!(only_one(found), Some(bin15.join("psql")));
        // Two versions with the tool: the wrapper must choose.
        std::fs::write(lib.path().join("16/bin/psql"), "").unwrap();
        assert_eq!(only_one(installed_versions(lib.path(), "psql")), None);
        assert_eq!(only_one(Vec::new()), None);
    }

    #[test]
    fn tools_that_are_not_wrapped_keep_their_name() {
        assert_eq!(program("ferry-no-such-tool"), "ferry-no-such-tool");
        // redis-cli is a real binary on PATH, not pg_wrapper.
        assert_eq!(program("redis-cli"), "redis-cli");
    }
}
