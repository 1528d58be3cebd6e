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
