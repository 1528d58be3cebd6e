//! Object storage for archives and manifests, behind one trait ([`ObjectStore`]) so that the
//! pipelines never care where bytes go. Backends: [`local::LocalStore`] (a directory) and
//! [`s3::S3Store`] (any S3-compatible endpoint). Every backend passes the same conformance suite
//! (`tests/conformance.rs`).
//!
//! Writes are atomic: an object is visible only once it was written completely, so a reader never
//! sees half an archive and a crashed upload leaves nothing that looks like a backup.

pub mod blocking;
pub mod local;
pub mod s3;
mod writeback;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use ferry_model::storage::{StorageBackend, StorageLocation};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// A byte stream in or out of storage.
pub type BoxReader = Pin<Box<dyn AsyncRead + Send>>;

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {key:?} not found")]
    NotFound { key: String },
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("storage I/O on {key:?}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Unsupported(String),
    /// The location's settings cannot work (a missing credential variable, a bad prefix).
    #[error("{0}")]
    Config(String),
}

/// Metadata of one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A place that keeps objects by key. Keys are `/`-separated relative paths.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Streams `body` into `key` and returns the bytes written. The object appears only when the
    /// body ended cleanly; on error or cancellation nothing is left behind.
    async fn put(
        &self,
        key: &str,
        body: BoxReader,
        cancel: &CancellationToken,
    ) -> Result<u64, StorageError>;

    /// Opens `key` for streaming reads.
    async fn get(&self, key: &str) -> Result<BoxReader, StorageError>;

    /// Reads `len` bytes of `key` from `offset` (a chunk inside a pack). Fewer bytes than asked
    /// (the object is shorter) is an error, never a short answer.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError>;

    /// Size of `key`, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError>;

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;

    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Aborts every upload under `prefix` that has not completed (a crashed or fenced-off
    /// writer's leftovers); such an upload can never complete afterwards. Returns how many.
    async fn abort_incomplete(&self, prefix: &str) -> Result<u64, StorageError>;

    /// Like [`ObjectStore::abort_incomplete`], for uploads started (local: last written) before
    /// `before` only: a writer's leftovers that may be long dead, while a live writer beside
    /// them keeps going (garbage collection of the repository's packs).
    async fn abort_stale(
        &self,
        prefix: &str,
        before: std::time::SystemTime,
    ) -> Result<u64, StorageError>;

    /// Writes a small object from memory (manifests).
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let body: BoxReader = Box::pin(std::io::Cursor::new(bytes));
        self.put(key, body, &CancellationToken::new()).await?;
        Ok(())
    }

    /// Reads a small object into memory (manifests). Refuses objects over `limit` bytes.
    async fn get_bytes(&self, key: &str, limit: u64) -> Result<Vec<u8>, StorageError> {
        let mut out = Vec::new();
        let mut body = self.get(key).await?.take(limit + 1);
        body.read_to_end(&mut out)
            .await
            .map_err(|source| StorageError::Io {
                key: key.to_owned(),
                source,
            })?;
        if out.len() as u64 > limit {
            return Err(StorageError::Io {
                key: key.to_owned(),
                source: std::io::Error::other(format!("larger than {limit} bytes")),
            });
        }
        Ok(out)
    }
}

/// Opens the backend of a location.
pub fn open(location: &StorageLocation) -> Result<Arc<dyn ObjectStore>, StorageError> {
    match &location.backend {
        StorageBackend::Local { path, .. } => Ok(Arc::new(local::LocalStore::new(path))),
        StorageBackend::S3 { .. } => Ok(Arc::new(s3::S3Store::from_location(location)?)),
    }
}

/// The error of a ranged read that found fewer bytes than it asked for.
pub(crate) fn short_range(key: &str, offset: u64, len: u64, got: u64) -> StorageError {
    StorageError::Io {
        key: key.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("asked for {len} bytes at offset {offset}, the object holds {got} there"),
        ),
    }
}

/// Checks that a key is a clean relative path: no empty, `.` or `..` segment, no leading `/`.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    let bad = |reason| {
        Err(StorageError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.contains('\0') {
        return bad("contains NUL");
    }
    if key
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return bad("must be a relative path without empty, '.' or '..' segments");
    }
    Ok(())
}
