//! Domain records → wire messages.

use ferry_proto::v1;

use crate::context::Context;
use crate::jobs::JobView;
use crate::records::{AppRecord, JobKind, JobState, ShardState, WorkerRecord};

/// An app as the API shows it.
pub fn app(a: &AppRecord) -> v1::App {
    let (components, volumes, databases) = a.spec.counts();
    v1::App {
        team: a.team.clone(),
        name: a.spec.name.clone(),
        cluster: a.spec.cluster.clone(),
        spec_yaml: a.spec.to_yaml(),
        updated_at_ms: a.updated_at_ms,
        components: components as u32,
        volumes: volumes as u32,
        databases: databases as u32,
    }
}

/// A worker as the API shows it.
pub fn worker(ctx: &Context, w: &WorkerRecord) -> v1::WorkerInfo {
    let live = ctx.workers.liveness(&w.id).unwrap_or_default();
    v1::WorkerInfo {
        id: w.id.clone(),
        cluster: w.cluster.clone(),
        node: w.node.clone(),
        max_shards: w.max_shards,
        running_shards: live.running,
        tools: w.tools.clone().into_iter().collect(),
        registered_at_ms: w.registered_at_ms,
        last_heartbeat_ms: live.last_heartbeat_ms,
        version: w.version.clone(),
    }
}

fn job_state(s: JobState) -> v1::JobState {
    match s {
        JobState::Pending => v1::JobState::Pending,
        JobState::Running => v1::JobState::Running,
        JobState::Completed => v1::JobState::Completed,
        JobState::PartiallyFailed => v1::JobState::PartiallyFailed,
        JobState::Failed => v1::JobState::Failed,
        JobState::Cancelled => v1::JobState::Cancelled,
    }
}

pub fn shard_state(s: ShardState, progress: bool) -> v1::ShardState {
    match s {
        ShardState::Pending => v1::ShardState::Pending,
        ShardState::Assigned if progress => v1::ShardState::Running,
        ShardState::Assigned => v1::ShardState::Assigned,
        ShardState::Succeeded => v1::ShardState::Succeeded,
        ShardState::Failed => v1::ShardState::Failed,
        ShardState::Cancelled => v1::ShardState::Cancelled,
    }
}

/// A job with its shards and their live progress.
pub fn job(ctx: &Context, view: &JobView) -> v1::Job {
    let j = &view.job;
    let shards: Vec<v1::Shard> = view
        .shards
        .iter()
        .map(|s| {
            let progress = ctx.progress_of(&s.job_id, &s.id, s.attempt);
            let outcome = s.outcome.clone().unwrap_or_default();
            let (done, total) = match (s.state, progress) {
                (ShardState::Succeeded, _) => (outcome.source_bytes, outcome.source_bytes),
                (ShardState::Assigned, Some(p)) => (p.done, p.total.unwrap_or(0)),
                _ => (0, 0),
            };
            v1::Shard {
                id: s.id.clone(),
                component: s.component.clone(),
                kind: s.kind.clone(),
                resource: s.resource.describe(),
                state: shard_state(s.state, progress.is_some()) as i32,
                attempt: s.attempt,
                worker: s.worker.clone(),
                bytes_done: done,
                bytes_total: total,
                stored_bytes: outcome.stored_bytes,
                sha256: outcome.sha256,
                object_key: s.object_key.clone(),
                error: s.error.clone(),
                started_at_ms: s.started_at_ms,
                finished_at_ms: s.finished_at_ms,
                tool_version: outcome.tool_version.unwrap_or_default(),
                phase: s.op.as_str().to_owned(),
                detail: outcome.detail,
            }
        })
        .collect();
    v1::Job {
        id: j.id.clone(),
        kind: match j.kind {
            JobKind::Backup => v1::JobKind::Backup,
            JobKind::Restore => v1::JobKind::Restore,
            JobKind::Verify => v1::JobKind::Verify,
            JobKind::Stream => v1::JobKind::Stream,
        } as i32,
        state: job_state(j.state) as i32,
        team: j.team.clone(),
        app: j.app.clone(),
        cluster: j.cluster.clone(),
        storage: j.storage.clone(),
        bytes: shards.iter().map(|s| s.bytes_done).sum(),
        bytes_total: shards.iter().map(|s| s.bytes_total).sum(),
        stored_bytes: shards.iter().map(|s| s.stored_bytes).sum(),
        shards,
        created_at_ms: j.created_at_ms,
        started_at_ms: j.started_at_ms,
        finished_at_ms: j.finished_at_ms,
        message: j.message.clone(),
        backup_id: j
            .restore
            .as_ref()
            .map(|r| r.backup_id.clone())
            .unwrap_or_default(),
        target_app: match j.kind {
            JobKind::Restore => j.app.clone(),
            JobKind::Backup | JobKind::Verify | JobKind::Stream => String::new(),
        },
        labels: j.labels.clone().into_iter().collect(),
        trigger: j.trigger.clone(),
        expires_at_ms: j.expires_at_ms.unwrap_or(0),
        safety_backup: j.safety_backup.clone().unwrap_or_default(),
        trace_id: j.trace_id.clone(),
        phase: format!("{:?}", j.phase),
        signer: j.signer.clone(),
        data_only: j.restore.as_ref().is_some_and(|r| r.data_only),
    }
}

/// A schedule as the API shows it.
pub fn schedule(s: &crate::schedules::ScheduleRecord) -> v1::Schedule {
    v1::Schedule {
        team: s.team.clone(),
        name: s.name.clone(),
        app: s.app.clone(),
        cron: s.when().map(|w| w.expression).unwrap_or_default(),
        every: s
            .every
            .map(|e| format!("{e:?}").to_lowercase())
            .unwrap_or_default(),
        tz: s.tz.clone().unwrap_or_else(|| "UTC".into()),
        keep: s.keep.unwrap_or(0),
        keep_window_seconds: s.keep_window_ms.map_or(0, |ms| ms / 1000),
        storage: s.storage.clone().unwrap_or_default(),
        paused: s.paused,
        next_run_ms: s.next_run_ms,
        last_run_ms: s.last_run_ms,
        last_backup: s.last_backup.clone(),
        runs: s.runs,
        skipped: s.skipped,
        last_skip: s.last_skip.clone(),
    }
}
