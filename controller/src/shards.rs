//! Shard transitions: the only code that changes a shard's state. Each is a pure function from a
//! shard (and what happened) to the shard as it must be persisted; callers write the result with
//! a compare-and-swap on the revision they read.
//!
//! ```text
//!            assign                 succeed
//! Pending ───────────▶ Assigned ──────────────▶ Succeeded
//!    ▲  ▲                 │  │
//!    │  └── requeue ──────┘  │ fail (retry left)          cancel: any unfinished → Cancelled
//!    └───────────────────────┘                            skip:   Pending → Failed (never ran)
//!                            fail (permanent / no retry left), requeue (attempts used up),
//!                            unschedulable (timed out) → Failed
//! ```

use ferry_model::task::{ShardOp, ShardOutcome};

use crate::records::{ShardRecord, ShardState};

/// A shard handed out this many times without finishing fails, whatever the reason: a shard
/// that kills every worker it lands on must not loop forever.
pub const MAX_ATTEMPTS: u32 = 25;

/// The next attempt of a pending shard, handed to `worker`. `object_key` names the archive a
/// backup attempt writes (each attempt its own).
pub fn assign(
    shard: &ShardRecord,
    worker: &str,
    now: i64,
    object_key: Option<String>,
) -> ShardRecord {
    let mut s = shard.clone();
    s.attempt += 1;
    s.attempt_started_ms = now;
    s.state = ShardState::Assigned;
    s.worker = worker.to_owned();
    s.waiting_since_ms = 0;
    if s.started_at_ms == 0 {
        s.started_at_ms = now;
    }
    if let Some(key) = object_key {
        s.object_key = key;
    }
    s
}

/// The attempt ended well.
pub fn succeed(shard: &ShardRecord, outcome: ShardOutcome, at: i64) -> ShardRecord {
    let mut s = shard.clone();
    s.state = ShardState::Succeeded;
    s.outcome = Some(outcome);
    s.error.clear();
    s.finished_at_ms = at;
    s
}

/// The attempt failed: retried after `backoff_ms` unless the failure is permanent or the shard
/// has failed `max_failures` times.
pub fn fail(
    shard: &ShardRecord,
    error: &str,
    permanent: bool,
    max_failures: u32,
    backoff_ms: impl Fn(u32) -> i64,
    at: i64,
) -> ShardRecord {
    let mut s = shard.clone();
    s.failures += 1;
    s.error = error.to_owned();
    if permanent || s.failures >= max_failures {
        s.state = ShardState::Failed;
        s.finished_at_ms = at;
    } else {
        s.state = ShardState::Pending;
        s.not_before_ms = at + backoff_ms(s.failures);
    }
    s
}

/// Its worker vanished (lease ended): back to pending under a new attempt, unless it was handed
/// out too often already.
pub fn requeue(shard: &ShardRecord, now: i64) -> ShardRecord {
    let mut s = shard.clone();
    let lost = &shard.worker;
    if s.attempt >= MAX_ATTEMPTS {
        s.state = ShardState::Failed;
        s.finished_at_ms = now;
        s.error = format!(
            "handed out {MAX_ATTEMPTS} times without finishing; the last worker ({lost}) vanished"
        );
    } else {
        s.state = ShardState::Pending;
        s.error = format!(
            "worker {lost} stopped responding during attempt {}",
            s.attempt
        );
    }
    s
}

/// Stopped by a cancel (or by its job ending).
pub fn cancel(shard: &ShardRecord, now: i64) -> ShardRecord {
    let mut s = shard.clone();
    s.state = ShardState::Cancelled;
    s.error = "cancelled".into();
    s.finished_at_ms = now;
    s
}

/// Never run, for a reason decided before (its component's `pre_backup` hook failed).
pub fn skip(shard: &ShardRecord, reason: &str, now: i64) -> ShardRecord {
    let mut s = shard.clone();
    s.state = ShardState::Failed;
    s.error = reason.to_owned();
    s.finished_at_ms = now;
    s
}

/// No live worker can take it. The first time, the wait starts (`Some`); once `timeout_ms`
/// passed, it fails saying what it needs (`Some`); in between nothing changes (`None`).
pub fn unschedulable(
    shard: &ShardRecord,
    now: i64,
    timeout_ms: i64,
    wanted: impl FnOnce() -> String,
) -> Option<ShardRecord> {
    let mut s = shard.clone();
    if s.waiting_since_ms == 0 {
        s.waiting_since_ms = now;
        return Some(s);
    }
    if now - s.waiting_since_ms < timeout_ms {
        return None;
    }
    s.state = ShardState::Failed;
    s.finished_at_ms = now;
    s.error = format!(
        "no live worker could take this shard for {} (it needs {})",
        humantime::format_duration(std::time::Duration::from_millis(timeout_ms.max(0) as u64)),
        wanted()
    );
    Some(s)
}

/// A checked volume restore shard, turned into the step that stages its copy.
pub fn to_stage(shard: &ShardRecord) -> ShardRecord {
    let mut s = next_step(shard);
    s.op = ShardOp::Stage;
    s
}

/// A checked (or staged) restore shard, turned into the step that writes; a staged volume
/// keeps where its copy waits. The attempt number goes on, so reports of earlier steps stay
/// fenced off.
pub fn to_restore(shard: &ShardRecord) -> ShardRecord {
    let staged = shard.outcome.as_ref().and_then(|o| o.staged.clone());
    let mut s = next_step(shard);
    s.op = ShardOp::Restore;
    if staged.is_some() {
        s.staged = staged;
    }
    s
}

fn next_step(shard: &ShardRecord) -> ShardRecord {
    let mut s = shard.clone();
    s.state = ShardState::Pending;
    s.failures = 0;
    s.outcome = None;
    s.finished_at_ms = 0;
    s.not_before_ms = 0;
    s
}

/// Whether a pending shard may be handed out now (its retry backoff is over).
pub fn due(shard: &ShardRecord, now: i64) -> bool {
    shard.state == ShardState::Pending && now >= shard.not_before_ms
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use ferry_model::task::Resource;

    /// A pending volume shard for tests.
    pub fn shard(id: &str) -> ShardRecord {
        ShardRecord {
            job_id: "job-1".into(),
            id: id.into(),
            component: "web".into(),
            slot: format!("web/volume/{id}"),
            kind: "volume".into(),
            resource: Resource::Volume {
                path: "/srv/x".into(),
            },
            node: None,
            op: ShardOp::Backup,
            state: ShardState::Pending,
            attempt: 0,
            worker: String::new(),
            failures: 0,
            not_before_ms: 0,
            waiting_since_ms: 0,
            object_key: String::new(),
            expected_sha256: None,
            expected_bytes: None,
            parent_index: None,
            pitr: None,
            outcome: None,
            error: String::new(),
            started_at_ms: 0,
            finished_at_ms: 0,
            missing_ok: false,
            attempt_started_ms: 0,
            staged: None,
        }
    }

    #[test]
    fn assign_bumps_the_attempt_and_keeps_the_first_start() {
        let a = assign(&shard("v"), "w1", 100, Some("k.1".into()));
        assert_eq!(
            (a.state, a.attempt, a.worker.as_str()),
            (ShardState::Assigned, 1, "w1")
        );
        assert_eq!((a.started_at_ms, a.attempt_started_ms), (100, 100));
        assert_eq!(a.object_key, "k.1");
        let b = assign(&requeue(&a, 150), "w2", 200, None);
        assert_eq!(
            (b.attempt, b.started_at_ms, b.attempt_started_ms),
            (2, 100, 200)
        );
        assert_eq!(b.object_key, "k.1", "a restore keeps its archive");
    }

    #[test]
    fn fail_retries_with_backoff_until_the_limit_or_a_permanent_error() {
        let backoff = |n: u32| i64::from(n) * 1000;
        let once = fail(
            &assign(&shard("v"), "w", 0, None),
            "boom",
            false,
            3,
            backoff,
            10,
        );
        assert_eq!(
            (once.state, once.failures, once.not_before_ms),
            (ShardState::Pending, 1, 1010)
        );
        assert!(!due(&once, 1009) && due(&once, 1010));
        let twice = fail(&once, "boom", false, 3, backoff, 20);
        let third = fail(&twice, "boom", false, 3, backoff, 30);
        assert_eq!(
            (third.state, third.finished_at_ms),
            (ShardState::Failed, 30)
        );
        let permanent = fail(&shard("v"), "bad checksum", true, 3, backoff, 5);
        assert_eq!(
            (permanent.state, permanent.error.as_str()),
            (ShardState::Failed, "bad checksum")
        );
    }

    #[test]
    fn requeue_names_the_lost_worker_and_gives_up_eventually() {
        let a = assign(&shard("v"), "w1", 0, None);
        let r = requeue(&a, 5);
        assert_eq!(r.state, ShardState::Pending);
        assert!(
            r.error.contains("w1") && r.error.contains("attempt 1"),
            "{}",
            r.error
        );
        let mut s = a;
        s.attempt = MAX_ATTEMPTS;
        assert_eq!(requeue(&s, 5).state, ShardState::Failed);
    }

    #[test]
    fn cancel_skip_and_restore() {
        assert_eq!(cancel(&shard("v"), 1).state, ShardState::Cancelled);
        let skipped = skip(&shard("v"), "pre_backup hook failed", 2);
        assert_eq!((skipped.state, skipped.attempt), (ShardState::Failed, 0));
        let mut verified = succeed(
            &assign(&shard("v"), "w", 0, None),
            ShardOutcome::default(),
            3,
        );
        verified.op = ShardOp::Verify {
            check_target: true,
            archive: true,
            read_data: false,
        };
        let r = to_restore(&verified);
        assert_eq!(
            (r.op, r.state, r.attempt),
            (ShardOp::Restore, ShardState::Pending, 1)
        );
        assert!(r.outcome.is_none());
    }

    #[test]
    fn a_staged_volume_carries_its_copy_into_the_writing_step() {
        let mut checked = succeed(
            &assign(&shard("v"), "w", 0, None),
            ShardOutcome::default(),
            3,
        );
        checked.op = ShardOp::Verify {
            check_target: true,
            archive: false,
            read_data: false,
        };
        let staging = to_stage(&checked);
        assert_eq!(
            (staging.op, staging.state, staging.attempt),
            (ShardOp::Stage, ShardState::Pending, 1)
        );
        let copy = ferry_model::task::Staged {
            dir: ".ferry-restore-j.2".into(),
            ..Default::default()
        };
        let staged = succeed(
            &assign(&staging, "w", 4, None),
            ShardOutcome {
                staged: Some(copy.clone()),
                ..Default::default()
            },
            5,
        );
        let r = to_restore(&staged);
        assert_eq!(
            (r.op, r.state, r.attempt),
            (ShardOp::Restore, ShardState::Pending, 2)
        );
        assert!(r.outcome.is_none());
        assert_eq!(r.staged, Some(copy));
    }

    #[test]
    fn unschedulable_waits_then_fails_naming_what_it_needs() {
        let s = shard("v");
        let waiting = unschedulable(&s, 1000, 5000, || unreachable!()).unwrap();
        assert_eq!(waiting.waiting_since_ms, 1000);
        assert!(unschedulable(&waiting, 3000, 5000, || unreachable!()).is_none());
        let failed =
            unschedulable(&waiting, 6000, 5000, || "a worker of cluster dc-a".into()).unwrap();
        assert_eq!(failed.state, ShardState::Failed);
        assert!(
            failed.error.contains("dc-a") && failed.error.contains("5s"),
            "{}",
            failed.error
        );
    }
}
