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
//! No path is resolved twice, so someone changing the target while a restore
//! runs (swapping a directory for a symlink to elsewhere) cannot race the
//! checks: the target is opened once (`O_DIRECTORY|O_NOFOLLOW`; a target that
//! is itself a symlink is refused) and held as a file descriptor; each entry's
//! parent directory is opened relative to it with `openat2(2)`
//! `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS` (a link anywhere on the way fails,
//! it is never followed), missing parents are made with `mkdirat` relative to
//! the directory above them, and the entry itself is created relative to the
//! parent's descriptor (`openat`, `mkdirat`, `symlinkat`, `linkat`, then
//! owner, mode, times and attributes through the new file's descriptor, or the
//! `*at` calls with `AT_SYMLINK_NOFOLLOW` for a symlink). The last parent's
//! descriptor is kept for the next entries in the same directory: it names
//! that directory whatever happens to its path. The deferred directory
//! metadata and the overwrite's removal resolve their paths the same way.
//! Without `openat2` (Linux before 5.6) a restore fails at the start.

use std::cmp::Reverse;
use std::ffi::{CStr, OsStr};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use filetime::FileTime;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
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
/// [`ArchiveError::TargetMissing`], [`ArchiveError::TargetNotDirectory`],
/// [`ArchiveError::TargetIsSymlink`] or [`ArchiveError::TargetNotEmpty`]
/// before anything is read or changed ([`ArchiveError::Io`] of kind
/// `Unsupported` when the kernel lacks `openat2(2)`);
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
    let (root, root_path) = open_target(target, overwrite)?;
    let (tap, seen) = Tap::new(EofTracker {
        inner: input,
        eof: false,
    });
    let mut archive = tar::Archive::new(tap);
    let mut ex = Extractor {
        root,
        root_path,
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
        parent: None,
        last: Vec::new(),
        seen,
        max_bytes: options.max_bytes,
        clear_setid: options.clear_setid,
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

/// Opens the target without following a symlink at its last component and
/// checks it; returns the held directory and its canonical path (for messages
/// only: nothing below is resolved through that path).
fn open_target(target: &Path, overwrite: bool) -> Result<(File, PathBuf), ArchiveError> {
    // A trailing slash would make the kernel follow a symlink even with
    // O_NOFOLLOW; "target/" and "target" name the same entry otherwise.
    let raw = target.as_os_str().as_bytes();
    let trimmed = match raw.iter().rposition(|&b| b != b'/') {
        Some(last) => Path::new(OsStr::from_bytes(&raw[..=last])),
        None => target,
    };
    let root = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(trimmed)
    {
        Ok(root) => root,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(ArchiveError::TargetMissing {
                path: target.to_path_buf(),
            });
        }
        // O_DIRECTORY|O_NOFOLLOW: a symlink fails with ENOTDIR or ELOOP.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
            return Err(match std::fs::symlink_metadata(trimmed) {
                Ok(m) if m.file_type().is_symlink() => ArchiveError::TargetIsSymlink {
                    path: target.to_path_buf(),
                },
                Ok(_) => ArchiveError::TargetNotDirectory {
                    path: target.to_path_buf(),
                },
                Err(_) => io_err(target, e),
            });
        }
        Err(e) => return Err(io_err(target, e)),
    };
    let shown_path = std::fs::canonicalize(trimmed).map_err(|e| io_err(target, e))?;
    // Every later path is resolved with openat2: without it, stop here rather than
    // fall back to racy path checks. (Old container seccomp profiles answer EPERM.)
    match openat2_beneath(
        root.as_fd(),
        Path::new("."),
        OFlags::PATH | OFlags::DIRECTORY,
    ) {
        Ok(_) => {}
        Err(Errno::NOSYS | Errno::PERM) => {
            return Err(io_err(
                target,
                io::Error::new(
                    ErrorKind::Unsupported,
                    "openat2(2) is not available (Linux 5.6 or later is needed): \
                     extraction resolves every path beneath the target with it",
                ),
            ));
        }
        Err(e) => return Err(io_err(target, e.into())),
    }
    if !overwrite {
        let mut names = read_names(root.as_fd()).map_err(|e| io_err(target, e))?;
        match names.next() {
            None => {}
            Some(Ok(_)) => {
                return Err(ArchiveError::TargetNotEmpty {
                    path: target.to_path_buf(),
                });
            }
            Some(Err(e)) => return Err(io_err(target, e)),
        }
    }
    Ok((root, shown_path))
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
    /// The entry's name in the archive, for errors.
    raw: Vec<u8>,
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
    /// The target directory, opened once without following a symlink; every
    /// path below is resolved relative to it.
    root: File,
    /// The target's canonical path, for messages only.
    root_path: PathBuf,
    progress: &'a AtomicU64,
    stats: ArchiveStats,
    dirs: Vec<DirMeta>,
    root_meta: Option<EntryMeta>,
    buf: Vec<u8>,
    as_root: bool,
    owners: Owners,
    /// The last entry's parent directory, held open: consecutive entries in
    /// one directory reuse it, and it stays that directory whatever is done to
    /// its path meanwhile (a path could be swapped for a symlink; the
    /// descriptor cannot).
    parent: Option<ParentDir>,
    /// Raw path of the last entry, for error context.
    last: Vec<u8>,
    /// Each member's PAX data, read whole (see `tap.rs`).
    seen: Seen,
    /// Most bytes of file data the archive may hold (`ExtractOptions::max_bytes`).
    max_bytes: Option<u64>,
    /// Drop setuid/setgid from every mode (`ExtractOptions::clear_setid`).
    clear_setid: bool,
}

/// A directory inside the target, held by an `O_PATH` descriptor.
struct ParentDir {
    /// Its path relative to the target ("" for the target itself).
    rel: PathBuf,
    fd: OwnedFd,
}

/// What resolving a directory does about a component that does not exist.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Create it (archives from other tools may omit parent entries).
    Create,
    /// Refuse the entry: it names something that should exist in the target.
    Refuse,
    /// An I/O error: something removed it behind our back.
    Fail,
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
        let root_err = |e| io_err(&self.root_path, e);
        if !self.as_root {
            // A previous restore may have left the target read-only; without
            // write access neither removing nor creating works.
            let meta = self.root.metadata().map_err(root_err)?;
            if meta.mode() & 0o700 != 0o700 {
                self.root
                    .set_permissions(Permissions::from_mode((meta.mode() & 0o7777) | 0o700))
                    .map_err(root_err)?;
            }
        }
        if overwrite {
            clear_dir(self.root.as_fd(), &self.root_path, self.as_root)?;
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
        let (parent_rel, name) = split_last(&rel);
        let parent = match self.parent.take() {
            Some(cached) if cached.rel == parent_rel => cached,
            _ => ParentDir {
                fd: self.open_dir(parent_rel, &raw, Missing::Create, OFlags::PATH)?,
                rel: parent_rel.to_path_buf(),
            },
        };
        let at = At {
            dir: parent.fd.as_fd(),
            name,
            path: self.root_path.join(&rel),
        };
        let result = match kind {
            Kind::Dir => self.make_dir(&at, rel.clone(), &raw, meta),
            Kind::File { sparse } => self.make_file(&mut entry, &at, &raw, meta, sparse),
            Kind::Symlink => self.make_symlink(&entry, &at, &raw, meta),
            Kind::HardLink => self.make_hard_link(&entry, &at, &parent, &raw),
        };
        self.parent = Some(parent);
        result
    }

    fn entry_meta<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        raw: &[u8],
    ) -> Result<EntryMeta, ArchiveError> {
        let bad = |e| input_err(format!("header of entry \"{}\"", shown_bytes(raw)), e);
        let h = entry.header();
        let mut mode = h.mode().map_err(bad)? & 0o7777;
        if self.clear_setid {
            mode = without_setid(mode);
        }
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

    /// Opens the directory `rel` (relative to the target; "" is the target
    /// itself) with `flags` (`O_PATH` or `O_RDONLY`), refusing it unless it and
    /// every directory above it inside the target is a real directory: the
    /// kernel resolves it beneath the target and never through a symlink
    /// (`openat2`, `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS`). One call for the
    /// whole path; when that fails, a component at a time, to create what is
    /// missing (relative to the directory above) or to name the culprit.
    fn open_dir(
        &self,
        rel: &Path,
        raw: &[u8],
        missing: Missing,
        flags: OFlags,
    ) -> Result<OwnedFd, ArchiveError> {
        let flags = flags | OFlags::DIRECTORY;
        let whole = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        match openat2_beneath(self.root.as_fd(), whole, flags) {
            Ok(fd) => return Ok(fd),
            // Walked below: which component is missing, a symlink, not a directory;
            // or a path longer than PATH_MAX, which works a component at a time.
            Err(Errno::NOENT | Errno::LOOP | Errno::XDEV | Errno::NOTDIR | Errno::NAMETOOLONG) => {}
            Err(e) => return Err(io_err(&self.root_path.join(rel), e.into())),
        }
        let mut cur: Option<OwnedFd> = None;
        let mut inside = PathBuf::new();
        let depth = rel.components().count();
        for (i, comp) in rel.components().enumerate() {
            let name = comp.as_os_str();
            inside.push(name);
            let dir = cur.as_ref().map_or(self.root.as_fd(), AsFd::as_fd);
            // Directories on the way only need to be searched, not read.
            let step = if i + 1 == depth {
                flags
            } else {
                OFlags::PATH | OFlags::DIRECTORY
            };
            let mut created = false;
            let next = loop {
                match openat2_beneath(dir, Path::new(name), step) {
                    Ok(fd) => break fd,
                    Err(Errno::LOOP | Errno::XDEV) => return Err(symlink_escape(raw, &inside)),
                    // A symlink is ELOOP (no O_NOFOLLOW: see openat2_beneath).
                    Err(Errno::NOTDIR) => {
                        return Err(unsafe_err(
                            raw,
                            format!("parent \"{}\" is not a directory", shown(&inside)),
                        ));
                    }
                    Err(Errno::NOENT) if missing == Missing::Create && !created => {
                        match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
                            // Made by someone else meanwhile: opened (and checked) next round.
                            Ok(()) | Err(Errno::EXIST) => created = true,
                            Err(e) => return Err(io_err(&self.root_path.join(&inside), e.into())),
                        }
                    }
                    Err(Errno::NOENT) if missing == Missing::Refuse => {
                        return Err(unsafe_err(
                            raw,
                            format!("parent \"{}\" does not exist in the target", shown(&inside)),
                        ));
                    }
                    Err(e) => return Err(io_err(&self.root_path.join(&inside), e.into())),
                }
            };
            cur = Some(next);
        }
        match cur {
            Some(fd) => Ok(fd),
            // `rel` is the target itself and "." failed above: say why.
            None => openat2_beneath(self.root.as_fd(), whole, flags)
                .map_err(|e| io_err(&self.root_path, e.into())),
        }
    }

    fn make_dir(
        &mut self,
        at: &At<'_>,
        rel: PathBuf,
        raw: &[u8],
        meta: EntryMeta,
    ) -> Result<(), ArchiveError> {
        // Owner-only until finish_dirs sets the real mode: a read-only
        // directory must still take its content.
        match rustix::fs::mkdirat(at.dir, at.name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                // A repeated entry or a parent created implicitly is fine;
                // anything else in the way is not.
                let st = rustix::fs::statat(at.dir, at.name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(&at.path, e.into()))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    return Err(unsafe_err(
                        raw,
                        "something other than a directory already exists there",
                    ));
                }
            }
            Err(e) => return Err(io_err(&at.path, e.into())),
        }
        self.dirs.push(DirMeta {
            rel,
            raw: raw.to_vec(),
            meta,
        });
        self.stats.dirs += 1;
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        at: &At<'_>,
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
        let path = &at.path;
        let file = File::from(
            rustix::fs::openat(
                at.dir,
                at.name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| exists_or_io(e.into(), path, raw))?,
        );
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
        at: &At<'_>,
        raw: &[u8],
        meta: EntryMeta,
    ) -> Result<(), ArchiveError> {
        // The target is stored as-is, whatever it points at: a symlink is
        // harmless until something follows it, and this code never does.
        let Some(target) = entry.link_name_bytes() else {
            return Err(unsafe_err(raw, "symlink entry without a target"));
        };
        let path = &at.path;
        rustix::fs::symlinkat(OsStr::from_bytes(&target), at.dir, at.name)
            .map_err(|e| exists_or_io(e.into(), path, raw))?;
        if let Some((uid, gid)) = meta.owner {
            // -1 (the largest id) leaves the id unchanged, as with chown(2).
            rustix::fs::chownat(
                at.dir,
                at.name,
                (uid != u32::MAX).then(|| Uid::from_raw(uid)),
                (gid != u32::MAX).then(|| Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err(path, e.into()))?;
        }
        if !meta.attrs.is_empty() {
            // No *at call sets an attribute on a symlink before Linux 6.13; the
            // /proc link of the held parent names that very directory, and the
            // l* call does not follow the last component.
            let link = proc_fd_path(at.dir).join(at.name);
            xattrs::apply(On::Link(&link), &meta.attrs, &mut self.stats.attr_warnings)
                .map_err(|e| io_err(path, e))?;
        }
        let time = Timespec {
            tv_sec: meta.mtime.unix_seconds(),
            tv_nsec: meta.mtime.nanoseconds().into(),
        };
        let times = Timestamps {
            last_access: time,
            last_modification: time,
        };
        rustix::fs::utimensat(at.dir, at.name, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err(path, e.into()))?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn make_hard_link<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        at: &At<'_>,
        parent: &ParentDir,
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
        let (source_parent, source_name) = split_last(&source_rel);
        let opened;
        let source_dir = if source_parent == parent.rel {
            parent.fd.as_fd()
        } else {
            opened = self.open_dir(source_parent, raw, Missing::Refuse, OFlags::PATH)?;
            opened.as_fd()
        };
        let source = self.root_path.join(&source_rel);
        let not_file = || {
            unsafe_err(
                raw,
                format!(
                    "hard link source \"{}\" is not a regular file inside the target",
                    shown_bytes(&source_raw)
                ),
            )
        };
        match rustix::fs::statat(source_dir, source_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
            Ok(_) | Err(Errno::NOENT) => return Err(not_file()),
            Err(e) => return Err(io_err(&source, e.into())),
        }
        // Without AT_SYMLINK_FOLLOW linkat links the name itself: if it was
        // swapped since the check, the link is to whatever now has that name in
        // that directory, which is inside the target too.
        rustix::fs::linkat(source_dir, source_name, at.dir, at.name, AtFlags::empty())
            .map_err(|e| exists_or_io(e.into(), &at.path, raw))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Directory metadata, deepest first so setting a child's does not touch
    /// a parent already done; the target root last. Each directory is opened
    /// again beneath the target, never through a symlink.
    fn finish_dirs(&mut self) -> Result<(), ArchiveError> {
        self.parent = None;
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| Reverse(d.rel.components().count()));
        // Attributes last of all: a default ACL set earlier would have been inherited by
        // everything created below it.
        for d in &dirs {
            let path = self.root_path.join(&d.rel);
            let dir = File::from(self.open_dir(&d.rel, &d.raw, Missing::Fail, OFlags::RDONLY)?);
            apply_meta(&dir, &path, &d.meta)?;
            xattrs::apply(On::File(&dir), &d.meta.attrs, &mut self.stats.attr_warnings)
                .map_err(|e| io_err(&path, e))?;
        }
        if let Some(meta) = self.root_meta.take() {
            apply_meta(&self.root, &self.root_path, &meta)?;
            xattrs::apply(
                On::File(&self.root),
                &meta.attrs,
                &mut self.stats.attr_warnings,
            )
            .map_err(|e| io_err(&self.root_path, e))?;
        }
        Ok(())
    }
}

/// Where an entry is created: a name in a held directory.
struct At<'a> {
    dir: BorrowedFd<'a>,
    name: &'a OsStr,
    /// The full path, for messages only.
    path: PathBuf,
}

/// `rel` (normalised, not empty) as its parent ("" for the target) and last name.
fn split_last(rel: &Path) -> (&Path, &OsStr) {
    let name = rel.file_name().unwrap_or(rel.as_os_str());
    (rel.parent().unwrap_or(Path::new("")), name)
}

/// `mode` without setuid and setgid.
fn without_setid(mode: u32) -> u32 {
    mode & !(libc::S_ISUID | libc::S_ISGID)
}

fn symlink_escape(raw: &[u8], inside: &Path) -> ArchiveError {
    unsafe_err(
        raw,
        format!(
            "symlink escape: \"{}\" inside the target is a symlink",
            shown(inside)
        ),
    )
}

/// `openat2(dir, path, flags|O_CLOEXEC, RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`:
/// no symlink is followed anywhere on the way, the last component included
/// (ELOOP), and nothing outside `dir` is reached (EXDEV). Not `O_NOFOLLOW`:
/// with `O_PATH` it would open a trailing symlink itself (or fail with ENOTDIR
/// under `O_DIRECTORY`) instead of failing with ELOOP. Retried on EAGAIN, which
/// the kernel may return when a rename elsewhere raced the lookup.
fn openat2_beneath(dir: BorrowedFd<'_>, path: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            dir,
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        ) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            result => return result,
        }
    }
}

/// The /proc/self/fd link of `fd`: resolving it lands on the very file the
/// descriptor holds, whatever has happened to its path since.
fn proc_fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The names in directory `dir` (a readable descriptor), `.` and `..` left out.
fn read_names(
    dir: BorrowedFd<'_>,
) -> io::Result<impl Iterator<Item = io::Result<std::ffi::CString>>> {
    let entries = rustix::fs::Dir::read_from(dir)?;
    Ok(entries.filter_map(|e| match e {
        Ok(e) if matches!(e.file_name().to_bytes(), b"." | b"..") => None,
        Ok(e) => Some(Ok(e.file_name().to_owned())),
        Err(e) => Some(Err(e.into())),
    }))
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

/// Removes everything inside the directory `dir` (keeping it). Every name is
/// removed or opened relative to the descriptor of the directory holding it,
/// directories with `O_NOFOLLOW`, so a symlink in the old content (or one
/// swapped in meanwhile) is removed, never followed.
fn clear_dir(dir: BorrowedFd<'_>, path: &Path, as_root: bool) -> Result<(), ArchiveError> {
    // Names first, removal after: removing while reading could skip entries.
    let names = read_names(dir)
        .and_then(Iterator::collect::<io::Result<Vec<_>>>)
        .map_err(|e| io_err(path, e))?;
    for name in names {
        let child = path.join(OsStr::from_bytes(name.to_bytes()));
        match rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()) {
            Ok(()) => continue,
            // Linux says EISDIR for a directory.
            Err(Errno::ISDIR) => {}
            Err(e) => return Err(io_err(&child, e.into())),
        }
        let sub = open_for_clearing(dir, &name, as_root).map_err(|e| io_err(&child, e))?;
        clear_dir(sub.as_fd(), &child, as_root)?;
        drop(sub);
        rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::REMOVEDIR)
            .map_err(|e| io_err(&child, e.into()))?;
    }
    Ok(())
}

/// Opens directory `name` in `dir` for reading, without following a symlink.
/// Not running as root, a directory left read-only first gets owner rwx (or
/// its content could be neither listed nor removed): through the /proc link of
/// an `O_PATH` descriptor, since chmod by name would follow a swapped-in link.
fn open_for_clearing(dir: BorrowedFd<'_>, name: &CStr, as_root: bool) -> io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if !as_root {
        let held = rustix::fs::openat(dir, name, flags | OFlags::PATH, Mode::empty())?;
        let mode = rustix::fs::fstat(&held)?.st_mode & 0o7777;
        if mode & 0o700 != 0o700 {
            rustix::fs::chmod(
                proc_fd_path(held.as_fd()),
                Mode::from_raw_mode(mode | 0o700),
            )?;
        }
        return Ok(rustix::fs::openat(
            &held,
            c".",
            OFlags::RDONLY | flags,
            Mode::empty(),
        )?);
    }
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | flags,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_setid_keeps_every_other_bit() {
        assert_eq!(without_setid(0o6755), 0o755);
        assert_eq!(without_setid(0o7777), 0o1777);
        assert_eq!(without_setid(0o4000), 0);
        assert_eq!(without_setid(0o2070), 0o070);
        assert_eq!(without_setid(0o1644), 0o1644);
    }

    #[test]
    fn split_last_gives_parent_and_name() {
        assert_eq!(
            split_last(Path::new("a/b/c")),
            (Path::new("a/b"), OsStr::new("c"))
        );
        assert_eq!(split_last(Path::new("c")), (Path::new(""), OsStr::new("c")));
    }

    /// What the resolution relies on: a symlink anywhere, the last component included, is
    /// ELOOP (never followed, never opened itself), and a file on the way is ENOTDIR.
    #[test]
    fn openat2_beneath_never_follows_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("f"), b"").unwrap();
        std::os::unix::fs::symlink("d", root.join("rel")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("abs")).unwrap();
        let dir = File::open(&root).unwrap();
        let open = |p: &str| {
            openat2_beneath(dir.as_fd(), Path::new(p), OFlags::PATH | OFlags::DIRECTORY).map(drop)
        };
        assert_eq!(open("d/e"), Ok(()));
        assert_eq!(open("."), Ok(()));
        for through_link in ["rel", "rel/e", "abs", "abs/root"] {
            assert_eq!(open(through_link), Err(Errno::LOOP), "{through_link}");
        }
        assert_eq!(open("f"), Err(Errno::NOTDIR));
        assert_eq!(open("f/x"), Err(Errno::NOTDIR));
        assert_eq!(open("missing/x"), Err(Errno::NOENT));
        assert_eq!(open("../root"), Err(Errno::XDEV));
    }

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
