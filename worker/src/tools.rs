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

/// Runs `TOOL --version` for every known tool; the first line of what it prints is its version.
/// Tools that are missing or fail are left out.
pub async fn detect() -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for tool in KNOWN_TOOLS {
        let run = tokio::process::Command::new(tool)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        if let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(5), run).await {
            let text = String::from_utf8_lossy(&out.stdout);
            if let (true, Some(line)) = (out.status.success(), text.lines().next()) {
                found.insert((*tool).to_owned(), line.trim().to_owned());
            }
        }
    }
    found
}
