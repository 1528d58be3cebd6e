//! Tree comparison, for verifying restores (and this crate's own tests).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{BUF_SIZE, read_full, shown, xattrs};

/// Allocation slack allowed before a restored file counts as "densified":
/// file systems may allocate a few extra blocks around data.
const SPARSE_SLACK: u64 = 64 * 1024;

/// Compares two trees entry by entry: type, content (streamed, not loaded
/// whole), mode bits (0o7777), mtime (to the nanosecond when both sides have
/// a non-zero nanosecond part, else to the second), symlink targets,
/// hard-link grouping (same sets of paths share an inode), and for regular
/// files whether sparse-ness is kept (allocated blocks of b not more than
/// allocated blocks of a + 64 KiB slack, so a sparse file restored dense is a
/// difference), and extended attributes (names and values: ACLs, file
/// capabilities, `user.*`, on every entry, the roots included). Returns
/// human-readable differences; empty = equal. The root directory's own mode
/// and attributes are compared too; its mtime is NOT compared.
/// Ownership is not compared. Symlinks are never followed (the roots are).
///
/// # Errors
///
/// Either root is not a directory, or reading an entry fails (including an
/// entry vanishing during the comparison).
pub fn compare_trees(a: &Path, b: &Path) -> io::Result<Vec<String>> {
    let ma = fs::metadata(a)?;
    let mb = fs::metadata(b)?;
    for (p, m) in [(a, &ma), (b, &mb)] {
        if !m.is_dir() {
            return Err(io::Error::new(
                ErrorKind::NotADirectory,
                format!("\"{}\" is not a directory", shown(p)),
            ));
        }
    }
    let mut c = Comparer {
        a,
        b,
        diffs: Vec::new(),
        links_a: HashMap::new(),
        links_b: HashMap::new(),
        buf_a: vec![0; BUF_SIZE],
        buf_b: vec![0; BUF_SIZE],
    };
    c.mode(Path::new("."), &ma, &mb);
    c.attrs(Path::new("."), a, b);

    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let names_a = sorted_names(&a.join(&rel))?;
        let names_b = sorted_names(&b.join(&rel))?;
        let mut subdirs = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < names_a.len() || j < names_b.len() {
            let order = match (names_a.get(i), names_b.get(j)) {
                (Some(x), Some(y)) => x.as_os_str().as_bytes().cmp(y.as_os_str().as_bytes()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Equal => {
                    let child = rel.join(&names_a[i]);
                    if c.entry(&child)? {
                        subdirs.push(child);
                    }
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    let child = rel.join(&names_a[i]);
                    c.diff(&child, format_args!("only in {}", a.display()));
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let child = rel.join(&names_b[j]);
                    c.diff(&child, format_args!("only in {}", b.display()));
                    j += 1;
                }
            }
        }
        // Reversed so subdirectories are visited in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    c.links();
    Ok(c.diffs)
}

fn sorted_names(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(PathBuf::from(entry?.file_name()));
    }
    names.sort_by(|x, y| x.as_os_str().as_bytes().cmp(y.as_os_str().as_bytes()));
    Ok(names)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    fn of(m: &Metadata) -> Kind {
        let ft = m.file_type();
        if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else if ft.is_char_device() {
            Kind::CharDevice
        } else {
            Kind::BlockDevice
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Dir => "directory",
            Kind::File => "regular file",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
        })
    }
}

type Groups = HashMap<(u64, u64), Vec<PathBuf>>;

struct Comparer<'a> {
    a: &'a Path,
    b: &'a Path,
    diffs: Vec<String>,
    links_a: Groups,
    links_b: Groups,
    buf_a: Vec<u8>,
    buf_b: Vec<u8>,
}

impl Comparer<'_> {
    fn diff(&mut self, rel: &Path, what: fmt::Arguments<'_>) {
        self.diffs.push(format!("\"{}\": {what}", shown(rel)));
    }

    /// Compares one entry present on both sides; true if it is a directory
    /// on both (to descend into).
    fn entry(&mut self, rel: &Path) -> io::Result<bool> {
        let (pa, pb) = (self.a.join(rel), self.b.join(rel));
        let ma = fs::symlink_metadata(&pa)?;
        let mb = fs::symlink_metadata(&pb)?;
        let (ka, kb) = (Kind::of(&ma), Kind::of(&mb));
        if ka != kb {
            self.diff(rel, format_args!("type differs ({ka} vs {kb})"));
            return Ok(false);
        }
        // Symlink permission bits are fixed on Linux and cannot be set.
        if ka != Kind::Symlink {
            self.mode(rel, &ma, &mb);
        }
        self.mtime(rel, &ma, &mb);
        self.attrs(rel, &pa, &pb);
        match ka {
            Kind::Dir => return Ok(true),
            Kind::Symlink => {
                let (ta, tb) = (fs::read_link(&pa)?, fs::read_link(&pb)?);
                if ta != tb {
                    self.diff(
                        rel,
                        format_args!(
                            "symlink target differs (\"{}\" vs \"{}\")",
                            shown(&ta),
                            shown(&tb)
                        ),
                    );
                }
            }
            Kind::File => self.file(rel, &pa, &pb, &ma, &mb)?,
            _ => {}
        }
        Ok(false)
    }

    fn file(
        &mut self,
        rel: &Path,
        pa: &Path,
        pb: &Path,
        ma: &Metadata,
        mb: &Metadata,
    ) -> io::Result<()> {
        if ma.len() != mb.len() {
            self.diff(
                rel,
                format_args!("size differs ({} vs {})", ma.len(), mb.len()),
            );
        } else if let Some(at) = self.first_difference(pa, pb)? {
            self.diff(rel, format_args!("content differs (from byte {at})"));
        }
        let (alloc_a, alloc_b) = (ma.blocks() * 512, mb.blocks() * 512);
        if alloc_b > alloc_a + SPARSE_SLACK {
            self.diff(
                rel,
                format_args!(
                    "allocated size differs ({alloc_a} vs {alloc_b} bytes): sparse-ness lost"
                ),
            );
        }
        if ma.nlink() > 1 {
            self.links_a
                .entry((ma.dev(), ma.ino()))
                .or_default()
                .push(rel.to_path_buf());
        }
        if mb.nlink() > 1 {
            self.links_b
                .entry((mb.dev(), mb.ino()))
                .or_default()
                .push(rel.to_path_buf());
        }
        Ok(())
    }

    /// Streams both files through fixed buffers; the offset of the first
    /// differing byte, if any.
    fn first_difference(&mut self, pa: &Path, pb: &Path) -> io::Result<Option<u64>> {
        let mut fa = open_nofollow(pa)?;
        let mut fb = open_nofollow(pb)?;
        let mut offset = 0u64;
        loop {
            let na = read_full(&mut fa, &mut self.buf_a)?;
            let nb = read_full(&mut fb, &mut self.buf_b)?;
            let (xa, xb) = (&self.buf_a[..na], &self.buf_b[..nb]);
            if xa != xb {
                let at = xa
                    .iter()
                    .zip(xb)
                    .position(|(x, y)| x != y)
                    .unwrap_or(na.min(nb));
                return Ok(Some(offset + at as u64));
            }
            if na == 0 {
                return Ok(None);
            }
            offset += na as u64;
        }
    }

    fn mode(&mut self, rel: &Path, ma: &Metadata, mb: &Metadata) {
        let (x, y) = (ma.mode() & 0o7777, mb.mode() & 0o7777);
        if x != y {
            self.diff(rel, format_args!("mode differs ({x:04o} vs {y:04o})"));
        }
    }

    /// Extended attributes, read without following symlinks.
    fn attrs(&mut self, rel: &Path, pa: &Path, pb: &Path) {
        let (xa, xb) = (xattrs::read_link(pa).attrs, xattrs::read_link(pb).attrs);
        if xa == xb {
            return;
        }
        let names = |x: &xattrs::Attrs| x.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>();
        let (na, nb) = (names(&xa), names(&xb));
        let only_a: Vec<_> = na.difference(&nb).cloned().collect();
        let only_b: Vec<_> = nb.difference(&na).cloned().collect();
        let changed: Vec<_> = xa
            .iter()
            .filter(|(n, v)| xb.iter().any(|(m, w)| m == n && w != v))
            .map(|(n, _)| n.clone())
            .collect();
        self.diff(
            rel,
            format_args!(
                "extended attributes differ (only in a: {only_a:?}, only in b: {only_b:?}, \
                 other value: {changed:?})"
            ),
        );
    }

    fn mtime(&mut self, rel: &Path, ma: &Metadata, mb: &Metadata) {
        let (sa, na) = (ma.mtime(), ma.mtime_nsec());
        let (sb, nb) = (mb.mtime(), mb.mtime_nsec());
        // A side without sub-second precision (nanos 0) is compared to the second.
        let differs = if na == 0 || nb == 0 {
            sa != sb
        } else {
            (sa, na) != (sb, nb)
        };
        if differs {
            self.diff(
                rel,
                format_args!("mtime differs ({sa}.{na:09} vs {sb}.{nb:09})"),
            );
        }
    }

    /// Hard-link grouping: the sets of paths that share an inode must match.
    /// Groups of one path (linked from outside the tree) say nothing.
    fn links(&mut self) {
        fn groups(map: &mut Groups) -> BTreeSet<Vec<PathBuf>> {
            map.drain()
                .map(|(_, mut g)| {
                    g.sort();
                    g
                })
                .filter(|g| g.len() > 1)
                .collect()
        }
        let ga = groups(&mut self.links_a);
        let gb = groups(&mut self.links_b);
        let list = |g: &Vec<PathBuf>| {
            g.iter()
                .map(|p| format!("\"{}\"", shown(p)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for g in ga.difference(&gb) {
            self.diffs.push(format!(
                "hard links differ: {} share an inode only in {}",
                list(g),
                self.a.display()
            ));
        }
        for g in gb.difference(&ga) {
            self.diffs.push(format!(
                "hard links differ: {} share an inode only in {}",
                list(g),
                self.b.display()
            ));
        }
    }
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}
