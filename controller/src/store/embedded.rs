//! The embedded store: one redb file, for one-machine installs and the quick start.
//!
//! redb gives crash-safe transactions on a single file; revisions, compare-and-swap and leases
//! are built on top. Leases live in memory only: when the controller restarts, every lease is
//! gone and the keys attached to them are deleted on open, exactly as if they had expired (the
//! worker sessions they stood for ended with the old process anyway).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};

use super::{Condition, KeyValue, LeaseId, Op, Store, StoreError};

const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<'_, &str, i64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// How often expired leases are collected.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// A store in one file.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    leases: Mutex<Leases>,
}

#[derive(Default)]
struct Leases {
    next: i64,
    live: HashMap<LeaseId, (Duration, Instant)>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Stored value: mod revision, lease, then the value bytes.
fn encode(mod_revision: i64, lease: LeaseId, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(&lease.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < 16 {
        return Err(StoreError::Corrupt {
            key: key.to_owned(),
            reason: "record shorter than its header".into(),
        });
    }
    let num = |r: &[u8]| i64::from_le_bytes(r.try_into().unwrap_or([0; 8]));
    Ok(KeyValue {
        key: key.to_owned(),
        mod_revision: num(&raw[..8]),
        lease: num(&raw[8..16]),
        value: raw[16..].to_vec(),
    })
}

impl EmbeddedStore {
    /// Opens (or creates) the store file. Must be called inside a Tokio runtime: a task collects
    /// expired leases.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let db = Database::create(path)
            .map_err(|e| unavailable(format!("opening {}: {e}", path.display())))?;
        let inner = Arc::new(Inner {
            db,
            leases: Mutex::new(Leases {
                // Ids from an earlier process must never match a new lease.
                next: chrono_free_now_ms() << 12,
                live: HashMap::new(),
            }),
        });
        inner.drop_leased_keys()?;
        tokio::spawn(expire_leases(Arc::downgrade(&inner)));
        Ok(EmbeddedStore { inner })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(unavailable)?
    }
}

fn chrono_free_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(1)
}

impl Inner {
    fn drop_leased_keys(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(unavailable)?;
        {
            let mut kv = tx.open_table(KV).map_err(unavailable)?;
            let mut doomed = Vec::new();
            for item in kv.iter().map_err(unavailable)? {
                let (k, v) = item.map_err(unavailable)?;
                if decode(k.value(), v.value())?.lease != 0 {
                    doomed.push(k.value().to_owned());
                }
            }
            for k in doomed {
                kv.remove(k.as_str()).map_err(unavailable)?;
            }
            tx.open_table(META).map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let kv = tx.open_table(KV).map_err(unavailable)?;
        match kv.get(key).map_err(unavailable)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let kv = tx.open_table(KV).map_err(unavailable)?;
        let mut out = Vec::new();
        for item in kv.range(prefix..).map_err(unavailable)? {
            let (k, v) = item.map_err(unavailable)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn list_page(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let kv = tx.open_table(KV).map_err(unavailable)?;
        let start = if from < prefix { prefix } else { from };
        let mut out = Vec::new();
        for item in kv.range(start..).map_err(unavailable)? {
            let (k, v) = item.map_err(unavailable)?;
            if !k.value().starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn txn(&self, conditions: &[Condition], ops: &[Op]) -> Result<bool, StoreError> {
        {
            let leases = self.leases.lock().map_err(unavailable)?;
            for op in ops {
                if let Op::Put { lease, .. } = op
                    && *lease != 0
                    && !leases.live.contains_key(lease)
                {
                    return Err(StoreError::LeaseNotFound(*lease));
                }
            }
        }
        let tx = self.db.begin_write().map_err(unavailable)?;
        {
            let mut kv = tx.open_table(KV).map_err(unavailable)?;
            for c in conditions {
                let current = |k: &str| -> Result<Option<i64>, StoreError> {
                    Ok(match kv.get(k).map_err(unavailable)? {
                        Some(v) => Some(decode(k, v.value())?.mod_revision),
                        None => None,
                    })
                };
                let holds = match c {
                    Condition::Absent(k) => current(k)?.is_none(),
                    Condition::Exists(k) => current(k)?.is_some(),
                    Condition::ModRevision(k, rev) => current(k)? == Some(*rev),
                };
                if !holds {
                    return Ok(false); // dropping tx aborts it
                }
            }
            let mut meta = tx.open_table(META).map_err(unavailable)?;
            let revision = meta
                .get(REVISION)
                .map_err(unavailable)?
                .map(|v| v.value())
                .unwrap_or(0)
                + 1;
            meta.insert(REVISION, revision).map_err(unavailable)?;
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => {
                        kv.insert(key.as_str(), encode(revision, *lease, value).as_slice())
                            .map_err(unavailable)?;
                    }
                    Op::Delete { key } => {
                        kv.remove(key.as_str()).map_err(unavailable)?;
                    }
                }
            }
        }
        tx.commit().map_err(unavailable)?;
        Ok(true)
    }

    fn delete_lease_keys(&self, lease: LeaseId) -> Result<(), StoreError> {
        let doomed: Vec<Op> = {
            let tx = self.db.begin_read().map_err(unavailable)?;
            let kv = tx.open_table(KV).map_err(unavailable)?;
            let mut doomed = Vec::new();
            for item in kv.iter().map_err(unavailable)? {
                let (k, v) = item.map_err(unavailable)?;
                if decode(k.value(), v.value())?.lease == lease {
                    doomed.push(Op::delete(k.value().to_owned()));
                }
            }
            doomed
        };
        if !doomed.is_empty() {
            self.txn(&[], &doomed)?;
        }
        Ok(())
    }
}

async fn expire_leases(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(EXPIRY_TICK).await;
        let Some(inner) = inner.upgrade() else { return };
        let expired: Vec<LeaseId> = match inner.leases.lock() {
            Ok(mut leases) => {
                let now = Instant::now();
                let gone: Vec<_> = leases
                    .live
                    .iter()
                    .filter(|(_, (_, deadline))| *deadline <= now)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &gone {
                    leases.live.remove(id);
                }
                gone
            }
            Err(_) => return,
        };
        for lease in expired {
            let inner = inner.clone();
            let result = tokio::task::spawn_blocking(move || inner.delete_lease_keys(lease)).await;
            if let Ok(Err(e)) | Err(e) = result.map_err(unavailable) {
                tracing::warn!(lease, error = %e, "could not delete the keys of an expired lease");
            }
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |s| s.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |s| s.list(&prefix)).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let (prefix, from) = (prefix.to_owned(), from.to_owned());
        self.blocking(move |s| s.list_page(&prefix, &from, limit))
            .await
    }

    async fn txn(&self, conditions: Vec<Condition>, ops: Vec<Op>) -> Result<bool, StoreError> {
        self.blocking(move |s| s.txn(&conditions, &ops)).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let mut leases = self.inner.leases.lock().map_err(unavailable)?;
        leases.next += 1;
        let id = leases.next;
        leases.live.insert(id, (ttl, Instant::now() + ttl));
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError> {
        let mut leases = self.inner.leases.lock().map_err(unavailable)?;
        match leases.live.get_mut(&lease) {
            Some((ttl, deadline)) => {
                *deadline = Instant::now() + *ttl;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let existed = self
            .inner
            .leases
            .lock()
            .map_err(unavailable)?
            .live
            .remove(&lease)
            .is_some();
        if existed {
            self.blocking(move |s| s.delete_lease_keys(lease)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
        super::super::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn survives_reopen_but_drops_leased_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.put("/k/plain", b"kept".to_vec()).await.unwrap();
            let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
            let op = Op::Put {
                key: "/k/leased".into(),
                value: b"gone".to_vec(),
                lease,
            };
            assert!(store.txn(vec![], vec![op]).await.unwrap());
        }
        // The expiry task held a weak reference only; give it a tick to notice and exit.
        tokio::time::sleep(EXPIRY_TICK * 2).await;
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.get("/k/plain").await.unwrap().unwrap().value, b"kept");
        assert!(store.get("/k/leased").await.unwrap().is_none());
    }
}
