//! The installation's signing key (Ed25519) and signature checks.
//!
//! Public keys and signatures travel as text: `ed25519:BASE64` for a key (what `ferry trust add
//! --public-key` takes), plain base64 for a signature. The private key is kept as base64 PKCS#8
//! in the controller's store; [`SigningKey`]'s `Debug` shows only its public half.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::CryptoError;

const PREFIX: &str = "ed25519:";

/// An Ed25519 key pair that signs manifests.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key and the text to store it as (base64 PKCS#8: a secret).
    pub fn generate() -> Result<(Self, String), CryptoError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| CryptoError::BadKey("generating an Ed25519 key failed".into()))?;
        let stored = STANDARD.encode(doc.as_ref());
        Ok((Self::from_stored(&stored)?, stored))
    }

    /// The key from what [`generate`](Self::generate) returned to store.
    pub fn from_stored(stored: &str) -> Result<Self, CryptoError> {
        let der = STANDARD
            .decode(stored.trim())
            .map_err(|_| CryptoError::BadKey("the stored signing key is not base64".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| CryptoError::BadKey("the stored signing key is not Ed25519".into()))?;
        Ok(Self { pair })
    }

    /// `ed25519:BASE64`, what another installation trusts.
    pub fn public_key(&self) -> String {
        format!(
            "{PREFIX}{}",
            STANDARD.encode(self.pair.public_key().as_ref())
        )
    }

    /// The signature of `payload`, base64.
    pub fn sign(&self, payload: &[u8]) -> String {
        STANDARD.encode(self.pair.sign(payload).as_ref())
    }
}

/// Checks that `public_key` is an `ed25519:BASE64` key of 32 bytes; returns it trimmed.
pub fn check_public_key(public_key: &str) -> Result<String, CryptoError> {
    let key = public_key.trim();
    let bad = || {
        CryptoError::BadKey(format!(
            "{key:?} is not a Ferry public key (expected {PREFIX}BASE64 of 32 bytes, as `ferry \
             trust list` shows it)"
        ))
    };
    let raw = key.strip_prefix(PREFIX).ok_or_else(bad)?;
    match STANDARD.decode(raw) {
        Ok(bytes) if bytes.len() == 32 => Ok(key.to_owned()),
        _ => Err(bad()),
    }
}

/// Whether `signature` (base64) is `public_key`'s signature of `payload`. Anything malformed is
/// simply not a valid signature.
pub fn verify(public_key: &str, payload: &[u8], signature: &str) -> bool {
    let Some(raw) = public_key.strip_prefix(PREFIX) else {
        return false;
    };
    let (Ok(key), Ok(sig)) = (STANDARD.decode(raw), STANDARD.decode(signature)) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, key)
        .verify(payload, &sig)
        .is_ok()
}

/// A short, stable name for a public key (the first 16 hex digits of its SHA-256), for messages.
pub fn fingerprint(public_key: &str) -> String {
    hex::encode(&Sha256::digest(public_key.trim().as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_key_and_payload() {
        let (key, stored) = SigningKey::generate().unwrap();
        let again = SigningKey::from_stored(&stored).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let sig = key.sign(b"manifest");
        assert!(verify(&key.public_key(), b"manifest", &sig));
        assert!(!verify(&key.public_key(), b"manifesT", &sig));
        let (other, _) = SigningKey::generate().unwrap();
        assert!(!verify(&other.public_key(), b"manifest", &sig));
        assert!(!verify("ed25519:nonsense", b"manifest", &sig));
        assert!(!verify(&key.public_key(), b"manifest", "not base64!"));
    }

    #[test]
    fn public_keys_are_checked_and_debug_shows_no_secret() {
        let (key, stored) = SigningKey::generate().unwrap();
        assert_eq!(
            check_public_key(&format!(" {}\n", key.public_key())).unwrap(),
            key.public_key()
        );
        assert!(check_public_key("age1qqq").is_err());
        assert!(check_public_key("ed25519:AAAA").is_err());
        let shown = format!("{key:?}");
        assert!(!shown.contains(&stored), "{shown}");
        assert!(shown.contains(&key.public_key()), "{shown}");
        assert_eq!(fingerprint(&key.public_key()).len(), 16);
    }
}
