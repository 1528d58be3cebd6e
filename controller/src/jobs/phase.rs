//! A job as a procedure: its persisted [`Phase`], and the pure decision [`next`] of what to do
//! now, from the job, its shards and what the reconciler saw around it. The reconciler applies
//! the [`Step`] with compare-and-swap writes; every step is idempotent, so a new leader (or a
//! pass that died half-way) simply decides again.
//!
//! ```text
//! backup:  PreHooks → Running → PostHooks → Committing → Done
//!          (no pre hooks: Running; no post hooks: Committing; a cancel skips to PostHooks)
//! restore: [AwaitingBackup (migration) | SafetyBackup (--overwrite)] → Verifying → [Staging]
//!          → Writing → Committing → Done   (a failed check or stage ends it before Writing)
//! verify:  Verifying → Done
//! stream:  Running (until cancelled, or every stream failed for good) → Done
//! ```
//!
//! A job is written after its shards (in batches: etcd takes at most 128 operations per
//! transaction), so a job record is always whole; shards whose job never got written are
//! invisible.

use serde::{Deserialize, Serialize};

use ferry_model::task::{HookWhen, ShardOp};

use crate::records::{JobKind, JobRecord, JobState, ShardRecord, ShardState};

/// Where a job is in its procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Phase {
    /// A migration's restore: waits for its backup, then gets its shards from the manifest.
    AwaitingBackup,
    /// An in-place restore: writes nothing until the safety backup of its target completed.
    SafetyBackup,
    /// Backup: the components' `pre_backup` hooks run.
    PreHooks,
    /// Restore and verify: every archive (and, for a restore, every target) is checked; a
    /// restore's volume archives are checked while staged.
    Verifying,
    /// Restore: every volume is extracted into a staging directory of its target, its archive's
    /// checksum checked on the way; nothing is visible yet.
    Staging,
    /// Backup: the data shards run.
    #[default]
    Running,
    /// Restore: the data is written.
    Writing,
    /// Backup: the components' `post_backup` hooks run (also after a failure or a cancel).
    PostHooks,
    /// Storage and catalog work off the pass: a backup's manifest, a restore's app.
    Committing,
    /// Ended; the job's state says how.
    Done,
}

impl Phase {
    /// Whether a shard takes part in this phase (is handed out in it).
    pub fn admits(self, shard: &ShardRecord) -> bool {
        let hook = shard.resource.hook();
        match self {
            Phase::PreHooks => hook == Some(HookWhen::PreBackup),
            Phase::PostHooks => hook == Some(HookWhen::PostBackup),
            Phase::Running | Phase::Verifying | Phase::Writing => hook.is_none(),
            Phase::Staging => matches!(shard.resource, ferry_model::task::Resource::Volume { .. }),
            _ => false,
        }
    }

    /// The phase a new job starts in, once its shards are written.
    pub fn first(job: &JobRecord, shards: &[ShardRecord], awaits_backup: bool) -> Phase {
        match job.kind {
            JobKind::Backup if shards.iter().any(|s| Phase::PreHooks.admits(s)) => Phase::PreHooks,
            JobKind::Backup => Phase::Running,
            JobKind::Restore if awaits_backup => Phase::AwaitingBackup,
            JobKind::Restore if job.safety_backup.is_some() => Phase::SafetyBackup,
            JobKind::Restore | JobKind::Verify => Phase::Verifying,
            JobKind::Stream => Phase::Running,
        }
    }
}

/// A job this one waits for, as the reconciler found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// There is no such job (any more).
    Gone,
    State(JobState),
}

/// What the reconciler saw beside the job's own records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The job this one waits for (AwaitingBackup, SafetyBackup), if any.
    pub awaited: Option<Awaited>,
    /// Work for this job is running off the pass.
    pub busy: bool,
}

/// Off-pass work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A migration's restore: read its backup's manifest and write the restore's shards.
    LoadShards,
    /// End a backup (manifest, stray objects; or remove everything of a cancelled one) or a
    /// restore (register the app).
    Commit,
}

/// Which unfinished shards a stop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Those of the current phase.
    Phase,
    /// Every unfinished shard.
    All,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The job was just created: mark it running.
    Start,
    /// Nothing to do but show why.
    Wait(String),
    /// Move on to another phase.
    Enter(Phase, String),
    /// Hand out what is due in this phase (re-queueing shards whose worker vanished).
    Dispatch,
    /// Fail shards that cannot run, with the reason.
    Skip(Vec<String>, String),
    /// Turn verified shards into restore shards (a batch per write).
    Convert,
    /// Cancel unfinished shards.
    Stop(Which),
    /// Run work off the pass.
    Work(Work),
    /// End the job.
    Finish(JobState, String),
}

/// `shard: error; …` of every shard that did not succeed.
pub fn shard_errors<'a>(shards: impl IntoIterator<Item = &'a ShardRecord>) -> String {
    shards
        .into_iter()
        .filter(|s| s.state != ShardState::Succeeded)
        .map(|s| format!("{}: {}", s.id, s.error))
        .collect::<Vec<_>>()
        .join("; ")
}

fn in_phase(phase: Phase, shards: &[ShardRecord]) -> impl Iterator<Item = &ShardRecord> {
    shards.iter().filter(move |s| phase.admits(s))
}

fn all_final<'a>(mut shards: impl Iterator<Item = &'a ShardRecord>) -> bool {
    shards.all(|s| s.state.is_final())
}

/// The next step of a job.
pub fn next(job: &JobRecord, shards: &[ShardRecord], seen: &Seen) -> Step {
    let phase = job.phase;
    if job.state == JobState::Pending {
        return Step::Start;
    }
    let unfinished = |which: Which| {
        shards
            .iter()
            .any(|s| !s.state.is_final() && (which == Which::All || phase.admits(s)))
    };
    match (job.kind, phase) {
        (_, Phase::Done) => Step::Wait(job.message.clone()),
        (_, Phase::Committing) if seen.busy => Step::Wait(job.message.clone()),
        (_, Phase::Committing) => Step::Work(Work::Commit),

        (JobKind::Backup, Phase::PreHooks | Phase::Running) if job.cancel_requested => {
            if unfinished(Which::Phase) {
                Step::Stop(Which::Phase)
            } else {
                after_data(shards, "cancelled; running post_backup hooks")
            }
        }
        (JobKind::Backup, Phase::PreHooks) => {
            if all_final(in_phase(phase, shards)) {
                Step::Enter(Phase::Running, String::new())
            } else {
                Step::Dispatch
            }
        }
        (JobKind::Backup, Phase::Running) => {
            let failed_pre: Vec<&str> = in_phase(Phase::PreHooks, shards)
                .filter(|s| s.state != ShardState::Succeeded)
                .map(|s| s.component.as_str())
                .collect();
            let skip: Vec<String> = in_phase(phase, shards)
                .filter(|s| s.state == ShardState::Pending && s.attempt == 0)
                .filter(|s| failed_pre.contains(&s.component.as_str()))
                .map(|s| s.id.clone())
                .collect();
            if !skip.is_empty() {
                return Step::Skip(
                    skip,
                    "not run: the component's pre_backup hook failed".into(),
                );
            }
            if all_final(in_phase(phase, shards)) {
                after_data(shards, "")
            } else {
                Step::Dispatch
            }
        }
        (JobKind::Backup, Phase::PostHooks) => {
            if all_final(in_phase(phase, shards)) {
                Step::Enter(Phase::Committing, String::new())
            } else {
                Step::Dispatch
            }
        }

        (JobKind::Restore, Phase::AwaitingBackup) => {
            if job.cancel_requested {
                return Step::Finish(
                    JobState::Cancelled,
                    "cancelled; nothing was restored".into(),
                );
            }
            let backup = job
                .restore
                .as_ref()
                .map(|r| r.backup_id.as_str())
                .unwrap_or_default();
            match seen.awaited {
                Some(Awaited::State(JobState::Completed)) if seen.busy => {
                    Step::Wait(format!("backup {backup} completed; reading its manifest"))
                }
                Some(Awaited::State(JobState::Completed)) => Step::Work(Work::LoadShards),
                Some(Awaited::State(s)) if !s.is_final() => {
                    Step::Wait(format!("waiting for backup {backup}"))
                }
                Some(Awaited::State(s)) => Step::Finish(
                    JobState::Failed,
                    format!("the migration's backup {backup} ended {s:?}; nothing was restored"),
                ),
                Some(Awaited::Gone) | None => Step::Finish(
                    JobState::Failed,
                    format!("the migration's backup {backup} is gone; nothing was restored"),
                ),
            }
        }
        (JobKind::Restore, Phase::SafetyBackup) => {
            if job.cancel_requested {
                return Step::Finish(
                    JobState::Cancelled,
                    "cancelled; nothing was restored".into(),
                );
            }
            let safety = job.safety_backup.clone().unwrap_or_default();
            match seen.awaited {
                Some(Awaited::State(JobState::Completed)) => {
                    Step::Enter(Phase::Verifying, String::new())
                }
                Some(Awaited::State(s)) if !s.is_final() => Step::Wait(format!(
                    "waiting for the safety backup {safety} of the target"
                )),
                Some(Awaited::State(s)) => Step::Finish(
                    JobState::Failed,
                    format!("the safety backup {safety} ended {s:?}; nothing was restored"),
                ),
                Some(Awaited::Gone) | None => Step::Finish(
                    JobState::Failed,
                    format!("the safety backup {safety} is missing; nothing was restored"),
                ),
            }
        }
        (
            JobKind::Restore | JobKind::Verify,
            Phase::Verifying | Phase::Staging | Phase::Writing,
        ) if job.cancel_requested => {
            if unfinished(Which::All) {
                Step::Stop(Which::All)
            } else if phase == Phase::Writing {
                Step::Finish(
                    JobState::Cancelled,
                    "cancelled; the target may hold part of the restored data".into(),
                )
            } else {
                let nothing = if job.kind == JobKind::Restore {
                    "cancelled; nothing was restored"
                } else {
                    "cancelled"
                };
                Step::Finish(JobState::Cancelled, nothing.into())
            }
        }
        (JobKind::Restore | JobKind::Verify, Phase::Verifying) => {
            if !all_final(shards.iter()) {
                return Step::Dispatch;
            }
            let bad = shards
                .iter()
                .filter(|s| s.state != ShardState::Succeeded)
                .count();
            match (job.kind, bad) {
                (JobKind::Restore, 0) if shards.iter().any(|s| Phase::Staging.admits(s)) => {
                    Step::Enter(
                        Phase::Staging,
                        "every target checked; staging the volumes".into(),
                    )
                }
                (JobKind::Restore, 0) => {
                    Step::Enter(Phase::Writing, "every archive verified; restoring".into())
                }
                (JobKind::Restore, _) => Step::Finish(
                    JobState::Failed,
                    format!(
                        "nothing was restored: the check before writing failed: {}",
                        shard_errors(shards)
                    ),
                ),
                (_, 0) => Step::Finish(
                    JobState::Completed,
                    format!("all {} archives match their checksums", shards.len()),
                ),
                (_, bad) => Step::Finish(
                    JobState::Failed,
                    format!(
                        "{bad} of {} archives are bad: {}",
                        shards.len(),
                        shard_errors(shards)
                    ),
                ),
            }
        }
        (JobKind::Restore, Phase::Staging) => {
            let volumes = || in_phase(phase, shards);
            if volumes().any(|s| matches!(s.op, ShardOp::Verify { .. })) {
                Step::Convert
            } else if !all_final(volumes()) {
                Step::Dispatch
            } else if volumes().all(|s| s.state == ShardState::Succeeded) {
                Step::Enter(Phase::Writing, "every archive verified; restoring".into())
            } else {
                Step::Finish(
                    JobState::Failed,
                    format!(
                        "nothing was restored: staging failed: {}",
                        shard_errors(volumes())
                    ),
                )
            }
        }
        (JobKind::Restore, Phase::Writing) => {
            if shards
                .iter()
                .any(|s| matches!(s.op, ShardOp::Verify { .. } | ShardOp::Stage))
            {
                Step::Convert
            } else if all_final(shards.iter()) {
                Step::Enter(Phase::Committing, String::new())
            } else {
                Step::Dispatch
            }
        }
        (JobKind::Stream, Phase::Running) if job.cancel_requested => {
            if unfinished(Which::All) {
                Step::Stop(Which::All)
            } else {
                Step::Finish(JobState::Cancelled, "stopped".into())
            }
        }
        (JobKind::Stream, Phase::Running) => {
            // A stream shard ends only by failing for good (its retries used up); the job then
            // ends, and `streams.rs` starts a new one, which resumes from what was archived.
            // A release job's shards end when they let go of their slots.
            let releasing = shards.iter().all(|s| s.op == ShardOp::Release);
            if releasing && all_final(shards.iter()) {
                let bad = shard_errors(shards);
                if bad.is_empty() {
                    Step::Finish(JobState::Completed, "released".into())
                } else {
                    Step::Finish(JobState::Failed, format!("not released: {bad}"))
                }
            } else if all_final(shards.iter()) {
                Step::Finish(
                    JobState::Failed,
                    format!("every stream stopped: {}", shard_errors(shards)),
                )
            } else {
                Step::Dispatch
            }
        }
        (kind, phase) => Step::Finish(
            JobState::Failed,
            format!("a {} job cannot be in phase {phase:?}", kind.as_str()),
        ),
    }
}

/// After a backup's data shards: its post hooks, or the commit.
fn after_data(shards: &[ShardRecord], message: &str) -> Step {
    if shards.iter().any(|s| Phase::PostHooks.admits(s)) {
        Step::Enter(Phase::PostHooks, message.into())
    } else {
        Step::Enter(Phase::Committing, message.into())
    }
}

/// How a backup ends, from its data shards: every one succeeded, some, or none.
pub fn backup_outcome(job: &JobRecord, shards: &[ShardRecord]) -> (JobState, String) {
    let data: Vec<&ShardRecord> = shards
        .iter()
        .filter(|s| s.resource.hook().is_none())
        .collect();
    let hooks = shards.iter().filter(|s| s.resource.hook().is_some());
    let ok = data
        .iter()
        .filter(|s| s.state == ShardState::Succeeded)
        .count();
    let hook_errors = shard_errors(hooks);
    let mut message = shard_errors(data.iter().copied());
    if !hook_errors.is_empty() {
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&hook_errors);
    }
    if job.cancel_requested {
        return (JobState::Cancelled, "cancelled; nothing was kept".into());
    }
    if ok == 0 {
        return (JobState::Failed, format!("every shard failed: {message}"));
    }
    // A post_backup hook that failed leaves a good copy, but the component may not be running:
    // the backup says so and does not count as complete.
    let hooks_ok = hook_errors.is_empty();
    let state = if ok == data.len() && hooks_ok {
        JobState::Completed
    } else {
        JobState::PartiallyFailed
    };
    (state, message)
}

/// How a restore's writing ended.
pub fn restore_outcome(shards: &[ShardRecord]) -> (JobState, String) {
    let ok = shards
        .iter()
        .filter(|s| s.state == ShardState::Succeeded)
        .count();
    let state = if ok == shards.len() {
        JobState::Completed
    } else if ok == 0 {
        JobState::Failed
    } else {
        JobState::PartiallyFailed
    };
    (state, shard_errors(shards))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shards::tests::shard;
    use crate::shards::{assign, cancel, fail, succeed};
    use ferry_model::task::Resource;

    fn job(kind: JobKind, phase: Phase) -> JobRecord {
        let spec = ferry_model::app::AppSpec::from_yaml("name: app\ncomponents:\n  - name: web\n")
            .unwrap();
        JobRecord {
            phase,
            state: JobState::Running,
            ..JobRecord::pending(
                "job-1".into(),
                kind,
                "t".into(),
                "app".into(),
                "dc-a".into(),
                "s".into(),
                spec,
                "manual".into(),
            )
        }
    }

    fn seen() -> Seen {
        Seen {
            awaited: None,
            busy: false,
        }
    }

    fn hook(when: HookWhen, component: &str) -> ShardRecord {
        ShardRecord {
            id: format!("{component}.hook.{}", when.as_str()),
            component: component.into(),
            kind: "hook".into(),
            resource: Resource::Hook {
                hook: when,
                argv: vec!["true".into()],
            },
            ..shard("h")
        }
    }

    fn done(s: ShardRecord) -> ShardRecord {
        succeed(&assign(&s, "w", 1, None), Default::default(), 2)
    }

    fn failed(s: ShardRecord) -> ShardRecord {
        fail(&assign(&s, "w", 1, None), "boom", true, 3, |_| 0, 2)
    }

    fn verifying(s: ShardRecord) -> ShardRecord {
        ShardRecord {
            op: ShardOp::Verify {
                check_target: true,
                archive: true,
                read_data: false,
            },
            ..s
        }
    }

    /// A database shard (not staged).
    fn db(id: &str) -> ShardRecord {
        let spec: ferry_model::app::DatabaseSpec = serde_json::from_value(serde_json::json!({
            "name": "main", "engine": "postgres", "databases": ["shop"]
        }))
        .unwrap();
        ShardRecord {
            kind: "postgres".into(),
            resource: Resource::Database {
                spec,
                database: Some("shop".into()),
            },
            ..shard(id)
        }
    }

    #[test]
    fn first_phases() {
        let backup = job(JobKind::Backup, Phase::Running);
        assert_eq!(Phase::first(&backup, &[shard("v")], false), Phase::Running);
        assert_eq!(
            Phase::first(
                &backup,
                &[shard("v"), hook(HookWhen::PreBackup, "web")],
                false
            ),
            Phase::PreHooks
        );
        let restore = job(JobKind::Restore, Phase::Running);
        assert_eq!(Phase::first(&restore, &[], true), Phase::AwaitingBackup);
        assert_eq!(
            Phase::first(&restore, &[shard("v")], false),
            Phase::Verifying
        );
        let in_place = JobRecord {
            safety_backup: Some("safe-1".into()),
            ..restore
        };
        assert_eq!(
            Phase::first(&in_place, &[shard("v")], false),
            Phase::SafetyBackup
        );
        assert_eq!(
            Phase::first(&job(JobKind::Verify, Phase::Running), &[], false),
            Phase::Verifying
        );
    }

    #[test]
    fn a_stream_job_runs_until_cancelled_or_every_stream_failed_for_good() {
        let j = job(JobKind::Stream, Phase::Running);
        assert_eq!(Phase::first(&j, &[shard("s")], false), Phase::Running);
        let running = assign(&shard("s"), "w", 1, None);
        assert_eq!(
            next(&j, std::slice::from_ref(&running), &seen()),
            Step::Dispatch
        );
        // One stream failed for good, another runs: keep the other going.
        assert_eq!(
            next(&j, &[failed(shard("a")), running.clone()], &seen()),
            Step::Dispatch
        );
        match next(&j, &[failed(shard("a"))], &seen()) {
            Step::Finish(JobState::Failed, m) => assert!(m.contains("boom"), "{m}"),
            other => panic!("{other:?}"),
        }
        let cancelled = JobRecord {
            cancel_requested: true,
            ..j
        };
        assert_eq!(
            next(&cancelled, &[running], &seen()),
            Step::Stop(Which::All)
        );
        assert_eq!(
            next(&cancelled, &[cancel(&shard("s"), 2)], &seen()),
            Step::Finish(JobState::Cancelled, "stopped".into())
        );
    }

    #[test]
    fn a_release_job_ends_when_its_slots_are_let_go() {
        let j = job(JobKind::Stream, Phase::Running);
        let release = |s: ShardRecord| ShardRecord {
            op: ShardOp::Release,
            ..s
        };
        assert_eq!(
            next(
                &j,
                &[done(release(shard("a"))), release(shard("b"))],
                &seen()
            ),
            Step::Dispatch
        );
        assert_eq!(
            next(&j, &[done(release(shard("a")))], &seen()),
            Step::Finish(JobState::Completed, "released".into())
        );
        match next(&j, &[failed(release(shard("a")))], &seen()) {
            Step::Finish(JobState::Failed, m) => assert!(m.contains("not released"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_job_starts() {
        let mut j = job(JobKind::Backup, Phase::Running);
        j.state = JobState::Pending;
        assert_eq!(next(&j, &[shard("v")], &seen()), Step::Start);
    }

    #[test]
    fn a_backup_runs_pre_hooks_then_data_then_post_hooks_then_commits() {
        let pre = hook(HookWhen::PreBackup, "web");
        let post = hook(HookWhen::PostBackup, "web");
        let j = job(JobKind::Backup, Phase::PreHooks);
        let shards = vec![pre.clone(), shard("v"), post.clone()];
        assert_eq!(next(&j, &shards, &seen()), Step::Dispatch);
        let shards = vec![done(pre.clone()), shard("v"), post.clone()];
        assert_eq!(
            next(&j, &shards, &seen()),
            Step::Enter(Phase::Running, String::new())
        );
        let j = job(JobKind::Backup, Phase::Running);
        assert_eq!(next(&j, &shards, &seen()), Step::Dispatch);
        let shards = vec![done(pre.clone()), done(shard("v")), post.clone()];
        assert_eq!(
            next(&j, &shards, &seen()),
            Step::Enter(Phase::PostHooks, String::new())
        );
        let j = job(JobKind::Backup, Phase::PostHooks);
        assert_eq!(next(&j, &shards, &seen()), Step::Dispatch);
        let shards = vec![done(pre), done(shard("v")), done(post)];
        assert_eq!(
            next(&j, &shards, &seen()),
            Step::Enter(Phase::Committing, String::new())
        );
        let j = job(JobKind::Backup, Phase::Committing);
        assert_eq!(next(&j, &shards, &seen()), Step::Work(Work::Commit));
        let busy = Seen {
            busy: true,
            ..seen()
        };
        assert!(matches!(next(&j, &shards, &busy), Step::Wait(_)));
        assert_eq!(backup_outcome(&j, &shards).0, JobState::Completed);
    }

    #[test]
    fn without_hooks_a_backup_goes_straight_to_commit() {
        let j = job(JobKind::Backup, Phase::Running);
        let shards = vec![done(shard("a")), failed(shard("b"))];
        assert_eq!(
            next(&j, &shards, &seen()),
            Step::Enter(Phase::Committing, String::new())
        );
        let (state, message) = backup_outcome(&j, &shards);
        assert_eq!(state, JobState::PartiallyFailed);
        assert!(message.contains("b: boom"), "{message}");
        let all_bad = vec![failed(shard("a"))];
        assert_eq!(backup_outcome(&j, &all_bad).0, JobState::Failed);
    }

    #[test]
    fn a_failed_pre_hook_skips_its_components_shards_but_post_hooks_run() {
        let pre = failed(hook(HookWhen::PreBackup, "web"));
        let other = ShardRecord {
            component: "db".into(),
            ..shard("d")
        };
        let j = job(JobKind::Backup, Phase::Running);
        let shards = vec![
            pre.clone(),
            shard("v"),
            other.clone(),
            hook(HookWhen::PostBackup, "web"),
        ];
        assert_eq!(
            next(&j, &shards, &seen()),
            Step::Skip(
                vec!["v".into()],
                "not run: the component's pre_backup hook failed".into()
            )
        );
        let skipped = crate::shards::skip(&shard("v"), "x", 3);
        let shards = vec![
            pre.clone(),
            skipped.clone(),
            other.clone(),
            hook(HookWhen::PostBackup, "web"),
        ];
        assert_eq!(
            next(&j, &shards, &seen()),
            Step::Dispatch,
            "the other component runs"
        );
        let shards = vec![pre, skipped, done(other), hook(HookWhen::PostBackup, "web")];
        assert_eq!(
            next(&j, &shards, &seen()),
            Step::Enter(Phase::PostHooks, String::new())
        );
        let ended = vec![
            failed(hook(HookWhen::PreBackup, "web")),
            crate::shards::skip(&shard("v"), "x", 3),
            done(ShardRecord {
                component: "db".into(),
                ..shard("d")
            }),
            done(hook(HookWhen::PostBackup, "web")),
        ];
        let (state, message) = backup_outcome(&j, &ended);
        assert_eq!(state, JobState::PartiallyFailed);
        assert!(message.contains("pre_backup"), "{message}");
    }

    #[test]
    fn a_cancelled_backup_stops_its_shards_then_runs_post_hooks_then_keeps_nothing() {
        let mut j = job(JobKind::Backup, Phase::Running);
        j.cancel_requested = true;
        let running = assign(&shard("v"), "w", 1, None);
        let post = hook(HookWhen::PostBackup, "web");
        let shards = vec![running.clone(), post.clone()];
        assert_eq!(next(&j, &shards, &seen()), Step::Stop(Which::Phase));
        let shards = vec![cancel(&running, 2), post.clone()];
        assert!(matches!(
            next(&j, &shards, &seen()),
            Step::Enter(Phase::PostHooks, _)
        ));
        j.phase = Phase::PostHooks;
        assert_eq!(
            next(&j, &shards, &seen()),
            Step::Dispatch,
            "post hooks still run"
        );
        let shards = vec![cancel(&running, 2), done(post)];
        assert_eq!(
            next(&j, &shards, &seen()),
            Step::Enter(Phase::Committing, String::new())
        );
        assert_eq!(backup_outcome(&j, &shards).0, JobState::Cancelled);
    }

    #[test]
    fn a_restore_checks_then_stages_its_volumes_then_writes() {
        let j = job(JobKind::Restore, Phase::Verifying);
        let vol = || verifying(shard("v"));
        let shards = vec![done(vol()), done(verifying(db("d")))];
        assert!(matches!(
            next(&j, &shards, &seen()),
            Step::Enter(Phase::Staging, _)
        ));
        let j = job(JobKind::Restore, Phase::Staging);
        assert_eq!(next(&j, &shards, &seen()), Step::Convert);
        let staging = vec![crate::shards::to_stage(&shards[0]), shards[1].clone()];
        assert!(Phase::Staging.admits(&staging[0]) && !Phase::Staging.admits(&staging[1]));
        assert_eq!(next(&j, &staging, &seen()), Step::Dispatch);
        let staged = vec![done(staging[0].clone()), shards[1].clone()];
        assert!(matches!(
            next(&j, &staged, &seen()),
            Step::Enter(Phase::Writing, _)
        ));
        let bad = vec![failed(staging[0].clone()), shards[1].clone()];
        match next(&j, &bad, &seen()) {
            Step::Finish(JobState::Failed, m) => assert!(m.contains("nothing was restored"), "{m}"),
            other => panic!("{other:?}"),
        }
        let j = job(JobKind::Restore, Phase::Writing);
        assert_eq!(next(&j, &staged, &seen()), Step::Convert);
    }

    #[test]
    fn a_restore_verifies_everything_before_writing() {
        let j = job(JobKind::Restore, Phase::Verifying);
        let shards = vec![verifying(db("a")), verifying(db("b"))];
        assert_eq!(next(&j, &shards, &seen()), Step::Dispatch);
        let shards = vec![done(verifying(db("a"))), failed(verifying(db("b")))];
        match next(&j, &shards, &seen()) {
            Step::Finish(JobState::Failed, m) => assert!(m.contains("nothing was restored"), "{m}"),
            other => panic!("{other:?}"),
        }
        let shards = vec![done(verifying(db("a"))), done(verifying(db("b")))];
        assert!(matches!(
            next(&j, &shards, &seen()),
            Step::Enter(Phase::Writing, _)
        ));
        let j = job(JobKind::Restore, Phase::Writing);
        assert_eq!(next(&j, &shards, &seen()), Step::Convert);
        let writing = vec![crate::shards::to_restore(&shards[0]), done(db("b"))];
        assert_eq!(next(&j, &writing, &seen()), Step::Dispatch);
        let written = vec![done(db("a")), done(db("b"))];
        assert_eq!(
            next(&j, &written, &seen()),
            Step::Enter(Phase::Committing, String::new())
        );
        assert_eq!(restore_outcome(&written).0, JobState::Completed);
        assert_eq!(
            restore_outcome(&[done(shard("a")), failed(shard("b"))]).0,
            JobState::PartiallyFailed
        );
    }

    #[test]
    fn a_cancelled_restore_says_what_was_written() {
        let mut j = job(JobKind::Restore, Phase::Verifying);
        j.cancel_requested = true;
        let running = assign(&verifying(shard("a")), "w", 1, None);
        assert_eq!(
            next(&j, std::slice::from_ref(&running), &seen()),
            Step::Stop(Which::All)
        );
        match next(&j, &[cancel(&running, 2)], &seen()) {
            Step::Finish(JobState::Cancelled, m) => assert!(m.contains("nothing was restored")),
            other => panic!("{other:?}"),
        }
        j.phase = Phase::Writing;
        match next(&j, &[cancel(&running, 2)], &seen()) {
            Step::Finish(JobState::Cancelled, m) => assert!(m.contains("part")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_migration_restore_waits_for_its_backup() {
        let j = JobRecord {
            restore: Some(crate::records::RestorePlan {
                backup_id: "b-1".into(),
                source_app: "app".into(),
                overwrite: false,
                numeric_owner: false,
                rewrites: vec![],
                creates_app: true,
                data_only: false,
                left_out: vec![],
                at_ms: None,
            }),
            ..job(JobKind::Restore, Phase::AwaitingBackup)
        };
        let with = |a: Awaited| Seen {
            awaited: Some(a),
            ..seen()
        };
        assert!(
            matches!(next(&j, &[], &with(Awaited::State(JobState::Running))), Step::Wait(m) if m.contains("b-1"))
        );
        assert_eq!(
            next(&j, &[], &with(Awaited::State(JobState::Completed))),
            Step::Work(Work::LoadShards)
        );
        assert!(matches!(
            next(&j, &[], &with(Awaited::State(JobState::Failed))),
            Step::Finish(JobState::Failed, _)
        ));
        assert!(
            matches!(next(&j, &[], &with(Awaited::Gone)), Step::Finish(JobState::Failed, m) if m.contains("gone"))
        );
    }

    #[test]
    fn an_in_place_restore_waits_for_its_safety_backup() {
        let j = JobRecord {
            safety_backup: Some("safe-1".into()),
            ..job(JobKind::Restore, Phase::SafetyBackup)
        };
        let with = |a: Awaited| Seen {
            awaited: Some(a),
            ..seen()
        };
        assert!(
            matches!(next(&j, &[], &with(Awaited::State(JobState::Running))), Step::Wait(m) if m.contains("safe-1"))
        );
        assert_eq!(
            next(&j, &[], &with(Awaited::State(JobState::Completed))),
            Step::Enter(Phase::Verifying, String::new())
        );
        assert!(
            matches!(next(&j, &[], &with(Awaited::State(JobState::Cancelled))), Step::Finish(JobState::Failed, m) if m.contains("nothing was restored"))
        );
    }

    #[test]
    fn a_verify_job_names_the_bad_archives() {
        let j = job(JobKind::Verify, Phase::Verifying);
        let shards = vec![done(verifying(shard("a"))), failed(verifying(shard("b")))];
        match next(&j, &shards, &seen()) {
            Step::Finish(JobState::Failed, m) => {
                assert!(m.contains("1 of 2") && m.contains("b: boom"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let good = vec![done(verifying(shard("a")))];
        assert!(matches!(
            next(&j, &good, &seen()),
            Step::Finish(JobState::Completed, _)
        ));
    }
}
