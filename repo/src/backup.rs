//! Backing a directory tree up into the repository.
//!
//! The tree writer of ferry-archive produces the same tar stream as for a full archive; this
//! module is its output. Tar headers go into the index inline; each regular file's content is
//! cut into content-defined chunks, and only chunks the repository does not already hold (as
//! far as this backup can tell) are compressed and appended to a pack. A file whose size,
//! mtime, ctime and inode equal those in the parent backup's index is not read at all: its
//! chunk list is copied from the parent's index, which is streamed alongside the walk (both
//! are in walk order), so memory does not grow with the volume.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use ferry_archive::{ArchiveStats, FileContent, TarOutput};
use ferry_storage::blocking::{ObjectWriter, PendingPut, Written, open_reader};
use ferry_storage::{ObjectStore, StorageError};
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::chunker::Chunker;
use crate::index::{ChunkId, ChunkRef, FileRecord, IndexReader, IndexWriter, Record, walk_cmp};
use crate::{RepoError, ZSTD_LEVEL, layout};

/// A pack is closed once it holds this many compressed bytes ("tens of MiB", DESIGN §10).
pub const PACK_TARGET: u64 = 32 << 20;
/// Packs being committed while the next one is written.
const PACKS_IN_FLIGHT: usize = 1;
/// Chunks of this backup remembered for deduplication inside it (about 100 bytes each).
const RECENT: usize = 32 * 1024;
/// Chunks of a changed file's previous version remembered (an appended log reuses them).
const SAME_PATH: usize = 64 * 1024;

/// Where a backup goes and what it builds on.
#[derive(Debug, Clone)]
pub struct BackupPlan {
    /// Pack objects go under this prefix (ends with `/`), e.g. `teams/T/repo/packs/`.
    pub pack_prefix: String,
    /// The index object this backup writes.
    pub index_key: String,
    /// The list of packs the index references (one name per line), written before the index.
    pub packs_key: String,
    /// The parent backup's index, when there is one.
    pub parent_index: Option<String>,
}

/// What a repository backup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStats {
    pub archive: ArchiveStats,
    /// The index object: its size and SHA-256 (what the manifest records).
    pub index: Written,
    /// Every pack the index references.
    pub packs: Vec<String>,
    /// Bytes of the tar stream the index describes.
    pub tar_bytes: u64,
    /// Chunks the index references, and how many of them this backup uploaded.
    pub chunks: u64,
    pub new_chunks: u64,
    /// Content bytes of the new chunks, and what they took in packs.
    pub new_bytes: u64,
    pub new_stored: u64,
    /// Files whose chunk list came from the parent without reading them.
    pub unchanged_files: u64,
    /// Files read and chunked.
    pub read_files: u64,
    /// Whether the parent's index was there to build on.
    pub parent_used: bool,
}

/// Backs `root` up as `plan` says. Runs on a thread that may block; `rt` runs the uploads.
pub fn backup_tree(
    rt: &Handle,
    store: Arc<dyn ObjectStore>,
    root: &Path,
    plan: &BackupPlan,
    cancel: &CancellationToken,
    progress: &AtomicU64,
) -> Result<BackupStats, RepoError> {
    // A parent deleted since the backup was planned: back up without one.
    let parent = match &plan.parent_index {
        Some(key) => match Parent::open(rt, &*store, key) {
            Ok(parent) => Some(parent),
            Err(RepoError::Storage(ferry_storage::StorageError::NotFound { .. })) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let parent_used = parent.is_some();
    let index_out = ObjectWriter::create(rt, store.clone(), &plan.index_key, cancel);
    let encoder = zstd::stream::write::Encoder::new(index_out, ZSTD_LEVEL)
        .map_err(|e| RepoError::io("starting the index", e))?;
    let mut out = Output {
        rt: rt.clone(),
        store: store.clone(),
        cancel: cancel.clone(),
        pack_prefix: plan.pack_prefix.clone(),
        index: IndexWriter::new(encoder).map_err(|e| RepoError::io("writing the index", e))?,
        inline: Vec::new(),
        in_file: false,
        chunker: Chunker::default(),
        compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)
            .map_err(|e| RepoError::io("starting zstd", e))?,
        pack: None,
        pending: VecDeque::new(),
        parent,
        same_path: HashMap::new(),
        recent: HashMap::new(),
        packs: BTreeSet::new(),
        stats: Counts::default(),
    };
    let archive = ferry_archive::write_tree_to(root, &mut out, progress)?;
    let mut stats = out.finish(archive, &plan.packs_key)?;
    stats.parent_used = parent_used;
    Ok(stats)
}

#[derive(Debug, Default)]
struct Counts {
    tar_bytes: u64,
    chunks: u64,
    new_chunks: u64,
    new_bytes: u64,
    new_stored: u64,
    unchanged_files: u64,
    read_files: u64,
}

struct OpenPack {
    name: String,
    writer: ObjectWriter,
}

type IndexOut = IndexWriter<zstd::stream::write::Encoder<'static, ObjectWriter>>;

struct Output {
    rt: Handle,
    store: Arc<dyn ObjectStore>,
    cancel: CancellationToken,
    pack_prefix: String,
    index: IndexOut,
    /// Tar bytes waiting to become an inline record.
    inline: Vec<u8>,
    /// Between `begin_content` and `end_content` of a file being read.
    in_file: bool,
    chunker: Chunker,
    compressor: zstd::bulk::Compressor<'static>,
    pack: Option<OpenPack>,
    pending: VecDeque<PendingPut>,
    parent: Option<Parent>,
    same_path: HashMap<ChunkId, ChunkRef>,
    recent: HashMap<ChunkId, ChunkRef>,
    packs: BTreeSet<String>,
    stats: Counts,
}

fn storage_io(e: ferry_storage::StorageError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Output {
    fn flush_inline(&mut self) -> io::Result<()> {
        for piece in self.inline.chunks(crate::index::MAX_INLINE) {
            self.index.write(&Record::Inline(piece.to_vec()))?;
        }
        self.inline.clear();
        Ok(())
    }

    fn reference(&mut self, chunk: ChunkRef) -> io::Result<()> {
        if !self.packs.contains(&chunk.pack) {
            self.packs.insert(chunk.pack.clone());
        }
        self.stats.chunks += 1;
        self.index.write(&Record::Chunk(chunk))
    }

    /// One chunk of the file being read: referenced where it already is, stored otherwise.
    fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        let id: ChunkId = Sha256::digest(data).into();
        let known = self
            .same_path
            .get(&id)
            .or_else(|| self.recent.get(&id))
            .cloned();
        let chunk = match known {
            Some(chunk) => chunk,
            None => self.store_chunk(id, data)?,
        };
        self.reference(chunk)
    }

    fn store_chunk(&mut self, id: ChunkId, data: &[u8]) -> io::Result<ChunkRef> {
        let compressed = self.compressor.compress(data)?;
        if self.pack.is_none() {
            let name = layout::new_pack_name(layout::now_ms());
            let key = layout::pack_key(&self.pack_prefix, &name);
            let writer = ObjectWriter::create(&self.rt, self.store.clone(), &key, &self.cancel);
            self.pack = Some(OpenPack { name, writer });
        }
        let pack = self.pack.as_mut().expect("a pack is open");
        let offset = pack.writer.written();
        pack.writer.write_all(&compressed)?;
        let chunk = ChunkRef {
            id,
            pack: pack.name.clone(),
            offset,
            stored: compressed.len() as u32,
            raw: data.len() as u32,
        };
        let full = pack.writer.written() >= PACK_TARGET;
        self.stats.new_chunks += 1;
        self.stats.new_bytes += data.len() as u64;
        self.stats.new_stored += compressed.len() as u64;
        if self.recent.len() >= RECENT {
            self.recent.clear();
        }
        self.recent.insert(id, chunk.clone());
        if full {
            self.close_pack()?;
        }
        Ok(chunk)
    }

    /// Ends the open pack; its commit overlaps with writing the next one.
    fn close_pack(&mut self) -> io::Result<()> {
        if let Some(pack) = self.pack.take() {
            self.pending
                .push_back(pack.writer.finish_later().map_err(storage_io)?);
        }
        while self.pending.len() > PACKS_IN_FLIGHT {
            let oldest = self.pending.pop_front().expect("a pending pack");
            oldest.wait().map_err(storage_io)?;
        }
        Ok(())
    }

    /// Chunks the file's content read so far (cut points need no look-back across files).
    fn push_content(&mut self, data: &[u8]) -> io::Result<()> {
        let mut chunker = std::mem::take(&mut self.chunker);
        let result = chunker.push(data, &mut |c| self.chunk(c));
        self.chunker = chunker;
        result
    }

    fn finish(mut self, archive: ArchiveStats, packs_key: &str) -> Result<BackupStats, RepoError> {
        let write = |e| RepoError::io("writing the index", e);
        self.flush_inline().map_err(write)?;
        self.close_pack().map_err(write)?;
        for pending in std::mem::take(&mut self.pending) {
            pending.wait()?;
        }
        let packs: Vec<String> = std::mem::take(&mut self.packs).into_iter().collect();
        let mut list = String::with_capacity(packs.len() * 48);
        for p in &packs {
            list.push_str(p);
            list.push('\n');
        }
        // A cancelled attempt (its lease lost, the job cancelled) writes nothing more.
        if self.cancel.is_cancelled() {
            return Err(RepoError::Storage(StorageError::Cancelled));
        }
        self.rt
            .block_on(self.store.put_bytes(packs_key, list.into_bytes()))?;
        let end = Record::End {
            tar_bytes: self.stats.tar_bytes,
            chunks: self.stats.chunks,
        };
        let index = self
            .index
            .write(&end)
            .map_err(write)
            .and_then(|()| self.index.into_inner().finish().map_err(write))
            .and_then(|w| Ok(w.finish()?));
        if index.is_err() {
            // No index, no backup: the packs list goes too, so a cancelled or failed attempt
            // leaves only unreferenced packs (garbage collection removes them).
            let _ = self.rt.block_on(self.store.delete(packs_key));
        }
        let index = index?;
        let c = self.stats;
        Ok(BackupStats {
            archive,
            index,
            packs,
            tar_bytes: c.tar_bytes,
            chunks: c.chunks,
            new_chunks: c.new_chunks,
            new_bytes: c.new_bytes,
            new_stored: c.new_stored,
            unchanged_files: c.unchanged_files,
            read_files: c.read_files,
            parent_used: false,
        })
    }
}

impl Write for Output {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.stats.tar_bytes += data.len() as u64;
        if self.in_file {
            self.push_content(data)?;
        } else {
            self.inline.extend_from_slice(data);
            if self.inline.len() >= crate::index::MAX_INLINE {
                self.flush_inline()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TarOutput for Output {
    fn begin_content(&mut self, file: &FileContent<'_>) -> io::Result<bool> {
        self.flush_inline()?;
        let record = FileRecord {
            path: file.path.to_vec(),
            key: file.key,
            content_len: file.content_len,
        };
        if let Some(parent) = self.parent.as_mut()
            && let Some(before) = parent.seek(file.path)?
        {
            if before.key == file.key && before.content_len == file.content_len {
                self.index.write(&Record::File(record))?;
                let mut total = 0u64;
                while let Some(chunk) = self.parent.as_mut().expect("parent").next_chunk()? {
                    total += u64::from(chunk.raw);
                    self.reference(chunk)?;
                }
                if total != file.content_len {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the parent backup's index does not add up for an unchanged file",
                    ));
                }
                self.index.write(&Record::FileEnd)?;
                self.stats.tar_bytes += file.content_len;
                self.stats.unchanged_files += 1;
                return Ok(true);
            }
            // Changed: its previous chunks may still be in it (an appended log, an edit).
            while let Some(chunk) = self.parent.as_mut().expect("parent").next_chunk()? {
                if self.same_path.len() < SAME_PATH {
                    self.same_path.insert(chunk.id, chunk);
                }
            }
        }
        self.index.write(&Record::File(record))?;
        self.in_file = true;
        self.stats.read_files += 1;
        Ok(false)
    }

    fn end_content(&mut self) -> io::Result<()> {
        let mut chunker = std::mem::take(&mut self.chunker);
        let result = chunker.finish(&mut |c| self.chunk(c));
        self.chunker = chunker;
        result?;
        self.in_file = false;
        self.same_path.clear();
        self.index.write(&Record::FileEnd)
    }
}

/// The parent backup's index, read in step with the walk.
struct Parent {
    reader: IndexReader<Box<dyn Read + Send>>,
    /// A file record read ahead of the walk.
    ahead: Option<FileRecord>,
    /// The reader stands inside the chunk list of the file `seek` returned.
    in_chunks: bool,
    ended: bool,
}

impl Parent {
    fn open(rt: &Handle, store: &dyn ObjectStore, key: &str) -> Result<Parent, RepoError> {
        let raw = open_reader(rt, store, key)?;
        let decoder = zstd::stream::read::Decoder::new(raw)
            .map_err(|e| RepoError::io("reading the parent index", e))?;
        let reader: Box<dyn Read + Send> = Box::new(decoder);
        Ok(Parent {
            reader: IndexReader::new(reader)
                .map_err(|e| RepoError::io("reading the parent index", e))?,
            ahead: None,
            in_chunks: false,
            ended: false,
        })
    }

    /// The parent's record of `path`, if it had one; its chunks follow through `next_chunk`.
    fn seek(&mut self, path: &[u8]) -> io::Result<Option<FileRecord>> {
        loop {
            if self.ended {
                return Ok(None);
            }
            if self.ahead.is_none() {
                // Whatever chunks of earlier files are left are skipped on the way.
                self.in_chunks = false;
                match self.reader.next_record()? {
                    Some(Record::File(f)) => {
                        self.ahead = Some(f);
                        self.in_chunks = true;
                    }
                    Some(Record::End { .. }) | None => self.ended = true,
                    Some(_) => {}
                }
                continue;
            }
            let ahead = self.ahead.as_ref().expect("a record ahead");
            match walk_cmp(&ahead.path, path) {
                std::cmp::Ordering::Less => self.ahead = None,
                std::cmp::Ordering::Equal => return Ok(self.ahead.take()),
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
    }

    /// The next chunk of the file `seek` returned; `None` at its end.
    fn next_chunk(&mut self) -> io::Result<Option<ChunkRef>> {
        if !self.in_chunks {
            return Ok(None);
        }
        match self.reader.next_record()? {
            Some(Record::Chunk(c)) => Ok(Some(c)),
            Some(Record::FileEnd) => {
                self.in_chunks = false;
                Ok(None)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the parent backup's index is malformed (a file's chunk list does not end)",
            )),
        }
    }
}
