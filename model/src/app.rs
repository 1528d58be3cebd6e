//! The application manifest (DESIGN.md §4): what an app is made of and where its data lives.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::names::check_name;

/// The cluster an app belongs to when its manifest does not say.
pub const DEFAULT_CLUSTER: &str = "local";

/// One application: its components and everything they keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub name: String,
    #[serde(default = "default_cluster")]
    pub cluster: String,
    #[serde(default)]
    pub components: Vec<ComponentSpec>,
}

fn default_cluster() -> String {
    DEFAULT_CLUSTER.to_owned()
}

/// A component of an app: a service with its config, volumes, databases and exec hooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    pub name: String,
    /// Free-form configuration (env, ingress host, …), backed up as its own shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecSpec>,
}

/// Commands run around a component's backup, e.g. to stop it for a cold volume copy:
/// `pre_backup` once before any shard of the component starts, `post_backup` once after all of
/// them ended (also when they failed or the backup was cancelled), on `node` (default: the node
/// of the component's first node-bound volume, else any worker of the cluster).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_backup: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_backup: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Hooks {
    /// True when no hook is declared.
    pub fn is_empty(&self) -> bool {
        self.pre_backup.is_none() && self.post_backup.is_none()
    }
}

/// A directory of persistent data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    pub name: String,
    /// Absolute path of the directory on the node.
    pub path: String,
    /// The node that holds the directory; any worker of the cluster when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Database engines Ferry dumps natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Mariadb,
    Mysql,
    Redis,
}

impl Engine {
    /// The name used in shard ids, manifests and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mariadb => "mariadb",
            Engine::Mysql => "mysql",
            Engine::Redis => "redis",
        }
    }
}

/// A database server and the databases on it that belong to the component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    pub name: String,
    pub engine: Engine,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Name of an environment variable on the worker holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Path of a file on the worker holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// Databases to back up (PostgreSQL, MariaDB/MySQL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Database number (Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<u32>,
    /// PostgreSQL: carry the definitions of the cluster roles the database's grants name
    /// (`pg_dumpall --roles-only`, cut down to them), so that a restore into a server that lacks
    /// them creates them first instead of leaving their grants out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub roles: bool,
    /// PostgreSQL with `roles`: include the roles' password hashes (off by default; reading
    /// them needs a superuser).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub role_passwords: bool,
    /// Point-in-time restore (DESIGN §1): Ferry keeps a log stream of this server running
    /// (PostgreSQL WAL, MariaDB/MySQL binlogs) so that `restore create APP --at TIME` can replay
    /// up to any moment after a backup. PostgreSQL backups then also take a physical base.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pitr: bool,
}

/// A component's own dump command (stdout is the shard) and restore command (reads stdin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    pub backup: Vec<String>,
    pub restore: Vec<String>,
}

impl AppSpec {
    /// Parses and validates a YAML manifest. Errors name the field and line.
    pub fn from_yaml(text: &str) -> Result<AppSpec, ModelError> {
        let spec: AppSpec =
            serde_norway::from_str(text).map_err(|e| ModelError::Manifest(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The manifest as YAML, the form it is stored and shown in.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_else(|e| format!("# unprintable spec: {e}\n"))
    }

    /// Checks everything serde cannot: names, uniqueness, absolute paths, engine fields.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_name("app name", &self.name)?;
        check_name("cluster name", &self.cluster)?;
        let bad = |msg: String| Err(ModelError::Manifest(msg));
        let mut components = BTreeSet::new();
        for c in &self.components {
            check_name("component name", &c.name)?;
            if !components.insert(&c.name) {
                return bad(format!("component {:?} is declared twice", c.name));
            }
            let mut resources = BTreeSet::new();
            for v in &c.volumes {
                check_name("volume name", &v.name)?;
                if !resources.insert(&v.name) {
                    return bad(format!("{}: name {:?} is used twice", c.name, v.name));
                }
                check_volume_path(&c.name, v)?;
                if let Some(node) = &v.node {
                    check_name("node name", node)?;
                }
            }
            for d in &c.databases {
                check_name("database entry name", &d.name)?;
                if !resources.insert(&d.name) {
                    return bad(format!("{}: name {:?} is used twice", c.name, d.name));
                }
                check_database(&c.name, d)?;
            }
            if let Some(exec) = &c.exec
                && (exec.backup.is_empty() || exec.restore.is_empty())
            {
                return bad(format!(
                    "{}: exec needs both a backup and a restore command",
                    c.name
                ));
            }
        }
        Ok(())
    }

    /// Looks up a component by name.
    pub fn component(&self, name: &str) -> Option<&ComponentSpec> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Counts (components, volumes, databases) for listings.
    pub fn counts(&self) -> (usize, usize, usize) {
        let volumes = self.components.iter().map(|c| c.volumes.len()).sum();
        let dbs = self.components.iter().map(|c| c.databases.len()).sum();
        (self.components.len(), volumes, dbs)
    }
}

fn check_volume_path(component: &str, v: &VolumeSpec) -> Result<(), ModelError> {
    let p = std::path::Path::new(&v.path);
    let reason = if v.path.is_empty() {
        Some("a path is required")
    } else if !p.is_absolute() {
        Some("the path must be absolute")
    } else if p
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        Some("the path must not contain '..'")
    } else if p.parent().is_none() {
        Some("the path must not be the root directory")
    } else {
        None
    };
    match reason {
        Some(r) => Err(ModelError::Manifest(format!(
            "{component}: volume {:?}: {r} (got {:?})",
            v.name, v.path
        ))),
        None => Ok(()),
    }
}

fn check_database(component: &str, d: &DatabaseSpec) -> Result<(), ModelError> {
    let bad = |msg: &str| {
        Err(ModelError::Manifest(format!(
            "{component}: database {:?} ({}): {msg}",
            d.name,
            d.engine.as_str()
        )))
    };
    if d.password_env.is_some() && d.password_file.is_some() {
        return bad("give password_env or password_file, not both");
    }
    if (d.roles || d.role_passwords) && d.engine != Engine::Postgres {
        return bad("`roles` and `role_passwords` are only for postgres");
    }
    if d.pitr && d.engine == Engine::Redis {
        return bad("`pitr` is for postgres, mariadb and mysql (Redis keeps no log to replay)");
    }
    if d.role_passwords && !d.roles {
        return bad("`role_passwords` needs `roles: true`");
    }
    match d.engine {
        Engine::Redis => {
            if !d.databases.is_empty() {
                return bad("redis takes `db: N`, not `databases`");
            }
        }
        _ => {
            if d.databases.is_empty() {
                return bad("list the databases to back up under `databases`");
            }
            if d.db.is_some() {
                return bad("`db` is only for redis");
            }
            for name in &d.databases {
                check_name("database name", name)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_EXAMPLE: &str = r#"
name: shop
cluster: dc-a
components:
  - name: api
    config: {env: {LOG_LEVEL: info}, ingress_host: shop.example.com}
    hooks: {pre_backup: ["systemctl", "stop", "shop-api"], post_backup: ["systemctl", "start", "shop-api"]}
    volumes:
      - {name: uploads, path: /srv/shop/uploads, node: host-1}
    databases:
      - {name: main, engine: postgres, host: 127.0.0.1, port: 5432, user: shop, password_env: SHOP_PG_PASSWORD, databases: [shop], pitr: true}
      - {name: cache, engine: redis, host: 127.0.0.1, port: 6379, db: 0}
      - {name: legacy, engine: mariadb, host: 127.0.0.1, port: 3306, user: root, databases: [legacy]}
  - name: realm
    exec: {backup: ["kc.sh", "export", "--file", "/dev/stdout"], restore: ["kc.sh", "import", "--file", "/dev/stdin"]}
"#;

    #[test]
    fn parses_the_design_example() {
        let spec = AppSpec::from_yaml(DESIGN_EXAMPLE).unwrap();
        assert_eq!(spec.name, "shop");
        assert_eq!(spec.counts(), (2, 1, 3));
        let again = AppSpec::from_yaml(&spec.to_yaml()).unwrap();
        assert_eq!(spec, again);
    }

    #[test]
    fn unknown_field_names_the_field_and_line() {
        let err = AppSpec::from_yaml("name: a\ncomponents:\n  - name: c\n    volumez: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `volumez`"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn unknown_engine_is_refused() {
        let yaml =
            "name: a\ncomponents:\n  - name: c\n    databases: [{name: d, engine: oracle}]\n";
        let err = AppSpec::from_yaml(yaml).unwrap_err().to_string();
        assert!(err.contains("unknown variant `oracle`"), "{err}");
    }

    #[test]
    fn missing_or_relative_volume_path_is_refused() {
        let missing = "name: a\ncomponents:\n  - name: c\n    volumes: [{name: v}]\n";
        let err = AppSpec::from_yaml(missing).unwrap_err().to_string();
        assert!(err.contains("missing field `path`"), "{err}");
        let relative = "name: a\ncomponents:\n  - name: c\n    volumes: [{name: v, path: data}]\n";
        let err = AppSpec::from_yaml(relative).unwrap_err().to_string();
        assert!(err.contains("must be absolute"), "{err}");
    }

    #[test]
    fn malformed_yaml_is_refused() {
        let err = AppSpec::from_yaml("name: [unclosed")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid app manifest"), "{err}");
    }

    #[test]
    fn pitr_is_refused_for_redis() {
        let yaml = "name: a\ncomponents:\n  - name: c\n    databases: [{name: d, engine: redis, db: 0, pitr: true}]\n";
        let err = AppSpec::from_yaml(yaml).unwrap_err().to_string();
        assert!(err.contains("`pitr` is for postgres"), "{err}");
        let yaml = "name: a\ncomponents:\n  - name: c\n    databases: [{name: d, engine: postgres, databases: [x], pitr: true}]\n";
        assert!(AppSpec::from_yaml(yaml).unwrap().components[0].databases[0].pitr);
    }

    #[test]
    fn duplicate_names_are_refused() {
        let yaml = "name: a\ncomponents:\n  - {name: c}\n  - {name: c}\n";
        assert!(AppSpec::from_yaml(yaml).is_err());
        let yaml = "name: a\ncomponents:\n  - name: c\n    volumes: [{name: v, path: /a}, {name: v, path: /b}]\n";
        assert!(AppSpec::from_yaml(yaml).is_err());
    }
}
