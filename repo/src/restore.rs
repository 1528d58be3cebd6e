//! Reading a backup back: the index replayed into the tar stream it describes.
//!
//! [`TarStream`] is a [`Read`] (for ferry-archive's extractor, or for an export). It reads the
//! index in order, and fetches runs of chunks that lie next to each other in one pack with a
//! single ranged read — across the tar headers between them, so a directory of small files,
//! one chunk each, is one read — several runs at once ahead of the reader (prefetch over
//! several packs).
//! Each chunk is decompressed and its SHA-256 checked against its id on the runtime's blocking
//! threads; a chunk that does not match fails the read, so a restore never writes what the
//! backup did not hold. Memory: at most [`AHEAD`] runs of at most [`RUN`] bytes. A served
//! chunk's buffer goes back to a small [`Pool`] that the next decodes refill: a fresh buffer of
//! a chunk's size is, in the worker (mmap threshold 1 MiB), often a new mapping whose every page
//! faults in.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use ferry_storage::ObjectStore;
use ferry_storage::blocking::{Written, open_reader};
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::index::{ChunkRef, IndexReader, Record};
use crate::{RepoError, layout};

/// Largest run: compressed bytes of adjacent chunks read at once, and their decompressed size.
pub const RUN: u64 = 4 << 20;
/// Runs fetched ahead of the reader.
pub const AHEAD: usize = 6;
/// Pieces (tar headers, chunk places) queued ahead of the reader at most.
const QUEUED: usize = 8192;
/// Capacity the pool of served chunk buffers keeps at most.
const POOL_BYTES: usize = RUN as usize;

/// Buffers of served chunks, taken again by the next decodes (bounded by [`POOL_BYTES`]).
#[derive(Clone, Default)]
struct Pool(Arc<Mutex<Vec<Vec<u8>>>>);

impl Pool {
    /// An empty buffer with room for `len` bytes.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
        buf.clear();
        buf.reserve(len);
        buf
    }

    /// Keeps `buf` for a later chunk while the pool has room; tar headers and other small
    /// buffers are not worth keeping.
    fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() < crate::chunker::MIN {
            return;
        }
        if let Ok(mut pool) = self.0.lock() {
            let held: usize = pool.iter().map(Vec::capacity).sum();
            if held + buf.capacity() <= POOL_BYTES {
                pool.push(buf);
            }
        }
    }
}

/// A piece of the tar stream, in order.
enum Piece {
    Inline(Vec<u8>),
    /// The next chunk of the oldest run in flight (runs are served in order).
    Chunk,
}

/// A run's chunks, decompressed and checked, one buffer each.
type Fetch = JoinHandle<io::Result<VecDeque<Vec<u8>>>>;

type IndexIn = IndexReader<Box<dyn Read + Send>>;

/// The tar stream of one repository backup (see the module docs).
pub struct TarStream {
    rt: Handle,
    store: Arc<dyn ObjectStore>,
    pack_prefix: String,
    index: IndexIn,
    queue: VecDeque<Piece>,
    /// The run being gathered: its chunks are queued, its fetch not started yet.
    open: Vec<ChunkRef>,
    /// Runs in flight, oldest first.
    fetches: VecDeque<Fetch>,
    /// The chunks of the oldest run not served yet.
    fetched: VecDeque<Vec<u8>>,
    current: Vec<u8>,
    pool: Pool,
    at: usize,
    served: u64,
    chunks: u64,
    end: Option<(u64, u64)>,
    index_key: String,
    hash: Arc<Mutex<Sha256>>,
    expected_sha256: Option<String>,
}

impl std::fmt::Debug for TarStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarStream")
            .field("served", &self.served)
            .finish()
    }
}

/// Hashes the index object as it is read.
struct Hashing<R> {
    inner: R,
    hash: Arc<Mutex<Sha256>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash
            .lock()
            .map_err(|_| io::Error::other("hash lock poisoned"))?
            .update(&buf[..n]);
        Ok(n)
    }
}

/// Opens the tar stream of the index `index_key`, whose packs are under `pack_prefix`. With
/// `expected_sha256`, the index object itself must have that checksum (checked at the end).
/// Call from a thread that may block.
pub fn open_tar(
    rt: &Handle,
    store: Arc<dyn ObjectStore>,
    pack_prefix: &str,
    index_key: &str,
    expected_sha256: Option<&str>,
) -> Result<TarStream, RepoError> {
    let hash = Arc::new(Mutex::new(Sha256::new()));
    let raw = Hashing {
        inner: open_reader(rt, &*store, index_key)?,
        hash: hash.clone(),
    };
    let decoder =
        zstd::stream::read::Decoder::new(raw).map_err(|e| RepoError::io("reading the index", e))?;
    let boxed: Box<dyn Read + Send> = Box::new(decoder);
    let index = IndexReader::new(boxed).map_err(|e| RepoError::io("reading the index", e))?;
    Ok(TarStream {
        rt: rt.clone(),
        store,
        pack_prefix: pack_prefix.to_owned(),
        index,
        queue: VecDeque::new(),
        open: Vec::new(),
        fetches: VecDeque::new(),
        fetched: VecDeque::new(),
        current: Vec::new(),
        pool: Pool::default(),
        at: 0,
        served: 0,
        chunks: 0,
        end: None,
        index_key: index_key.to_owned(),
        hash,
        expected_sha256: expected_sha256.map(str::to_owned),
    })
}

impl TarStream {
    /// Queues pieces until [`AHEAD`] runs are in flight or the index ends. Inline pieces are
    /// small: at most [`QUEUED`] wait.
    fn fill(&mut self) -> io::Result<()> {
        while self.end.is_none() && self.fetches.len() < AHEAD && self.queue.len() < QUEUED {
            match self.index.next_record()? {
                Some(Record::Inline(bytes)) => self.queue.push_back(Piece::Inline(bytes)),
                Some(Record::Chunk(c)) => {
                    if !self.continues_open(&c) {
                        self.start_open();
                    }
                    self.open.push(c);
                    self.chunks += 1;
                    self.queue.push_back(Piece::Chunk);
                }
                Some(Record::End { tar_bytes, chunks }) => {
                    self.start_open();
                    self.end = Some((tar_bytes, chunks));
                }
                Some(Record::File(_) | Record::FileEnd) => {}
                None => return Err(corrupt("the index ends without its end record")),
            }
        }
        Ok(())
    }

    /// Whether `c` lies right after the open run in the same pack, the run staying within
    /// [`RUN`] bytes both stored and decompressed (what it holds in memory once fetched).
    fn continues_open(&self, c: &ChunkRef) -> bool {
        match (self.open.first(), self.open.last()) {
            (Some(first), Some(last)) => {
                let raw: u64 = self.open.iter().map(|r| u64::from(r.raw)).sum();
                c.pack == last.pack
                    && c.offset == last.offset + u64::from(last.stored)
                    && c.offset + u64::from(c.stored) - first.offset <= RUN
                    && raw + u64::from(c.raw) <= RUN
            }
            _ => true,
        }
    }

    /// Starts the fetch of the open run, if any.
    fn start_open(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let run = std::mem::take(&mut self.open);
        let store = self.store.clone();
        let key = layout::pack_key(&self.pack_prefix, &run[0].pack);
        let pool = self.pool.clone();
        self.fetches.push_back(self.rt.spawn(async move {
            let last = run.last().expect("a chunk");
            let len = last.offset + u64::from(last.stored) - run[0].offset;
            let data = store
                .get_range(&key, run[0].offset, len)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            let what = key.clone();
            tokio::task::spawn_blocking(move || decode(&key, &data, &run, &pool))
                .await
                .map_err(|e| io::Error::other(format!("decoding {what}: {e}")))?
        }));
    }

    /// The next chunk of the stream: from the oldest run in flight (started now if it is the
    /// open one).
    fn next_chunk(&mut self) -> io::Result<Vec<u8>> {
        if self.fetched.is_empty() {
            if self.fetches.is_empty() {
                self.start_open();
            }
            let fetch = self
                .fetches
                .pop_front()
                .ok_or_else(|| corrupt("a chunk without a run"))?;
            self.fetched = self
                .rt
                .block_on(fetch)
                .map_err(|e| io::Error::other(format!("a chunk fetch failed: {e}")))??;
        }
        self.fetched
            .pop_front()
            .ok_or_else(|| corrupt("a run ended early"))
    }

    fn finished(&mut self) -> io::Result<()> {
        match self.end {
            Some((tar_bytes, chunks)) if tar_bytes == self.served && chunks == self.chunks => {
                self.index.expect_eof()?;
                let actual = hex::encode(
                    self.hash
                        .lock()
                        .map_err(|_| io::Error::other("hash lock poisoned"))?
                        .clone()
                        .finalize(),
                );
                match &self.expected_sha256 {
                    Some(expected) if *expected != actual => Err(corrupt(&format!(
                        "index {} has SHA-256 {actual}, the manifest says {expected}",
                        self.index_key
                    ))),
                    _ => Ok(()),
                }
            }
            Some((tar_bytes, chunks)) => Err(corrupt(&format!(
                "the index promised {tar_bytes} bytes in {chunks} chunks and held {} in {}",
                self.served, self.chunks
            ))),
            None => Err(corrupt("the index ends without its end record")),
        }
    }
}

/// Decompresses a run of chunks (into buffers from `pool`) and checks each against its id.
fn decode(key: &str, data: &[u8], run: &[ChunkRef], pool: &Pool) -> io::Result<VecDeque<Vec<u8>>> {
    let mut out = VecDeque::with_capacity(run.len());
    let mut decompressor = zstd::bulk::Decompressor::new()?;
    let base = run[0].offset;
    for c in run {
        let start = (c.offset - base) as usize;
        let stored = &data[start..start + c.stored as usize];
        let mut raw = pool.take(c.raw as usize);
        decompressor
            .decompress_to_buffer(stored, &mut raw)
            .map_err(|e| corrupt(&format!("a chunk in {key} does not decompress: {e}")))?;
        if raw.len() != c.raw as usize || <[u8; 32]>::from(Sha256::digest(&raw)) != c.id {
            return Err(corrupt(&format!(
                "chunk {} in {key} at offset {} does not match its id",
                hex::encode(c.id),
                c.offset
            )));
        }
        out.push_back(raw);
    }
    Ok(out)
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("repository: {what}"))
}

impl Read for TarStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            self.fill()?;
            let next = match self.queue.pop_front() {
                Some(Piece::Inline(bytes)) => bytes,
                Some(Piece::Chunk) => self.next_chunk()?,
                None => {
                    self.finished()?;
                    return Ok(0);
                }
            };
            self.pool
                .give_back(std::mem::replace(&mut self.current, next));
            self.at = 0;
            self.served += self.current.len() as u64;
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for TarStream {
    fn drop(&mut self) {
        for fetch in self.fetches.drain(..) {
            fetch.abort();
        }
    }
}

/// Writes a repository backup as the self-contained `tar.zst` a full backup would have stored
/// (`zstd -3`, deterministic: two calls give the same bytes), for exports. Returns its size and
/// SHA-256. Call from a thread that may block.
pub fn rehydrate<W: Write>(
    rt: &Handle,
    store: Arc<dyn ObjectStore>,
    pack_prefix: &str,
    index_key: &str,
    expected_sha256: Option<&str>,
    out: W,
) -> Result<Written, RepoError> {
    let mut input = open_tar(rt, store, pack_prefix, index_key, expected_sha256)?;
    let counted = Counted {
        inner: out,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = zstd::stream::write::Encoder::new(counted, crate::ZSTD_LEVEL)
        .map_err(|e| RepoError::io("starting zstd", e))?;
    io::copy(&mut input, &mut encoder).map_err(|e| RepoError::io("rehydrating", e))?;
    let mut counted = encoder
        .finish()
        .map_err(|e| RepoError::io("rehydrating", e))?;
    counted
        .inner
        .flush()
        .map_err(|e| RepoError::io("rehydrating", e))?;
    Ok(Written {
        bytes: counted.bytes,
        sha256: hex::encode(counted.hasher.finalize()),
    })
}

struct Counted<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_chunk_buffers_up_to_its_bound_and_hands_them_out_empty() {
        let pool = Pool::default();
        pool.give_back(Vec::with_capacity(512)); // a tar header: not kept
        assert_eq!(pool.0.lock().unwrap().len(), 0);
        let big = vec![7u8; 3 << 20];
        let at = big.as_ptr();
        pool.give_back(big);
        let again = pool.take(1 << 20);
        assert!(again.is_empty() && again.capacity() >= 3 << 20);
        assert_eq!(again.as_ptr(), at, "the same buffer, not a new one");
        for _ in 0..10 {
            pool.give_back(Vec::with_capacity(RUN as usize));
        }
        let held: usize = pool.0.lock().unwrap().iter().map(Vec::capacity).sum();
        assert!(held <= POOL_BYTES, "{held}");
        assert!(pool.take(10).capacity() >= 10);
    }
}
