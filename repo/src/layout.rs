//! Names in a repository. Packs live under the repository's pack prefix
//! (`teams/TEAM/repo/packs/` in a location) as `MILLIS-UUID.pack`: written once under a name
//! nobody else can pick, and old enough to collect can be told from the name alone.

/// A new pack name, created at `now_ms`.
pub fn new_pack_name(now_ms: i64) -> String {
    format!("{:013}-{}", now_ms.max(0), uuid::Uuid::new_v4().simple())
}

/// When a pack was created, from its name; `None` for a name this module did not make.
pub fn pack_created_ms(name: &str) -> Option<i64> {
    let (ms, id) = name.split_once('-')?;
    let valid = ms.len() == 13
        && ms.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| ms.parse().ok()).flatten()
}

/// The object key of pack `name` under `pack_prefix` (which ends with `/`).
pub fn pack_key(pack_prefix: &str, name: &str) -> String {
    format!("{pack_prefix}{name}.pack")
}

/// The pack name of an object key under `pack_prefix`, if it is one.
pub fn pack_name_of<'a>(pack_prefix: &str, key: &'a str) -> Option<&'a str> {
    let name = key.strip_prefix(pack_prefix)?.strip_suffix(".pack")?;
    pack_created_ms(name).map(|_| name)
}

/// The current time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_names_carry_their_time_and_nothing_else_parses() {
        let name = new_pack_name(1_700_000_000_123);
        assert_eq!(pack_created_ms(&name), Some(1_700_000_000_123));
        let key = pack_key("teams/t/repo/packs/", &name);
        assert_eq!(
            pack_name_of("teams/t/repo/packs/", &key),
            Some(name.as_str())
        );
        assert_ne!(new_pack_name(1), new_pack_name(1));
        for junk in ["", "x-y", "1700000000123", "170000000012-0123", "../../etc"] {
            assert_eq!(pack_created_ms(junk), None, "{junk}");
        }
        assert_eq!(
            pack_name_of("teams/t/repo/packs/", "teams/t/repo/packs/x.pack"),
            None
        );
    }
}
