//! The audit trail: every mutating call and every denied one, with the token's name, team and
//! role, the call, its target and how it ended — kept in the store for a retention period (the
//! leader deletes older entries) and written as a structured log line (`target: ferry::audit`).
//! Denied calls without a valid token are stored at a bounded rate, so nobody can fill the store
//! by knocking; every one of them is still logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_model::now_ms;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::error::Result;
use crate::keys;
use crate::store::{KeyValue, Op, Store};

/// One audit entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: i64,
    /// The token's name; empty when the call carried no valid token.
    pub token: String,
    /// The team the call was about (or the token's team when it never got that far); empty for
    /// installation-wide calls.
    pub team: String,
    pub role: String,
    pub call: String,
    pub target: String,
    /// `ok`, or the gRPC code.
    pub result: String,
    pub message: String,
    pub peer: String,
}

/// Stored denials of calls without a valid token, per second.
const ANONYMOUS_DENIALS_PER_SECOND: u32 = 20;
/// Entries read per store page when listing or pruning.
const PAGE: usize = 500;
/// Most entries one listing returns.
pub const MAX_LIST: usize = 10_000;

/// Rate limit of stored anonymous denials.
#[derive(Debug)]
pub struct AnonymousBudget(Mutex<(Instant, u32)>);

impl Default for AnonymousBudget {
    fn default() -> Self {
        AnonymousBudget(Mutex::new((Instant::now(), 0)))
    }
}

impl AnonymousBudget {
    /// True when one more may be stored this second.
    fn take(&self) -> bool {
        let Ok(mut state) = self.0.lock() else {
            return false;
        };
        if state.0.elapsed() >= Duration::from_secs(1) {
            *state = (Instant::now(), 0);
        }
        state.1 += 1;
        state.1 <= ANONYMOUS_DENIALS_PER_SECOND
    }
}

/// Records an entry: a log line always, the store when it answers.
pub async fn record(ctx: &Context, entry: AuditRecord) {
    tracing::info!(target: "ferry::audit", token = %entry.token, team = %entry.team,
        role = %entry.role, call = %entry.call, target_object = %entry.target,
        result = %entry.result, message = %entry.message, peer = %entry.peer, "audit");
    if entry.token.is_empty() && !ctx.audit_budget.take() {
        return;
    }
    let rand = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let key = keys::audit_entry(entry.at_ms, rand);
    if let Err(e) = ctx.store.txn(vec![], vec![Op::put_json(key, &entry)]).await {
        tracing::warn!(error = %e, call = %entry.call, "audit entry not stored");
    }
}

/// What `audit list` asks for.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// `None`: every team.
    pub team: Option<String>,
    pub since_ms: i64,
    pub token: Option<String>,
    pub limit: usize,
}

impl AuditFilter {
    fn matches(&self, e: &AuditRecord) -> bool {
        self.team.as_ref().is_none_or(|t| *t == e.team)
            && self.token.as_ref().is_none_or(|t| *t == e.token)
    }
}

/// Entries since a time, oldest first, read page by page.
pub async fn list(store: &dyn Store, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let limit = filter.limit.clamp(1, MAX_LIST);
    let prefix = keys::audit();
    let mut from = keys::audit_from(filter.since_ms);
    let mut out = Vec::new();
    loop {
        let page = store.list_page(&prefix, &from, PAGE).await?;
        let Some(last) = page.last() else { break };
        from = format!("{}\0", last.key);
        let full = page.len() == PAGE;
        for kv in page {
            let Ok(entry) = kv.decode::<AuditRecord>() else {
                continue; // an undecodable entry is skipped, not fatal
            };
            if filter.matches(&entry) {
                out.push(entry);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        if !full {
            break;
        }
    }
    Ok(out)
}

/// Deletes entries older than `before_ms`, at most a few pages per call; returns how many.
pub async fn prune(store: &dyn Store, before_ms: i64) -> Result<usize> {
    let prefix = keys::audit();
    let end = keys::audit_from(before_ms);
    let mut deleted = 0;
    for _ in 0..8 {
        let page: Vec<KeyValue> = store.list_page(&prefix, &prefix, 100).await?;
        let old: Vec<Op> = page
            .into_iter()
            .filter(|kv| kv.key < end)
            .map(|kv| Op::delete(kv.key))
            .collect();
        if old.is_empty() {
            break;
        }
        deleted += old.len();
        store.txn(vec![], old).await?;
    }
    Ok(deleted)
}

/// On the leader: deletes entries past the retention, now and then.
pub async fn run(ctx: std::sync::Arc<Context>, cancel: CancellationToken) {
    loop {
        let cutoff = now_ms() - ctx.settings.audit_retention.as_millis() as i64;
        match prune(&*ctx.store, cutoff).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "audit entries past retention deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the audit trail failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ctx.timings.gc_interval()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn entry(at_ms: i64, token: &str, team: &str) -> AuditRecord {
        AuditRecord {
            at_ms,
            token: token.into(),
            team: team.into(),
            call: "CreateBackup".into(),
            result: "ok".into(),
            ..Default::default()
        }
    }

    async fn put(store: &dyn Store, e: &AuditRecord, rand: &str) {
        store
            .txn(
                vec![],
                vec![Op::put_json(keys::audit_entry(e.at_ms, rand), e)],
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn list_filters_by_time_team_and_token_and_prune_keeps_the_recent() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        for i in 0..1200i64 {
            let team = if i % 2 == 0 { "a" } else { "b" };
            put(&store, &entry(1000 + i, &format!("t{}", i % 3), team), "x").await;
        }
        let all = list(
            &store,
            &AuditFilter {
                limit: MAX_LIST,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(all.len(), 1200);
        assert!(all.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let since = list(
            &store,
            &AuditFilter {
                since_ms: 2100,
                team: Some("a".into()),
                limit: MAX_LIST,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(since.len(), 50);
        assert!(since.iter().all(|e| e.team == "a" && e.at_ms >= 2100));
        let by_token = list(
            &store,
            &AuditFilter {
                token: Some("t1".into()),
                limit: 7,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(by_token.len(), 7);
        assert!(by_token.iter().all(|e| e.token == "t1"));
        let mut total = 0;
        loop {
            let n = prune(&store, 2000).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 1000);
        let left = list(
            &store,
            &AuditFilter {
                limit: MAX_LIST,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(left.len(), 200);
        assert!(left.iter().all(|e| e.at_ms >= 2000));
    }

    #[test]
    fn anonymous_denials_are_stored_at_a_bounded_rate() {
        let budget = AnonymousBudget::default();
        let stored = (0..100).filter(|_| budget.take()).count();
        assert_eq!(stored, ANONYMOUS_DENIALS_PER_SECOND as usize);
    }
}
