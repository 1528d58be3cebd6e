//! Whose manifests this installation trusts (DESIGN §6 "Trust").
//!
//! Every manifest this installation writes is signed with its Ed25519 key (kept in the store,
//! created by the first start). `ferry trust add NAME --public-key KEY` names other
//! installations whose signatures count. A restore judges the manifest it reads *now* (the
//! bucket may have changed since the backup was listed): anything but a valid signature by this
//! installation or a trusted one restores **data only** — no exec command or hook from the
//! manifest runs or is registered, setuid/setgid bits are cleared — see `jobs::restore`.

use ferry_crypto::sign::{SigningKey, check_public_key, fingerprint, verify};
use ferry_model::manifest::{BackupManifest, ManifestSignature};
use ferry_model::names::check_name;
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Condition, Op, Store, get_json, list_json};

/// Another installation whose manifests restore in full here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRecord {
    pub name: String,
    /// `ed25519:BASE64`
    pub public_key: String,
    pub added_at_ms: i64,
}

/// The verdict on a manifest's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// Signed by this installation.
    Own,
    /// Signed by a trusted installation (its name here).
    Trusted(String),
    /// A valid signature by a key nobody here trusts (its fingerprint).
    Untrusted(String),
    /// A signature that does not match the manifest: it was edited after signing.
    Invalid(String),
    /// No signature at all (written before manifests were signed, or stripped).
    Unsigned,
}

impl Signer {
    /// Whether a restore of the manifest may run its commands and hooks.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Signer::Own | Signer::Trusted(_))
    }

    /// How `backup get` shows it.
    pub fn label(&self) -> String {
        match self {
            Signer::Own => "this installation".into(),
            Signer::Trusted(name) => format!("trusted installation {name}"),
            Signer::Untrusted(fp) => format!("untrusted key {fp}"),
            Signer::Invalid(fp) => {
                format!("invalid signature (key {fp}): the manifest was changed after signing")
            }
            Signer::Unsigned => "unsigned".into(),
        }
    }
}

/// Judges a manifest's signature against this installation's public key and the trusted ones.
pub fn judge(manifest: &BackupManifest, own_key: &str, trusted: &[TrustRecord]) -> Signer {
    let Some(ManifestSignature { key, signature }) = &manifest.signature else {
        return Signer::Unsigned;
    };
    if !verify(key, &manifest.signed_payload(), signature) {
        return Signer::Invalid(fingerprint(key));
    }
    if !own_key.is_empty() && key == own_key {
        return Signer::Own;
    }
    match trusted.iter().find(|t| &t.public_key == key) {
        Some(t) => Signer::Trusted(t.name.clone()),
        None => Signer::Untrusted(fingerprint(key)),
    }
}

/// Signs `manifest` with this installation's key (no key — a bare test context — leaves it
/// unsigned).
pub fn sign(ctx: &Context, manifest: &mut BackupManifest) {
    manifest.signature = None;
    if let Some(key) = ctx.signing.get() {
        manifest.signature = Some(ManifestSignature {
            key: key.public_key(),
            signature: key.sign(&manifest.signed_payload()),
        });
    }
}

/// This installation's public key (empty in a bare test context without one).
pub fn own_key(ctx: &Context) -> String {
    ctx.signing
        .get()
        .map(|k| k.public_key())
        .unwrap_or_default()
}

/// The verdict on `manifest` here and now.
pub async fn judge_now(ctx: &Context, manifest: &BackupManifest) -> Result<Signer> {
    Ok(judge(manifest, &own_key(ctx), &list(&*ctx.store).await?))
}

/// This installation's signing key: read from the store, or made by the first start.
pub async fn signing_key(store: &dyn Store) -> anyhow::Result<SigningKey> {
    loop {
        if let Some((stored, _)) = get_json::<String>(store, &keys::signing_key()).await? {
            return Ok(SigningKey::from_stored(&stored)?);
        }
        let (_, stored) = SigningKey::generate()?;
        store
            .txn(
                vec![Condition::Absent(keys::signing_key())],
                vec![Op::put_json(keys::signing_key(), &stored)],
            )
            .await?;
    }
}

/// Every trusted installation, by name.
pub async fn list(store: &dyn Store) -> Result<Vec<TrustRecord>> {
    Ok(list_json::<TrustRecord>(store, &keys::trust_all())
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect())
}

/// Trusts another installation's key under `name`.
pub async fn add(ctx: &Context, name: &str, public_key: &str) -> Result<TrustRecord> {
    check_name("trust name", name)?;
    let public_key =
        check_public_key(public_key).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    if own_key(ctx) == public_key {
        return Err(Error::InvalidArgument(
            "that is this installation's own key; it is always trusted".into(),
        ));
    }
    if let Some(same) = list(&*ctx.store)
        .await?
        .into_iter()
        .find(|t| t.public_key == public_key && t.name != name)
    {
        return Err(Error::AlreadyExists(format!(
            "that key is already trusted as {:?}",
            same.name
        )));
    }
    let record = TrustRecord {
        name: name.to_owned(),
        public_key,
        added_at_ms: ferry_model::now_ms(),
    };
    ctx.store
        .txn(vec![], vec![Op::put_json(keys::trust(name), &record)])
        .await?;
    tracing::info!(name, key = %fingerprint(&record.public_key), "installation trusted");
    Ok(record)
}

/// Stops trusting `name`.
pub async fn remove(ctx: &Context, name: &str) -> Result<()> {
    check_name("trust name", name)?;
    let removed = ctx
        .store
        .txn(
            vec![Condition::Exists(keys::trust(name))],
            vec![Op::delete(keys::trust(name))],
        )
        .await?;
    if !removed {
        return Err(Error::NotFound(format!("no trusted installation {name:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> BackupManifest {
        let json = r#"{"format":"ferry.backup","version":1,"id":"shop-1","team":"t","app":"shop",
            "cluster":"c","storage":"s","state":"Completed","created_at_ms":1,"completed_at_ms":2,
            "trigger":"manual","ferry_version":"0","app_spec":{"name":"shop","components":[]},
            "shards":[]}"#;
        BackupManifest::from_json(json.as_bytes()).unwrap()
    }

    fn signed(key: &SigningKey) -> BackupManifest {
        let mut m = manifest();
        m.signature = Some(ManifestSignature {
            key: key.public_key(),
            signature: key.sign(&m.signed_payload()),
        });
        m
    }

    #[test]
    fn only_own_and_trusted_valid_signatures_are_trusted() {
        let (own, _) = SigningKey::generate().unwrap();
        let (friend, _) = SigningKey::generate().unwrap();
        let (stranger, _) = SigningKey::generate().unwrap();
        let trusted = vec![TrustRecord {
            name: "dc-b".into(),
            public_key: friend.public_key(),
            added_at_ms: 0,
        }];
        let me = own.public_key();
        assert_eq!(judge(&signed(&own), &me, &trusted), Signer::Own);
        assert_eq!(
            judge(&signed(&friend), &me, &trusted),
            Signer::Trusted("dc-b".into())
        );
        let verdict = judge(&signed(&stranger), &me, &trusted);
        assert!(matches!(verdict, Signer::Untrusted(_)) && !verdict.is_trusted());
        assert_eq!(judge(&manifest(), &me, &trusted), Signer::Unsigned);
        assert!(!Signer::Unsigned.is_trusted());

        // Edited after signing: invalid, even with a trusted key.
        let mut edited = signed(&friend);
        edited.app_spec.name = "other".into();
        let verdict = judge(&edited, &me, &trusted);
        assert!(matches!(verdict, Signer::Invalid(_)), "{verdict:?}");
        assert!(!verdict.is_trusted());
        // A signature moved onto another manifest: invalid.
        let mut other = manifest();
        other.id = "shop-2".into();
        other.signature = signed(&own).signature;
        assert!(matches!(judge(&other, &me, &trusted), Signer::Invalid(_)));
        // Without a key of its own (a bare context), nothing is "own".
        assert!(matches!(
            judge(&signed(&own), "", &trusted),
            Signer::Untrusted(_)
        ));
    }
}
