//! Keys and envelopes (DESIGN.md §6 "Data at rest" and "Trust"):
//!
//! - [`seal`]: age encryption. Archives stream through [`seal::encrypt_to`] on the worker (only a
//!   public recipient is needed to back up) and back through [`seal::Identities::decrypt`];
//!   small key files are sealed to a location's recipients with [`seal::seal`].
//! - [`sign`]: the installation's Ed25519 key, which signs every manifest it writes, and the
//!   check of a signature against a public key.
//!
//! Nothing here ever formats a secret: errors name files and recipients, never key material.

pub mod seal;
pub mod sign;

/// What went wrong with a key, a signature or an envelope.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A recipient, identity or public key that does not parse.
    #[error("{0}")]
    BadKey(String),
    /// No identity given opens this file.
    #[error("{0}")]
    NoIdentity(String),
    /// Encrypting or decrypting failed (a damaged file, a write error).
    #[error("{0}")]
    Envelope(String),
}
