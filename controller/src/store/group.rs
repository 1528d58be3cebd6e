//! Group commit: concurrent transactions on disjoint keys share one store transaction.
//!
//! Every store write costs a round of consensus and an fsync (etcd) or a durable commit (redb),
//! whatever its size. With hundreds of workers reporting results while the reconciler hands out
//! shards, the controller issued about two transactions per shard and etcd's per-transaction
//! work was the limit (see BENCHMARKS.md). [`GroupCommit`] queues transactions while one is in
//! flight and sends the queue as one: its conditions all ANDed, its ops all applied. Because the
//! merged transactions touch disjoint keys, every condition sees the same state it would have
//! seen alone, so when the merged transaction succeeds each of them would have. When it does not
//! (a condition failed, a lease is gone), each is run again on its own, so each gets exactly the
//! answer it would have got. A lone transaction goes straight through: no added latency.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{Condition, KeyValue, LeaseId, Op, Store, StoreError};

/// etcd refuses a transaction with more than 128 conditions or ops (`--max-txn-ops`).
const MAX_PER_TXN: usize = 128;

type Reply = oneshot::Sender<Result<bool, StoreError>>;

struct Request {
    conditions: Vec<Condition>,
    ops: Vec<Op>,
    reply: Reply,
}

impl Request {
    fn keys(&self) -> impl Iterator<Item = &str> {
        let conditions = self.conditions.iter().map(|c| match c {
            Condition::Absent(k) | Condition::Exists(k) | Condition::ModRevision(k, _) => {
                k.as_str()
            }
        });
        let ops = self.ops.iter().map(|o| match o {
            Op::Put { key, .. } | Op::Delete { key } => key.as_str(),
        });
        conditions.chain(ops)
    }
}

/// A store whose transactions are group-committed; reads and leases pass straight through.
#[derive(Debug)]
pub struct GroupCommit {
    inner: Arc<dyn Store>,
    queue: mpsc::UnboundedSender<Request>,
}

impl GroupCommit {
    /// Wraps `inner`; the committing task lives as long as the wrapper.
    pub fn new(inner: Arc<dyn Store>) -> GroupCommit {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(commit_loop(inner.clone(), rx));
        GroupCommit { inner, queue }
    }
}

async fn commit_loop(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut held: Option<Request> = None;
    loop {
        let first = match held.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return, // the wrapper is gone
            },
        };
        // Everything queued meanwhile joins, as long as its keys are new and etcd's limits hold;
        // the first one that does not fit opens the next group.
        let mut keys: HashSet<String> = first.keys().map(str::to_owned).collect();
        let (mut conditions, mut ops) = (first.conditions.len(), first.ops.len());
        let mut group = vec![first];
        while let Ok(next) = rx.try_recv() {
            let fits = conditions + next.conditions.len() <= MAX_PER_TXN
                && ops + next.ops.len() <= MAX_PER_TXN
                && next.keys().all(|k| !keys.contains(k));
            if !fits {
                held = Some(next);
                break;
            }
            keys.extend(next.keys().map(str::to_owned));
            conditions += next.conditions.len();
            ops += next.ops.len();
            group.push(next);
        }
        commit(&*store, group).await;
    }
}

async fn commit(store: &dyn Store, group: Vec<Request>) {
    if group.len() == 1 {
        let r = group.into_iter().next().expect("one request");
        let _ = r.reply.send(store.txn(r.conditions, r.ops).await);
        return;
    }
    let conditions = group.iter().flat_map(|r| r.conditions.clone()).collect();
    let ops = group.iter().flat_map(|r| r.ops.clone()).collect();
    if let Ok(true) = store.txn(conditions, ops).await {
        for r in group {
            let _ = r.reply.send(Ok(true));
        }
        return;
    }
    // Nothing was written: each on its own, for its own answer.
    for r in group {
        let _ = r.reply.send(store.txn(r.conditions, r.ops).await);
    }
}

#[async_trait]
impl Store for GroupCommit {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.list_page(prefix, from, limit).await
    }

    async fn txn(&self, conditions: Vec<Condition>, ops: Vec<Op>) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            conditions,
            ops,
            reply,
        };
        if self.queue.send(request).is_err() {
            return Err(StoreError::Unavailable("the commit task stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the commit task stopped".into())))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn store() -> (tempfile::TempDir, GroupCommit) {
        let dir = tempfile::tempdir().unwrap();
        let inner = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
        (dir, GroupCommit::new(Arc::new(inner)))
    }

    #[tokio::test]
    async fn group_commit_conforms() {
        let (_dir, store) = store();
        super::super::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn etcd_group_commit_conforms() {
        let etcd = super::super::etcd::testing::TestEtcd::start().await;
        let inner = super::super::etcd::EtcdStore::connect(std::slice::from_ref(&etcd.url))
            .await
            .unwrap();
        super::super::conformance::run_all(&GroupCommit::new(Arc::new(inner))).await;
    }

    /// Many concurrent compare-and-swaps, some doomed: each gets its own answer, and exactly the
    /// ones whose condition held are applied.
    #[tokio::test]
    async fn concurrent_transactions_get_their_own_answers() {
        let (_dir, store) = store();
        let store = Arc::new(store);
        for i in 0..200 {
            store.put(&format!("/k/{i}"), b"0".to_vec()).await.unwrap();
        }
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("/k/{i}");
                let rev = store.get(&key).await.unwrap().unwrap().mod_revision;
                // Every third one compares against a revision that never was.
                let expected = if i % 3 == 0 { rev + 1_000_000 } else { rev };
                let ok = store
                    .txn(
                        vec![Condition::ModRevision(key.clone(), expected)],
                        vec![Op::Put {
                            key,
                            value: b"1".to_vec(),
                            lease: 0,
                        }],
                    )
                    .await
                    .unwrap();
                (i, ok)
            }));
        }
        for t in tasks {
            let (i, ok) = t.await.unwrap();
            assert_eq!(ok, i % 3 != 0, "answer for {i}");
            let value = store.get(&format!("/k/{i}")).await.unwrap().unwrap().value;
            assert_eq!(value, if ok { b"1".to_vec() } else { b"0".to_vec() }, "{i}");
        }
    }
}
