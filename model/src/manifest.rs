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
    /// The writing installation's signature of [`signed_payload`](BackupManifest::signed_payload)
    /// (DESIGN §6 "Trust"). Absent in manifests of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ManifestSignature>,
    /// Encrypted archives: the age recipient they are encrypted to (the backup's own key, whose
    /// identity is in `key.age` beside this manifest, sealed to the location's recipients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_to: Option<String>,
}

/// An Ed25519 signature of a manifest and the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSignature {
    /// `ed25519:BASE64`
    pub key: String,
    /// base64
    pub signature: String,
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
    /// A database of a `pitr` server: where its log continues after this archive (`FILE:OFFSET`;
    /// see `task::ShardOutcome::log_position`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_position: Option<String>,
}

impl BackupManifest {
    /// Serializes the manifest (pretty, so a person can read it in the bucket).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The bytes a signature covers: the manifest without its signature and without what moving
    /// it to another place changes — the team it is filed under, the storage location's name and
    /// the directory prefix of its archive keys (an import files a backup under the importing
    /// team; sync reads it from a location named differently). Everything that decides what a
    /// restore does (the app spec with its commands, hooks and paths, each archive's name, size
    /// and SHA-256) is covered.
    pub fn signed_payload(&self) -> Vec<u8> {
        let mut m = self.clone();
        let dir = crate::layout::backup_dir(&self.team, &self.app, &self.id);
        for shard in &mut m.shards {
            if let Some(name) = shard.object_key.strip_prefix(&dir) {
                shard.object_key = name.to_owned();
            }
        }
        m.team = String::new();
        m.storage = String::new();
        m.signature = None;
        serde_json::to_vec(&m).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> BackupManifest {
        let json = r#"{"format":"ferry.backup","version":1,"id":"shop-1","team":"t","app":"shop",
            "cluster":"c","storage":"s3","state":"Completed","created_at_ms":1,"completed_at_ms":2,
            "trigger":"manual","ferry_version":"0","app_spec":{"name":"shop","components":[]},
            "shards":[{"id":"a","component":"a","kind":"exec","slot":"a.exec","resource":"exec",
            "attempt":1,"object_key":"teams/t/apps/shop/backups/shop-1/shards/a.1.tar.zst",
            "source_bytes":1,"stored_bytes":1,"sha256":"00","worker":"w","started_at_ms":1,
            "finished_at_ms":2}]}"#;
        BackupManifest::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn the_signed_payload_survives_a_move_but_not_an_edit() {
        let m = manifest();
        let payload = m.signed_payload();
        let mut moved = m.clone();
        moved.team = "ops".into();
        moved.storage = "elsewhere".into();
        moved.shards[0].object_key = "teams/ops/apps/shop/backups/shop-1/shards/a.1.tar.zst".into();
        moved.signature = Some(ManifestSignature {
            key: "k".into(),
            signature: "s".into(),
        });
        assert_eq!(moved.signed_payload(), payload);
        // Through JSON and back: the same bytes.
        let again = BackupManifest::from_json(&moved.to_json()).unwrap();
        assert_eq!(again.signed_payload(), payload);

        let mut edited = m.clone();
        edited.shards[0].sha256 = "11".into();
        assert_ne!(edited.signed_payload(), payload);
        let mut elsewhere = m.clone();
        elsewhere.shards[0].object_key = "teams/other/apps/x/backups/y/shards/a.1.tar.zst".into();
        assert_ne!(elsewhere.signed_payload(), payload);
        let mut renamed = m;
        renamed.app_spec.name = "other".into();
        assert_ne!(renamed.signed_payload(), payload);
    }
}
