//! What this worker agrees to do, whatever a controller asks (DESIGN §6 "Workers"): volume paths
//! only beneath `--allow-path`, programs (exec shards, hooks) only from `--allow-exec`, passwords
//! only from `FERRY_SECRET_*` variables or files beneath `--secrets-dir`. A task that asks for
//! more is refused before anything runs, with a message naming the flag to change.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ferry_model::app::DatabaseSpec;
use ferry_model::task::{Resource, ShardTask};

/// How long a hook may run unless configured.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an exec shard's command may run unless configured.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The worker's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Directories volumes may lie beneath (`/` allows every path).
    pub allow_paths: Vec<PathBuf>,
    /// Programs exec shards and hooks may run, as written in the app manifest (`argv[0]`).
    pub allow_exec: Vec<String>,
    /// The directory `password_file` references must lie beneath.
    pub secrets_dir: Option<PathBuf>,
    pub hook_timeout: Duration,
    pub exec_timeout: Duration,
}

impl Default for Policy {
    /// Nothing allowed: no volume, no program, passwords from `FERRY_SECRET_*` only.
    fn default() -> Self {
        Policy {
            allow_paths: Vec::new(),
            allow_exec: Vec::new(),
            secrets_dir: None,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            exec_timeout: DEFAULT_EXEC_TIMEOUT,
        }
    }
}

/// The path with every symlink of its existing part resolved: the longest existing ancestor
/// canonicalized, the rest appended. `None` for relative paths or paths with `..`.
fn resolve(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Some(out);
        }
        let name = existing.file_name()?.to_owned();
        rest.push(name);
        if !existing.pop() {
            return None;
        }
    }
}

fn beneath(path: &Path, dirs: &[PathBuf]) -> bool {
    let Some(real) = resolve(path) else {
        return false;
    };
    dirs.iter()
        .filter_map(|d| resolve(d))
        .any(|d| real.starts_with(&d))
}

fn list(items: &[impl std::fmt::Display]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Policy {
    /// Refuses a task this worker does not allow, naming the flag that would allow it.
    pub fn check(&self, task: &ShardTask) -> Result<(), String> {
        match &task.resource {
            Resource::Volume { path } => self.check_path(path)?,
            Resource::Exec { backup, restore } => {
                let argv = match task.op {
                    ferry_model::task::ShardOp::Restore => restore,
                    _ => backup,
                };
                // Verifying an exec shard reads only the archive.
                if !matches!(task.op, ferry_model::task::ShardOp::Verify { .. }) {
                    self.check_program("exec command", argv)?;
                }
            }
            Resource::Database { spec, .. }
            | Resource::PgBase { spec }
            | Resource::LogStream { spec } => self.check_secret(spec)?,
            Resource::Hook { hook, argv } => {
                self.check_program(&format!("{} hook", hook.as_str()), argv)?
            }
            Resource::Config { .. } => {}
        }
        Ok(())
    }

    /// A volume path must lie beneath an allowed directory (symlinks resolved).
    pub fn check_path(&self, path: &str) -> Result<(), String> {
        let dirs: Vec<String> = self
            .allow_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        if beneath(Path::new(path), &self.allow_paths) {
            return Ok(());
        }
        Err(format!(
            "this worker does not allow the volume path {path:?} (allowed: {}); start it with --allow-path DIR for a directory that holds it",
            list(&dirs)
        ))
    }

    fn check_program(&self, what: &str, argv: &[String]) -> Result<(), String> {
        let Some(program) = argv.first() else {
            return Ok(());
        };
        if self.allow_exec.iter().any(|p| p == program) {
            return Ok(());
        }
        Err(format!(
            "this worker does not allow the {what} {program:?} (allowed: {}); start it with --allow-exec {program} to allow it",
            list(&self.allow_exec)
        ))
    }

    /// Password references: `FERRY_SECRET_*` variables, files beneath `--secrets-dir`.
    pub fn check_secret(&self, spec: &DatabaseSpec) -> Result<(), String> {
        if let Some(var) = &spec.password_env {
            ferry_model::access::check_secret_env("password_env", var).map_err(|_| {
                format!(
                    "this worker does not read password_env {var:?}: passwords come only from variables named {}* (or files beneath --secrets-dir)",
                    ferry_model::access::SECRET_ENV_PREFIX
                )
            })?;
        }
        if let Some(file) = &spec.password_file {
            let allowed = self.secrets_dir.as_ref().is_some_and(|dir| {
                // The file must exist for its real path to be known; a missing one is refused
                // like one outside (reading it would fail anyway).
                match (std::fs::canonicalize(file), std::fs::canonicalize(dir)) {
                    (Ok(f), Ok(d)) => f.starts_with(d),
                    _ => false,
                }
            });
            if !allowed {
                let dir = self
                    .secrets_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| "none".into());
                return Err(format!(
                    "this worker does not read the password_file {file:?}: password files must lie beneath --secrets-dir (now: {dir})"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &Path) -> Policy {
        Policy {
            allow_paths: vec![dir.join("allowed")],
            allow_exec: vec!["sh".into(), "/usr/bin/true".into()],
            secrets_dir: Some(dir.join("secrets")),
            ..Default::default()
        }
    }

    #[test]
    fn volume_paths_must_lie_beneath_an_allowed_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("allowed/data")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("elsewhere"),
            dir.path().join("allowed/link"),
        )
        .unwrap();
        let p = policy(dir.path());
        let ok = |s: &str| p.check_path(&dir.path().join(s).to_string_lossy());
        ok("allowed/data").unwrap();
        ok("allowed/not-yet/created").unwrap();
        ok("allowed").unwrap();
        let e = ok("elsewhere").unwrap_err();
        assert!(e.contains("--allow-path"), "{e}");
        // A symlink inside pointing outside does not open the outside.
        assert!(ok("allowed/link/x").is_err());
        // Neither does a sibling sharing a name prefix, nor `..`.
        assert!(ok("allowed-not").is_err());
        assert!(ok("allowed/../elsewhere").is_err());
        assert!(p.check_path("relative/path").is_err());
        assert!(Policy::default().check_path("/tmp").is_err());
        let all = Policy {
            allow_paths: vec!["/".into()],
            ..Default::default()
        };
        all.check_path("/etc").unwrap();
    }

    #[test]
    fn programs_must_be_allowed_by_name() {
        let p = policy(Path::new("/nonexistent"));
        p.check_program("exec command", &["sh".into(), "-c".into(), "x".into()])
            .unwrap();
        let e = p
            .check_program("pre_backup hook", &["/bin/sh".into()])
            .unwrap_err();
        assert!(
            e.contains("--allow-exec /bin/sh") && e.contains("pre_backup hook"),
            "{e}"
        );
        let e = p
            .check_program("pre_backup hook", &["systemctl".into(), "stop".into()])
            .unwrap_err();
        assert!(e.contains("systemctl"), "{e}");
    }

    #[test]
    fn passwords_come_from_ferry_secret_variables_or_the_secrets_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/pg"), "pw").unwrap();
        std::fs::write(dir.path().join("outside"), "pw").unwrap();
        let p = policy(dir.path());
        let spec = |env: Option<&str>, file: Option<&Path>| DatabaseSpec {
            name: "main".into(),
            engine: ferry_model::app::Engine::Postgres,
            host: None,
            port: None,
            user: None,
            password_env: env.map(str::to_owned),
            password_file: file.map(|f| f.to_string_lossy().into_owned()),
            databases: vec![],
            db: None,
            roles: false,
            role_passwords: false,
            pitr: false,
        };
        p.check_secret(&spec(Some("FERRY_SECRET_PG"), None))
            .unwrap();
        let e = p.check_secret(&spec(Some("HOME"), None)).unwrap_err();
        assert!(e.contains("FERRY_SECRET_"), "{e}");
        p.check_secret(&spec(None, Some(&dir.path().join("secrets/pg"))))
            .unwrap();
        let e = p
            .check_secret(&spec(None, Some(&dir.path().join("outside"))))
            .unwrap_err();
        assert!(e.contains("--secrets-dir"), "{e}");
        let e = p
            .check_secret(&spec(None, Some(&dir.path().join("secrets/../outside"))))
            .unwrap_err();
        assert!(e.contains("--secrets-dir"), "{e}");
    }
}
