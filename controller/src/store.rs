//! The controller's store: a small transactional key-value API with leases, shaped after etcd so
//! that the embedded store (one file, for one-machine installs) and etcd (production) are
//! interchangeable. Every implementation must pass the conformance tests in this module's
//! `conformance` submodule.

pub mod embedded;
pub mod etcd;
pub mod group;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A lease id; 0 means "no lease".
pub type LeaseId = i64;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data at {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    /// The store refused the request itself (e.g. etcd: too many operations in a transaction).
    #[error("the store refused the request: {0}")]
    Refused(String),
}

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Store revision of the last change of this key; compare-and-swap uses it.
    pub mod_revision: i64,
    pub lease: LeaseId,
}

impl KeyValue {
    /// Decodes the JSON value.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        serde_json::from_slice(&self.value).map_err(|e| StoreError::Corrupt {
            key: self.key.clone(),
            reason: e.to_string(),
        })
    }
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key exists.
    Exists(String),
    /// The key exists and was last changed at this revision.
    ModRevision(String, i64),
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    },
    Delete {
        key: String,
    },
}

impl Op {
    /// A put of `value` as JSON, without lease.
    pub fn put_json<T: Serialize>(key: String, value: &T) -> Op {
        Op::Put {
            key,
            value: serde_json::to_vec(value).unwrap_or_default(),
            lease: 0,
        }
    }

    /// A delete.
    pub fn delete(key: String) -> Op {
        Op::Delete { key }
    }
}

/// The store API. All writes go through [`Store::txn`]: every condition holds, then every op is
/// applied atomically; otherwise nothing is written and `Ok(false)` is returned.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The key, if it exists.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError>;

    /// At most `limit` keys starting with `prefix` and not before `from` (a full key), sorted
    /// by key: one page of a listing too long to read at once.
    async fn list_page(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError>;

    /// Applies `ops` atomically when every condition holds.
    async fn txn(&self, conditions: Vec<Condition>, ops: Vec<Op>) -> Result<bool, StoreError>;

    /// A new lease that expires `ttl` after its last keep-alive; keys attached to it are
    /// deleted when it expires or is revoked.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease; `Ok(false)` when it already expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError>;

    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Unconditional put.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let op = Op::Put {
            key: key.to_owned(),
            value,
            lease: 0,
        };
        self.txn(vec![], vec![op]).await.map(|_| ())
    }

    /// Unconditional delete.
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.txn(vec![], vec![Op::delete(key.to_owned())])
            .await
            .map(|_| ())
    }
}

/// Reads and decodes a JSON value through a trait object.
pub async fn get_json<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(T, i64)>, StoreError> {
    match store.get(key).await? {
        Some(kv) => Ok(Some((kv.decode()?, kv.mod_revision))),
        None => Ok(None),
    }
}

/// Lists and decodes JSON values through a trait object.
pub async fn list_json<T: DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<(T, i64)>, StoreError> {
    store
        .list(prefix)
        .await?
        .iter()
        .map(|kv| Ok((kv.decode()?, kv.mod_revision)))
        .collect()
}

/// The behaviour every store must show. Called by each implementation's tests.
#[cfg(test)]
pub mod conformance {
    use super::*;

    /// Runs every check on a fresh store.
    pub async fn run_all(store: &dyn Store) {
        put_get_list(store).await;
        pages(store).await;
        transactions(store).await;
        leases(store).await;
    }

    async fn pages(store: &dyn Store) {
        for i in 0..5 {
            store.put(&format!("/p/k{i}"), vec![i]).await.unwrap();
        }
        store.put("/pz", b"outside".to_vec()).await.unwrap();
        let keys = |kvs: Vec<KeyValue>| kvs.into_iter().map(|k| k.key).collect::<Vec<_>>();
        let first = keys(store.list_page("/p/", "/p/", 2).await.unwrap());
        assert_eq!(first, ["/p/k0", "/p/k1"]);
        let next = keys(store.list_page("/p/", "/p/k1\0", 10).await.unwrap());
        assert_eq!(next, ["/p/k2", "/p/k3", "/p/k4"]);
        let from = keys(store.list_page("/p/", "/p/k3", 10).await.unwrap());
        assert_eq!(from, ["/p/k3", "/p/k4"]);
        assert!(store.list_page("/p/", "/p/z", 10).await.unwrap().is_empty());
    }

    async fn put_get_list(store: &dyn Store) {
        store.put("/t/a/1", b"one".to_vec()).await.unwrap();
        store.put("/t/a/2", b"two".to_vec()).await.unwrap();
        store.put("/t/b/1", b"other".to_vec()).await.unwrap();
        let kv = store.get("/t/a/1").await.unwrap().unwrap();
        assert_eq!(kv.value, b"one");
        let keys: Vec<_> = store
            .list("/t/a/")
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(keys, ["/t/a/1", "/t/a/2"]);
        store.put("/t/a/1", b"uno".to_vec()).await.unwrap();
        let again = store.get("/t/a/1").await.unwrap().unwrap();
        assert!(again.mod_revision > kv.mod_revision, "revision must grow");
        store.delete("/t/a/1").await.unwrap();
        assert!(store.get("/t/a/1").await.unwrap().is_none());
        store.delete("/t/a/1").await.unwrap();
    }

    async fn transactions(store: &dyn Store) {
        let put = |k: &str, v: &str| Op::Put {
            key: k.into(),
            value: v.as_bytes().to_vec(),
            lease: 0,
        };
        assert!(
            store
                .txn(
                    vec![Condition::Absent("/x/k".into())],
                    vec![put("/x/k", "1")]
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .txn(
                    vec![Condition::Absent("/x/k".into())],
                    vec![put("/x/k", "2")]
                )
                .await
                .unwrap()
        );
        let rev = store.get("/x/k").await.unwrap().unwrap().mod_revision;
        let ops = vec![put("/x/k", "3"), put("/x/other", "o")];
        assert!(
            store
                .txn(
                    vec![Condition::ModRevision("/x/k".into(), rev)],
                    ops.clone()
                )
                .await
                .unwrap()
        );
        // The same revision no longer matches: nothing of the second txn is written.
        let ops = vec![put("/x/k", "4"), put("/x/third", "t")];
        assert!(
            !store
                .txn(vec![Condition::ModRevision("/x/k".into(), rev)], ops)
                .await
                .unwrap()
        );
        assert_eq!(store.get("/x/k").await.unwrap().unwrap().value, b"3");
        assert!(store.get("/x/third").await.unwrap().is_none());
        assert!(
            !store
                .txn(
                    vec![Condition::Exists("/x/none".into())],
                    vec![put("/x/y", "1")]
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .txn(
                    vec![Condition::Exists("/x/k".into())],
                    vec![Op::delete("/x/k".into())]
                )
                .await
                .unwrap()
        );
        assert!(store.get("/x/k").await.unwrap().is_none());
    }

    async fn leases(store: &dyn Store) {
        let ttl = Duration::from_secs(2);
        let lease = store.grant_lease(ttl).await.unwrap();
        let op = Op::Put {
            key: "/l/held".into(),
            value: b"v".to_vec(),
            lease,
        };
        assert!(store.txn(vec![], vec![op]).await.unwrap());
        assert_eq!(store.get("/l/held").await.unwrap().unwrap().lease, lease);
        // Kept alive past its TTL, the key stays.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(store.keep_alive(lease).await.unwrap());
        }
        assert!(store.get("/l/held").await.unwrap().is_some());
        // Left alone, it expires and takes the key with it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.get("/l/held").await.unwrap().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "leased key outlived its lease"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(!store.keep_alive(lease).await.unwrap());
        // Revoking deletes at once.
        let lease = store.grant_lease(ttl).await.unwrap();
        let op = Op::Put {
            key: "/l/revoked".into(),
            value: b"v".to_vec(),
            lease,
        };
        assert!(store.txn(vec![], vec![op]).await.unwrap());
        store.revoke_lease(lease).await.unwrap();
        assert!(store.get("/l/revoked").await.unwrap().is_none());
        // A put on a dead lease is refused.
        let op = Op::Put {
            key: "/l/late".into(),
            value: b"v".to_vec(),
            lease,
        };
        assert!(store.txn(vec![], vec![op]).await.is_err());
        assert!(store.get("/l/late").await.unwrap().is_none());
    }
}
