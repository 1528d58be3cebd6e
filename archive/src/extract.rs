//! Restoring: reads a tar stream and recreates the tree inside a target
//! directory, refusing anything that would land outside it.
//!
//! Rules, checked before anything is created for an entry:
//! - the path must be relative and free of `..`;
//! - every existing parent inside the target must be a real directory, never
//!   a symlink ("symlink escape");
//! - the final component is created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`,
//!   mkdir, symlink, link), so nothing that already exists is followed or
//!   replaced;
//! - a hard link's source must pass the same checks and be a regular file
//!   already inside the target.
//!
//! The target is assumed not to be modified concurrently by someone else:
//! the checks use paths, so a concurrent attacker could race them.

use std::cmp::Reverse;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use filetime::FileTime;
use tar::{Entry, EntryType};

use crate::tap::{self, Pax, Seen, Tap};
use crate::xattrs::{self, Attrs, On};
use crate::{
    ArchiveError, ArchiveStats, BUF_SIZE, ExtractOptions, io_err, pax, read_full, shown,
    shown_bytes, sparse,
};

/// Extracts a tar stream produced by [`write_tree`](crate::write_tree) (or a
/// hostile one) into `target`, which must exist and be an empty directory
/// unless `options.overwrite` is true (with overwrite, the existing content of
/// target is removed first — but only after the first tar header was read
/// successfully; removing does not follow symlinks out of the target).
///
/// `progress` is incremented by the number of file content bytes written
/// (logical bytes: holes of sparse files included).
///
/// The first unsafe entry aborts the whole extraction with
/// [`ArchiveError::Unsafe`]; what was extracted before stays. A stream that
/// ends without the end-of-archive marker is reported as truncated.
/// Ownership is restored only when running as root (or with `CAP_CHOWN`):
/// by user and group name where the name exists on this host, else by the
/// archived number (always by number with `options.numeric_owner`).
/// Extended attributes are set after content, owner and mode; those the
/// target refuses are counted in [`ArchiveStats::attr_warnings`].
///
/// # Errors
///
/// [`ArchiveError::TargetMissing`], [`ArchiveError::TargetNotDirectory`] or
/// [`ArchiveError::TargetNotEmpty`] before anything is read or changed;
/// [`ArchiveError::Input`] for a stream that is empty, corrupt or truncated
/// (if that shows at the first header, the target is left untouched);
/// [`ArchiveError::Unsafe`] for the first hostile entry;
/// [`ArchiveError::Io`] when creating or setting up a file fails.
pub fn extract_tree<R: Read>(
    input: R,
    target: &Path,
    options: &ExtractOptions,
    progress: &AtomicU64,
) -> Result<ArchiveStats, ArchiveError> {
    let overwrite = options.overwrite;
    let root = open_target(target, overwrite)?;
    let (tap, seen) = Tap::new(EofTracker {
        inner: input,
        eof: false,
    });
    let mut archive = tar::Archive::new(tap);
    let mut ex = Extractor {
        root,
        progress,
        stats: ArchiveStats::default(),
        dirs: Vec::new(),
        root_meta: None,
        buf: vec![0; BUF_SIZE],
        as_root: running_as_root(),
        owners: Owners {
            numeric: options.numeric_owner,
            ..Owners::default()
        },
        checked_parent: None,
        last: Vec::new(),
        seen,
        max_bytes: options.max_bytes,
    };
    {
        let mut entries = archive
            .entries()
            .map_err(|e| input_err("start of archive".into(), e))?;
        let first = match entries.next() {
            Some(entry) => entry.map_err(|e| input_err("first header".into(), e))?,
            None => {
                return Err(input_err(
                    "start of archive".into(),
                    io::Error::new(
                        ErrorKind::InvalidData,
                        "the stream holds no archive entries",
                    ),
                ));
            }
        };
        // Only now is the stream known to be a tar archive: an empty or
        // garbled stream must not have wiped the old content.
        ex.prepare_root(overwrite)?;
        ex.entry(first)?;
        for entry in entries {
            let entry = entry.map_err(|e| input_err(ex.after_last(), e))?;
            ex.entry(entry)?;
        }
    }
    if archive.into_inner().into_inner().eof {
        return Err(input_err(
            ex.after_last(),
            io::Error::new(
                ErrorKind::UnexpectedEof,
                "stream ended without the end-of-archive marker (truncated)",
            ),
        ));
    }
    ex.finish_dirs()?;
    Ok(ex.stats)
}

/// Whether this process may give files to other owners (root, or `CAP_CHOWN`): only then are
/// archived owners restored.
pub fn can_restore_owners() -> bool {
    running_as_root()
}

/// Only root, or a process holding `CAP_CHOWN` (the worker's systemd unit runs it as an
/// unprivileged user with it), may give files away, so ownership is restored only then.
// The workspace denies unsafe code; this call and the lseek in sparse.rs are
// the only exceptions, as std has no safe wrapper for either.
#[allow(unsafe_code)]
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() == 0 };
    root || has_effective_capability(CAP_CHOWN)
}

/// `CAP_CHOWN` (linux/capability.h); libc does not name capabilities.
const CAP_CHOWN: u32 = 0;

/// Whether capability number `cap` is in this process's effective set (`CapEff` of
/// /proc/self/status).
fn has_effective_capability(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|set| cap < 64 && set & (1u64 << cap) != 0)
}

fn input_err(context: String, source: io::Error) -> ArchiveError {
    ArchiveError::Input { context, source }
}

fn unsafe_err(raw: &[u8], reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Unsafe {
        path: PathBuf::from(OsStr::from_bytes(raw)),
        reason: reason.into(),
    }
}

/// Checks the target and returns its canonical path, so later path
/// operations do not depend on symlinks in the path the caller gave.
fn open_target(target: &Path, overwrite: bool) -> Result<PathBuf, ArchiveError> {
    match fs::symlink_metadata(target) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(ArchiveError::TargetMissing {
                path: target.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err(target, e)),
    }
    let root = fs::canonicalize(target).map_err(|e| io_err(target, e))?;
    let meta = fs::metadata(&root).map_err(|e| io_err(target, e))?;
    if !meta.is_dir() {
        return Err(ArchiveError::TargetNotDirectory {
            path: target.to_path_buf(),
        });
    }
    if !overwrite {
        let mut entries = fs::read_dir(&root).map_err(|e| io_err(target, e))?;
        if entries.next().is_some() {
            return Err(ArchiveError::TargetNotEmpty {
                path: target.to_path_buf(),
            });
        }
    }
    Ok(root)
}

/// Turns an archive path into a relative path below the target: `.` and
/// empty components are dropped (the empty result is the target itself),
/// absolute paths and `..` are refused.
pub(crate) fn safe_relative(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    if raw[0] == b'/' {
        return Err("absolute path");
    }
    let mut out = PathBuf::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path contains a `..` component"),
            name => out.push(OsStr::from_bytes(name)),
        }
    }
    Ok(out)
}

/// Notes whether the input ended by itself: the `tar` crate takes EOF at a
/// header boundary as the end of the archive, which would hide truncation.
struct EofTracker<R> {
    inner: R,
    eof: bool,
}

impl<R: Read> Read for EofTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        Ok(n)
    }
}

/// Metadata of a directory, applied after all its content was written.
struct DirMeta {
    rel: PathBuf,
    meta: EntryMeta,
}

#[derive(Clone)]
struct EntryMeta {
    mode: u32,
    mtime: FileTime,
    owner: Option<(u32, u32)>,
    attrs: Attrs,
}

/// Archived owner names resolved on this host, each looked up once.
#[derive(Default)]
struct Owners {
    /// `--numeric-owner`: ignore the names.
    numeric: bool,
    users: std::collections::HashMap<Vec<u8>, Option<u32>>,
    groups: std::collections::HashMap<Vec<u8>, Option<u32>>,
}

impl Owners {
    /// The id to give: the local id of the archived name when it exists here, else the number.
    fn resolve(
        &mut self,
        uid: u32,
        uname: Option<&[u8]>,
        gid: u32,
        gname: Option<&[u8]>,
    ) -> (u32, u32) {
        if self.numeric {
            return (uid, gid);
        }
        let user = uname.filter(|n| !n.is_empty()).and_then(|n| {
            *self.users.entry(n.to_vec()).or_insert_with(|| {
                let name = std::str::from_utf8(n).ok()?;
                let user = nix::unistd::User::from_name(name).ok().flatten()?;
                Some(user.uid.as_raw())
            })
        });
        let group = gname.filter(|n| !n.is_empty()).and_then(|n| {
            *self.groups.entry(n.to_vec()).or_insert_with(|| {
                let name = std::str::from_utf8(n).ok()?;
                let group = nix::unistd::Group::from_name(name).ok().flatten()?;
                Some(group.gid.as_raw())
            })
        });
        (user.unwrap_or(uid), group.unwrap_or(gid))
    }
}

struct Extractor<'a> {
    /// Canonical target directory.
    root: PathBuf,
    progress: &'a AtomicU64,
    stats: ArchiveStats,
    dirs: Vec<DirMeta>,
    root_meta: Option<EntryMeta>,
    buf: Vec<u8>,
    as_root: bool,
    owners: Owners,
    /// Parent (relative) most recently verified to be a chain of real
    /// directories. Nothing is ever removed during extraction and everything
    /// is created exclusively, so a verified directory stays one.
    checked_parent: Option<PathBuf>,
    /// Raw path of the last entry, for error context.
    last: Vec<u8>,
    /// Each member's PAX data, read whole (see `tap.rs`).
    seen: Seen,
    /// Most bytes of file data the archive may hold (`ExtractOptions::max_bytes`).
    max_bytes: Option<u64>,
}

impl Extractor<'_> {
    fn after_last(&self) -> String {
        if self.last.is_empty() {
            "first header".into()
        } else {
            format!("header after entry \"{}\"", shown_bytes(&self.last))
        }
    }

    fn prepare_root(&mut self, overwrite: bool) -> Result<(), ArchiveError> {
        if !self.as_root {
            // A previous restore may have left the target read-only; without
            // write access neither removing nor creating works.
            let meta = fs::metadata(&self.root).map_err(|e| io_err(&self.root, e))?;
            if meta.mode() & 0o700 != 0o700 {
                fs::set_permissions(
                    &self.root,
                    Permissions::from_mode((meta.mode() & 0o7777) | 0o700),
                )
                .map_err(|e| io_err(&self.root, e))?;
            }
        }
        if overwrite {
            clear_dir(&self.root, self.as_root)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: Entry<'_, R>) -> Result<(), ArchiveError> {
        let raw = entry.path_bytes().into_owned();
        self.last.clone_from(&raw);
        let ty = entry.header().entry_type();
        let kind = match ty {
            EntryType::Directory => Kind::Dir,
            // Pre-POSIX archives mark directories by a trailing slash.
            EntryType::Regular | EntryType::Continuous if raw.ends_with(b"/") => Kind::Dir,
            EntryType::Regular | EntryType::Continuous => Kind::File { sparse: false },
            EntryType::GNUSparse => Kind::File { sparse: true },
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::HardLink,
            // Global PAX records describe no file.
            EntryType::XGlobalHeader => return Ok(()),
            EntryType::Char | EntryType::Block => {
                return Err(unsafe_err(&raw, "device nodes are not restored"));
            }
            // Fifos, GNU volume labels, multi-volume parts, dump dirs and
            // unknown types carry nothing a file backup restores.
            _ => {
                self.stats.skipped += 1;
                return Ok(());
            }
        };
        let rel = safe_relative(&raw).map_err(|reason| unsafe_err(&raw, reason))?;
        let meta = self.entry_meta(&mut entry, &raw)?;
        if rel.as_os_str().is_empty() {
            if !matches!(kind, Kind::Dir) {
                return Err(unsafe_err(
                    &raw,
                    "the archive root (\".\") must be a directory",
                ));
            }
            // The target itself: only its mode/mtime/owner are taken, at the end.
            self.root_meta = Some(meta);
            self.stats.dirs += 1;
            return Ok(());
        }
        self.check_parents(&rel, &raw, true)?;
        let path = self.root.join(&rel);
        match kind {
            Kind::Dir => self.make_dir(rel, &path, &raw, meta),
            Kind::File { sparse } => self.make_file(&mut entry, &path, &raw, meta, sparse),
            Kind::Symlink => self.make_symlink(&entry, &path, &raw, meta),
            Kind::HardLink => self.make_hard_link(&entry, &path, &raw),
        }
    }

    fn entry_meta<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        raw: &[u8],
    ) -> Result<EntryMeta, ArchiveError> {
        let bad = |e| input_err(format!("header of entry \"{}\"", shown_bytes(raw)), e);
        let h = entry.header();
        let mode = h.mode().map_err(bad)? & 0o7777;
        let uid = h.uid().map_err(bad)?;
        let gid = h.gid().map_err(bad)?;
        let secs = h.mtime().map_err(bad)?;
        let owner = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) if self.as_root => {
                let (uname, gname) = (h.username_bytes(), h.groupname_bytes());
                Some(self.owners.resolve(u, uname, g, gname))
            }
            _ => None,
        };
        // GNU tar writes pre-1970 times as base-256 two's complement; the crate
        // hands back its low 64 bits, so reinterpreting them as signed is exact.
        let header_time = FileTime::from_unix_time(secs as i64, 0);
        let (pax_time, attrs) = pax_records(&self.seen.current(), raw)?;
        // The PAX record, when present and well-formed, is the precise time.
        let mtime = pax_time.unwrap_or(header_time);
        Ok(EntryMeta {
            mode,
            mtime,
            owner,
            attrs,
        })
    }

    /// Refuses `rel` unless every parent inside the target is a real
    /// directory; missing ones are created when `create` (archives from
    /// other tools may omit parent entries).
    fn check_parents(&mut self, rel: &Path, raw: &[u8], create: bool) -> Result<(), ArchiveError> {
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        if create && self.checked_parent.as_deref() == Some(parent) {
            return Ok(());
        }
        let mut cur = self.root.clone();
        for comp in parent.components() {
            cur.push(comp);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    let inside = cur.strip_prefix(&self.root).unwrap_or(&cur);
                    return Err(unsafe_err(
                        raw,
                        format!(
                            "symlink escape: \"{}\" inside the target is a symlink",
                            shown(inside)
                        ),
                    ));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    let inside = cur.strip_prefix(&self.root).unwrap_or(&cur);
                    return Err(unsafe_err(
                        raw,
                        format!("parent \"{}\" is not a directory", shown(inside)),
                    ));
                }
                Err(e) if e.kind() == ErrorKind::NotFound && create => {
                    DirBuilder::new()
                        .mode(0o755)
                        .create(&cur)
                        .map_err(|e| io_err(&cur, e))?;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let inside = cur.strip_prefix(&self.root).unwrap_or(&cur);
                    return Err(unsafe_err(
                        raw,
                        format!("parent \"{}\" does not exist in the target", shown(inside)),
                    ));
                }
                Err(e) => return Err(io_err(&cur, e)),
            }
        }
        if create {
            self.checked_parent = Some(parent.to_path_buf());
        }
        Ok(())
    }

    fn make_dir(
        &mut self,
        rel: PathBuf,
        path: &Path,
        raw: &[u8],
        meta: EntryMeta,
    ) -> Result<(), ArchiveError> {
        // Owner-only until finish_dirs sets the real mode: a read-only
        // directory must still take its content.
        match DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // A repeated entry or a parent created implicitly is fine;
                // anything else in the way is not.
                let m = fs::symlink_metadata(path).map_err(|e| io_err(path, e))?;
                if !m.is_dir() {
                    return Err(unsafe_err(
                        raw,
                        "something other than a directory already exists there",
                    ));
                }
            }
            Err(e) => return Err(io_err(path, e)),
        }
        self.dirs.push(DirMeta { rel, meta });
        self.stats.dirs += 1;
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        path: &Path,
        raw: &[u8],
        meta: EntryMeta,
        sparse: bool,
    ) -> Result<(), ArchiveError> {
        // For sparse entries the crate reports the real (logical) size and
        // yields zeros for the holes.
        let size = entry.size();
        if let Some(max) = self.max_bytes
            && self.stats.bytes.saturating_add(size) > max
        {
            return Err(unsafe_err(
                raw,
                format!(
                    "the archive holds more file data than the {max} bytes its backup recorded"
                ),
            ));
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| exists_or_io(e, path, raw))?;
        let mut written = 0u64;
        let mut out = &file;
        loop {
            let n = read_full(entry, &mut self.buf)
                .map_err(|e| input_err(format!("data of entry \"{}\"", shown_bytes(raw)), e))?;
            if n == 0 {
                break;
            }
            let chunk = &self.buf[..n];
            if sparse {
                sparse::write_skipping_zeros(&file, written, chunk)
            } else {
                out.write_all(chunk)
            }
            .map_err(|e| io_err(path, e))?;
            written += n as u64;
            self.progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        if written != size {
            return Err(input_err(
                format!("data of entry \"{}\"", shown_bytes(raw)),
                io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "entry data ended early (truncated stream)",
                ),
            ));
        }
        if sparse {
            // A trailing hole is never written: the length makes it.
            file.set_len(size).map_err(|e| io_err(path, e))?;
        }
        apply_meta(&file, path, &meta)?;
        xattrs::apply(On::File(&file), &meta.attrs, &mut self.stats.attr_warnings)
            .map_err(|e| io_err(path, e))?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    fn make_symlink<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        path: &Path,
        raw: &[u8],
        meta: EntryMeta,
    ) -> Result<(), ArchiveError> {
        // The target is stored as-is, whatever it points at: a symlink is
        // harmless until something follows it, and this code never does.
        let Some(target) = entry.link_name_bytes() else {
            return Err(unsafe_err(raw, "symlink entry without a target"));
        };
        std::os::unix::fs::symlink(OsStr::from_bytes(&target), path)
            .map_err(|e| exists_or_io(e, path, raw))?;
        if let Some((uid, gid)) = meta.owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| io_err(path, e))?;
        }
        xattrs::apply(On::Link(path), &meta.attrs, &mut self.stats.attr_warnings)
            .map_err(|e| io_err(path, e))?;
        filetime::set_symlink_file_times(path, meta.mtime, meta.mtime)
            .map_err(|e| io_err(path, e))?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn make_hard_link<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        path: &Path,
        raw: &[u8],
    ) -> Result<(), ArchiveError> {
        let Some(source_raw) = entry.link_name_bytes().map(std::borrow::Cow::into_owned) else {
            return Err(unsafe_err(raw, "hard link entry without a source"));
        };
        let source_rel = safe_relative(&source_raw).map_err(|reason| {
            unsafe_err(
                raw,
                format!(
                    "hard link source \"{}\": {reason}",
                    shown_bytes(&source_raw)
                ),
            )
        })?;
        if source_rel.as_os_str().is_empty() {
            return Err(unsafe_err(raw, "hard link to the archive root"));
        }
        self.check_parents(&source_rel, raw, false)?;
        let source = self.root.join(&source_rel);
        let not_file = || {
            unsafe_err(
                raw,
                format!(
                    "hard link source \"{}\" is not a regular file inside the target",
                    shown_bytes(&source_raw)
                ),
            )
        };
        match fs::symlink_metadata(&source) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => return Err(not_file()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_file()),
            Err(e) => return Err(io_err(&source, e)),
        }
        // linkat without AT_SYMLINK_FOLLOW: links the checked file itself.
        fs::hard_link(&source, path).map_err(|e| exists_or_io(e, path, raw))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Directory metadata, deepest first so setting a child's does not touch
    /// a parent already done; the target root last.
    fn finish_dirs(&mut self) -> Result<(), ArchiveError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| Reverse(d.rel.components().count()));
        // Attributes last of all: a default ACL set earlier would have been inherited by
        // everything created below it.
        for d in &dirs {
            let path = self.root.join(&d.rel);
            let dir = open_dir(&path)?;
            apply_meta(&dir, &path, &d.meta)?;
            xattrs::apply(On::File(&dir), &d.meta.attrs, &mut self.stats.attr_warnings)
                .map_err(|e| io_err(&path, e))?;
        }
        if let Some(meta) = self.root_meta.take() {
            let dir = open_dir(&self.root)?;
            apply_meta(&dir, &self.root, &meta)?;
            xattrs::apply(On::File(&dir), &meta.attrs, &mut self.stats.attr_warnings)
                .map_err(|e| io_err(&self.root, e))?;
        }
        Ok(())
    }
}

enum Kind {
    Dir,
    File { sparse: bool },
    Symlink,
    HardLink,
}

/// The entry's PAX records that Ferry reads: the precise mtime (a malformed
/// one is ignored: the header's seconds stand) and extended attributes (more
/// than [`xattrs::MAX_ENTRY_BYTES`] of them is a hostile archive).
fn pax_records(pax: &Pax, raw: &[u8]) -> Result<(Option<FileTime>, Attrs), ArchiveError> {
    let too_large = || {
        unsafe_err(
            raw,
            format!(
                "more than {} KiB of extended attributes",
                xattrs::MAX_ENTRY_BYTES >> 10
            ),
        )
    };
    let data = match pax {
        Pax::None => return Ok((None, Attrs::new())),
        Pax::TooLarge => return Err(too_large()),
        Pax::Data(data) => data,
    };
    let mut mtime = None;
    let mut attrs = Attrs::new();
    let mut bytes = 0usize;
    for (key, value) in tap::records(data) {
        if key == b"mtime" {
            mtime = pax::parse_mtime(value);
        } else if let Some(name) = xattrs::pax_name(key) {
            bytes += name.len() + value.len();
            if bytes > xattrs::MAX_ENTRY_BYTES {
                return Err(too_large());
            }
            attrs.push((name.to_owned(), value.to_vec()));
        }
    }
    Ok((mtime, attrs))
}

/// Something already at the final component means a duplicate entry or a
/// planted file/symlink: never replace or follow it.
fn exists_or_io(e: io::Error, path: &Path, raw: &[u8]) -> ArchiveError {
    if e.kind() == ErrorKind::AlreadyExists {
        unsafe_err(
            raw,
            "something already exists at this path; refusing to replace it",
        )
    } else {
        io_err(path, e)
    }
}

/// Opens a directory without following a symlink, for fd-based metadata calls.
fn open_dir(path: &Path) -> Result<File, ArchiveError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err(path, e))
}

/// Owner, then mode (chown clears setuid/setgid), then mtime, all through
/// the open handle so no path is resolved again.
fn apply_meta(file: &File, path: &Path, meta: &EntryMeta) -> Result<(), ArchiveError> {
    if let Some((uid, gid)) = meta.owner {
        std::os::unix::fs::fchown(file, Some(uid), Some(gid)).map_err(|e| io_err(path, e))?;
    }
    file.set_permissions(Permissions::from_mode(meta.mode))
        .map_err(|e| io_err(path, e))?;
    filetime::set_file_handle_times(file, None, Some(meta.mtime)).map_err(|e| io_err(path, e))
}

/// Removes everything inside `root`, keeping `root`. std's `remove_dir_all`
/// does not follow symlinks (it works with `openat`/`unlinkat` and `O_NOFOLLOW`),
/// so a symlink in the old content is removed, never what it points at.
fn clear_dir(root: &Path, as_root: bool) -> Result<(), ArchiveError> {
    let mut children = Vec::new();
    for entry in fs::read_dir(root).map_err(|e| io_err(root, e))? {
        let entry = entry.map_err(|e| io_err(root, e))?;
        let is_dir = entry
            .file_type()
            .map_err(|e| io_err(&entry.path(), e))?
            .is_dir();
        children.push((entry.path(), is_dir));
    }
    for (path, is_dir) in children {
        let removed = if is_dir {
            fs::remove_dir_all(&path).or_else(|e| {
                // Read-only directories stop a non-root user: open them up, retry.
                if e.kind() == ErrorKind::PermissionDenied && !as_root {
                    make_writable(&path)?;
                    fs::remove_dir_all(&path)
                } else {
                    Err(e)
                }
            })
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| io_err(&path, e))?;
    }
    Ok(())
}

/// Adds owner rwx to every real directory under `dir` (symlinks untouched).
fn make_writable(dir: &Path) -> io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = fs::symlink_metadata(&d)?;
        if !meta.is_dir() {
            continue;
        }
        fs::set_permissions(&d, Permissions::from_mode((meta.mode() & 0o7777) | 0o700))?;
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised() {
        assert_eq!(safe_relative(b"a/b.txt").unwrap(), PathBuf::from("a/b.txt"));
        assert_eq!(safe_relative(b"./a//b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(safe_relative(b".").unwrap(), PathBuf::new());
        assert_eq!(safe_relative(b"./").unwrap(), PathBuf::new());
        assert_eq!(safe_relative(b"...").unwrap(), PathBuf::from("..."));
        assert_eq!(
            safe_relative(b"a\nb/caf\xe9")
                .unwrap()
                .as_os_str()
                .as_bytes(),
            b"a\nb/caf\xe9"
        );
    }

    #[test]
    fn escapes_are_refused() {
        for bad in [
            &b"../x"[..],
            b"a/../../x",
            b"a/..",
            b"..",
            b"/etc/passwd",
            b"//x",
            b"",
        ] {
            assert!(
                safe_relative(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
