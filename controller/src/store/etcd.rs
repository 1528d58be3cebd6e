//! The etcd store: production and high availability. A thin mapping of the [`Store`] trait onto
//! etcd's KV, Txn and Lease APIs — etcd already has revisions, compare-and-swap and leases with
//! attached keys, which is why the trait is shaped after it.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp,
};

use super::{Condition, KeyValue, LeaseId, Op, Store, StoreError};

/// Keys per read of a listing.
const LIST_PAGE: usize = 500;

/// Every etcd call gives up after this long, so a dead etcd never hangs a caller.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A store in etcd.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdStore({})", self.endpoints.join(","))
    }
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    // etcd refusing a request (too many operations, a request too large) is not an outage.
    if let etcd_client::Error::GRpcStatus(status) = &e
        && status.code() == tonic::Code::InvalidArgument
    {
        return StoreError::Refused(format!("etcd: {}", status.message()));
    }
    StoreError::Unavailable(format!("etcd: {e}"))
}

/// Maps a put error: a dead lease is its own error, as in the embedded store.
fn txn_error(e: etcd_client::Error, ops: &[Op]) -> StoreError {
    if e.to_string().contains("requested lease not found") {
        let lease = ops
            .iter()
            .find_map(|op| match op {
                Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                _ => None,
            })
            .unwrap_or(0);
        return StoreError::LeaseNotFound(lease);
    }
    unavailable(e)
}

/// How to reach a secured etcd: TLS (a CA, and a client certificate when etcd checks them) and
/// etcd's own user/password authentication. The password is read by the caller from a reference
/// (an environment variable or a file), never given on a command line.
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    /// PEM CA certificate for `https://` endpoints; `None`: the system's roots.
    pub ca_cert: Option<Vec<u8>>,
    /// PEM client certificate and key, for an etcd started with `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("ca_cert", &self.ca_cert.is_some())
            .field("client_cert", &self.identity.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl EtcdStore {
    /// Connects to the cluster. The connection is lazy and reconnects by itself: an etcd that is
    /// down at start-up or later makes calls fail with `Unavailable` until it is back.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_with(endpoints, &EtcdSecurity::default()).await
    }

    /// Connects with TLS and/or a user, as `security` says.
    pub async fn connect_with(
        endpoints: &[String],
        security: &EtcdSecurity,
    ) -> Result<EtcdStore, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), CALL_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if endpoints.iter().any(|e| e.starts_with("https://")) {
            let mut tls = etcd_client::TlsOptions::new();
            tls = match &security.ca_cert {
                Some(pem) => tls.ca_certificate(etcd_client::Certificate::from_pem(pem)),
                None => tls.with_native_roots(),
            };
            if let Some((cert, key)) = &security.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = &security.user {
            options = options.with_user(user.clone(), password.clone());
        }
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(unavailable)?;
        Ok(EtcdStore {
            client,
            endpoints: endpoints.to_vec(),
        })
    }

    fn kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: kv
                .key_str()
                .map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    reason: e.to_string(),
                })?
                .to_owned(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        })
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(unavailable)?;
        resp.kvs().first().map(Self::kv).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        // Page by page: one response of a large prefix would pass etcd's and gRPC's size limits.
        let mut out = Vec::new();
        let mut from = prefix.to_owned();
        loop {
            let page = self.list_page(prefix, &from, LIST_PAGE).await?;
            let full = page.len() == LIST_PAGE;
            if let Some(last) = page.last() {
                from = format!("{}\0", last.key);
            }
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let start = if from < prefix { prefix } else { from };
        // The end of the prefix's range: its last byte plus one (names never end in 0xff).
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(limit as i64)
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let resp = self
            .client
            .clone()
            .get(start, Some(options))
            .await
            .map_err(unavailable)?;
        resp.kvs().iter().map(Self::kv).collect()
    }

    async fn txn(&self, conditions: Vec<Condition>, ops: Vec<Op>) -> Result<bool, StoreError> {
        let compares: Vec<Compare> = conditions
            .iter()
            .map(|c| match c {
                Condition::Absent(k) => Compare::version(k.as_str(), CompareOp::Equal, 0),
                Condition::Exists(k) => Compare::version(k.as_str(), CompareOp::Greater, 0),
                Condition::ModRevision(k, rev) => {
                    Compare::mod_revision(k.as_str(), CompareOp::Equal, *rev)
                }
            })
            .collect();
        let txn_ops: Vec<TxnOp> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let options = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
                    TxnOp::put(key.as_str(), value.clone(), options)
                }
                Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(txn_ops);
        let resp = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| txn_error(e, &ops))?;
        Ok(resp.succeeded())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // etcd counts in whole seconds; round up so a lease never lives shorter than asked.
        let secs = ttl.as_millis().div_ceil(1000).max(1) as i64;
        let resp = self
            .client
            .clone()
            .lease_grant(secs, None)
            .await
            .map_err(unavailable)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError> {
        let gone = |e: &etcd_client::Error| e.to_string().contains("lease not found");
        let (mut keeper, mut stream) = match self.client.clone().lease_keep_alive(lease).await {
            Ok(pair) => pair,
            Err(e) if gone(&e) => return Ok(false),
            Err(e) => return Err(unavailable(e)),
        };
        keeper.keep_alive().await.map_err(unavailable)?;
        match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(resp))) => Ok(resp.ttl() > 0),
            Ok(Ok(None)) => Err(StoreError::Unavailable(
                "etcd closed the keep-alive stream".into(),
            )),
            Ok(Err(e)) if gone(&e) => Ok(false),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(StoreError::Unavailable("etcd keep-alive timed out".into())),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("requested lease not found") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// A real etcd for tests: Debian's `etcd` binary on free ports with its own data dir.
#[cfg(test)]
pub mod testing {
    /// A plain-HTTP etcd for the store's own tests (the shared launcher), killed on drop.
    pub struct TestEtcd {
        pub url: String,
        _etcd: ferry_test_support::Etcd,
        _dir: tempfile::TempDir,
    }

    impl TestEtcd {
        /// Starts etcd and waits until it serves. Fails loudly when etcd is not installed.
        pub async fn start() -> TestEtcd {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().to_path_buf();
            let etcd =
                tokio::task::spawn_blocking(move || ferry_test_support::Etcd::start_plain(&path))
                    .await
                    .expect("starting etcd");
            TestEtcd {
                url: etcd.url.clone(),
                _etcd: etcd,
                _dir: dir,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn etcd_store_conforms() {
        let etcd = testing::TestEtcd::start().await;
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.url))
            .await
            .unwrap();
        super::super::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn oversized_transactions_are_refused_not_unavailable_and_big_listings_page() {
        let etcd = testing::TestEtcd::start().await;
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.url))
            .await
            .unwrap();
        let ops: Vec<Op> = (0..200)
            .map(|i| Op::put_json(format!("/big/{i:04}"), &i))
            .collect();
        match store.txn(vec![], ops).await {
            Err(StoreError::Refused(m)) => assert!(m.contains("too many operations"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        for chunk in (0..1200).collect::<Vec<u32>>().chunks(100) {
            let ops = chunk
                .iter()
                .map(|i| Op::put_json(format!("/big/{i:04}"), &i))
                .collect();
            store.txn(vec![], ops).await.unwrap();
        }
        let all = store.list("/big/").await.unwrap();
        assert_eq!(all.len(), 1200);
        assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    }
}
