//! The incremental, deduplicated repository of volume backups (DESIGN.md §10).
//!
//! A volume backup into a repository writes:
//! - **packs** (`PACK_PREFIX/MILLIS-UUID.pack`): zstd-compressed content-defined chunks
//!   (FastCDC, ~1 MiB), appended until a pack holds ~32 MiB; written once, never changed;
//! - an **index** ([`index`]): the backup's tar stream as a recipe — tar headers inline, file
//!   content as chunk references — so that replaying it gives back byte for byte what a full
//!   archive holds, and every fidelity property of full archives carries over;
//! - a **packs list**: the packs its index references, for the commit check and for garbage
//!   collection ([`gc`]), which never needs to read an index.
//!
//! [`backup::backup_tree`] builds on a parent backup's index (unchanged files are not read);
//! [`restore::open_tar`] gives the tar stream back for the extractor or an export.

pub mod backup;
pub mod chunker;
pub mod gc;
pub mod index;
pub mod layout;
pub mod restore;

pub use backup::{BackupPlan, BackupStats, backup_tree};
pub use restore::{TarStream, open_tar, rehydrate};

/// zstd level of chunks and indexes: the same as full archives (`zstd -3`).
pub const ZSTD_LEVEL: i32 = 3;

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Archive(#[from] ferry_archive::ArchiveError),
    #[error("storage: {0}")]
    Storage(#[from] ferry_storage::StorageError),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl RepoError {
    pub(crate) fn io(context: &'static str, source: std::io::Error) -> RepoError {
        RepoError::Io { context, source }
    }
}

/// Reads a packs list (one pack name per line), refusing names this crate did not make.
pub fn parse_packs_list(text: &str) -> Result<Vec<String>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            layout::pack_created_ms(l)
                .map(|_| l.to_owned())
                .ok_or_else(|| {
                    format!(
                        "not a pack name: {:?}",
                        l.chars().take(80).collect::<String>()
                    )
                })
        })
        .collect()
}
