//! Garbage collection of packs, and the check a backup makes at commit.
//!
//! A pack goes only when no committed backup references it (by its packs list) **and** it is
//! older than a grace period **and** older than every running backup (a running backup's own
//! packs are not referenced by any manifest yet). A backup that reuses a pack which a
//! concurrent collection removed finds out at commit ([`missing_packs`]) and fails clearly,
//! instead of committing something that cannot be restored. Nothing takes a lock; memory is one
//! set of pack names (tens of MiB each, so a few thousand per TiB).

use std::collections::HashSet;

use ferry_storage::{ObjectInfo, ObjectStore, StorageError};

use crate::layout;

/// What a collection would do (or did).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Packs to delete, with their sizes.
    pub delete: Vec<(String, u64)>,
    /// Packs kept because a backup references them.
    pub referenced: u64,
    /// Unreferenced packs kept because they are too young (grace period, running backups).
    pub young: u64,
    /// Unfinished uploads of packs (a killed writer's) older than the cutoff, aborted by
    /// [`collect`]; the pure [`plan`] leaves it 0.
    pub aborted: u64,
}

impl GcPlan {
    pub fn bytes(&self) -> u64 {
        self.delete.iter().map(|(_, n)| n).sum()
    }
}

/// What is older than this may go: the grace period before now, and the start of the oldest
/// running backup.
fn cutoff_ms(now_ms: i64, grace_ms: i64, oldest_running_ms: Option<i64>) -> i64 {
    (now_ms - grace_ms).min(oldest_running_ms.unwrap_or(i64::MAX))
}

/// The pure decision. `packs` are the objects under the pack prefix; objects that are not packs
/// (not named by this crate) are never deleted.
pub fn plan(
    pack_prefix: &str,
    packs: &[ObjectInfo],
    referenced: &HashSet<String>,
    now_ms: i64,
    grace_ms: i64,
    oldest_running_ms: Option<i64>,
) -> GcPlan {
    let mut out = GcPlan::default();
    let cutoff = cutoff_ms(now_ms, grace_ms, oldest_running_ms);
    for object in packs {
        let Some(name) = layout::pack_name_of(pack_prefix, &object.key) else {
            continue;
        };
        let created = layout::pack_created_ms(name).unwrap_or(i64::MAX);
        if referenced.contains(name) {
            out.referenced += 1;
        } else if created < cutoff {
            out.delete.push((name.to_owned(), object.size));
        } else {
            out.young += 1;
        }
    }
    out
}

/// Every pack named by the packs lists at `keys` (one per committed volume backup).
pub async fn referenced_packs(
    store: &dyn ObjectStore,
    keys: &[String],
) -> Result<HashSet<String>, StorageError> {
    let mut set = HashSet::new();
    for key in keys {
        for name in read_packs_list(store, key).await? {
            set.insert(name);
        }
    }
    Ok(set)
}

/// Reads one packs list.
pub async fn read_packs_list(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Vec<String>, StorageError> {
    let bytes = store.get_bytes(key, 64 << 20).await?;
    let text = String::from_utf8(bytes).map_err(|_| StorageError::Io {
        key: key.to_owned(),
        source: std::io::Error::other("a packs list is not UTF-8"),
    })?;
    crate::parse_packs_list(&text).map_err(|e| StorageError::Io {
        key: key.to_owned(),
        source: std::io::Error::other(e),
    })
}

/// Packs of the list at `packs_key` that are not in storage (empty when the backup is whole).
pub async fn missing_packs(
    store: &dyn ObjectStore,
    pack_prefix: &str,
    packs_key: &str,
) -> Result<Vec<String>, StorageError> {
    let mut missing = Vec::new();
    for name in read_packs_list(store, packs_key).await? {
        if store
            .head(&layout::pack_key(pack_prefix, &name))
            .await?
            .is_none()
        {
            missing.push(name);
        }
    }
    Ok(missing)
}

/// Lists the packs, plans, and (unless `dry_run`) deletes. Returns the plan.
pub async fn collect(
    store: &dyn ObjectStore,
    pack_prefix: &str,
    referenced: &HashSet<String>,
    grace_ms: i64,
    oldest_running_ms: Option<i64>,
    dry_run: bool,
) -> Result<GcPlan, StorageError> {
    let packs = store.list(pack_prefix).await?;
    let now = layout::now_ms();
    let mut plan = plan(
        pack_prefix,
        &packs,
        referenced,
        now,
        grace_ms,
        oldest_running_ms,
    );
    if !dry_run {
        for (name, _) in &plan.delete {
            store.delete(&layout::pack_key(pack_prefix, name)).await?;
        }
        let cutoff = cutoff_ms(now, grace_ms, oldest_running_ms).max(0) as u64;
        let before = std::time::UNIX_EPOCH + std::time::Duration::from_millis(cutoff);
        plan.aborted = store.abort_stale(pack_prefix, before).await?;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "teams/t/repo/packs/";

    fn pack(ms: i64) -> (String, ObjectInfo) {
        let name = layout::new_pack_name(ms);
        let info = ObjectInfo {
            key: layout::pack_key(P, &name),
            size: 100,
        };
        (name, info)
    }

    #[test]
    fn only_old_unreferenced_packs_go() {
        let hour = 3_600_000;
        let now = 100 * hour;
        let (old_ref, a) = pack(now - 50 * hour);
        let (old_orphan, b) = pack(now - 30 * hour);
        let (young_orphan, c) = pack(now - hour);
        let stray = ObjectInfo {
            key: format!("{P}notes.txt"),
            size: 5,
        };
        let referenced: HashSet<String> = [old_ref].into();
        let plan = plan(P, &[a, b, c, stray], &referenced, now, 24 * hour, None);
        assert_eq!(plan.delete, vec![(old_orphan.clone(), 100)]);
        assert_eq!((plan.referenced, plan.young), (1, 1));
        assert_eq!(plan.bytes(), 100);
        let _ = young_orphan;
    }

    #[test]
    fn a_running_backup_protects_packs_written_since_it_started() {
        let now = 1_000_000_000;
        let (_, made_by_running) = pack(now - 10_000);
        let (older, before) = pack(now - 20_000);
        let plan = plan(
            P,
            &[made_by_running, before],
            &HashSet::new(),
            now,
            0,
            Some(now - 15_000),
        );
        assert_eq!(plan.delete, vec![(older, 100)]);
        assert_eq!(plan.young, 1);
    }
}
