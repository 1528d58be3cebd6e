//! Schedules and retention, run by the leader only.
//!
//! A schedule fires exactly once per tick, even across a leader change: the write that moves
//! its next run forward and the write that creates the backup are one transaction, conditioned
//! on the schedule's revision — a second leader replaying the same tick finds the revision
//! changed and does nothing. The next run is always computed from *now*, so ticks missed while no
//! controller ran are taken once, not once each. A tick whose app still has a backup running is
//! skipped and recorded as skipped.
//!
//! Retention: a schedule's `keep` keeps its newest N completed backups; a backup's TTL expires
//! it. Both are carried out by a periodic collector that deletes objects first and catalog
//! entries after; a failure is written on the backup and retried, never silently dropped.

use std::sync::Arc;

use chrono::Utc;
use ferry_model::now_ms;
use ferry_model::schedule::{Every, When};
use ferry_proto::model::{CreateBackup, CreateSchedule};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::jobs::{self, persist, phase::Phase};
use crate::keys;
use crate::records::JobRecord;
use crate::store::{Condition, Op, get_json, list_json};

/// A schedule and what it has done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub team: String,
    pub name: String,
    pub app: String,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub every: Option<Every>,
    #[serde(default)]
    pub tz: Option<String>,
    #[serde(default)]
    pub keep: Option<u32>,
    /// Keep every backup a restore to a moment of the last this-many ms needs (`--keep-window`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_window_ms: Option<i64>,
    #[serde(default)]
    pub storage: Option<String>,
    #[serde(default)]
    pub paused: bool,
    pub next_run_ms: i64,
    #[serde(default)]
    pub last_run_ms: i64,
    #[serde(default)]
    pub last_backup: String,
    #[serde(default)]
    pub runs: u64,
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub last_skip: String,
}

impl ScheduleRecord {
    /// The parsed expression and zone.
    pub fn when(&self) -> Result<When> {
        let expression = self
            .cron
            .clone()
            .or_else(|| self.every.map(|e| e.cron().to_owned()))
            .unwrap_or_default();
        Ok(When::new(&expression, self.tz.as_deref())?)
    }

    /// The trigger recorded on its backups.
    pub fn trigger(&self) -> String {
        trigger(&self.name)
    }

    fn next_after_now(&self) -> Result<i64> {
        Ok(self.when()?.next_after(Utc::now())?.timestamp_millis())
    }
}

/// The trigger of a schedule's backups: `schedule/NAME`.
pub fn trigger(name: &str) -> String {
    format!("schedule/{name}")
}

/// Creates a schedule; its first run is the next matching time.
pub async fn create(ctx: &Context, req: CreateSchedule) -> Result<ScheduleRecord> {
    let app = crate::apps::get(&*ctx.store, &req.team, &req.app).await?;
    crate::apps::choose_storage(&*ctx.store, req.storage.as_deref(), &app.spec.cluster).await?;
    let mut record = ScheduleRecord {
        team: req.team,
        name: req.name,
        app: req.app,
        cron: req.cron,
        every: req.every,
        tz: req.tz,
        keep: req.keep,
        keep_window_ms: req.keep_window_ms,
        storage: req.storage,
        paused: false,
        next_run_ms: 0,
        last_run_ms: 0,
        last_backup: String::new(),
        runs: 0,
        skipped: 0,
        last_skip: String::new(),
    };
    record.next_run_ms = record.next_after_now()?;
    let key = keys::schedule(&record.team, &record.name);
    let created = ctx
        .store
        .txn(
            vec![Condition::Absent(key.clone())],
            vec![Op::put_json(key, &record)],
        )
        .await?;
    if !created {
        return Err(Error::AlreadyExists(format!(
            "schedule {:?} already exists; delete it first or pick another name",
            record.name
        )));
    }
    tracing::info!(schedule = %record.name, app = %record.app, next = record.next_run_ms, "schedule created");
    Ok(record)
}

/// A schedule, or NotFound.
pub async fn get(ctx: &Context, team: &str, name: &str) -> Result<(ScheduleRecord, i64)> {
    get_json::<ScheduleRecord>(&*ctx.store, &keys::schedule(team, name))
        .await?
        .ok_or_else(|| Error::NotFound(format!("schedule {name:?} not found in team {team:?}")))
}

/// A team's schedules.
pub async fn list(ctx: &Context, team: &str) -> Result<Vec<ScheduleRecord>> {
    Ok(
        list_json::<ScheduleRecord>(&*ctx.store, &keys::schedules(Some(team)))
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
    )
}

/// Pauses or resumes. Resuming starts from the next matching time: ticks missed while paused
/// are not made up.
pub async fn set_paused(
    ctx: &Context,
    team: &str,
    name: &str,
    paused: bool,
) -> Result<ScheduleRecord> {
    loop {
        let (mut record, rev) = get(ctx, team, name).await?;
        record.paused = paused;
        if !paused {
            record.next_run_ms = record.next_after_now()?;
        }
        let key = keys::schedule(team, name);
        if ctx
            .store
            .txn(
                vec![Condition::ModRevision(key.clone(), rev)],
                vec![Op::put_json(key, &record)],
            )
            .await?
        {
            return Ok(record);
        }
    }
}

/// Deletes a schedule; its backups stay.
pub async fn delete(ctx: &Context, team: &str, name: &str) -> Result<()> {
    get(ctx, team, name).await?;
    ctx.store.delete(&keys::schedule(team, name)).await?;
    Ok(())
}

/// The leader's loop: fires due schedules, and collects expired backups.
pub async fn run(ctx: Arc<Context>, cancel: CancellationToken) {
    let mut last_gc = tokio::time::Instant::now();
    loop {
        if let Err(e) = tick(&ctx).await {
            tracing::warn!(error = %e, "schedule tick failed; retrying");
        }
        if last_gc.elapsed() >= ctx.timings.gc_interval() {
            if let Err(e) = collect(&ctx).await {
                tracing::warn!(error = %e, "retention pass failed; retrying");
            }
            last_gc = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ctx.timings.schedule_tick()) => {}
        }
    }
}

async fn tick(ctx: &Context) -> Result<()> {
    let now = now_ms();
    for (schedule, rev) in list_json::<ScheduleRecord>(&*ctx.store, &keys::schedules(None)).await? {
        if !schedule.paused && schedule.next_run_ms <= now {
            fire(ctx, schedule, rev).await?;
        }
    }
    Ok(())
}

/// Runs one tick of a schedule: a backup, or a recorded skip. Exactly once, see the module doc.
async fn fire(ctx: &Context, mut schedule: ScheduleRecord, rev: i64) -> Result<()> {
    let tick_ms = schedule.next_run_ms;
    schedule.next_run_ms = schedule.next_after_now()?;
    schedule.last_run_ms = now_ms();
    let req = CreateBackup {
        team: schedule.team.clone(),
        app: schedule.app.clone(),
        storage: schedule.storage.clone(),
        labels: [("ferry.schedule/tick".to_owned(), tick_ms.to_string())].into(),
        ttl: None,
        full: false,
    };
    let key = keys::schedule(&schedule.team, &schedule.name);
    let label = crate::metrics::Schedule {
        schedule: format!("{}/{}", schedule.team, schedule.name),
    };
    let conditions = vec![Condition::ModRevision(key.clone(), rev)];
    match jobs::new_backup(ctx, req, &schedule.trigger()).await {
        Ok((mut job, shards)) => {
            schedule.runs += 1;
            schedule.last_backup = job.id.clone();
            // The tick and the backup are one write: the job record commits both.
            let advance = vec![Op::put_json(key, &schedule)];
            let first = Phase::first(&job, &shards, false);
            if persist::create(ctx, &mut job, &shards, first, conditions, advance).await? {
                ctx.metrics.schedule_runs.get_or_create(&label).inc();
                tracing::info!(schedule = %schedule.name, job = %job.id, "scheduled backup started");
            }
        }
        Err(e) => {
            // Busy app, app or storage gone: skip this tick, say why, try the next one.
            schedule.skipped += 1;
            ctx.metrics.schedule_skips.get_or_create(&label).inc();
            schedule.last_skip = format!(
                "{}: {e}",
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            tracing::warn!(schedule = %schedule.name, error = %e, "scheduled backup skipped");
            if ctx
                .store
                .txn(conditions, vec![Op::put_json(key, &schedule)])
                .await?
            {
                ctx.notify();
            }
        }
    }
    Ok(())
}

/// Deletes expired backups and those beyond their schedule's `keep`.
pub async fn collect(ctx: &Context) -> Result<()> {
    let now = now_ms();
    let all = jobs::list_jobs(ctx).await?;
    let schedules: Vec<crate::retention::Keep> =
        list_json::<ScheduleRecord>(&*ctx.store, &keys::schedules(None))
            .await?
            .into_iter()
            .map(|(s, _)| crate::retention::Keep {
                team: s.team.clone(),
                trigger: s.trigger(),
                name: s.name.clone(),
                keep: s.keep,
                keep_window_ms: s.keep_window_ms,
            })
            .collect();
    let history = ctx.settings.job_history.as_millis() as i64;
    for job in all
        .iter()
        .filter(|j| crate::retention::leaves_history(j, now, history))
    {
        jobs::persist::remove(&*ctx.store, &job.id).await?;
        tracing::info!(job = %job.id, kind = ?job.kind, "finished job left the history");
    }
    let doomed = crate::retention::doomed_backups(&all, &schedules, now);
    for (job, why) in doomed {
        match jobs::delete_backup(ctx, &job.team, &job.id).await {
            Ok(n) => {
                tracing::info!(job = %job.id, objects = n, reason = %why, "backup removed by retention")
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "retention could not delete a backup");
                report_failure(
                    ctx,
                    &job.id,
                    &format!("retention ({why}) could not delete it: {e}; will retry"),
                )
                .await?;
            }
        }
    }
    Ok(())
}

async fn report_failure(ctx: &Context, id: &str, message: &str) -> Result<()> {
    if let Some((mut job, rev)) = get_json::<JobRecord>(&*ctx.store, &keys::job(id)).await?
        && job.message != message
    {
        job.message = message.to_owned();
        let key = keys::job(id);
        ctx.store
            .txn(
                vec![Condition::ModRevision(key.clone(), rev)],
                vec![Op::put_json(key, &job)],
            )
            .await?;
    }
    Ok(())
}
