//! Every key the controller keeps in its store, in one place, under one root prefix.
//!
//! ```text
//! /ferry/v1/apps/TEAM/APP                       app record (spec + metadata)
//! /ferry/v1/storage/NAME                        storage location
//! /ferry/v1/jobs/ID                             job record (intent, phase and final state)
//! /ferry/v1/active/ID                           set while job ID is not final: what a pass reads
//! /ferry/v1/active-index                        set once the active index covers every job
//! /ferry/v1/shards/JOB/SHARD                    shard record (state, attempt = fencing token)
//! /ferry/v1/workers/WORKER                      worker session, attached to the worker's lease
//! /ferry/v1/assignments/WORKER/JOB/SHARD        a shard handed to a worker, attached to its lease
//! /ferry/v1/leader                              the elected controller, attached to its lease
//! /ferry/v1/schedules/TEAM/NAME                 a schedule and its next run
//! /ferry/v1/tokens/NAME                         a token: what it grants and its SHA-256, never the secret
//! /ferry/v1/bootstrapped                        set by the first start (which wrote the admin token)
//! /ferry/v1/installation                        this installation's id (written into its manifests)
//! /ferry/v1/signing-key                         this installation's Ed25519 key (signs its manifests)
//! /ferry/v1/trust/NAME                          another installation whose manifests are trusted
//! /ferry/v1/audit/MS-RAND                       one audit entry; MS = 13-digit time, so keys sort by time
//! ```
//!
//! Leased keys vanish with their lease, so a dead worker's sessions and assignments disappear
//! by themselves and the reconciler sees the gap. Every variable part is a validated name
//! (`[A-Za-z0-9_.-]`), so `/` only ever separates parts.

/// The root of every key.
pub const ROOT: &str = "/ferry/v1/";

/// `/ferry/v1/apps/TEAM/APP`
pub fn app(team: &str, app: &str) -> String {
    format!("{ROOT}apps/{team}/{app}")
}

/// Prefix of every team's apps.
pub fn all_apps() -> String {
    format!("{ROOT}apps/")
}

/// Prefix of a team's apps.
pub fn apps_of_team(team: &str) -> String {
    format!("{ROOT}apps/{team}/")
}

/// `/ferry/v1/storage/NAME`
pub fn storage(name: &str) -> String {
    format!("{ROOT}storage/{name}")
}

/// Prefix of all storage locations.
pub fn storages() -> String {
    format!("{ROOT}storage/")
}

/// `/ferry/v1/jobs/ID`
pub fn job(id: &str) -> String {
    format!("{ROOT}jobs/{id}")
}

/// Prefix of all jobs.
pub fn jobs() -> String {
    format!("{ROOT}jobs/")
}

/// `/ferry/v1/repo-heads/TEAM/APP/STORAGE`: for each volume slot of an app, its newest index in
/// a location (the parent of the next incremental backup), so planning a backup reads one key
/// instead of the job history.
pub fn repo_heads(team: &str, app: &str, storage: &str) -> String {
    format!("{ROOT}repo-heads/{team}/{app}/{storage}")
}

/// `/ferry/v1/active/ID`
pub fn active_job(id: &str) -> String {
    format!("{ROOT}active/{id}")
}

/// Prefix of the active-job index.
pub fn active_jobs() -> String {
    format!("{ROOT}active/")
}

/// `/ferry/v1/active-index`
pub fn active_index_built() -> String {
    format!("{ROOT}active-index")
}

/// `/ferry/v1/shards/JOB/SHARD`
pub fn shard(job: &str, shard: &str) -> String {
    format!("{ROOT}shards/{job}/{shard}")
}

/// Prefix of one job's shards.
pub fn shards_of_job(job: &str) -> String {
    format!("{ROOT}shards/{job}/")
}

/// `/ferry/v1/workers/WORKER`
pub fn worker(id: &str) -> String {
    format!("{ROOT}workers/{id}")
}

/// Prefix of all worker sessions.
pub fn workers() -> String {
    format!("{ROOT}workers/")
}

/// `/ferry/v1/assignments/WORKER/JOB/SHARD`
pub fn assignment(worker: &str, job: &str, shard: &str) -> String {
    format!("{ROOT}assignments/{worker}/{job}/{shard}")
}

/// Prefix of every assignment.
pub fn assignments() -> String {
    format!("{ROOT}assignments/")
}

/// Prefix of one worker's assignments.
pub fn assignments_of_worker(worker: &str) -> String {
    format!("{ROOT}assignments/{worker}/")
}

/// `/ferry/v1/schedules/TEAM/NAME`
pub fn schedule(team: &str, name: &str) -> String {
    format!("{ROOT}schedules/{team}/{name}")
}

/// Prefix of every schedule (`None`) or of a team's.
pub fn schedules(team: Option<&str>) -> String {
    match team {
        Some(t) => format!("{ROOT}schedules/{t}/"),
        None => format!("{ROOT}schedules/"),
    }
}

/// `/ferry/v1/tokens/NAME`
pub fn token(name: &str) -> String {
    format!("{ROOT}tokens/{name}")
}

/// Prefix of every token.
pub fn tokens() -> String {
    format!("{ROOT}tokens/")
}

/// `/ferry/v1/installation`
pub fn installation() -> String {
    format!("{ROOT}installation")
}

/// `/ferry/v1/bootstrapped`
pub fn bootstrapped() -> String {
    format!("{ROOT}bootstrapped")
}

/// `/ferry/v1/audit/MS-RAND`: 13 digits of milliseconds sort like the times they are.
pub fn audit_entry(at_ms: i64, rand: &str) -> String {
    format!("{ROOT}audit/{:013}-{rand}", at_ms.max(0))
}

/// The first audit key at or after `at_ms`.
pub fn audit_from(at_ms: i64) -> String {
    format!("{ROOT}audit/{:013}", at_ms.max(0))
}

/// Prefix of every audit entry.
pub fn audit() -> String {
    format!("{ROOT}audit/")
}

/// `/ferry/v1/leader`
pub fn leader() -> String {
    format!("{ROOT}leader")
}

/// Parses an assignment key into (worker, job, shard).
pub fn parse_assignment(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(ROOT)?.strip_prefix("assignments/")?;
    let mut parts = rest.splitn(3, '/');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// `/ferry/v1/signing-key`
pub fn signing_key() -> String {
    format!("{ROOT}signing-key")
}

/// `/ferry/v1/trust/NAME`
pub fn trust(name: &str) -> String {
    format!("{ROOT}trust/{name}")
}

/// Prefix of every trusted installation.
pub fn trust_all() -> String {
    format!("{ROOT}trust/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_keys_round_trip() {
        let k = assignment("w1", "shop-1", "api.volume.up");
        assert_eq!(
            parse_assignment(&k),
            Some(("w1", "shop-1", "api.volume.up"))
        );
        assert_eq!(parse_assignment(&job("x")), None);
        assert!(k.starts_with(&assignments_of_worker("w1")));
    }

    #[test]
    fn audit_keys_sort_by_time() {
        assert!(audit_entry(999, "z") < audit_entry(1000, "a"));
        assert!(audit_from(1000) <= audit_entry(1000, "a"));
        assert!(audit_entry(999, "z") < audit_from(1000));
    }
}
