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

/// `teams/TEAM/apps/APP/backups/ID/shards/SHARD.ATTEMPT.idx.zst` — the index of a volume
/// backed up into the repository (DESIGN §10): the recipe of its tar stream.
pub fn index_key(team: &str, app: &str, id: &str, shard: &str, attempt: u32) -> String {
    format!(
        "{}shards/{shard}.{attempt}{INDEX_SUFFIX}",
        backup_dir(team, app, id)
    )
}

/// `teams/TEAM/apps/APP/backups/ID/key.age`: an encrypted backup's key file (its identity,
/// sealed to the location's recipients).
pub fn key_file(team: &str, app: &str, id: &str) -> String {
    format!("{}{KEY_FILE}", backup_dir(team, app, id))
}

/// The file name of a backup's key file.
pub const KEY_FILE: &str = "key.age";

/// The suffix an encrypted archive gets: `….tar.zst.age` (`age -d` it, then `zstd -d | tar -x`).
pub const SEALED_SUFFIX: &str = ".age";

const INDEX_SUFFIX: &str = ".idx.zst";

/// Whether an archive key names a repository index rather than a self-contained archive.
pub fn is_index_key(key: &str) -> bool {
    key.ends_with(INDEX_SUFFIX)
}

/// The packs list beside an index: `….idx.zst` → `….packs`.
pub fn packs_key_of(index_key: &str) -> Option<String> {
    index_key
        .strip_suffix(INDEX_SUFFIX)
        .map(|base| format!("{base}.packs"))
}

/// `teams/TEAM/repo/packs/`: a team's packs in a location (teams never share chunks).
pub fn packs_prefix(team: &str) -> String {
    format!("teams/{team}/repo/packs/")
}

/// The packs prefix of the team an index belongs to (a restore into another team still reads
/// the packs where the backup wrote them).
pub fn packs_prefix_of(index_key: &str) -> Option<String> {
    match index_key.split('/').collect::<Vec<_>>().as_slice() {
        ["teams", team, "apps", ..] if crate::names::check_name("team name", team).is_ok() => {
            Some(packs_prefix(team))
        }
        _ => None,
    }
}

/// Whether `key` is an archive directly inside `shards_dir` (a backup's `…/shards/`): a plain
/// file name, no further `/`, no leading dot (so no `..`).
pub fn names_shard_in(key: &str, shards_dir: &str) -> bool {
    key.strip_prefix(shards_dir).is_some_and(|file| {
        !file.is_empty() && !file.contains(['/', '\\']) && !file.starts_with('.')
    })
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
        let index = index_key("t", "a", "i", "api.volume.up", 3);
        assert_eq!(
            index,
            "teams/t/apps/a/backups/i/shards/api.volume.up.3.idx.zst"
        );
        assert!(is_index_key(&index));
        assert!(!is_index_key(&shard_key("t", "a", "i", "s", 1)));
        assert_eq!(
            packs_key_of(&index).as_deref(),
            Some("teams/t/apps/a/backups/i/shards/api.volume.up.3.packs")
        );
        assert_eq!(
            packs_prefix_of(&index).as_deref(),
            Some("teams/t/repo/packs/")
        );
        assert_eq!(packs_prefix_of("teams/../apps/x"), None);
        let dir = "teams/t/apps/a/backups/i/shards/";
        assert!(names_shard_in(&index, dir));
        assert!(!names_shard_in(
            "teams/u/apps/a/backups/i/shards/x.tar.zst",
            dir
        ));
        assert!(!names_shard_in(
            &format!("{dir}../../j/shards/x.tar.zst"),
            dir
        ));
        assert!(!names_shard_in(&format!("{dir}sub/x.tar.zst"), dir));
        assert!(!names_shard_in(dir, dir));
    }
}
