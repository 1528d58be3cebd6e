//! Point-in-time restore, the controller's part: which backup a restore `--at` a moment starts
//! from, the log each of its `pitr` database shards replays (checked against what storage holds
//! before anything is written), and the recovery window of an app's streams.
//!
//! A base is a completed backup's archive of a `pitr` server with the log position recorded in
//! its manifest: the PostgreSQL physical base (`postgres-base` shard), the MariaDB/MySQL dumps
//! (their binlog position). It can be restored to any moment from the backup's completion to
//! the end of the contiguous log archived after that position (`ferry_model::pitr`).

use ferry_model::manifest::BackupManifest;
use ferry_model::pitr::{self, Base, Position, Span, Window};
use ferry_model::task::{PitrTask, PlannedShard, Resource, plan_streams};
use ferry_storage::ObjectStore;

use super::read_manifest;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::records::{JobKind, JobRecord, JobState, ShardRecord};

/// At most this many of an app's newest backups are read for its recovery window.
const WINDOW_BACKUPS: usize = 50;

/// One stream's recovery window and where its archive stands.
#[derive(Debug, Clone)]
pub struct StreamWindow {
    /// `COMPONENT.ENTRY`
    pub stream: String,
    pub engine: String,
    pub window: Window,
    /// The end of the newest archived span and when it was received.
    pub last: Option<(Position, i64)>,
    /// Its shard in the app's newest stream job, if one ran.
    pub shard: Option<ShardRecord>,
}

/// Completed backups of an app, newest first.
async fn completed_backups(ctx: &Context, team: &str, app: &str) -> Result<Vec<JobRecord>> {
    let mut jobs: Vec<JobRecord> = super::list_jobs(ctx)
        .await?
        .into_iter()
        .filter(|j| {
            j.team == team
                && j.app == app
                && j.kind == JobKind::Backup
                && matches!(j.state, JobState::Completed | JobState::PartiallyFailed)
        })
        .collect();
    jobs.sort_by_key(|j| std::cmp::Reverse(j.finished_at_ms));
    Ok(jobs)
}

/// The slot prefix of a stream's database shards in a backup: `COMPONENT/ENGINE/ENTRY/`.
fn dump_slots(stream: &PlannedShard) -> Option<String> {
    let spec = stream.resource.database_spec()?;
    Some(format!(
        "{}/{}/{}/",
        stream.component,
        spec.engine.as_str(),
        spec.name
    ))
}

/// Where the log continues after a backup's archive of a stream's server: the PostgreSQL base's
/// position, or the earliest position of the MariaDB/MySQL dumps.
fn base_position(manifest: &BackupManifest, stream: &PlannedShard) -> Option<Position> {
    let spec = stream.resource.database_spec()?;
    let base_slot = format!("{}/postgres-base/{}", stream.component, spec.name);
    let dumps = dump_slots(stream)?;
    manifest
        .shards
        .iter()
        .filter(|m| m.error.is_empty())
        .filter(|m| match spec.engine {
            ferry_model::app::Engine::Postgres => m.slot == base_slot,
            _ => m.slot.starts_with(&dumps),
        })
        .filter_map(|m| Position::parse(m.log_position.as_deref()?))
        .min()
}

/// A stream's archived log, cut into contiguous spans.
async fn spans_of(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<Span>> {
    let chunks: Vec<_> = store
        .list(prefix)
        .await?
        .iter()
        .filter_map(|o| pitr::Chunk::parse(prefix, &o.key))
        .collect();
    Ok(pitr::spans(&chunks))
}

/// The recovery window of every stream an app declares (from the app as registered, else as
/// its newest backup declared it), from its newest backups in `location`.
pub async fn windows(ctx: &Context, team: &str, app: &str) -> Result<Vec<StreamWindow>> {
    let backups = completed_backups(ctx, team, app).await?;
    let spec = match crate::apps::find(&*ctx.store, team, app).await? {
        Some(a) => a.spec,
        None => match backups.first() {
            Some(b) => b.spec.clone(),
            None => return Err(Error::NotFound(format!("app {app:?} not found"))),
        },
    };
    let streams = plan_streams(&spec);
    if streams.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "app {app:?} declares no database with `pitr: true`; it can be restored only to the \
             moments its backups were taken"
        )));
    }
    let location = crate::apps::choose_storage(&*ctx.store, None, &spec.cluster).await?;
    let store = ferry_storage::open(&location)?;
    // The newest stream job of the app: where each stream runs, or why it stopped.
    let stream_job = super::list_jobs(ctx)
        .await?
        .into_iter()
        .filter(|j| j.team == team && j.app == app && j.kind == JobKind::Stream)
        .max_by_key(|j| (j.created_at_ms, j.id.clone()));
    let stream_shards = match &stream_job {
        Some(j) => super::shards_of(ctx, &j.id).await?,
        None => Vec::new(),
    };
    let mut manifests = Vec::new();
    for b in backups
        .iter()
        .filter(|b| b.storage == location.name)
        .take(WINDOW_BACKUPS)
    {
        match read_manifest(ctx, b).await {
            Ok(m) => manifests.push((b.finished_at_ms, m)),
            Err(e) => {
                tracing::warn!(backup = %b.id, error = %e, "recovery window: manifest unreadable")
            }
        }
    }
    let mut out = Vec::new();
    for stream in &streams {
        let spans = spans_of(&*store, &pitr::stream_prefix(team, app, &stream.id)).await?;
        let bases: Vec<Base> = manifests
            .iter()
            .filter_map(|(ready_ms, m)| {
                Some(Base {
                    backup_id: m.id.clone(),
                    ready_ms: *ready_ms,
                    position: base_position(m, stream)?,
                })
            })
            .collect();
        out.push(StreamWindow {
            stream: stream.id.clone(),
            engine: stream
                .resource
                .database_spec()
                .map(|s| s.engine.as_str().to_owned())
                .unwrap_or_default(),
            window: pitr::window(&bases, &spans),
            last: spans.last().map(|s| (s.end.clone(), s.to_ms)),
            shard: stream_shards.iter().find(|s| s.id == stream.id).cloned(),
        });
    }
    Ok(out)
}

/// The backup a restore `--at` starts from: the newest of the app completed at or before the
/// moment. Too early a moment fails naming the recovery window of each stream.
pub async fn choose_backup(ctx: &Context, team: &str, app: &str, at_ms: i64) -> Result<JobRecord> {
    let backups = completed_backups(ctx, team, app).await?;
    let oldest = backups.last().map(|b| b.finished_at_ms);
    if let Some(b) = backups.into_iter().find(|b| b.finished_at_ms <= at_ms) {
        return Ok(b);
    }
    let Some(oldest) = oldest else {
        return Err(Error::NotFound(format!(
            "app {app:?} has no completed backup"
        )));
    };
    let windows = windows(ctx, team, app)
        .await
        .map(|w| {
            w.iter()
                .map(|w| format!("{}: {}", w.stream, pitr::describe(&w.window)))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let windows = if windows.is_empty() {
        String::new()
    } else {
        format!("; recovery window: {windows}")
    };
    Err(Error::InvalidArgument(format!(
        "{} is before the oldest completed backup of {app:?} ({}): nothing to restore from{windows}",
        pitr::format_ms(at_ms),
        pitr::format_ms(oldest)
    )))
}

/// Gives each `pitr` database shard of a restore the log it replays to `at_ms`, after checking
/// that storage holds it without a hole; errors name the stream's recovery window. Returns one
/// line per stream for the job's message.
pub async fn attach(
    ctx: &Context,
    backup: &JobRecord,
    manifest: &BackupManifest,
    at_ms: i64,
    shards: &mut [ShardRecord],
) -> Result<()> {
    let location = crate::apps::find_storage(&*ctx.store, &backup.storage)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!("storage location {:?} not found", backup.storage))
        })?;
    let store = ferry_storage::open(&location)?;
    for stream in plan_streams(&manifest.app_spec) {
        let Some(position) = base_position(manifest, &stream) else {
            return Err(Error::FailedPrecondition(format!(
                "backup {} holds no log position for {} (taken before `pitr: true` was \
                 declared?): it cannot be replayed to {}",
                manifest.id,
                stream.id,
                pitr::format_ms(at_ms)
            )));
        };
        let prefix = pitr::stream_prefix(&manifest.team, &manifest.app, &stream.id);
        let spans = spans_of(&*store, &prefix).await?;
        let base = Base {
            backup_id: manifest.id.clone(),
            ready_ms: backup.finished_at_ms,
            position: position.clone(),
        };
        if let Err(e) = pitr::plan(at_ms, std::slice::from_ref(&base), &spans) {
            let window = windows(ctx, &manifest.team, &manifest.app)
                .await
                .ok()
                .and_then(|w| w.into_iter().find(|w| w.stream == stream.id))
                .map(|w| pitr::describe(&w.window))
                .unwrap_or_else(|| e.to_string());
            return Err(Error::InvalidArgument(format!(
                "{}: {} cannot be reached from backup {} (recovery window: {window}); nothing \
                 was written",
                stream.id,
                pitr::format_ms(at_ms),
                manifest.id
            )));
        }
        let spec = stream.resource.database_spec().cloned();
        let base_slot = spec
            .as_ref()
            .map(|s| format!("{}/postgres-base/{}", stream.component, s.name));
        let base_shard = manifest
            .shards
            .iter()
            .find(|m| Some(&m.slot) == base_slot.as_ref() && m.error.is_empty());
        let dumps = dump_slots(&stream).unwrap_or_default();
        for shard in shards.iter_mut() {
            let Some(m) = manifest.shards.iter().find(|m| m.id == shard.id) else {
                continue;
            };
            if !m.slot.starts_with(&dumps) || !matches!(shard.resource, Resource::Database { .. }) {
                continue;
            }
            let own = m.log_position.clone();
            // The slot's last part is the database's index in the backed-up entry.
            let source_database = spec.as_ref().and_then(|spec| {
                let i: usize = m.slot.rsplit('/').next()?.parse().ok()?;
                spec.databases.get(i).cloned()
            });
            shard.pitr = Some(PitrTask {
                at_ms,
                logs_prefix: prefix.clone(),
                base_key: base_shard.map(|b| b.object_key.clone()),
                base_sha256: base_shard.map(|b| b.sha256.clone()),
                position: base_shard
                    .and_then(|b| b.log_position.clone())
                    .or(own)
                    .or_else(|| Some(position.to_string())),
                source_database,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::app::AppSpec;
    use ferry_model::manifest::ManifestShard;

    fn shard(id: &str, slot: &str, pos: Option<&str>) -> ManifestShard {
        ManifestShard {
            id: id.into(),
            component: "db".into(),
            kind: "x".into(),
            slot: slot.into(),
            resource: String::new(),
            tool_version: None,
            attempt: 1,
            object_key: format!("k/{id}"),
            source_bytes: 0,
            stored_bytes: 0,
            sha256: String::new(),
            worker: String::new(),
            started_at_ms: 0,
            finished_at_ms: 0,
            error: String::new(),
            repo: None,
            log_position: pos.map(str::to_owned),
        }
    }

    #[test]
    fn the_base_position_is_the_postgres_base_or_the_earliest_dump() {
        let spec = AppSpec::from_yaml(
            "name: a\ncomponents:\n  - name: db\n    databases:\n      - {name: pg, engine: postgres, databases: [x], pitr: true}\n      - {name: my, engine: mariadb, databases: [p, q], pitr: true}\n",
        )
        .unwrap();
        let streams = plan_streams(&spec);
        let manifest_shards = vec![
            shard(
                "db.postgres-base.pg",
                "db/postgres-base/pg",
                Some("000000010000000000000003:0"),
            ),
            shard("db.postgres.pg.x", "db/postgres/pg/0", None),
            shard(
                "db.mariadb.my.p",
                "db/mariadb/my/0",
                Some("binlog.000002:900"),
            ),
            shard(
                "db.mariadb.my.q",
                "db/mariadb/my/1",
                Some("binlog.000002:400"),
            ),
        ];
        let manifest: BackupManifest = serde_json::from_value(serde_json::json!({
            "format": "ferry.backup", "version": 1, "id": "b1", "team": "t", "app": "a",
            "cluster": "local", "storage": "s", "state": "Completed", "created_at_ms": 0,
            "completed_at_ms": 0, "trigger": "manual", "ferry_version": "0",
            "app_spec": spec, "shards": manifest_shards,
        }))
        .unwrap();
        assert_eq!(
            base_position(&manifest, &streams[0]).unwrap().to_string(),
            "000000010000000000000003:0"
        );
        assert_eq!(
            base_position(&manifest, &streams[1]).unwrap().to_string(),
            "binlog.000002:400"
        );
    }
}
