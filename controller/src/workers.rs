//! Worker sessions. A session is a store lease kept alive while the worker heartbeats; the
//! worker's record and every assignment handed to it hang off that lease, so when a worker dies
//! they vanish together and the reconciler re-queues its shards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_model::now_ms;
use ferry_model::task::ShardTask;
use ferry_proto::model::{Registration, ShardKey};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::keys;
use crate::records::WorkerRecord;
use crate::store::{Condition, Op, Store, list_json};
use crate::timing::Timings;

/// Something sent down a worker's assignment stream.
#[derive(Debug, Clone)]
pub enum Delivery {
    Assign(Box<ShardTask>),
    Cancel(ShardKey),
}

/// How many deliveries may wait for a slow worker before the stream is considered dead.
const STREAM_BUFFER: usize = 1024;

/// What the controller observes of a session between heartbeats.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    pub lease: i64,
    pub last_heartbeat_ms: i64,
    pub running: u32,
    /// What authenticates the session's calls (a copy of the stored record's fields).
    pub cluster: String,
    pub session_sha256: String,
    pub token: String,
}

impl Liveness {
    fn of(record: &WorkerRecord) -> Liveness {
        Liveness {
            lease: record.lease,
            last_heartbeat_ms: now_ms(),
            running: 0,
            cluster: record.cluster.clone(),
            session_sha256: record.session_sha256.clone(),
            token: record.token.clone(),
        }
    }
}

/// Live sessions and their assignment streams.
pub struct Workers {
    store: Arc<dyn Store>,
    timings: Timings,
    streams: Mutex<HashMap<String, mpsc::Sender<Delivery>>>,
    liveness: Mutex<HashMap<String, Liveness>>,
}

impl Workers {
    /// An empty registry.
    pub fn new(store: Arc<dyn Store>, timings: Timings) -> Self {
        Workers {
            store,
            timings,
            streams: Mutex::new(HashMap::new()),
            liveness: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a session for a worker that presented join token `token`: a lease, and the worker's
    /// record attached to it. Returns the record and the session key (given to the worker once).
    pub async fn register(&self, reg: Registration, token: &str) -> Result<(WorkerRecord, String)> {
        let lease = self.store.grant_lease(self.timings.lease_ttl()).await?;
        let key = crate::tokens::new_secret("session");
        let id = format!(
            "{}-{}-{}",
            reg.cluster,
            reg.node,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let record = WorkerRecord {
            id: id.clone(),
            cluster: reg.cluster,
            node: reg.node,
            max_shards: reg.max_shards,
            tools: reg.tools,
            version: reg.version,
            lease,
            registered_at_ms: now_ms(),
            session_sha256: crate::tokens::hash(&key),
            token: token.to_owned(),
        };
        let op = Op::Put {
            key: keys::worker(&id),
            value: serde_json::to_vec(&record).unwrap_or_default(),
            lease,
        };
        self.store.txn(vec![], vec![op]).await?;
        if let Ok(mut l) = self.liveness.lock() {
            l.insert(id, Liveness::of(&record));
        }
        Ok((record, key))
    }

    /// The session `id` if `key` is its key; `None` when there is no such live session or the
    /// key is wrong (the two read alike).
    pub async fn authenticate(
        &self,
        id: &str,
        key: &str,
    ) -> Result<Option<crate::auth::WorkerIdentity>> {
        if id.is_empty() || key.is_empty() {
            return Ok(None);
        }
        let known = self.liveness.lock().ok().and_then(|l| l.get(id).cloned());
        let live = match known {
            Some(l) => l,
            // Opened with another controller (before a leader change): the store knows it.
            None => match crate::store::get_json::<WorkerRecord>(&*self.store, &keys::worker(id))
                .await?
            {
                Some((rec, _)) => {
                    let live = Liveness::of(&rec);
                    if let Ok(mut l) = self.liveness.lock() {
                        l.insert(id.to_owned(), live.clone());
                    }
                    live
                }
                None => return Ok(None),
            },
        };
        let hash = crate::tokens::hash(key);
        let same = live.session_sha256.len() == hash.len()
            && live
                .session_sha256
                .bytes()
                .zip(hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        Ok(same.then(|| crate::auth::WorkerIdentity {
            worker_id: id.to_owned(),
            cluster: live.cluster,
            token: live.token,
        }))
    }

    /// Ends a session now: its lease (and with it its record and assignments) is revoked and
    /// its stream closed; its shards are re-queued by the reconciler.
    pub async fn end_session(&self, id: &str) -> Result<()> {
        let known = self.liveness.lock().ok().and_then(|mut l| l.remove(id));
        if let Ok(mut s) = self.streams.lock() {
            s.remove(id);
        }
        let lease = match known {
            Some(l) => Some(l.lease),
            None => crate::store::get_json::<WorkerRecord>(&*self.store, &keys::worker(id))
                .await?
                .map(|(r, _)| r.lease),
        };
        if let Some(lease) = lease {
            self.store.revoke_lease(lease).await?;
        }
        Ok(())
    }

    /// Forgets what was observed of sessions that stopped heartbeating longer than a lease ago
    /// (their lease has expired): the map never grows with registrations.
    pub fn prune(&self) {
        let cutoff = now_ms() - self.timings.lease_ttl().as_millis() as i64 * 2;
        if let Ok(mut l) = self.liveness.lock() {
            let gone: Vec<String> = l
                .iter()
                .filter(|(_, v)| v.last_heartbeat_ms < cutoff)
                .map(|(k, _)| k.clone())
                .collect();
            for id in gone {
                l.remove(&id);
                if let Ok(mut s) = self.streams.lock() {
                    s.remove(&id);
                }
            }
        }
    }

    /// Renews a session; false when it is gone (the worker must register again).
    pub async fn heartbeat(&self, id: &str, running: u32) -> Result<bool> {
        let known = self.liveness.lock().ok().and_then(|l| l.get(id).cloned());
        let live = match known {
            Some(l) => l,
            // Another controller opened the session: find its lease in the store.
            None => match crate::store::get_json::<WorkerRecord>(&*self.store, &keys::worker(id))
                .await?
            {
                Some((rec, _)) => Liveness::of(&rec),
                None => return Ok(false),
            },
        };
        let alive = self.store.keep_alive(live.lease).await?;
        if let Ok(mut l) = self.liveness.lock() {
            if alive {
                l.insert(
                    id.to_owned(),
                    Liveness {
                        last_heartbeat_ms: now_ms(),
                        running,
                        ..live
                    },
                );
            } else {
                l.remove(id);
            }
        }
        Ok(alive)
    }

    /// Attaches the worker's assignment stream; deliveries go there from now on.
    pub fn attach(&self, id: &str) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        if let Ok(mut s) = self.streams.lock() {
            s.insert(id.to_owned(), tx);
        }
        rx
    }

    /// Sends something to a worker; false when it has no open stream (the assignment stays in
    /// the store and is re-sent when the stream opens, or re-queued when the lease ends).
    pub fn deliver(&self, id: &str, delivery: Delivery) -> bool {
        let Ok(mut streams) = self.streams.lock() else {
            return false;
        };
        let Some(tx) = streams.get(id) else {
            return false;
        };
        if tx.try_send(delivery).is_err() {
            streams.remove(id);
            return false;
        }
        true
    }

    /// Closes every assignment stream (on stepping down: workers reconnect to the new leader).
    pub fn detach_all(&self) {
        if let Ok(mut s) = self.streams.lock() {
            s.clear();
        }
    }

    /// Every live session (the store holds only sessions whose lease is alive).
    pub async fn live(&self) -> Result<Vec<WorkerRecord>> {
        Ok(list_json::<WorkerRecord>(&*self.store, &keys::workers())
            .await?
            .into_iter()
            .map(|(w, _)| w)
            .collect())
    }

    /// Whether session `id` is alive (its record exists: the store drops it with the lease).
    /// One read, whatever the size of the fleet.
    pub async fn is_live(&self, id: &str) -> Result<bool> {
        Ok(self.store.get(&keys::worker(id)).await?.is_some())
    }

    /// What this controller observed of a session.
    pub fn liveness(&self, id: &str) -> Option<Liveness> {
        self.liveness.lock().ok()?.get(id).cloned()
    }

    /// Condition that a worker's session is still alive.
    pub fn alive_condition(id: &str) -> Condition {
        Condition::Exists(keys::worker(id))
    }
}
