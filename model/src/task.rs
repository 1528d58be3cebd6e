//! Shards: how a job is split ([`plan_shards`]), what a worker is asked to do ([`ShardTask`]) and
//! what it reports back ([`ShardOutcome`]).

use serde::{Deserialize, Serialize};

use crate::app::{AppSpec, DatabaseSpec, Engine};
use crate::rewrite::Rewrite;
use crate::storage::StorageLocation;

/// The piece of an app one shard reads (backup) or writes (restore).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Resource {
    Volume {
        path: String,
    },
    Config {
        config: serde_json::Value,
    },
    Database {
        spec: DatabaseSpec,
        /// The one database of `spec.databases` this shard holds (none for Redis).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        database: Option<String>,
    },
    Exec {
        backup: Vec<String>,
        restore: Vec<String>,
    },
    /// A PostgreSQL server's physical base backup (`pg_basebackup`), taken beside the logical
    /// dumps of a database entry with `pitr: true`: what a point-in-time restore recovers from.
    /// A restore without `--at` does not use it.
    PgBase {
        spec: DatabaseSpec,
    },
    /// The continuous log of a database server with `pitr: true` (PostgreSQL WAL, MariaDB/MySQL
    /// binlogs), archived chunk by chunk under the app's `logs/` (see [`crate::pitr`]). The shard
    /// of a stream job: it runs until cancelled.
    LogStream {
        spec: DatabaseSpec,
    },
    /// A component's `pre_backup` or `post_backup` hook: a command run once around all of the
    /// component's shards. Holds no data: it has no archive and is not in the manifest.
    Hook {
        /// `pre_backup` or `post_backup`.
        hook: HookWhen,
        argv: Vec<String>,
    },
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookWhen {
    PreBackup,
    PostBackup,
}

impl HookWhen {
    /// `pre_backup` or `post_backup`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookWhen::PreBackup => "pre_backup",
            HookWhen::PostBackup => "post_backup",
        }
    }
}

impl Resource {
    /// `volume`, `config`, `exec`, `hook` or the database engine.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Volume { .. } => "volume",
            Resource::Config { .. } => "config",
            Resource::Database { spec, .. } => spec.engine.as_str(),
            Resource::Exec { .. } => "exec",
            Resource::Hook { .. } => "hook",
            Resource::PgBase { .. } => "postgres-base",
            Resource::LogStream { .. } => "log-stream",
        }
    }

    /// The database server this shard reads or writes, if it is one.
    pub fn database_spec(&self) -> Option<&DatabaseSpec> {
        match self {
            Resource::Database { spec, .. }
            | Resource::PgBase { spec }
            | Resource::LogStream { spec } => Some(spec),
            _ => None,
        }
    }

    /// The hook this is, if it is one.
    pub fn hook(&self) -> Option<HookWhen> {
        match self {
            Resource::Hook { hook, .. } => Some(*hook),
            _ => None,
        }
    }

    /// A short description for listings: a path, `db@host`, a command.
    pub fn describe(&self) -> String {
        match self {
            Resource::Volume { path } => path.clone(),
            Resource::Config { .. } => "config".to_owned(),
            Resource::Database { spec, database } => {
                let host = spec.host.as_deref().unwrap_or("localhost");
                match (database, spec.db) {
                    (Some(db), _) => format!("{db}@{host}"),
                    (None, Some(n)) => format!("db {n}@{host}"),
                    (None, None) => host.to_owned(),
                }
            }
            Resource::PgBase { spec } | Resource::LogStream { spec } => {
                let host = spec.host.as_deref().unwrap_or("localhost");
                match spec.port {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                }
            }
            Resource::Exec { backup, .. } => backup.first().cloned().unwrap_or_default(),
            Resource::Hook { hook, argv } => {
                format!("{}: {}", hook.as_str(), argv.join(" "))
            }
        }
    }
}

/// One shard of an app, as planned from its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedShard {
    /// Stable id, unique in the app: `api.volume.uploads`, `api.postgres.main.shop`.
    pub id: String,
    pub component: String,
    /// Where the shard sits in the spec independent of renames: component, kind, entry, index.
    /// Restores pair a backup's shards with the target app's by this slot.
    pub slot: String,
    pub resource: Resource,
    /// The node the shard must run on, if any.
    pub node: Option<String>,
}

/// Splits an app into shards: one per volume, per component config, per database, per exec.
pub fn plan_shards(spec: &AppSpec) -> Vec<PlannedShard> {
    let mut out = Vec::new();
    for c in &spec.components {
        let shard =
            |id: String, slot: String, resource: Resource, node: Option<String>| PlannedShard {
                id,
                component: c.name.clone(),
                slot,
                resource,
                node,
            };
        if let Some(config) = &c.config {
            out.push(shard(
                format!("{}.config", c.name),
                format!("{}/config", c.name),
                Resource::Config {
                    config: config.clone(),
                },
                None,
            ));
        }
        for v in &c.volumes {
            out.push(shard(
                format!("{}.volume.{}", c.name, v.name),
                format!("{}/volume/{}", c.name, v.name),
                Resource::Volume {
                    path: v.path.clone(),
                },
                v.node.clone(),
            ));
        }
        for d in &c.databases {
            let engine = d.engine.as_str();
            if d.engine == Engine::Redis {
                out.push(shard(
                    format!("{}.{engine}.{}", c.name, d.name),
                    format!("{}/{engine}/{}", c.name, d.name),
                    Resource::Database {
                        spec: d.clone(),
                        database: None,
                    },
                    None,
                ));
                continue;
            }
            if d.pitr && d.engine == Engine::Postgres {
                out.push(shard(
                    format!("{}.postgres-base.{}", c.name, d.name),
                    format!("{}/postgres-base/{}", c.name, d.name),
                    Resource::PgBase { spec: d.clone() },
                    None,
                ));
            }
            for (i, db) in d.databases.iter().enumerate() {
                out.push(shard(
                    format!("{}.{engine}.{}.{db}", c.name, d.name),
                    format!("{}/{engine}/{}/{i}", c.name, d.name),
                    Resource::Database {
                        spec: d.clone(),
                        database: Some(db.clone()),
                    },
                    None,
                ));
            }
        }
        if let Some(exec) = &c.exec {
            out.push(shard(
                format!("{}.exec", c.name),
                format!("{}/exec", c.name),
                Resource::Exec {
                    backup: exec.backup.clone(),
                    restore: exec.restore.clone(),
                },
                None,
            ));
        }
    }
    out
}

/// The log streams of an app (one per database entry with `pitr: true`): the shards of its
/// stream job. The id is also the stream's directory under the app's `logs/`.
pub fn plan_streams(spec: &AppSpec) -> Vec<PlannedShard> {
    let mut out = Vec::new();
    for c in &spec.components {
        for d in c.databases.iter().filter(|d| d.pitr) {
            out.push(PlannedShard {
                id: stream_name(&c.name, &d.name),
                component: c.name.clone(),
                slot: format!("{}/log-stream/{}", c.name, d.name),
                resource: Resource::LogStream { spec: d.clone() },
                node: None,
            });
        }
    }
    out
}

/// `COMPONENT.ENTRY`: a database entry's stream, as named in storage.
pub fn stream_name(component: &str, entry: &str) -> String {
    format!("{component}.{entry}")
}

/// The hooks of an app as shards of a backup: a component's `pre_backup` and `post_backup`, on
/// the node its hooks name, else the node of its first node-bound volume.
pub fn plan_hooks(spec: &AppSpec) -> Vec<PlannedShard> {
    let mut out = Vec::new();
    for c in &spec.components {
        let node = c
            .hooks
            .node
            .clone()
            .or_else(|| c.volumes.iter().find_map(|v| v.node.clone()));
        for (when, argv) in [
            (HookWhen::PreBackup, &c.hooks.pre_backup),
            (HookWhen::PostBackup, &c.hooks.post_backup),
        ] {
            if let Some(argv) = argv.as_ref().filter(|a| !a.is_empty()) {
                out.push(PlannedShard {
                    id: format!("{}.hook.{}", c.name, when.as_str()),
                    component: c.name.clone(),
                    slot: format!("{}/hook/{}", c.name, when.as_str()),
                    resource: Resource::Hook {
                        hook: when,
                        argv: argv.clone(),
                    },
                    node: node.clone(),
                });
            }
        }
    }
    out
}

/// The tools a worker needs for a shard: every group must have at least one tool the worker
/// reported (`pg_dump` for a PostgreSQL backup; `mariadb-dump` or `mysqldump` for MariaDB).
pub fn required_tools(resource: &Resource, op: ShardOp) -> &'static [&'static [&'static str]] {
    match (resource, op) {
        (Resource::PgBase { .. }, ShardOp::Backup) => return &[&["pg_basebackup"]],
        (Resource::LogStream { spec }, _) => {
            return match spec.engine {
                Engine::Postgres => &[&["pg_receivewal"], &["psql"]],
                _ => &[&["mariadb-binlog", "mysqlbinlog"]],
            };
        }
        _ => {}
    }
    let Resource::Database { spec, .. } = resource else {
        return &[];
    };
    match (spec.engine, op) {
        (Engine::Postgres, ShardOp::Backup) => &[&["pg_dump"], &["psql"]],
        (Engine::Postgres, _) => &[&["pg_restore"], &["psql"]],
        (Engine::Mariadb | Engine::Mysql, ShardOp::Backup) => {
            &[&["mariadb-dump", "mysqldump"], &["mariadb", "mysql"]]
        }
        (Engine::Mariadb | Engine::Mysql, _) => &[&["mariadb", "mysql"]],
        (Engine::Redis, _) => &[&["redis-cli"]],
    }
}

/// What a worker does with a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardOp {
    /// Read the resource, write the archive.
    Backup,
    /// Re-read the archive and check its SHA-256 (unless `archive` is false: a volume's archive
    /// is checked while it is staged); with `check_target`, also check that the resource is
    /// empty (the first step of a restore, before anything is written).
    Verify {
        check_target: bool,
        #[serde(default = "yes")]
        archive: bool,
        /// A volume in the repository: read every chunk it references and check its hash (and
        /// the whole tar stream's), not only that every pack exists (`verify --read-data`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        read_data: bool,
    },
    /// A volume's restore, first half: extract the archive into a staging directory inside the
    /// target, checking its SHA-256 on the way; nothing of it is visible yet.
    Stage,
    /// Read the archive, write the resource (a volume: move its staged copy into place).
    Restore,
    /// Follow a database server's log and archive it chunk by chunk until cancelled
    /// (`object_key` is the stream's prefix in storage).
    Stream,
    /// A stream that was removed (its app deleted, `pitr` taken off): let go of what it holds
    /// on its server — a PostgreSQL replication slot, which would keep WAL forever.
    Release,
}

fn yes() -> bool {
    true
}

impl ShardOp {
    /// `backup`, `verify` or `restore`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardOp::Backup => "backup",
            ShardOp::Verify { .. } => "verify",
            ShardOp::Stage => "stage",
            ShardOp::Restore => "restore",
            ShardOp::Stream => "stream",
            ShardOp::Release => "release",
        }
    }
}

/// One unit of work handed to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardTask {
    pub job_id: String,
    pub shard_id: String,
    pub attempt: u32,
    pub op: ShardOp,
    pub component: String,
    pub resource: Resource,
    pub storage: StorageLocation,
    /// The archive's key inside the storage location.
    pub object_key: String,
    /// The checksum the archive must have (verify, restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_sha256: Option<String>,
    /// The bytes the backup read (a volume: file data), as its manifest recorded: a restore
    /// refuses an archive that holds more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_bytes: Option<u64>,
    /// Restore into a non-empty resource, replacing what is there.
    #[serde(default)]
    pub overwrite: bool,
    /// Volume restores: owners by archived number, never by name (`--numeric-owner`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub numeric_owner: bool,
    /// A volume restore's staged copy to move into place (the `Stage` step's result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Staged>,
    /// Applied to restored config values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<Rewrite>,
    /// A volume backed up into (or read from) the location's repository: `object_key` is then
    /// the backup's index (DESIGN §10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoTask>,
    /// Backup only: a resource that is missing or empty is reported `absent` instead of failing
    /// (safety backups of a restore target that does not exist yet).
    #[serde(default)]
    pub missing_ok: bool,
    /// W3C `traceparent` of the controller span that handed the shard out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Restore of a backup whose manifest is not signed by a trusted installation: data only
    /// (setuid/setgid bits cleared; DESIGN §6 "Trust").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_only: bool,
    /// The backup's archives are (to be) encrypted (DESIGN §6 "Data at rest").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
    /// A database restore `--at` a moment: replay the archived log up to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr: Option<PitrTask>,
}

/// What a database restore needs to reach a moment past its backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitrTask {
    /// The moment to reach, ms since the epoch.
    pub at_ms: i64,
    /// The stream's prefix in the backup's location (`teams/T/apps/A/logs/STREAM/`).
    pub logs_prefix: String,
    /// PostgreSQL: the physical base to recover from (and its SHA-256). MariaDB restores the
    /// shard's own dump and replays from `position`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sha256: Option<String>,
    /// Where the log continues after the archive: `FILE:OFFSET` (the base's or dump's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// The database's name in the backup (the shard's resource names the restore's target,
    /// after rewrites): what a PostgreSQL restore reads from the recovered server. None: the
    /// same name as the target. (MariaDB takes it from the shard's dump.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_database: Option<String>,
}

/// The keys of a backup in an encrypted location: public halves only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The backup's own age recipient: every archive of the backup is encrypted to it.
    pub recipient: String,
    /// The backup's key file (its identity sealed to the location's recipients), relative to
    /// the location: what a restore opens with the worker's identities.
    pub key_file: String,
}

/// Where a repository volume's parts are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoTask {
    /// The team's packs, e.g. `teams/T/repo/packs/`.
    pub packs_prefix: String,
    /// The list of packs beside the index.
    pub packs_key: String,
    /// Backup only: the parent backup's index of this volume (unchanged files are not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_index: Option<String>,
}

impl RepoTask {
    /// The repository parts of an index key (restore, verify: no parent).
    pub fn for_index(index_key: &str) -> Option<RepoTask> {
        Some(RepoTask {
            packs_prefix: crate::layout::packs_prefix_of(index_key)?,
            packs_key: crate::layout::packs_key_of(index_key)?,
            parent_index: None,
        })
    }
}

/// What a worker reports for a finished shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardOutcome {
    /// Bytes read from (backup) or written to (restore) the resource.
    pub source_bytes: u64,
    /// Bytes of the archive in storage.
    pub stored_bytes: u64,
    /// SHA-256 of the archive, hex.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_version: Option<String>,
    /// For a restored config shard: the config, rewrites applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Anything else worth telling (files, links, skipped entries).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The resource held nothing (missing or empty): no archive was written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub absent: bool,
    /// A staged volume: where its copy waits to be moved into place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Staged>,
    /// A volume backed up into the repository: what it reused and added. `stored_bytes` is
    /// then the index plus the packs bytes this backup added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoOutcome>,
    /// A database archive of a `pitr` server: where its log continues (`FILE:OFFSET`, the
    /// binlog position of a MariaDB dump, the start WAL segment of a PostgreSQL base). A
    /// point-in-time restore: the moment reached (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_position: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_ms: Option<i64>,
}

/// What a repository backup of one volume wrote and reused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoOutcome {
    /// Size of the index object (`object_key`).
    pub index_bytes: u64,
    /// Packs the index references.
    pub packs: u64,
    /// Chunks referenced, and how many were new (uploaded by this backup).
    pub chunks: u64,
    pub new_chunks: u64,
    /// Compressed bytes added to packs.
    pub new_stored: u64,
    /// Files taken from the parent without reading them, and files read.
    pub unchanged_files: u64,
    pub read_files: u64,
    /// The parent backup's index, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_index: Option<String>,
}

/// A volume restored into a staging directory of its target, with the archived root's metadata
/// (the staging directory's own changes while its content is moved out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// The staging directory's name inside the target.
    pub dir: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_s: i64,
    pub mtime_ns: u32,
    /// What staging could not restore (extended attributes the target refused, one line per
    /// kind), reported with the step that moves the copy into place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_per_volume_config_database_and_exec() {
        let spec = AppSpec::from_yaml(
            "name: shop\ncomponents:\n  - name: api\n    config: {a: 1}\n    volumes: [{name: up, path: /srv/up, node: n1}, {name: logs, path: /srv/logs}]\n    databases:\n      - {name: main, engine: postgres, databases: [shop, audit]}\n      - {name: cache, engine: redis, db: 2}\n    exec: {backup: [x], restore: [y]}\n",
        )
        .unwrap();
        let ids: Vec<_> = plan_shards(&spec).into_iter().map(|s| s.id).collect();
        assert_eq!(
            ids,
            [
                "api.config",
                "api.volume.up",
                "api.volume.logs",
                "api.postgres.main.shop",
                "api.postgres.main.audit",
                "api.redis.cache",
                "api.exec"
            ]
        );
        let planned = plan_shards(&spec);
        assert_eq!(planned[1].node.as_deref(), Some("n1"));
        assert_eq!(planned[4].slot, "api/postgres/main/1");
    }
}
