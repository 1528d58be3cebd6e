//! Tokens: caller tokens (a team, or every team, and a role) and worker join tokens (a cluster).
//! A token's secret is `fry_NAME_` followed by 64 random hex digits; the store keeps only its
//! SHA-256 (the secret has 256 random bits, so a plain hash cannot be reversed). The name inside
//! the secret finds the record in one read. A first start writes the installation's `admin`
//! token (every team) to `DATA_DIR/admin.token`, readable by its owner only.

use std::path::{Path, PathBuf};

use ferry_model::access::Grant;
use ferry_model::names::check_name;
use ferry_model::now_ms;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Condition, Op, Store, get_json, list_json};

/// The name of the token a first start writes.
pub const ADMIN_TOKEN_NAME: &str = "admin";
/// The file it is written to, in the data directory.
pub use ferry_proto::ADMIN_TOKEN_FILE;
const PREFIX: &str = "fry_";
const SECRET_HEX: usize = 64;

/// A stored token: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub grant: Grant,
    pub sha256: String,
    pub created_at_ms: i64,
    /// `None`: never expires.
    pub expires_at_ms: Option<i64>,
    /// The token that created it (`""` for the first start's).
    pub created_by: String,
}

impl TokenRecord {
    /// True once its expiry has passed.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }
}

/// A new secret for token `name`.
pub fn new_secret(name: &str) -> String {
    let random = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    // A v4 UUID has 122 random bits; two of them, hashed, give 256 bits that are all random.
    let digest = Sha256::digest(random.as_bytes());
    format!("{PREFIX}{name}_{}", hex::encode(digest))
}

/// The token name a secret claims, if it has the shape of one.
pub fn name_of(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(PREFIX)?;
    if rest.len() < SECRET_HEX + 2 {
        return None;
    }
    let (name, random) = rest.split_at(rest.len() - SECRET_HEX);
    let name = name.strip_suffix('_')?;
    (random.bytes().all(|b| b.is_ascii_hexdigit()) && check_name("token name", name).is_ok())
        .then_some(name)
}

/// SHA-256 of a secret, hex.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Why a presented token was refused. Never says more than the secret proves: a wrong secret
/// for an existing name reads like an unknown token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no token: give one with --token, FERRY_TOKEN, --token-file or `ferry login`")]
    Missing,
    #[error("the token is not valid (unknown, revoked or mistyped)")]
    Invalid,
    #[error("token {name:?} expired")]
    Expired { name: String },
}

/// The record of a presented secret, or why it is refused.
pub async fn verify(store: &dyn Store, secret: &str) -> Result<Result<TokenRecord, Refused>> {
    let Some(name) = name_of(secret) else {
        return Ok(Err(Refused::Invalid));
    };
    let Some((record, _)) = get_json::<TokenRecord>(store, &keys::token(name)).await? else {
        return Ok(Err(Refused::Invalid));
    };
    if !same(&record.sha256, &hash(secret)) {
        return Ok(Err(Refused::Invalid));
    }
    if record.expired(now_ms()) {
        return Ok(Err(Refused::Expired {
            name: record.name.clone(),
        }));
    }
    Ok(Ok(record))
}

/// Creates a token; returns its record and the secret (shown once).
pub async fn create(
    store: &dyn Store,
    name: &str,
    grant: Grant,
    ttl: Option<std::time::Duration>,
    created_by: &str,
) -> Result<(TokenRecord, String)> {
    check_name("token name", name)?;
    let secret = new_secret(name);
    let now = now_ms();
    let record = TokenRecord {
        name: name.to_owned(),
        grant,
        sha256: hash(&secret),
        created_at_ms: now,
        expires_at_ms: ttl.map(|d| now + d.as_millis() as i64),
        created_by: created_by.to_owned(),
    };
    let key = keys::token(name);
    if !store
        .txn(
            vec![Condition::Absent(key.clone())],
            vec![Op::put_json(key, &record)],
        )
        .await?
    {
        return Err(Error::AlreadyExists(format!(
            "a token named {name:?} exists; revoke it first or choose another name"
        )));
    }
    Ok((record, secret))
}

/// Creates or replaces a token (the embedded worker's, renewed at every start).
pub async fn replace(store: &dyn Store, name: &str, grant: Grant) -> Result<String> {
    let secret = new_secret(name);
    let record = TokenRecord {
        name: name.to_owned(),
        grant,
        sha256: hash(&secret),
        created_at_ms: now_ms(),
        expires_at_ms: None,
        created_by: String::new(),
    };
    store
        .txn(vec![], vec![Op::put_json(keys::token(name), &record)])
        .await?;
    Ok(secret)
}

/// Every token.
pub async fn list(store: &dyn Store) -> Result<Vec<TokenRecord>> {
    Ok(list_json::<TokenRecord>(store, &keys::tokens())
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect())
}

/// A token by name.
pub async fn get(store: &dyn Store, name: &str) -> Result<Option<TokenRecord>> {
    Ok(get_json::<TokenRecord>(store, &keys::token(name))
        .await?
        .map(|(t, _)| t))
}

/// Deletes a token: it stops working at the next call.
pub async fn revoke(store: &dyn Store, name: &str) -> Result<()> {
    store.delete(&keys::token(name)).await?;
    Ok(())
}

/// On a store nobody has started before, creates the installation's `admin` token and writes it
/// to `DATA_DIR/admin.token` (0600). Returns the file when it wrote one. Runs once per store,
/// however many controllers start at once: the first to commit wins, the others write nothing.
pub async fn bootstrap(store: &dyn Store, data_dir: &Path) -> Result<Option<PathBuf>> {
    if store.get(&keys::bootstrapped()).await?.is_some() {
        return Ok(None);
    }
    let secret = new_secret(ADMIN_TOKEN_NAME);
    let record = TokenRecord {
        name: ADMIN_TOKEN_NAME.to_owned(),
        grant: Grant::Caller {
            team: None,
            role: ferry_model::access::Role::Admin,
        },
        sha256: hash(&secret),
        created_at_ms: now_ms(),
        expires_at_ms: None,
        created_by: String::new(),
    };
    // The file first (under a temporary name), so a token is never stored that nobody can read.
    let file = data_dir.join(ADMIN_TOKEN_FILE);
    let tmp = data_dir.join(format!("{ADMIN_TOKEN_FILE}.tmp"));
    write_private(&tmp, &secret)
        .map_err(|e| Error::FailedPrecondition(format!("writing {}: {e}", tmp.display())))?;
    let won = store
        .txn(
            vec![Condition::Absent(keys::bootstrapped())],
            vec![
                Op::put_json(keys::bootstrapped(), &now_ms()),
                Op::put_json(keys::token(ADMIN_TOKEN_NAME), &record),
            ],
        )
        .await;
    match won {
        Ok(true) => {
            std::fs::rename(&tmp, &file).map_err(|e| {
                Error::FailedPrecondition(format!("writing {}: {e}", file.display()))
            })?;
            Ok(Some(file))
        }
        other => {
            let _ = std::fs::remove_file(&tmp);
            other.map(|_| None).map_err(Into::into)
        }
    }
}

/// Writes a secret to a file only its owner can read.
pub fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use ferry_model::access::Role;

    #[test]
    fn secrets_carry_their_name_and_parse_back() {
        for name in ["ci", "a_b", "team-a.ops", "x"] {
            let s = new_secret(name);
            assert_eq!(name_of(&s), Some(name), "{s}");
            assert!(!hash(&s).contains(&s[4..]));
        }
        assert_ne!(new_secret("ci"), new_secret("ci"));
        for bad in ["", "fry_", "fry_ci_abc", "Bearer x", "fry__", "ci_0000"] {
            assert_eq!(name_of(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn verify_create_revoke_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let grant = Grant::Caller {
            team: Some("a".into()),
            role: Role::Viewer,
        };
        let (rec, secret) = create(&store, "ci", grant.clone(), None, "admin")
            .await
            .unwrap();
        assert_eq!(rec.sha256, hash(&secret));
        assert_eq!(verify(&store, &secret).await.unwrap().unwrap().grant, grant);
        // A second token of the same name is refused.
        assert!(
            create(&store, "ci", grant.clone(), None, "admin")
                .await
                .is_err()
        );
        // A forged secret for an existing name reads like an unknown token.
        let forged = new_secret("ci");
        assert_eq!(
            verify(&store, &forged).await.unwrap(),
            Err(Refused::Invalid)
        );
        revoke(&store, "ci").await.unwrap();
        assert_eq!(
            verify(&store, &secret).await.unwrap(),
            Err(Refused::Invalid)
        );
        let (_, short) = create(
            &store,
            "short",
            grant,
            Some(std::time::Duration::from_millis(1)),
            "admin",
        )
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(
            verify(&store, &short).await.unwrap(),
            Err(Refused::Expired {
                name: "short".into()
            })
        );
    }

    #[tokio::test]
    async fn bootstrap_writes_one_admin_token_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let file = bootstrap(&store, dir.path()).await.unwrap().unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let secret = std::fs::read_to_string(&file).unwrap();
        let rec = verify(&store, secret.trim()).await.unwrap().unwrap();
        assert_eq!(
            rec.grant,
            Grant::Caller {
                team: None,
                role: Role::Admin
            }
        );
        // A second start (or a second controller) writes nothing, even after the token went.
        revoke(&store, ADMIN_TOKEN_NAME).await.unwrap();
        let other = tempfile::tempdir().unwrap();
        assert_eq!(bootstrap(&store, other.path()).await.unwrap(), None);
        assert!(!other.path().join(ADMIN_TOKEN_FILE).exists());
    }
}
