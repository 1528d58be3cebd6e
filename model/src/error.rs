//! The one error type of the model: bad input, said in words an operator can act on.

/// Why a spec, name, rewrite or manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid app manifest: {0}")]
    Manifest(String),
    #[error("invalid rewrite {0:?}: expected OLD=NEW with a non-empty OLD")]
    Rewrite(String),
    #[error("{0}")]
    Schedule(String),
    #[error("invalid backup manifest: {0}")]
    BackupManifest(String),
    #[error("{0}")]
    Invalid(String),
}
