//! Directory tree <-> tar stream for Ferry backups.
//!
//! [`write_tree`] turns a directory tree into a tar stream, [`extract_tree`]
//! turns one back into a tree without ever writing outside its target,
//! [`tree_size`] gives the progress total, and [`compare_trees`] checks that
//! a restore kept everything a backup must keep. Everything streams through
//! fixed buffers and runs synchronously (call it from a blocking thread).
//! See README.md for the format and the safety rules.

mod compare;
mod extract;
mod pax;
pub mod sample;
mod sparse;
mod tap;
mod write;
mod xattrs;

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use compare::compare_trees;
pub use extract::{can_restore_owners, extract_tree};
pub use write::{FileContent, FileKey, TarOutput, tree_size, write_tree, write_tree_to};
pub use xattrs::copy_dir_attrs;

/// Size of the one copy buffer each run allocates: large enough for
/// throughput, small enough that memory stays bounded whatever the file size.
pub(crate) const BUF_SIZE: usize = 256 * 1024;

/// Counters of one archive run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Regular files written (each hard-link group counts once, its first path).
    pub files: u64,
    /// Directories, the root (entry ".") included.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Extra paths of hard-link groups, stored as links to the first path.
    pub hardlinks: u64,
    /// Entries left out: sockets, fifos and devices when archiving; fifos and
    /// unknown entry types when extracting.
    pub skipped: u64,
    /// Logical bytes of regular-file content (holes of sparse files included).
    pub bytes: u64,
    /// Files that changed or vanished while being archived. The archive stays
    /// valid: a file is stored with the size seen when it was opened (zero
    /// padded if it shrank, cut if it grew); a vanished one is left out.
    pub warnings: u64,
    /// Extended attributes the restore target refused (no ACL support, no
    /// `CAP_SETFCAP`, …), one line per kind; the restore itself went on.
    pub attr_warnings: Vec<AttrWarning>,
}

/// Extended attributes of one kind that a restore target refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrWarning {
    /// "POSIX ACLs", "file capabilities", "user extended attributes", …
    pub kind: String,
    /// How many attributes of that kind were not set.
    pub count: u64,
    /// The first refusal, e.g. "Operation not supported (os error 95)".
    pub first_error: String,
}

impl std::fmt::Display for AttrWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} not restored on {} entr{} (the target refused them: {})",
            self.kind,
            self.count,
            if self.count == 1 { "y" } else { "ies" },
            self.first_error
        )
    }
}

/// How a restore writes what it extracts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Replace the target's existing content (removed only after the first
    /// tar header was read) instead of requiring an empty target.
    pub overwrite: bool,
    /// Give files the archived uid/gid even when the archived user or group
    /// name exists here under another id (GNU tar's `--numeric-owner`). By
    /// default a name that exists on this host wins, as with GNU tar.
    pub numeric_owner: bool,
    /// Refuse an archive whose regular files hold more bytes than this (what the backup
    /// recorded): a tampered or hostile archive cannot fill the target's disk.
    pub max_bytes: Option<u64>,
    /// Clear the setuid and setgid bits from every restored file and directory
    /// mode (the other bits, sticky included, are kept): for data-only restores
    /// of backups that are not trusted to hand out privileges.
    pub clear_setid: bool,
}

/// Why archiving or extracting failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file system operation on `path` failed.
    #[error("I/O error at \"{}\": {source}", shown(path))]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A hostile or malformed entry was refused; the extraction stopped.
    #[error("refused archive entry \"{}\": {reason}", shown(path))]
    Unsafe {
        /// The entry's path as stored in the archive.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The restore target has content and overwrite was not asked for.
    #[error(
        "restore target \"{}\" is not empty (overwrite was not requested)",
        shown(path)
    )]
    TargetNotEmpty {
        /// The target directory.
        path: PathBuf,
    },
    /// The restore target does not exist.
    #[error("restore target \"{}\" does not exist", shown(path))]
    TargetMissing {
        /// The target directory.
        path: PathBuf,
    },
    /// The restore target exists but is not a directory.
    #[error("restore target \"{}\" is not a directory", shown(path))]
    TargetNotDirectory {
        /// The target path.
        path: PathBuf,
    },
    /// The restore target is a symbolic link: it is not followed.
    #[error(
        "restore target \"{}\" is a symbolic link (not followed; give the directory itself)",
        shown(path)
    )]
    TargetIsSymlink {
        /// The target path.
        path: PathBuf,
    },
    /// The tree to archive is not a directory.
    #[error("source \"{}\" is not a directory", shown(path))]
    SourceNotDirectory {
        /// The source path.
        path: PathBuf,
    },
    /// Writing the tar stream failed (the consumer went away, disk full, ...).
    #[error("writing the tar stream failed at entry \"{}\": {source}", shown(path))]
    Output {
        /// The entry being written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading the tar stream failed: corrupt, truncated or not a tar stream.
    #[error("reading the tar stream failed ({context}): {source}")]
    Input {
        /// Where in the stream, naming the entry when one is known.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

/// A path for messages: lossy for non-UTF-8, control characters escaped so a
/// hostile name cannot forge log lines.
pub(crate) fn shown(path: &Path) -> String {
    shown_bytes(path.as_os_str().as_bytes())
}

/// Like [`shown`], for raw name bytes.
pub(crate) fn shown_bytes(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Shorthand for [`ArchiveError::Io`].
pub(crate) fn io_err(path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads until `buf` is full or the input ends; returns the count. Full
/// buffers keep chunks aligned to file offsets, which hole detection needs.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_controls_and_is_lossy() {
        assert_eq!(shown_bytes(b"a\nb"), "a\\nb");
        assert_eq!(shown_bytes(b"caf\xe9"), "caf\u{fffd}");
        assert_eq!(shown_bytes("café".as_bytes()), "café");
    }

    #[test]
    fn error_messages_name_path_and_reason() {
        let e = ArchiveError::Unsafe {
            path: PathBuf::from("../evil"),
            reason: "path contains a `..` component".into(),
        };
        let s = e.to_string();
        assert!(s.contains("../evil") && s.contains("`..`"), "{s}");
    }
}
