//! Validated requests. Each `TryFrom<v1::X>` checks required fields, names and formats once, so
//! handlers receive domain values; a failure is one [`ProtocolError`] that becomes
//! `Status::invalid_argument`.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_model::app::AppSpec;
use ferry_model::names::{check_job_id, check_name};
use ferry_model::rewrite::Rewrite;
use ferry_model::storage::{StorageBackend, StorageLocation};
use ferry_model::task::ShardOutcome;
use ferry_model::{ModelError, now_ms};

use crate::v1;

/// The team used when a caller names none.
pub const DEFAULT_TEAM: &str = "default";

/// A request that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl From<ProtocolError> for tonic::Status {
    fn from(e: ProtocolError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

fn team(raw: String) -> Result<String, ProtocolError> {
    if raw.is_empty() {
        return Ok(DEFAULT_TEAM.to_owned());
    }
    check_name("team name", &raw)?;
    Ok(raw)
}

fn optional_name(what: &'static str, raw: String) -> Result<Option<String>, ProtocolError> {
    if raw.is_empty() {
        return Ok(None);
    }
    check_name(what, &raw)?;
    Ok(Some(raw))
}

/// `app apply`: a team and a validated spec.
#[derive(Debug, Clone)]
pub struct ApplyApp {
    pub team: String,
    pub spec: AppSpec,
}

impl TryFrom<v1::ApplyAppRequest> for ApplyApp {
    type Error = ProtocolError;
    fn try_from(r: v1::ApplyAppRequest) -> Result<Self, Self::Error> {
        Ok(ApplyApp {
            team: team(r.team)?,
            spec: AppSpec::from_yaml(&r.spec_yaml)?,
        })
    }
}

/// A named app of a team.
#[derive(Debug, Clone)]
pub struct AppRef {
    pub team: String,
    pub name: String,
}

impl TryFrom<v1::GetAppRequest> for AppRef {
    type Error = ProtocolError;
    fn try_from(r: v1::GetAppRequest) -> Result<Self, Self::Error> {
        check_name("app name", &r.name)?;
        Ok(AppRef {
            team: team(r.team)?,
            name: r.name,
        })
    }
}

impl TryFrom<v1::DeleteAppRequest> for AppRef {
    type Error = ProtocolError;
    fn try_from(r: v1::DeleteAppRequest) -> Result<Self, Self::Error> {
        v1::GetAppRequest {
            team: r.team,
            name: r.name,
        }
        .try_into()
    }
}

/// A team, optionally narrowed to one app, and the page of a listing.
#[derive(Debug, Clone)]
pub struct TeamFilter {
    pub team: String,
    pub app: Option<String>,
    pub page: Page,
}

/// One page of a listing: how many, after which cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub size: usize,
    pub token: String,
}

/// Entries per page when a caller asks for none.
pub const DEFAULT_PAGE: usize = 200;
/// Most entries per page.
pub const MAX_PAGE: usize = 1000;

impl Page {
    fn new(size: u32, token: String) -> Page {
        let size = match size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        Page { size, token }
    }
}

impl TryFrom<v1::ListAppsRequest> for TeamFilter {
    type Error = ProtocolError;
    fn try_from(r: v1::ListAppsRequest) -> Result<Self, Self::Error> {
        Ok(TeamFilter {
            team: team(r.team)?,
            app: None,
            page: Page::default(),
        })
    }
}

impl TryFrom<v1::ListBackupsRequest> for TeamFilter {
    type Error = ProtocolError;
    fn try_from(r: v1::ListBackupsRequest) -> Result<Self, Self::Error> {
        Ok(TeamFilter {
            team: team(r.team)?,
            app: optional_name("app name", r.app)?,
            page: Page::new(r.page_size, r.page_token),
        })
    }
}

impl TryFrom<v1::ListRestoresRequest> for TeamFilter {
    type Error = ProtocolError;
    fn try_from(r: v1::ListRestoresRequest) -> Result<Self, Self::Error> {
        Ok(TeamFilter {
            team: team(r.team)?,
            app: optional_name("app name", r.app)?,
            page: Page::new(r.page_size, r.page_token),
        })
    }
}

/// A job of a team.
#[derive(Debug, Clone)]
pub struct JobRef {
    pub team: String,
    pub id: String,
}

impl TryFrom<v1::GetJobRequest> for JobRef {
    type Error = ProtocolError;
    fn try_from(r: v1::GetJobRequest) -> Result<Self, Self::Error> {
        check_job_id(&r.id)?;
        Ok(JobRef {
            team: team(r.team)?,
            id: r.id,
        })
    }
}

impl TryFrom<v1::StorageLocation> for StorageLocation {
    type Error = ProtocolError;
    fn try_from(r: v1::StorageLocation) -> Result<Self, Self::Error> {
        let backend = match r
            .backend
            .ok_or(ProtocolError::Missing("location.backend"))?
        {
            v1::storage_location::Backend::Local(l) => StorageBackend::Local {
                path: l.path,
                cluster: l.cluster,
            },
            v1::storage_location::Backend::S3(s) => StorageBackend::S3 {
                endpoint: s.endpoint,
                bucket: s.bucket,
                prefix: s.prefix,
                region: s.region,
                path_style: s.path_style,
                access_key_env: s.access_key_env,
                secret_key_env: s.secret_key_env,
            },
        };
        let location = StorageLocation {
            name: r.name,
            backend,
            encrypt_to: r.encrypt_to,
        };
        location.validate()?;
        Ok(location)
    }
}

impl From<&StorageLocation> for v1::StorageLocation {
    fn from(l: &StorageLocation) -> Self {
        let backend = match &l.backend {
            StorageBackend::Local { path, cluster } => {
                v1::storage_location::Backend::Local(v1::LocalStorage {
                    path: path.clone(),
                    cluster: cluster.clone(),
                })
            }
            StorageBackend::S3 {
                endpoint,
                bucket,
                prefix,
                region,
                path_style,
                access_key_env,
                secret_key_env,
            } => v1::storage_location::Backend::S3(v1::S3Storage {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                region: region.clone(),
                path_style: *path_style,
                access_key_env: access_key_env.clone(),
                secret_key_env: secret_key_env.clone(),
            }),
        };
        v1::StorageLocation {
            name: l.name.clone(),
            backend: Some(backend),
            encrypt_to: l.encrypt_to.clone(),
        }
    }
}

/// `backup create`.
#[derive(Debug, Clone)]
pub struct CreateBackup {
    pub team: String,
    pub app: String,
    pub storage: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ttl: Option<Duration>,
    /// Self-contained volume archives instead of the incremental repository.
    pub full: bool,
}

impl TryFrom<v1::CreateBackupRequest> for CreateBackup {
    type Error = ProtocolError;
    fn try_from(r: v1::CreateBackupRequest) -> Result<Self, Self::Error> {
        check_name("app name", &r.app)?;
        for key in r.labels.keys() {
            check_name("label key", key)?;
        }
        let ttl = match r.ttl_seconds {
            0 => None,
            s if s > 0 => Some(Duration::from_secs(s as u64)),
            _ => {
                return Err(ProtocolError::Invalid {
                    field: "ttl",
                    reason: "must be positive".into(),
                });
            }
        };
        Ok(CreateBackup {
            team: team(r.team)?,
            app: r.app,
            storage: optional_name("storage name", r.storage)?,
            labels: r.labels.into_iter().collect(),
            ttl,
            full: r.full,
        })
    }
}

/// `restore create`.
#[derive(Debug, Clone)]
pub struct CreateRestore {
    pub team: String,
    pub backup_id: String,
    pub to_app: Option<String>,
    pub to_cluster: Option<String>,
    pub overwrite: bool,
    pub numeric_owner: bool,
    pub rewrites: Vec<Rewrite>,
    /// Point-in-time: the app and the moment (then `backup_id` is empty).
    pub at: Option<(String, i64)>,
}

impl TryFrom<v1::CreateRestoreRequest> for CreateRestore {
    type Error = ProtocolError;
    fn try_from(r: v1::CreateRestoreRequest) -> Result<Self, Self::Error> {
        let at = if r.at_ms != 0 || !r.app.is_empty() {
            check_name("app name", &r.app)?;
            if !r.backup_id.is_empty() || r.at_ms <= 0 {
                return Err(ProtocolError::Invalid {
                    field: "at_ms",
                    reason: "a point-in-time restore names an app and a moment (at_ms > 0), \
                             not a backup"
                        .into(),
                });
            }
            Some((r.app.clone(), r.at_ms))
        } else {
            check_job_id(&r.backup_id)?;
            None
        };
        let rewrites = r
            .rewrites
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<Rewrite>, _>>()?;
        Ok(CreateRestore {
            team: team(r.team)?,
            backup_id: r.backup_id,
            to_app: optional_name("app name", r.to_app)?,
            to_cluster: optional_name("cluster name", r.to_cluster)?,
            overwrite: r.overwrite,
            numeric_owner: r.numeric_owner,
            rewrites,
            at,
        })
    }
}

/// `migrate`.
#[derive(Debug, Clone)]
pub struct Migrate {
    pub team: String,
    pub app: String,
    pub to_cluster: String,
    /// The team the app moves to (the same team when not given).
    pub to_team: String,
    pub storage: Option<String>,
    pub rewrites: Vec<Rewrite>,
}

impl TryFrom<v1::MigrateRequest> for Migrate {
    type Error = ProtocolError;
    fn try_from(r: v1::MigrateRequest) -> Result<Self, Self::Error> {
        check_name("app name", &r.app)?;
        check_name("cluster name", &r.to_cluster)?;
        let rewrites = r
            .rewrites
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<Rewrite>, _>>()?;
        let team = team(r.team)?;
        let to_team = optional_name("team name", r.to_team)?.unwrap_or_else(|| team.clone());
        Ok(Migrate {
            team,
            app: r.app,
            to_cluster: r.to_cluster,
            to_team,
            storage: optional_name("storage name", r.storage)?,
            rewrites,
        })
    }
}

/// A worker's registration.
#[derive(Debug, Clone)]
pub struct Registration {
    pub cluster: String,
    pub node: String,
    pub max_shards: u32,
    pub tools: BTreeMap<String, String>,
    pub version: String,
}

impl TryFrom<v1::RegisterRequest> for Registration {
    type Error = ProtocolError;
    fn try_from(r: v1::RegisterRequest) -> Result<Self, Self::Error> {
        check_name("cluster name", &r.cluster)?;
        check_name("node name", &r.node)?;
        if r.max_shards == 0 {
            return Err(ProtocolError::Invalid {
                field: "max_shards",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Registration {
            cluster: r.cluster,
            node: r.node,
            max_shards: r.max_shards,
            tools: r.tools.into_iter().collect(),
            version: r.version,
        })
    }
}

/// One attempt of one shard of one job: the fencing token every report carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardKey {
    pub job_id: String,
    pub shard_id: String,
    pub attempt: u32,
}

impl TryFrom<Option<v1::ShardRef>> for ShardKey {
    type Error = ProtocolError;
    fn try_from(r: Option<v1::ShardRef>) -> Result<Self, Self::Error> {
        let r = r.ok_or(ProtocolError::Missing("shard"))?;
        check_job_id(&r.job_id)?;
        if r.shard_id.is_empty() {
            return Err(ProtocolError::Missing("shard.shard_id"));
        }
        if r.attempt == 0 {
            return Err(ProtocolError::Missing("shard.attempt"));
        }
        Ok(ShardKey {
            job_id: r.job_id,
            shard_id: r.shard_id,
            attempt: r.attempt,
        })
    }
}

impl From<&ShardKey> for v1::ShardRef {
    fn from(k: &ShardKey) -> Self {
        v1::ShardRef {
            job_id: k.job_id.clone(),
            shard_id: k.shard_id.clone(),
            attempt: k.attempt,
        }
    }
}

impl std::fmt::Display for ShardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}#{}", self.job_id, self.shard_id, self.attempt)
    }
}

/// Bytes a worker has moved for a shard.
#[derive(Debug, Clone)]
pub struct Progress {
    pub worker_id: String,
    pub shard: ShardKey,
    pub done: u64,
    pub total: Option<u64>,
}

impl TryFrom<v1::ProgressReport> for Progress {
    type Error = ProtocolError;
    fn try_from(r: v1::ProgressReport) -> Result<Self, Self::Error> {
        Ok(Progress {
            worker_id: r.worker_id,
            shard: r.shard.try_into()?,
            done: r.bytes_done,
            total: (r.bytes_total > 0).then_some(r.bytes_total),
        })
    }
}

/// How a shard attempt ended, as its worker says.
#[derive(Debug, Clone)]
pub struct ShardReport {
    pub worker_id: String,
    pub shard: ShardKey,
    pub result: Result<ShardOutcome, String>,
    /// A failure that retrying cannot fix.
    pub permanent: bool,
    pub at_ms: i64,
}

impl TryFrom<v1::ShardResult> for ShardReport {
    type Error = ProtocolError;
    fn try_from(r: v1::ShardResult) -> Result<Self, Self::Error> {
        let result = if r.ok {
            let outcome: ShardOutcome =
                serde_json::from_str(&r.outcome_json).map_err(|e| ProtocolError::Invalid {
                    field: "outcome_json",
                    reason: e.to_string(),
                })?;
            Ok(outcome)
        } else {
            Err(if r.error.is_empty() {
                "the worker gave no reason".to_owned()
            } else {
                r.error
            })
        };
        Ok(ShardReport {
            worker_id: r.worker_id,
            shard: r.shard.try_into()?,
            result,
            permanent: r.permanent,
            at_ms: now_ms(),
        })
    }
}

/// `schedule create`.
#[derive(Debug, Clone)]
pub struct CreateSchedule {
    pub team: String,
    pub name: String,
    pub app: String,
    pub cron: Option<String>,
    pub every: Option<ferry_model::schedule::Every>,
    pub tz: Option<String>,
    pub keep: Option<u32>,
    pub keep_window_ms: Option<i64>,
    pub storage: Option<String>,
}

impl TryFrom<v1::CreateScheduleRequest> for CreateSchedule {
    type Error = ProtocolError;
    fn try_from(r: v1::CreateScheduleRequest) -> Result<Self, Self::Error> {
        check_name("schedule name", &r.name)?;
        check_name("app name", &r.app)?;
        let (cron, every): (Option<String>, Option<ferry_model::schedule::Every>) =
            match (r.cron.is_empty(), r.every.is_empty()) {
                (false, true) => (Some(r.cron), None),
                (true, false) => (None, Some(r.every.parse()?)),
                _ => {
                    return Err(ProtocolError::Invalid {
                        field: "schedule",
                        reason: "give exactly one of --cron and --every".into(),
                    });
                }
            };
        let tz = (!r.tz.is_empty()).then_some(r.tz);
        // Validates the expression and the zone now, so a bad one is refused at creation.
        let expression = cron
            .clone()
            .unwrap_or_else(|| every.map(|e| e.cron()).unwrap_or_default().to_owned());
        ferry_model::schedule::When::new(&expression, tz.as_deref())?;
        Ok(CreateSchedule {
            team: team(r.team)?,
            name: r.name,
            app: r.app,
            cron,
            every,
            tz,
            keep: (r.keep > 0).then_some(r.keep),
            keep_window_ms: match r.keep_window_seconds {
                0 => None,
                s if s > 0 => Some(s.saturating_mul(1000)),
                _ => {
                    return Err(ProtocolError::Invalid {
                        field: "keep_window_seconds",
                        reason: "a keep window is a positive duration".into(),
                    });
                }
            },
            storage: optional_name("storage name", r.storage)?,
        })
    }
}

/// A named schedule of a team.
#[derive(Debug, Clone)]
pub struct ScheduleRef {
    pub team: String,
    pub name: String,
}

impl TryFrom<v1::ScheduleRef> for ScheduleRef {
    type Error = ProtocolError;
    fn try_from(r: v1::ScheduleRef) -> Result<Self, Self::Error> {
        check_name("schedule name", &r.name)?;
        Ok(ScheduleRef {
            team: team(r.team)?,
            name: r.name,
        })
    }
}
