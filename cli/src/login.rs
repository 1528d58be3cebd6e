//! Where a command's controller, token and CA come from, in this order: flags and their
//! environment variables (`--controller`, `--token`, `--token-file`, `--ca-cert`), then the saved
//! context (`ferry login`, kubectl-style, in `config.toml` of the config directory), then the
//! defaults of a one-machine install: `http://127.0.0.1:7420` and, for a controller on this
//! machine, the admin token its first start wrote to `ferry-data/admin.token` (or
//! `$FERRY_DATA_DIR/admin.token`) — so the quick start needs no step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_proto::transport::ClientTls;
use serde::{Deserialize, Serialize};

use crate::args::Cli;
use crate::exit::{CliError, CliResult};

/// The controller a one-machine install listens on.
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:7420";

/// One saved login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub controller: String,
    pub token_file: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// `config.toml`: the saved contexts and the current one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// The config directory: `$FERRY_CONFIG_DIR`, else `$XDG_CONFIG_HOME/ferry`, else
/// `~/.config/ferry`.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FERRY_CONFIG_DIR") {
        return Some(d.into());
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(d).join("ferry"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/ferry"))
}

impl Config {
    /// Reads `config.toml` (empty when there is none).
    pub fn load(dir: &Path) -> CliResult<Config> {
        let path = dir.join("config.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| CliError::input(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(CliError::input(format!("reading {}: {e}", path.display()))),
        }
    }

    /// Writes `config.toml`, readable by its owner only.
    pub fn save(&self, dir: &Path) -> CliResult {
        let text = toml::to_string_pretty(self)
            .map_err(|e| CliError::failed(format!("writing the config: {e}")))?;
        write_private(&dir.join("config.toml"), text.as_bytes())
    }
}

/// Writes a file only its owner can read, replacing it whole.
pub fn write_private(path: &Path, bytes: &[u8]) -> CliResult {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| CliError::failed(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Reads a token file (its first line, trimmed).
pub fn read_token(path: &Path) -> CliResult<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::input(format!("reading the token file {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.is_empty() {
        return Err(CliError::input(format!(
            "the token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

/// What a command connects with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub token: Option<String>,
    pub tls: ClientTls,
    /// Empty: the token's team.
    pub team: String,
}

fn is_local(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or_default();
    ["127.0.0.1:", "localhost:", "[::1]:"]
        .iter()
        .any(|h| rest.starts_with(h))
}

/// The admin token of a controller on this machine started in the working directory (or with
/// `FERRY_DATA_DIR`), if readable.
fn local_admin_token() -> Option<String> {
    let dir = std::env::var_os("FERRY_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(ferry_proto::DEFAULT_DATA_DIR));
    read_token(&dir.join(ferry_proto::ADMIN_TOKEN_FILE)).ok()
}

/// Resolves the target of a command from its flags, the saved context and the defaults.
pub fn resolve(cli: &Cli) -> CliResult<Target> {
    let config = match config_dir() {
        Some(dir) => Config::load(&dir)?,
        None => Config::default(),
    };
    let context = match &cli.context {
        Some(name) => Some(config.contexts.get(name).cloned().ok_or_else(|| {
            CliError::input(format!(
                "no saved context {name:?} (see `ferry context list`)"
            ))
        })?),
        None => config
            .current
            .as_ref()
            .and_then(|c| config.contexts.get(c))
            .cloned(),
    };
    let url = cli
        .controller
        .clone()
        .or_else(|| context.as_ref().map(|c| c.controller.clone()))
        .unwrap_or_else(|| DEFAULT_CONTROLLER.to_owned());
    // A context's token and CA go only to its own controller.
    let context = context.filter(|c| c.controller == url);
    // `audit list --token NAME` names the token to filter by (clap gives the global --token the
    // same value): the caller's own token then comes from FERRY_TOKEN or the places below.
    let flag_token = match &cli.command {
        crate::args::Command::Audit(crate::args::AuditCmd::List { token: Some(_), .. }) => {
            std::env::var("FERRY_TOKEN").ok()
        }
        _ => cli.token.clone(),
    };
    let token = match (&flag_token, &cli.token_file, &context) {
        (Some(t), _, _) => Some(t.trim().to_owned()),
        (None, Some(file), _) => Some(read_token(file)?),
        (None, None, Some(c)) => Some(read_token(&c.token_file)?),
        (None, None, None) if is_local(&url) => local_admin_token(),
        _ => None,
    };
    let tls = ClientTls {
        ca_cert: cli
            .ca_cert
            .clone()
            .or_else(|| context.as_ref().and_then(|c| c.ca_cert.clone())),
        client_identity: cli.client_cert.clone().zip(cli.client_key.clone()),
        domain: None,
    };
    let team = cli
        .team
        .clone()
        .or_else(|| context.and_then(|c| c.team))
        .unwrap_or_default();
    Ok(Target {
        url,
        token,
        tls,
        team,
    })
}

/// A context name from a URL's host.
pub fn name_from_url(url: &str) -> String {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split([':', '/'])
        .next()
        .unwrap_or_default();
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(['-', '.']).to_owned();
    if name.is_empty() {
        "default".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_come_from_hosts() {
        assert_eq!(
            name_from_url("https://ferry.dc-a.internal:7420"),
            "ferry.dc-a.internal"
        );
        assert_eq!(name_from_url("http://127.0.0.1:7420"), "127.0.0.1");
        assert_eq!(name_from_url("http://[::1]:1"), "default");
    }

    #[test]
    fn loopback_urls_are_local() {
        assert!(is_local("http://127.0.0.1:7420"));
        assert!(is_local("https://localhost:7420"));
        assert!(!is_local("https://ferry.internal:7420"));
    }

    #[test]
    fn config_round_trips_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.contexts.insert(
            "prod".into(),
            Context {
                controller: "https://p:7420".into(),
                token_file: dir.path().join("tokens/prod.token"),
                ca_cert: Some("/etc/ferry/ca.pem".into()),
                team: None,
            },
        );
        config.current = Some("prod".into());
        config.save(dir.path()).unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), config);
        let mode = std::fs::metadata(dir.path().join("config.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            Config::load(&dir.path().join("none")).unwrap(),
            Config::default()
        );
    }
}
