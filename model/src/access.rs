//! Who may do what: the roles of a caller token and what a token grants. Pure data; the
//! controller's `auth` module holds the table of calls and the decisions.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// What a caller token may do within its team (DESIGN §6). Ordered: each role can do everything
/// the one before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Lists, gets and watches; lists workers, clusters and storage.
    Viewer,
    /// + backup create/cancel/verify/export, restore into a new app, schedules.
    Operator,
    /// + apps, in-place restores, backup delete/import, storage, migrate, tokens, audit.
    Admin,
}

impl Role {
    /// The lowercase name used on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(ModelError::Invalid(format!(
                "unknown role {other:?}: expected viewer, operator or admin"
            ))),
        }
    }
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Grant {
    /// A person or a script calling the CLI API. `team: None` is installation-wide (every team;
    /// the first start's `admin` token is such an admin).
    Caller { team: Option<String>, role: Role },
    /// A worker joining the given cluster.
    Worker { cluster: String },
}

impl Grant {
    /// "admin of team payments", "admin of every team", "worker of cluster dc-a".
    pub fn describe(&self) -> String {
        match self {
            Grant::Caller {
                team: Some(t),
                role,
            } => format!("{role} of team {t}"),
            Grant::Caller { team: None, role } => format!("{role} of every team"),
            Grant::Worker { cluster } => format!("worker of cluster {cluster}"),
        }
    }
}

/// The only environment variables a manifest or a storage location may name as a secret
/// (`password_env`, `--access-key-env`): a reference cannot read anything else of a worker's or
/// controller's environment (`HOME`, a cloud provider's keys, …).
pub const SECRET_ENV_PREFIX: &str = "FERRY_SECRET_";

/// Refuses a secret reference to a variable outside [`SECRET_ENV_PREFIX`].
pub fn check_secret_env(what: &str, var: &str) -> Result<(), ModelError> {
    let ok = var.len() > SECRET_ENV_PREFIX.len()
        && var.starts_with(SECRET_ENV_PREFIX)
        && var
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ModelError::Invalid(format!(
            "{what} {var:?} is refused: secrets are read only from variables named {SECRET_ENV_PREFIX}* (upper case, digits, _)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_name_ferry_secret_variables_only() {
        check_secret_env("password_env", "FERRY_SECRET_SHOP_PG").unwrap();
        for bad in [
            "HOME",
            "FERRY_SECRET_",
            "AWS_SECRET_ACCESS_KEY",
            "FERRY_SECRET_a",
            "ferry_secret_x",
        ] {
            let e = check_secret_env("password_env", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("FERRY_SECRET_"), "{e}");
        }
    }

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn grants_serialize_tagged() {
        let g = Grant::Caller {
            team: Some("a".into()),
            role: Role::Operator,
        };
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, r#"{"kind":"caller","team":"a","role":"operator"}"#);
        assert_eq!(serde_json::from_str::<Grant>(&json).unwrap(), g);
        assert_eq!(g.describe(), "operator of team a");
    }
}
