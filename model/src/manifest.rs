//! `manifest.json`: the self-describing record of one backup, written last as its commit point.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::app::AppSpec;

/// Identifies the document type inside the file.
pub const MANIFEST_FORMAT: &str = "ferry.backup";
/// Bumped when a reader of an older version could misread a newer manifest. Version 2 adds
/// repository volumes (`repo` on a shard); a backup without them is still written as version 1
/// so that older installations can read it.
pub const MANIFEST_VERSION: u32 = 2;

/// One backup as stored next to its shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub team: String,
    pub app: String,
    pub cluster: String,
    /// Name of the storage location it was written to (informational: another installation may
    /// call the same bucket differently).
    pub storage: String,
    /// `Completed` or `PartiallyFailed`.
    pub state: String,
    pub created_at_ms: i64,
    pub completed_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `manual` or the schedule's name.
    pub trigger: String,
    pub ferry_version: String,
    /// The installation that wrote it (its id): a sync by that installation restores the
    /// catalog entry exactly (trigger, expiry); another installation's backups are foreign.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub installation: String,
    /// The app as it was declared when backed up.
    pub app_spec: AppSpec,
    pub shards: Vec<ManifestShard>,
}

/// One shard of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestShard {
    pub id: String,
    pub component: String,
    /// `volume`, `config`, `exec` or a database engine.
    pub kind: String,
    /// The slot of the shard in the app spec (see `task::PlannedShard::slot`).
    pub slot: String,
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_version: Option<String>,
    /// The attempt whose archive won.
    pub attempt: u32,
    /// Key of the archive, relative to the storage location.
    pub object_key: String,
    pub source_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
    pub worker: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// Empty when the shard succeeded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// A volume in the location's repository: `object_key` is its index (the recipe of the tar
    /// stream), `sha256` that of the index; the chunks are in the team's packs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<crate::task::RepoOutcome>,
}

impl BackupManifest {
    /// Serializes the manifest (pretty, so a person can read it in the bucket).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses and checks a manifest read from storage.
    pub fn from_json(bytes: &[u8]) -> Result<BackupManifest, ModelError> {
        let m: BackupManifest =
            serde_json::from_slice(bytes).map_err(|e| ModelError::BackupManifest(e.to_string()))?;
        if m.format != MANIFEST_FORMAT {
            return Err(ModelError::BackupManifest(format!(
                "format is {:?}, expected {MANIFEST_FORMAT:?}",
                m.format
            )));
        }
        if m.version > MANIFEST_VERSION {
            return Err(ModelError::BackupManifest(format!(
                "version {} is newer than this Ferry understands ({MANIFEST_VERSION}); upgrade",
                m.version
            )));
        }
        crate::names::check_job_id(&m.id)?;
        crate::names::check_name("team name", &m.team)?;
        crate::names::check_name("app name", &m.app)?;
        Ok(m)
    }
}
