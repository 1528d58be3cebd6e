//! Leader election over the store: the leader key holds the winner's id and URL and is attached
//! to a lease the winner keeps alive. Works on any [`Store`] — on etcd for several controllers,
//! trivially on the embedded store for one.
//!
//! Leadership is announced only after the first successful keep-alive; every keep-alive is
//! bounded by a timeout; when one fails the leader steps down at once (through the `watch`
//! channel every leader-only task listens to), before its lease can have expired on etcd — so
//! two controllers never both believe they lead for longer than one keep-alive timeout.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::keys;
use crate::store::{Condition, LeaseId, Op, Store, get_json};
use crate::timing::Timings;

/// Who a controller is, as other controllers, workers and CLIs see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerInfo {
    pub id: String,
    /// Where to reach it (`http://10.0.0.1:7420`).
    pub url: String,
}

/// This controller's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not leading; the leader if one is known.
    Follower(Option<ControllerInfo>),
    Leader,
}

impl Role {
    /// True when leading.
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader)
    }
}

/// Starts campaigning; the returned channel always holds the current role.
pub fn spawn(
    store: Arc<dyn Store>,
    timings: Timings,
    me: ControllerInfo,
    cancel: CancellationToken,
) -> watch::Receiver<Role> {
    let (tx, rx) = watch::channel(Role::Follower(None));
    tokio::spawn(run(store, timings, me, tx, cancel));
    rx
}

async fn run(
    store: Arc<dyn Store>,
    timings: Timings,
    me: ControllerInfo,
    tx: watch::Sender<Role>,
    cancel: CancellationToken,
) {
    let period = timings.election_ttl() / 3;
    while !cancel.is_cancelled() {
        match campaign(&*store, &timings, &me).await {
            Ok(Some(lease)) => {
                tracing::info!(id = %me.id, url = %me.url, "elected leader");
                tx.send_replace(Role::Leader);
                lead(&*store, lease, &timings, &cancel).await;
                tx.send_replace(Role::Follower(None));
                let _ = store.revoke_lease(lease).await;
                if !cancel.is_cancelled() {
                    tracing::warn!(id = %me.id, "stepped down: leadership lost");
                }
            }
            Ok(None) => {
                let leader = get_json::<ControllerInfo>(&*store, &keys::leader())
                    .await
                    .ok()
                    .flatten()
                    .map(|(l, _)| l);
                tx.send_if_modified(|role| {
                    let new = Role::Follower(leader.clone());
                    let changed = *role != new;
                    *role = new;
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "election: store unavailable");
                tx.send_if_modified(|role| {
                    let changed = role.is_leader();
                    if changed {
                        *role = Role::Follower(None);
                    }
                    changed
                });
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Tries once to take the leader key. Returns the lease when won and confirmed by a keep-alive.
async fn campaign(
    store: &dyn Store,
    timings: &Timings,
    me: &ControllerInfo,
) -> Result<Option<LeaseId>, crate::store::StoreError> {
    if let Some((current, _)) = get_json::<ControllerInfo>(store, &keys::leader()).await?
        && current.id != me.id
    {
        return Ok(None);
    }
    let lease = store.grant_lease(timings.election_ttl()).await?;
    let won = store
        .txn(
            vec![Condition::Absent(keys::leader())],
            vec![Op::Put {
                key: keys::leader(),
                value: serde_json::to_vec(me).unwrap_or_default(),
                lease,
            }],
        )
        .await;
    let confirmed = match won {
        Ok(true) => matches!(
            tokio::time::timeout(timings.election_ttl() / 3, store.keep_alive(lease)).await,
            Ok(Ok(true))
        ),
        _ => false,
    };
    if confirmed {
        return Ok(Some(lease));
    }
    let _ = store.revoke_lease(lease).await;
    won.map(|_| None)
}

/// Keeps the leader lease alive until a keep-alive fails or `cancel` fires.
async fn lead(store: &dyn Store, lease: LeaseId, timings: &Timings, cancel: &CancellationToken) {
    let period = timings.election_ttl() / 3;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match tokio::time::timeout(period, store.keep_alive(lease)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                tracing::warn!("leader lease expired");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "leader keep-alive failed");
                return;
            }
            Err(_) => {
                tracing::warn!("leader keep-alive timed out");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use std::time::Duration;

    async fn wait_role(rx: &mut watch::Receiver<Role>, want: impl Fn(&Role) -> bool) {
        tokio::time::timeout(Duration::from_secs(20), async {
            while !want(&rx.borrow_and_update()) {
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("role did not change in time");
    }

    async fn one_leader_then_failover(store: Arc<dyn Store>) {
        let timings = Timings::new(Duration::from_millis(300));
        let info = |n: &str| ControllerInfo {
            id: n.into(),
            url: format!("http://{n}"),
        };
        let (c1, c2) = (CancellationToken::new(), CancellationToken::new());
        let mut r1 = spawn(store.clone(), timings, info("a"), c1.clone());
        wait_role(&mut r1, Role::is_leader).await;
        let mut r2 = spawn(store.clone(), timings, info("b"), c2.clone());
        wait_role(&mut r2, |r| *r == Role::Follower(Some(info("a")))).await;
        assert!(r1.borrow().is_leader());
        // The leader stops (as if killed): the follower takes over within the lease TTL.
        c1.cancel();
        let started = std::time::Instant::now();
        wait_role(&mut r2, Role::is_leader).await;
        assert!(started.elapsed() <= timings.election_ttl() * 2 + Duration::from_secs(1));
        c2.cancel();
    }

    #[tokio::test]
    async fn embedded_election_fails_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        one_leader_then_failover(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn etcd_election_fails_over() {
        let etcd = crate::store::etcd::testing::TestEtcd::start().await;
        let store = crate::store::etcd::EtcdStore::connect(std::slice::from_ref(&etcd.url))
            .await
            .unwrap();
        one_leader_then_failover(Arc::new(store)).await;
    }
}
