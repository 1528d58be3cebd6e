//! Where a backup lives in object storage (DESIGN.md §4), the same for every backend:
//!
//! ```text
//! PREFIX/teams/TEAM/apps/APP/backups/ID/manifest.json
//! PREFIX/teams/TEAM/apps/APP/backups/ID/shards/SHARD.ATTEMPT.tar.zst
//! ```
//!
//! PREFIX belongs to the storage location; keys here are relative to it. Every part is a
//! validated name, so a key can never climb out of its prefix.

/// The file name that commits a backup: written last, its presence means the backup exists.
pub const MANIFEST_FILE: &str = "manifest.json";

/// `teams/TEAM/apps/APP/backups/ID/`
pub fn backup_dir(team: &str, app: &str, id: &str) -> String {
    format!("teams/{team}/apps/{app}/backups/{id}/")
}

/// `teams/TEAM/apps/APP/backups/ID/manifest.json`
pub fn manifest_key(team: &str, app: &str, id: &str) -> String {
    format!("{}{MANIFEST_FILE}", backup_dir(team, app, id))
}

/// `teams/TEAM/apps/APP/backups/ID/shards/SHARD.ATTEMPT.tar.zst` — each attempt its own object,
/// so a late writer from an older attempt can never overwrite the winner.
pub fn shard_key(team: &str, app: &str, id: &str, shard: &str, attempt: u32) -> String {
    format!(
        "{}shards/{shard}.{attempt}.tar.zst",
        backup_dir(team, app, id)
    )
}

/// Parses a manifest key back into (team, app, id).
pub fn parse_manifest_key(key: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["teams", team, "apps", app, "backups", id, MANIFEST_FILE] => {
            Some(((*team).to_owned(), (*app).to_owned(), (*id).to_owned()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = manifest_key("default", "shop", "shop-1");
        assert_eq!(key, "teams/default/apps/shop/backups/shop-1/manifest.json");
        assert_eq!(
            parse_manifest_key(&key),
            Some(("default".into(), "shop".into(), "shop-1".into()))
        );
        assert_eq!(
            shard_key("t", "a", "i", "api.volume.up", 2),
            "teams/t/apps/a/backups/i/shards/api.volume.up.2.tar.zst"
        );
        assert_eq!(
            parse_manifest_key("teams/t/apps/a/backups/i/other.json"),
            None
        );
    }
}
