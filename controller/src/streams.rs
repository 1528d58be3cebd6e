//! Log streams (point-in-time restore, DESIGN §1): every app that declares a database with
//! `pitr: true` has one stream job running, with a shard per such database that a worker of the
//! app's cluster runs until cancelled, archiving the server's log (see `ferry_model::pitr`). The
//! shards live under the same leases and fencing as any other: a dead worker's stream is handed
//! to another worker, which resumes from what storage holds.
//!
//! The leader checks every heartbeat: an app whose streams have no running job gets one (also
//! after a job ended because every stream failed for good, but not sooner than
//! `timing::stream_restart` after that: a server setting that fails every attempt must not
//! make a job per heartbeat); a job whose streams no longer match
//! its app (pitr removed, a database added, the app deleted) is cancelled, and a new one starts
//! at the next check. A stream that is gone for good (its app deleted, `pitr` taken off) gets a
//! *release* job (a stream job of `Release` shards, trigger [`RELEASE_TRIGGER`]): a worker
//! drops the PostgreSQL replication slot the stream held, which would otherwise keep WAL on
//! the server forever.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use ferry_model::names::new_job_id;
use ferry_model::pitr::stream_prefix;
use ferry_model::task::{ShardOp, plan_streams};

use crate::context::Context;
use crate::error::Result;
use crate::jobs::{self, new_shard, persist};
use crate::keys;
use crate::records::{AppRecord, JobKind, JobRecord};
use crate::store::list_json;

/// The trigger of a release job.
pub const RELEASE_TRIGGER: &str = "pitr-release";

/// The streams of a stopped job that the app no longer declares (all of them when the app is
/// gone): what a release job lets go of.
pub fn removed<'a>(stopped: &'a AppStreams, declared: &[AppStreams]) -> Vec<&'a str> {
    let still: BTreeSet<&str> = declared
        .iter()
        .filter(|a| a.team == stopped.team && a.app == stopped.app)
        .flat_map(|a| a.streams.iter().map(|(id, _)| id.as_str()))
        .collect();
    stopped
        .streams
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| !still.contains(id))
        .collect()
}

/// A stream job as [`unreleased`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamJob {
    pub id: String,
    pub created_ms: i64,
    /// It can no longer change (failed, cancelled).
    pub ended: bool,
    /// A release job.
    pub release: bool,
    pub streams: AppStreams,
}

/// Streams nothing released: when the newest stream job of an app (release jobs included) is
/// an ended stream job, the streams it held that the app no longer declares, with that job. A
/// stream job that failed for good is not running, so deleting its app (or taking `pitr` off)
/// stops nothing and [`removed`] is never asked at a stop; a release made at a stop is newer
/// than the stopped job, so nothing is released twice.
pub fn unreleased<'a>(
    jobs: &'a [StreamJob],
    declared: &[AppStreams],
) -> Vec<(&'a StreamJob, Vec<&'a str>)> {
    let mut newest: BTreeMap<(&str, &str), &StreamJob> = BTreeMap::new();
    for j in jobs {
        let key = (j.streams.team.as_str(), j.streams.app.as_str());
        match newest.get(&key) {
            Some(n) if (n.created_ms, &n.id) >= (j.created_ms, &j.id) => {}
            _ => {
                newest.insert(key, j);
            }
        }
    }
    newest
        .into_values()
        .filter(|j| j.ended && !j.release)
        .filter_map(|j| {
            let gone = removed(&j.streams, declared);
            (!gone.is_empty()).then_some((j, gone))
        })
        .collect()
}

/// An app's streams as its spec declares them, or as a running job holds them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppStreams {
    pub team: String,
    pub app: String,
    /// Stream ids (`COMPONENT.ENTRY`) with the spec of each, as JSON, so that a changed
    /// connection setting also counts as a change.
    pub streams: BTreeSet<(String, String)>,
}

/// What to do: apps that need a new stream job, running stream jobs to cancel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub start: Vec<(String, String)>,
    pub stop: Vec<String>,
}

/// Compares what apps declare with the running stream jobs (job id → what it streams); apps in
/// `resting` (their last stream job failed a short while ago) get no new one yet.
pub fn changes(
    declared: &[AppStreams],
    running: &BTreeMap<String, AppStreams>,
    resting: &BTreeSet<(String, String)>,
) -> Changes {
    let mut out = Changes::default();
    let wanted: BTreeSet<&AppStreams> = declared.iter().filter(|a| !a.streams.is_empty()).collect();
    let mut covered = BTreeSet::new();
    for (id, streams) in running {
        if wanted.contains(streams) && covered.insert(streams) {
            continue;
        }
        // Out of date, not wanted any more, or a second job for the same app.
        out.stop.push(id.clone());
    }
    let busy: BTreeSet<(&str, &str)> = running
        .values()
        .map(|s| (s.team.as_str(), s.app.as_str()))
        .collect();
    for a in wanted {
        let key = (a.team.clone(), a.app.clone());
        if !covered.contains(a)
            && !busy.contains(&(a.team.as_str(), a.app.as_str()))
            && !resting.contains(&key)
        {
            out.start.push((a.team.clone(), a.app.clone()));
        }
    }
    out
}

fn declared(app: &AppRecord) -> AppStreams {
    AppStreams {
        team: app.team.clone(),
        app: app.spec.name.clone(),
        streams: plan_streams(&app.spec)
            .into_iter()
            .map(|p| {
                let spec = serde_json::to_string(&p.resource).unwrap_or_default();
                (p.id, spec)
            })
            .collect(),
    }
}

fn running(job: &JobRecord) -> AppStreams {
    AppStreams {
        team: job.team.clone(),
        app: job.app.clone(),
        streams: plan_streams(&job.spec)
            .into_iter()
            .map(|p| {
                let spec = serde_json::to_string(&p.resource).unwrap_or_default();
                (p.id, spec)
            })
            .collect(),
    }
}

/// Every how many checks the ended stream jobs are looked at when no app streams (listing every
/// job is what the check costs then).
const UNRELEASED_EVERY: u64 = 30;

/// Checks every heartbeat until cancelled (leader only).
pub async fn run(ctx: Arc<Context>, cancel: CancellationToken) {
    for n in 0u64.. {
        if let Err(e) = check(&ctx, n % UNRELEASED_EVERY == 0).await {
            tracing::warn!(error = %e, "checking the log streams failed; retrying");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ctx.timings.stream_check()) => {}
        }
    }
}

/// One check; `all` also looks at ended jobs when no app streams.
async fn check(ctx: &Context, all: bool) -> Result<()> {
    let apps: Vec<AppStreams> = list_json::<AppRecord>(&*ctx.store, &keys::all_apps())
        .await?
        .iter()
        .map(|(a, _)| declared(a))
        .collect();
    let streaming = apps.iter().any(|a| !a.streams.is_empty());
    let every_job = if streaming || all {
        jobs::list_jobs(ctx).await?
    } else {
        Vec::new()
    };
    let jobs: BTreeMap<String, JobRecord> = jobs::active_jobs(ctx)
        .await?
        .into_iter()
        .filter(|j| j.kind == JobKind::Stream && !j.cancel_requested)
        .filter(|j| j.trigger != RELEASE_TRIGGER)
        .map(|j| (j.id.clone(), j))
        .collect();
    let active: BTreeMap<String, AppStreams> = jobs
        .iter()
        .map(|(id, j)| (id.clone(), running(j)))
        .collect();
    let resting = resting(ctx, &apps, &every_job);
    let todo = changes(&apps, &active, &resting);
    for id in todo.stop {
        let team = active.get(&id).map(|a| a.team.clone()).unwrap_or_default();
        tracing::info!(job = %id, "the app's log streams changed; stopping its stream job");
        jobs::cancel(ctx, &team, &id, JobKind::Stream).await?;
        if let (Some(job), Some(streams)) = (jobs.get(&id), active.get(&id)) {
            let gone = removed(streams, &apps);
            if !gone.is_empty()
                && let Err(e) = release(ctx, job, &gone).await
            {
                tracing::warn!(job = %id, error = %e, "cannot release the removed streams");
            }
        }
    }
    for (team, app) in todo.start {
        if let Err(e) = start(ctx, &team, &app).await {
            tracing::warn!(team = %team, app = %app, error = %e, "cannot start the app's log streams");
        }
    }
    let views: Vec<StreamJob> = every_job
        .iter()
        .filter(|j| j.kind == JobKind::Stream)
        .map(|j| StreamJob {
            id: j.id.clone(),
            created_ms: j.created_at_ms,
            ended: j.state.is_final(),
            release: j.trigger == RELEASE_TRIGGER,
            streams: running(j),
        })
        .collect();
    for (view, gone) in unreleased(&views, &apps) {
        let Some(job) = every_job.iter().find(|j| j.id == view.id) else {
            continue;
        };
        tracing::info!(job = %view.id, streams = ?gone, "an ended stream job's removed streams were never released");
        if let Err(e) = release(ctx, job, &gone).await {
            tracing::warn!(job = %view.id, error = %e, "cannot release the removed streams");
        }
    }
    Ok(())
}

/// Apps with streams whose newest stream job failed less than `stream_restart` ago (`jobs`:
/// every job).
fn resting(ctx: &Context, apps: &[AppStreams], jobs: &[JobRecord]) -> BTreeSet<(String, String)> {
    let with_streams: BTreeSet<(&str, &str)> = apps
        .iter()
        .filter(|a| !a.streams.is_empty())
        .map(|a| (a.team.as_str(), a.app.as_str()))
        .collect();
    if with_streams.is_empty() {
        return BTreeSet::new();
    }
    let since = ferry_model::now_ms() - ctx.timings.stream_restart().as_millis() as i64;
    jobs.iter()
        .filter(|j| j.kind == JobKind::Stream && j.state == crate::records::JobState::Failed)
        .filter(|j| j.trigger != RELEASE_TRIGGER)
        .filter(|j| j.finished_at_ms > since)
        .filter(|j| with_streams.contains(&(j.team.as_str(), j.app.as_str())))
        .map(|j| (j.team.clone(), j.app.clone()))
        .collect()
}

/// Creates the release job of the streams `gone` of a stopped stream job.
async fn release(ctx: &Context, stopped: &JobRecord, gone: &[&str]) -> Result<JobRecord> {
    let mut job = JobRecord::pending(
        new_job_id(&format!("release-{}", stopped.app)),
        JobKind::Stream,
        stopped.team.clone(),
        stopped.app.clone(),
        stopped.cluster.clone(),
        stopped.storage.clone(),
        stopped.spec.clone(),
        RELEASE_TRIGGER.into(),
    );
    let shards: Vec<_> = plan_streams(&stopped.spec)
        .iter()
        .filter(|p| gone.contains(&p.id.as_str()))
        .map(|p| {
            let mut s = new_shard(&job.id, p, ShardOp::Release);
            s.object_key = stream_prefix(&stopped.team, &stopped.app, &p.id);
            s
        })
        .collect();
    let first = jobs::phase::Phase::first(&job, &shards, false);
    persist::create_new(ctx, &mut job, &shards, first).await?;
    tracing::info!(job = %job.id, streams = ?gone, "releasing what removed streams held");
    Ok(job)
}

/// Creates the stream job of an app: a shard per `pitr` database, writing into the default
/// location of the app's cluster.
async fn start(ctx: &Context, team: &str, app: &str) -> Result<JobRecord> {
    let app = crate::apps::get(&*ctx.store, team, app).await?;
    let location = crate::apps::choose_storage(&*ctx.store, None, &app.spec.cluster).await?;
    let mut job = JobRecord::pending(
        new_job_id(&format!("stream-{}", app.spec.name)),
        JobKind::Stream,
        team.to_owned(),
        app.spec.name.clone(),
        app.spec.cluster.clone(),
        location.name.clone(),
        app.spec.clone(),
        "pitr".into(),
    );
    let shards: Vec<_> = plan_streams(&app.spec)
        .iter()
        .map(|p| {
            let mut s = new_shard(&job.id, p, ShardOp::Stream);
            s.object_key = stream_prefix(team, &app.spec.name, &p.id);
            s
        })
        .collect();
    let first = jobs::phase::Phase::first(&job, &shards, false);
    persist::create_new(ctx, &mut job, &shards, first).await?;
    tracing::info!(job = %job.id, streams = shards.len(), "log streams started");
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(team: &str, app: &str, ids: &[&str]) -> AppStreams {
        AppStreams {
            team: team.into(),
            app: app.into(),
            streams: ids.iter().map(|i| (i.to_string(), "{}".into())).collect(),
        }
    }

    #[test]
    fn apps_without_a_running_job_get_one() {
        let declared = [
            streams("t", "shop", &["db.main"]),
            streams("t", "blog", &[]),
        ];
        let c = changes(&declared, &BTreeMap::new(), &BTreeSet::new());
        assert_eq!(c.start, [("t".to_owned(), "shop".to_owned())]);
        assert!(c.stop.is_empty());
        // Its last stream job failed a moment ago: not yet.
        let resting = BTreeSet::from([("t".to_owned(), "shop".to_owned())]);
        assert!(
            changes(&declared, &BTreeMap::new(), &resting)
                .start
                .is_empty()
        );
    }

    #[test]
    fn a_matching_job_is_left_alone() {
        let declared = [streams("t", "shop", &["db.main"])];
        let running = BTreeMap::from([("j1".to_owned(), streams("t", "shop", &["db.main"]))]);
        assert_eq!(
            changes(&declared, &running, &BTreeSet::new()),
            Changes::default()
        );
    }

    #[test]
    fn changed_removed_and_duplicate_jobs_stop_and_the_app_waits_for_the_next_check() {
        let declared = [streams("t", "shop", &["db.main", "db.other"])];
        let running = BTreeMap::from([
            ("old".to_owned(), streams("t", "shop", &["db.main"])),
            ("gone".to_owned(), streams("t", "deleted", &["db.x"])),
        ]);
        let c = changes(&declared, &running, &BTreeSet::new());
        assert_eq!(c.stop, ["gone", "old"]);
        // Not started while the old job still runs: the next check starts it.
        assert!(c.start.is_empty());
        let twice = BTreeMap::from([
            (
                "a".to_owned(),
                streams("t", "shop", &["db.main", "db.other"]),
            ),
            (
                "b".to_owned(),
                streams("t", "shop", &["db.main", "db.other"]),
            ),
        ]);
        assert_eq!(changes(&declared, &twice, &BTreeSet::new()).stop, ["b"]);
    }

    #[test]
    fn removed_streams_are_those_the_app_no_longer_declares() {
        let stopped = streams("t", "shop", &["db.main", "db.old"]);
        let declared = [
            streams("t", "shop", &["db.main", "db.new"]),
            streams("t2", "shop", &["db.old"]),
        ];
        assert_eq!(removed(&stopped, &declared), ["db.old"]);
        // The app is gone: everything goes.
        assert_eq!(removed(&stopped, &declared[1..]), ["db.main", "db.old"]);
    }

    fn job(id: &str, created_ms: i64, ended: bool, release: bool, s: AppStreams) -> StreamJob {
        StreamJob {
            id: id.into(),
            created_ms,
            ended,
            release,
            streams: s,
        }
    }

    #[test]
    fn an_ended_stream_job_of_a_removed_app_is_released_once() {
        let shop = || streams("t", "shop", &["db.main", "db.old"]);
        let failed = job("s1", 10, true, false, shop());
        // The app is gone and its only stream job had failed: release both streams.
        let jobs = [failed.clone()];
        let out = unreleased(&jobs, &[]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].0.id.as_str(), out[0].1.clone()),
            ("s1", vec!["db.main", "db.old"])
        );
        // pitr taken off one database: only that one.
        let declared = [streams("t", "shop", &["db.main"])];
        assert_eq!(unreleased(&jobs, &declared)[0].1, ["db.old"]);
        // Still declared as it was: nothing (the job restarts after its rest instead).
        assert!(unreleased(&jobs, &[shop()]).is_empty());
        // A release job after it (made at a stop, or by an earlier check): nothing again.
        let released = [failed.clone(), job("r1", 20, false, true, shop())];
        assert!(unreleased(&released, &[]).is_empty());
        // A newer stream job of a re-created app decides, not the old one.
        let newer = [failed.clone(), job("s2", 30, false, false, shop())];
        assert!(unreleased(&newer, &[shop()]).is_empty());
        // A stream job still running is stopped by `changes`, which releases then.
        let running = [job("s3", 40, false, false, shop())];
        assert!(unreleased(&running, &[]).is_empty());
        // Other apps' jobs do not hide this one.
        let mixed = [
            failed,
            job("x", 50, true, false, streams("t", "blog", &["db.a"])),
        ];
        let ids: Vec<&str> = unreleased(&mixed, &[])
            .iter()
            .map(|(j, _)| j.id.as_str())
            .collect();
        assert_eq!(ids, ["x", "s1"], "in app order");
    }

    #[test]
    fn the_same_app_name_in_another_team_is_another_app() {
        let declared = [
            streams("t1", "shop", &["db.main"]),
            streams("t2", "shop", &["db.main"]),
        ];
        let running = BTreeMap::from([("j".to_owned(), streams("t1", "shop", &["db.main"]))]);
        assert_eq!(
            changes(&declared, &running, &BTreeSet::new()).start,
            [("t2".to_owned(), "shop".to_owned())]
        );
    }
}
