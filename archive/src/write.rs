//! Archiving: walks a tree in name order and writes it as a tar stream.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, BufWriter, ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tar::{Builder, EntryType, Header};

use crate::sparse::{self, Region, TAR_BLOCK};
use crate::xattrs::{self, Attrs};
use crate::{ArchiveError, ArchiveStats, BUF_SIZE, io_err, pax};

/// Names and link targets this long go into a GNU long-name entry, as GNU tar
/// does (at exactly 100 bytes the field has no room left for the NUL).
const NAME_FIELD: usize = 100;

/// Writes the tree under `root` (not including `root` itself as an entry name;
/// entries are relative paths like "a/b.txt"; the root directory's own
/// mode/mtime is stored as entry "." so it can be restored) as a tar stream
/// into `out`.
///
/// `progress` is incremented by the number of file content bytes read, as
/// they are read; holes of sparse files count as read, so the total reaches
/// [`tree_size`].
///
/// `root` itself may be a symlink to a directory; nothing below it is
/// followed. Entries are sorted by name bytes, so equal trees give equal
/// streams. On error nothing more is written to `out` — in particular no
/// end-of-archive marker, so a partial stream never reads as complete.
///
/// # Errors
///
/// [`ArchiveError::SourceNotDirectory`] if `root` is not a directory,
/// [`ArchiveError::Io`] when reading the tree fails (entries that vanish
/// while archiving only count in [`ArchiveStats::warnings`]), and
/// [`ArchiveError::Output`] when writing to `out` fails.
pub fn write_tree<W: Write>(
    root: &Path,
    out: W,
    progress: &AtomicU64,
) -> Result<ArchiveStats, ArchiveError> {
    write_tree_to(root, Plain(out), progress)
}

/// The content of one regular file as the tar stream is about to carry it: `content_len`
/// bytes follow its header (for a sparse file, its data regions back to back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent<'a> {
    /// The entry's path in the archive, e.g. `a/b.txt`.
    pub path: &'a [u8],
    /// The file's size, mtime, ctime and inode as the open file reported them.
    pub key: FileKey,
    /// Bytes of content in the stream (the size, or the data regions of a sparse file).
    pub content_len: u64,
}

/// What identifies an unchanged file between two backups (as restic, borg and kopia do): a
/// file whose size, mtime, ctime and inode are all equal was not written in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileKey {
    pub size: u64,
    pub mtime_s: i64,
    pub mtime_ns: u32,
    pub ctime_s: i64,
    pub ctime_ns: u32,
    pub ino: u64,
}

impl FileKey {
    fn of(meta: &Metadata) -> FileKey {
        FileKey {
            size: meta.len(),
            mtime_s: meta.mtime(),
            mtime_ns: meta.mtime_nsec() as u32,
            ctime_s: meta.ctime(),
            ctime_ns: meta.ctime_nsec() as u32,
            ino: meta.ino(),
        }
    }
}

/// Where [`write_tree_to`] writes its tar stream: any [`Write`], told where each regular
/// file's content begins and ends so that it can store content apart from the headers (the
/// incremental repository does). An output that already holds a file's content may say so,
/// and the file is then not read at all.
pub trait TarOutput: Write {
    /// Called after a file's headers, before its content. `Ok(true)`: the output already has
    /// these `content_len` bytes, the writer skips them (and calls no [`Self::end_content`]).
    fn begin_content(&mut self, _file: &FileContent<'_>) -> io::Result<bool> {
        Ok(false)
    }

    /// Called after the content bytes of the file [`Self::begin_content`] declined.
    fn end_content(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Whether the writer flushes everything before each content boundary, so that the output
    /// sees exactly where content begins and ends. An output that ignores boundaries says no:
    /// flushing a compressor twice per file (multithreaded zstd waits for its workers at every
    /// flush) made a backup of 20,000 small files twice as slow as `tar | zstd`.
    fn flush_at_boundaries(&self) -> bool {
        true
    }
}

/// A plain tar stream: every byte goes to the writer.
struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> TarOutput for Plain<W> {
    fn flush_at_boundaries(&self) -> bool {
        false
    }
}

impl<T: TarOutput + ?Sized> TarOutput for &mut T {
    fn begin_content(&mut self, file: &FileContent<'_>) -> io::Result<bool> {
        (**self).begin_content(file)
    }

    fn end_content(&mut self) -> io::Result<()> {
        (**self).end_content()
    }

    fn flush_at_boundaries(&self) -> bool {
        (**self).flush_at_boundaries()
    }
}

/// [`write_tree`] into a [`TarOutput`]: the same stream, with content boundaries reported.
pub fn write_tree_to<W: TarOutput>(
    root: &Path,
    out: W,
    progress: &AtomicU64,
) -> Result<ArchiveStats, ArchiveError> {
    let mut tw = TreeWriter {
        root,
        builder: Builder::new(Guarded {
            inner: BufWriter::with_capacity(64 * 1024, out),
            poisoned: false,
        }),
        progress,
        stats: ArchiveStats::default(),
        links: HashMap::new(),
        names: Names::default(),
        buf: vec![0; BUF_SIZE],
    };
    if let Err(e) = tw.run() {
        // Builder's Drop would append the end-of-archive blocks: block them.
        tw.builder.get_mut().poisoned = true;
        return Err(e);
    }
    let TreeWriter { builder, stats, .. } = tw;
    let end = |source| ArchiveError::Output {
        path: PathBuf::from("(end of archive)"),
        source,
    };
    let guarded = builder.into_inner().map_err(end)?;
    let mut out = guarded
        .inner
        .into_inner()
        .map_err(|e| end(e.into_error()))?;
    out.flush().map_err(end)?;
    Ok(stats)
}

/// Sum of the sizes of regular files under root (for a progress total); does
/// not follow symlinks. A hard-link group counts once, as it is archived once.
///
/// # Errors
///
/// Any error listing or inspecting the tree, except entries vanishing
/// while it is walked.
pub fn tree_size(root: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            // Vanished since it was listed: a live tree, not an error.
            Err(e) if e.kind() == ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            // DirEntry::metadata does not follow symlinks.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && (meta.nlink() < 2 || seen.insert((meta.dev(), meta.ino())))
            {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Output wrapper that refuses all writes once poisoned.
struct Guarded<W: Write> {
    inner: BufWriter<W>,
    poisoned: bool,
}

impl<W: TarOutput> Guarded<W> {
    /// Flushes everything written so far through to the output, if it wants content
    /// boundaries (see [`TarOutput::flush_at_boundaries`]).
    fn flush_for_boundary(&mut self) -> io::Result<()> {
        if self.inner.get_ref().flush_at_boundaries() {
            self.inner.flush()
        } else {
            Ok(())
        }
    }
}

impl<W: Write> Write for Guarded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(io::Error::other("archive aborted"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other("archive aborted"));
        }
        self.inner.flush()
    }
}

struct TreeWriter<'a, W: TarOutput> {
    root: &'a Path,
    builder: Builder<Guarded<W>>,
    progress: &'a AtomicU64,
    stats: ArchiveStats,
    /// First archived path of each multiply-linked inode, by (dev, ino).
    links: HashMap<(u64, u64), Vec<u8>>,
    names: Names,
    buf: Vec<u8>,
}

/// User and group names by id, looked up once each (GNU tar stores both, and restores by name
/// where the name exists).
#[derive(Default)]
struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    fn user(&mut self, uid: u32) -> Option<&str> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .as_deref()
    }

    fn group(&mut self, gid: u32) -> Option<&str> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .as_deref()
    }

    /// Fills the header's user and group name fields (left empty when unknown or longer than
    /// the 32-byte field).
    fn fill(&mut self, header: &mut Header, meta: &Metadata) {
        let gnu = header.as_gnu_mut().expect("GNU header");
        if let Some(name) = self.user(meta.uid()).filter(|n| n.len() < 32) {
            copy_field(&mut gnu.uname, name.as_bytes());
        }
        if let Some(name) = self.group(meta.gid()).filter(|n| n.len() < 32) {
            copy_field(&mut gnu.gname, name.as_bytes());
        }
    }
}

impl<W: TarOutput> TreeWriter<'_, W> {
    fn run(&mut self) -> Result<(), ArchiveError> {
        let meta = fs::metadata(self.root).map_err(|e| io_err(self.root, e))?;
        if !meta.is_dir() {
            return Err(ArchiveError::SourceNotDirectory {
                path: self.root.to_path_buf(),
            });
        }
        let attrs = match File::open(self.root) {
            Ok(dir) => self.attrs_of(xattrs::read_file(&dir)),
            Err(e) => return Err(io_err(self.root, e)),
        };
        self.append_meta_only(Path::new("."), &meta, EntryType::Directory, &attrs, None)?;
        self.stats.dirs += 1;

        // Depth-first, pre-order: a directory precedes its content, so the
        // extractor always finds parents (and hard-link sources) in place.
        let mut stack: Vec<PathBuf> = Vec::new();
        self.push_children(Path::new(""), &mut stack)?;
        while let Some(rel) = stack.pop() {
            let path = self.root.join(&rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.stats.warnings += 1;
                    continue;
                }
                Err(e) => return Err(io_err(&path, e)),
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let attrs = match open_dir(&path) {
                    Ok(dir) => self.attrs_of(xattrs::read_file(&dir)),
                    // Replaced or removed since the lstat: its attributes went with it.
                    Err(_) => Attrs::new(),
                };
                self.append_meta_only(&rel, &meta, EntryType::Directory, &attrs, None)?;
                self.stats.dirs += 1;
                self.push_children(&rel, &mut stack)?;
            } else if ft.is_file() {
                self.append_file(&rel, &path)?;
            } else if ft.is_symlink() {
                let target = match fs::read_link(&path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        self.stats.warnings += 1;
                        continue;
                    }
                    Err(e) => return Err(io_err(&path, e)),
                };
                let target = target.as_os_str().as_bytes();
                let attrs = self.attrs_of(xattrs::read_link(&path));
                self.append_meta_only(&rel, &meta, EntryType::Symlink, &attrs, Some(target))?;
                self.stats.symlinks += 1;
            } else {
                // Sockets, fifos and devices are runtime state, not data.
                self.stats.skipped += 1;
            }
        }
        Ok(())
    }

    /// The attributes read, counting those that could not be carried as warnings.
    fn attrs_of(&mut self, read: xattrs::Read) -> Attrs {
        self.stats.warnings += read.lost;
        read.attrs
    }

    /// Pushes the children of `rel` so that they pop in name-byte order.
    fn push_children(&mut self, rel: &Path, stack: &mut Vec<PathBuf>) -> Result<(), ArchiveError> {
        let dir = self.root.join(rel);
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.stats.warnings += 1;
                return Ok(());
            }
            Err(e) => return Err(io_err(&dir, e)),
        };
        let mut names: Vec<OsString> = Vec::new();
        for entry in entries {
            names.push(entry.map_err(|e| io_err(&dir, e))?.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        stack.extend(names.into_iter().rev().map(|n| rel.join(n)));
        Ok(())
    }

    fn append_file(&mut self, rel: &Path, path: &Path) -> Result<(), ArchiveError> {
        // O_NOFOLLOW: if a symlink was swapped in since the lstat, refuse it
        // rather than archive whatever it points at. O_NONBLOCK: a swapped-in
        // fifo must not hang the worker (regular files ignore the flag).
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => {
                self.stats.warnings += 1;
                return Ok(());
            }
            Err(e) => return Err(io_err(path, e)),
        };
        // From here on the open file's own metadata rules: a file replaced by
        // rename since the lstat is archived as it is now.
        let meta = file.metadata().map_err(|e| io_err(path, e))?;
        if !meta.is_file() {
            self.stats.warnings += 1;
            return Ok(());
        }
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(first) = self.links.get(&key)
        {
            let first = first.clone();
            let header = self.base_header(&meta, EntryType::Link);
            self.write_header(rel, header, None, &Attrs::new(), Some(&first))?;
            self.stats.hardlinks += 1;
            return Ok(());
        }

        let size = meta.len();
        let regions = if meta.blocks().saturating_mul(512) < size {
            sparse::data_regions(&file, size).map_err(|e| io_err(path, e))?
        } else {
            None
        };
        let attrs = self.attrs_of(xattrs::read_file(&file));
        let complete = match regions {
            Some(regions) => self.write_sparse(rel, path, &file, &meta, &attrs, &regions)?,
            None => self.write_regular(rel, path, &file, &meta, &attrs)?,
        };
        let after = file.metadata().map_err(|e| io_err(path, e))?;
        if !complete
            || after.len() != size
            || after.mtime() != meta.mtime()
            || after.mtime_nsec() != meta.mtime_nsec()
        {
            // Changed while read: the entry is well-formed but its content may
            // mix old and new data. Counted so the caller can warn.
            self.stats.warnings += 1;
        }
        self.stats.files += 1;
        self.stats.bytes += size;
        if meta.nlink() > 1 {
            self.links.insert(key, rel.as_os_str().as_bytes().to_vec());
        }
        Ok(())
    }

    fn write_regular(
        &mut self,
        rel: &Path,
        path: &Path,
        file: &File,
        meta: &Metadata,
        attrs: &Attrs,
    ) -> Result<bool, ArchiveError> {
        let size = meta.len();
        let mut header = self.base_header(meta, EntryType::Regular);
        header.set_size(size);
        self.write_header(rel, header, Some(meta), attrs, None)?;
        let complete = if self.begin_content(rel, meta, size)? {
            self.progress.fetch_add(size, Ordering::Relaxed);
            true
        } else {
            let complete = self.copy_range(rel, path, file, 0, size)?;
            self.end_content(rel)?;
            complete
        };
        self.pad(rel, size)?;
        Ok(complete)
    }

    /// GNU sparse entry: header with the map, extension blocks, then the data
    /// regions back to back, padded to a block once at the end.
    fn write_sparse(
        &mut self,
        rel: &Path,
        path: &Path,
        file: &File,
        meta: &Metadata,
        attrs: &Attrs,
        regions: &[Region],
    ) -> Result<bool, ArchiveError> {
        let out_err = |source| ArchiveError::Output {
            path: rel.to_path_buf(),
            source,
        };
        let mut header = self.base_header(meta, EntryType::GNUSparse);
        sparse::fill_header(&mut header, regions, meta.len()).map_err(out_err)?;
        let data_size = header.entry_size().map_err(out_err)?;
        self.write_header(rel, header, Some(meta), attrs, None)?;
        sparse::write_ext_headers(self.builder.get_mut(), regions).map_err(out_err)?;
        let mut complete = true;
        if self.begin_content(rel, meta, data_size)? {
            self.progress.fetch_add(meta.len(), Ordering::Relaxed);
        } else {
            let mut pos = 0;
            for r in regions {
                // Holes count as progress so the total matches tree_size.
                self.progress.fetch_add(r.offset - pos, Ordering::Relaxed);
                complete &= self.copy_range(rel, path, file, r.offset, r.len)?;
                pos = r.offset + r.len;
            }
            self.progress
                .fetch_add(meta.len().saturating_sub(pos), Ordering::Relaxed);
            self.end_content(rel)?;
        }
        self.pad(rel, data_size)?;
        Ok(complete)
    }

    /// Copies exactly `len` bytes from `offset` of `file`. If the file ends
    /// early (it shrank) the rest is zeros, because the header already
    /// promised `len` bytes; returns whether the file delivered them all.
    fn copy_range(
        &mut self,
        rel: &Path,
        path: &Path,
        file: &File,
        offset: u64,
        len: u64,
    ) -> Result<bool, ArchiveError> {
        let out = self.builder.get_mut();
        copy_range(file, offset, len, out, &mut self.buf, self.progress).map_err(|e| match e {
            CopyError::Read(source) => io_err(path, source),
            CopyError::Write(source) => ArchiveError::Output {
                path: rel.to_path_buf(),
                source,
            },
        })
    }

    /// Tells the output a file's content begins (everything before it flushed through);
    /// true when the output already has the content.
    fn begin_content(
        &mut self,
        rel: &Path,
        meta: &Metadata,
        content_len: u64,
    ) -> Result<bool, ArchiveError> {
        let out = self.builder.get_mut();
        let file = FileContent {
            path: rel.as_os_str().as_bytes(),
            key: FileKey::of(meta),
            content_len,
        };
        out.flush_for_boundary()
            .and_then(|()| out.inner.get_mut().begin_content(&file))
            .map_err(|source| ArchiveError::Output {
                path: rel.to_path_buf(),
                source,
            })
    }

    fn end_content(&mut self, rel: &Path) -> Result<(), ArchiveError> {
        let out = self.builder.get_mut();
        out.flush_for_boundary()
            .and_then(|()| out.inner.get_mut().end_content())
            .map_err(|source| ArchiveError::Output {
                path: rel.to_path_buf(),
                source,
            })
    }

    fn pad(&mut self, rel: &Path, len: u64) -> Result<(), ArchiveError> {
        let rest = (TAR_BLOCK - len % TAR_BLOCK) % TAR_BLOCK;
        self.builder
            .get_mut()
            .write_all(&[0u8; TAR_BLOCK as usize][..rest as usize])
            .map_err(|source| ArchiveError::Output {
                path: rel.to_path_buf(),
                source,
            })
    }

    /// Writes a data-less entry (directory, symlink) with metadata.
    fn append_meta_only(
        &mut self,
        rel: &Path,
        meta: &Metadata,
        ty: EntryType,
        attrs: &Attrs,
        link: Option<&[u8]>,
    ) -> Result<(), ArchiveError> {
        let header = self.base_header(meta, ty);
        self.write_header(rel, header, Some(meta), attrs, link)
    }

    /// Header fields shared by all entry types: owner as numbers and names (a restore prefers
    /// a name that exists on its host, like GNU tar), permission bits with setuid/setgid/
    /// sticky, whole-second mtime (finer or negative times go in the PAX record).
    fn base_header(&mut self, meta: &Metadata, ty: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        self.names.fill(&mut h, meta);
        h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        h.set_size(0);
        h
    }

    /// Writes the PAX record (precise mtime and extended attributes, when
    /// there are any), GNU long-name entries (if needed) and the header block
    /// itself. Names and link targets go in byte for byte: the `tar` crate's
    /// setters normalise paths (`a//b`, `./x`), which would alter symlink
    /// targets.
    fn write_header(
        &mut self,
        rel: &Path,
        mut header: Header,
        pax_for: Option<&Metadata>,
        attrs: &Attrs,
        link: Option<&[u8]>,
    ) -> Result<(), ArchiveError> {
        let out_err = |source| ArchiveError::Output {
            path: rel.to_path_buf(),
            source,
        };
        let mtime = pax_for.and_then(|meta| pax::mtime_value(meta.mtime(), meta.mtime_nsec()));
        if mtime.is_some() || !attrs.is_empty() {
            let keys: Vec<String> = attrs
                .iter()
                .map(|(name, _)| format!("{}{name}", xattrs::PAX_PREFIX))
                .collect();
            let acls = xattrs::acl_records(attrs);
            let records = mtime
                .iter()
                .map(|v| ("mtime", v.as_bytes()))
                .chain(acls.iter().map(|(k, v)| (*k, v.as_bytes())))
                .chain(
                    keys.iter()
                        .zip(attrs)
                        .map(|(k, (_, v))| (k.as_str(), &v[..])),
                );
            self.builder
                .append_pax_extensions(records)
                .map_err(out_err)?;
        }
        if let Some(link) = link {
            if link.len() >= NAME_FIELD {
                self.long_entry(b'K', link).map_err(out_err)?;
            }
            copy_field(&mut header.as_old_mut().linkname, link);
        }
        let name = rel.as_os_str().as_bytes();
        if name.len() >= NAME_FIELD {
            self.long_entry(b'L', name).map_err(out_err)?;
        }
        copy_field(&mut header.as_old_mut().name, name);
        header.set_cksum();
        self.builder
            .get_mut()
            .write_all(header.as_bytes())
            .map_err(out_err)
    }

    /// A GNU long name ('L') or long link target ('K') entry: the full bytes
    /// plus a NUL as data, describing the entry that follows.
    fn long_entry(&mut self, kind: u8, bytes: &[u8]) -> io::Result<()> {
        let mut header = Header::new_gnu();
        copy_field(&mut header.as_old_mut().name, b"././@LongLink");
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(bytes.len() as u64 + 1);
        header.set_entry_type(EntryType::new(kind));
        header.set_cksum();
        let out = self.builder.get_mut();
        out.write_all(header.as_bytes())?;
        out.write_all(bytes)?;
        out.write_all(&[0])?;
        let len = bytes.len() as u64 + 1;
        let rest = (TAR_BLOCK - len % TAR_BLOCK) % TAR_BLOCK;
        out.write_all(&[0u8; TAR_BLOCK as usize][..rest as usize])
    }
}

/// Opens a directory without following a symlink, for its attributes.
fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Copies `bytes` into a fixed header field, truncating and NUL-padding.
fn copy_field(field: &mut [u8], bytes: &[u8]) {
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
    field[n..].fill(0);
}

#[derive(Debug)]
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies exactly `len` bytes from `offset` of `file` to `out` through `buf`,
/// zero-filling past a premature end of file. Positioned reads, because
/// sparse-region lookup moves the file offset. Returns whether the file
/// delivered all `len` bytes.
pub(crate) fn copy_range(
    file: &File,
    offset: u64,
    len: u64,
    out: &mut impl Write,
    buf: &mut [u8],
    progress: &AtomicU64,
) -> Result<bool, CopyError> {
    let mut done = 0u64;
    let mut complete = true;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = if complete {
            match file.read_at(&mut buf[..want], offset + done) {
                Ok(0) => {
                    complete = false;
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(e)),
            }
        } else {
            buf[..want].fill(0);
            want
        };
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        done += n as u64;
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrunk_file_is_padded_to_the_promised_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![9u8; 1000]).unwrap();
        let f = File::open(&path).unwrap();
        let progress = AtomicU64::new(0);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 300];
        let complete = copy_range(&f, 0, 3000, &mut out, &mut buf, &progress).unwrap();
        assert!(!complete);
        assert_eq!(out.len(), 3000);
        assert!(out[..1000].iter().all(|&b| b == 9));
        assert!(out[1000..].iter().all(|&b| b == 0));
        assert_eq!(progress.load(Ordering::Relaxed), 3000);
    }

    #[test]
    fn grown_file_is_cut_at_the_promised_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![9u8; 1000]).unwrap();
        let f = File::open(&path).unwrap();
        let progress = AtomicU64::new(0);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256];
        assert!(copy_range(&f, 100, 500, &mut out, &mut buf, &progress).unwrap());
        assert_eq!(out, vec![9u8; 500]);
    }

    #[test]
    fn failed_run_writes_no_end_marker() {
        let progress = AtomicU64::new(0);
        let mut out = Vec::new();
        let err =
            write_tree(Path::new("/nonexistent-ferry-root"), &mut out, &progress).unwrap_err();
        assert!(matches!(err, ArchiveError::Io { .. }), "{err}");
        assert!(out.is_empty());
    }
}
