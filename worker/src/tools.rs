//! The dump tools this worker has, reported at registration so that the controller hands a
//! database shard only to a worker that can run it.

use std::collections::BTreeMap;
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
];

/// Runs `TOOL --version` for every known tool, all at once; the first line of what it prints is
/// its version. Tools that are missing or fail are left out. The timeout is generous: a tool
/// wrongly reported missing on a loaded machine would keep its shards from this worker.
pub async fn detect() -> BTreeMap<String, String> {
    let probes = KNOWN_TOOLS.iter().map(|tool| async move {
        let run = tokio::process::Command::new(tool)
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
