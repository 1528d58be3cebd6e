//! Extended attributes: `user.*`, POSIX ACLs (`system.posix_acl_access`,
//! `system.posix_acl_default`), file capabilities (`security.capability`) and
//! any other name the file system lists. They travel as PAX records
//! `SCHILY.xattr.NAME=VALUE` before their entry — the form GNU tar writes and
//! reads with `--xattrs` — and are set on restore after content, owner and
//! mode (chown clears a file capability; writing data would too).
//!
//! A target that refuses an attribute (no ACL support, no `CAP_SETFCAP`, a
//! name space only root may write) is not a failed restore: each refusal is
//! counted per kind in [`ArchiveStats::attr_warnings`](crate::ArchiveStats).

use std::fs::File;
use std::io::{self, ErrorKind};
use std::path::Path;

use xattr::FileExt;

use crate::AttrWarning;

/// PAX keyword prefix of an extended attribute (GNU tar, star).
pub(crate) const PAX_PREFIX: &str = "SCHILY.xattr.";

/// Most bytes of attribute names and values one entry may carry on restore:
/// Linux allows 64 KiB per value and ext4 about one block per inode, so more
/// is a hostile archive.
pub(crate) const MAX_ENTRY_BYTES: usize = 1 << 20;

/// An entry's attributes, sorted by name (equal trees give equal streams).
pub(crate) type Attrs = Vec<(String, Vec<u8>)>;

/// What reading an entry's attributes found.
#[derive(Default)]
pub(crate) struct Read {
    pub attrs: Attrs,
    /// Attributes that could not be carried (a name that is not UTF-8, a
    /// value that vanished or could not be read): counted as warnings.
    pub lost: u64,
}

/// The attributes of an open file or directory.
pub(crate) fn read_file(file: &File) -> Read {
    collect(file.list_xattr(), |name| file.get_xattr(name))
}

/// The attributes of a symlink itself (never followed).
pub(crate) fn read_link(path: &Path) -> Read {
    collect(xattr::list(path), |name| xattr::get(path, name))
}

fn collect(
    names: io::Result<xattr::XAttrs>,
    get: impl Fn(&std::ffi::OsStr) -> io::Result<Option<Vec<u8>>>,
) -> Read {
    let mut read = Read::default();
    let names = match names {
        Ok(names) => names,
        // No xattr support on this file system (or for this file type): nothing to carry.
        Err(_) => return read,
    };
    for name in names {
        let Some(text) = name.to_str() else {
            read.lost += 1;
            continue;
        };
        match get(&name) {
            Ok(Some(value)) => read.attrs.push((text.to_owned(), value)),
            // Removed since it was listed.
            Ok(None) => {}
            Err(_) => read.lost += 1,
        }
    }
    read.attrs.sort();
    read
}

/// The kind an attribute is reported as when a target refuses it.
pub(crate) fn kind(name: &str) -> &'static str {
    if name.starts_with("system.posix_acl_") {
        "POSIX ACLs"
    } else if name == "security.capability" {
        "file capabilities"
    } else if name.starts_with("user.") {
        "user extended attributes"
    } else if name.starts_with("security.") {
        "security labels"
    } else if name.starts_with("trusted.") {
        "trusted extended attributes"
    } else {
        "other extended attributes"
    }
}

/// Whether a failure to set an attribute means "this target does not take
/// it" (a warning) rather than a broken restore.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOTSUP
                | libc::EPERM
                | libc::EACCES
                | libc::EINVAL
                | libc::E2BIG
                | libc::ERANGE
                | libc::ENOSPC
        )
    ) || e.kind() == ErrorKind::Unsupported
}

/// Where attributes are set: an open file or directory, or a symlink by path.
pub(crate) enum On<'a> {
    File(&'a File),
    Link(&'a Path),
}

/// Sets `attrs`; a refused attribute becomes a warning of its kind, any other
/// failure an error.
pub(crate) fn apply(on: On<'_>, attrs: &Attrs, warnings: &mut Vec<AttrWarning>) -> io::Result<()> {
    for (name, value) in attrs {
        let set = match on {
            On::File(f) => f.set_xattr(name, value),
            On::Link(p) => xattr::set(p, name, value),
        };
        match set {
            Ok(()) => {}
            Err(e) if refused(&e) => note(warnings, kind(name), &e),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn note(warnings: &mut Vec<AttrWarning>, kind: &str, e: &io::Error) {
    match warnings.iter_mut().find(|w| w.kind == kind) {
        Some(w) => w.count += 1,
        None => warnings.push(AttrWarning {
            kind: kind.to_owned(),
            count: 1,
            first_error: e.to_string(),
        }),
    }
}

/// PAX keywords GNU tar's `--acls` reads (POSIX ACLs in text form). Ferry writes them beside
/// the `SCHILY.xattr.system.posix_acl_*` records, because GNU tar with `--acls` takes ACLs only
/// from these; Ferry's own restore takes the exact binary form and ignores them.
pub(crate) fn acl_records(attrs: &Attrs) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (name, key) in [
        ("system.posix_acl_access", "SCHILY.acl.access"),
        ("system.posix_acl_default", "SCHILY.acl.default"),
    ] {
        if let Some(text) = attrs
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| acl_text(v))
        {
            out.push((key, text));
        }
    }
    out
}

/// The text form of a Linux POSIX ACL extended attribute (`posix_acl_xattr`: a little-endian
/// version 2 header, then entries of tag u16, permissions u16, id u32), with numeric ids —
/// what `acl_to_text` prints, one entry per line. `None` if the value is malformed.
pub(crate) fn acl_text(value: &[u8]) -> Option<String> {
    let (version, entries) = value.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != 2 || entries.len() % 8 != 0 {
        return None;
    }
    let mut text = String::new();
    for e in entries.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let (kind, qualifier) = match tag {
            0x01 => ("user", String::new()),
            0x02 => ("user", id.to_string()),
            0x04 => ("group", String::new()),
            0x08 => ("group", id.to_string()),
            0x10 => ("mask", String::new()),
            0x20 => ("other", String::new()),
            _ => return None,
        };
        let bit = |b: u16, c: char| if perm & b != 0 { c } else { '-' };
        text.push_str(&format!(
            "{kind}:{qualifier}:{}{}{}\n",
            bit(4, 'r'),
            bit(2, 'w'),
            bit(1, 'x')
        ));
    }
    Some(text)
}

/// The attribute name of a PAX keyword, if it is one.
pub(crate) fn pax_name(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.strip_prefix(PAX_PREFIX.as_bytes())?)
        .ok()
        .filter(|n| !n.is_empty())
}

/// Copies the attributes of directory `from` onto `to` (a staged root onto
/// the real one); refused ones become warnings.
pub fn copy_dir_attrs(from: &Path, to: &Path) -> io::Result<Vec<AttrWarning>> {
    let open = |p: &Path| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(p)
    };
    let read = read_file(&open(from)?);
    let mut warnings = Vec::new();
    apply(On::File(&open(to)?), &read.attrs, &mut warnings)?;
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_group_names() {
        assert_eq!(kind("system.posix_acl_default"), "POSIX ACLs");
        assert_eq!(kind("security.capability"), "file capabilities");
        assert_eq!(kind("user.mime_type"), "user extended attributes");
        assert_eq!(kind("security.selinux"), "security labels");
        assert_eq!(
            kind("trusted.overlay.opaque"),
            "trusted extended attributes"
        );
    }

    #[test]
    fn pax_keywords_name_attributes() {
        assert_eq!(pax_name(b"SCHILY.xattr.user.a"), Some("user.a"));
        assert_eq!(pax_name(b"SCHILY.xattr."), None);
        assert_eq!(pax_name(b"mtime"), None);
        assert_eq!(pax_name(b"SCHILY.xattr.user.\xff"), None);
    }

    #[test]
    fn refusals_are_counted_once_per_kind() {
        let mut w = Vec::new();
        let e = io::Error::from_raw_os_error(libc::ENOTSUP);
        note(&mut w, "POSIX ACLs", &e);
        note(&mut w, "POSIX ACLs", &e);
        note(&mut w, "file capabilities", &e);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].count, 2);
        assert!(refused(&e));
        assert!(!refused(&io::Error::from_raw_os_error(libc::EIO)));
    }

    #[test]
    fn acls_are_written_as_gnu_tar_writes_them() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (0x02, 6, 65534),
            (0x04, 4, u32::MAX),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            acl_text(&v).unwrap(),
            "user::rw-\nuser:65534:rw-\ngroup::r--\nmask::rw-\nother::r--\n"
        );
        assert_eq!(acl_text(&v[..7]), None);
        assert_eq!(acl_text(b"\x01\0\0\0"), None);
        let attrs: Attrs = vec![("system.posix_acl_default".into(), v)];
        let records = acl_records(&attrs);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, "SCHILY.acl.default");
    }

    #[test]
    fn user_attributes_round_trip_on_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let f = File::open(&p).unwrap();
        let attrs: Attrs = vec![
            ("user.a".into(), b"1".to_vec()),
            ("user.bin".into(), vec![0, 255, 10]),
            ("user.empty".into(), vec![]),
        ];
        let mut w = Vec::new();
        apply(On::File(&f), &attrs, &mut w).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(read_file(&f).attrs, attrs);
    }
}
