//! Streaming plumbing shared by every engine.
//!
//! Backup: a producer (tar writer, dump reader) runs on a blocking thread and writes into a zstd
//! encoder, whose output is hashed (SHA-256) and sent in bounded chunks through a channel to the
//! storage upload running on the async side. Memory is bounded by the channel depth times the
//! chunk size plus zstd's window; nothing is spooled to disk. The upload sees an error — never a
//! clean end — unless the producer finished, so a dying producer can never commit a truncated
//! archive.
//!
//! Restore: the archive streams from storage through SHA-256 and zstd into a consumer on a
//! blocking thread.

use std::io::{Read, Write};
use std::sync::Arc;

use ferry_storage::blocking::{ChunkSender, channel_reader};
use ferry_storage::{BoxReader, ObjectStore, StorageError};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::engines::ShardError;
use ferry_crypto::seal::Identities;

/// Bytes per chunk handed from the compressor to the uploader.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between compressor and uploader.
const CHANNEL_DEPTH: usize = 4;
/// zstd level: the same as `zstd -3`, the benchmark baseline.
const ZSTD_LEVEL: i32 = 3;
/// Bytes per multithreaded zstd job. zstd's default for level 3 (8 MiB: four windows) keeps
/// about seven job-sized buffers in flight with two workers; 1 MiB jobs cut the worker's peak RSS
/// backing up 1 GiB from 128 MiB to 40 MiB at the same ratio (see BENCHMARKS.md).
const ZSTD_JOB_SIZE: u32 = 1 << 20;

/// Bytes gathered before they go into zstd (see `compress_into`).
const ZSTD_INPUT_BUFFER: usize = 256 << 10;

/// What an upload wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: String,
}

/// `produce` → zstd (multithreaded, 1 MiB jobs) → `out`; returns `out` after the last frame.
fn compress_into<T, W: Write>(
    out: W,
    produce: impl FnOnce(&mut dyn Write) -> Result<T, ShardError>,
) -> Result<(T, W), ShardError> {
    let zstd = |e: std::io::Error| ShardError::transient(format!("zstd: {e}"));
    let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(zstd)?;
    let workers = zstd_workers();
    if workers > 1 {
        encoder.multithread(workers).map_err(zstd)?;
        encoder
            .set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))
            .map_err(zstd)?;
    }
    // Multithreaded zstd takes its job locks on every write; a tar stream of small files makes
    // several small writes per file (header, content, padding): 15 futex calls per file, and a
    // volume backup spent most of its time waiting on them with both cores half idle.
    let value = {
        let mut input = std::io::BufWriter::with_capacity(ZSTD_INPUT_BUFFER, &mut encoder);
        let value = produce(&mut input)?;
        input.flush().map_err(zstd)?;
        value
    };
    let out = encoder.finish().map_err(zstd)?;
    Ok((value, out))
}

fn zstd_workers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Runs `produce` on a blocking thread, compresses what it writes with zstd and streams it into
/// `key`. The object exists afterwards only if both producing and storing succeeded. With
/// `encrypt_to` (an encrypted location: the backup's own age recipient), the compressed stream
/// is encrypted on the way out (age, 64 KiB ChaCha20-Poly1305 chunks): what is hashed and
/// stored is the age file.
pub async fn upload_compressed<T, F>(
    store: Arc<dyn ObjectStore>,
    key: &str,
    cancel: &CancellationToken,
    encrypt_to: Option<String>,
    produce: F,
) -> Result<(T, Stored), ShardError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Write) -> Result<T, ShardError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let compress = tracing::info_span!(
        "compress",
        codec = "zstd",
        level = ZSTD_LEVEL,
        bytes_out = tracing::field::Empty
    );
    let producer = tokio::task::spawn_blocking(move || -> Result<(T, Stored), ShardError> {
        let _stage = compress.enter();
        let sink = ChunkSender::new(tx);
        let (value, sink) = match encrypt_to {
            None => compress_into(sink, produce)?,
            Some(recipient) => {
                let sealed = ferry_crypto::seal::encrypt_to(&recipient, sink)
                    .map_err(|e| ShardError::permanent(e.to_string()))?;
                let (value, sealed) = compress_into(sealed, produce)?;
                let sink = sealed
                    .finish()
                    .map_err(|e| ShardError::transient(format!("age: {e}")))?;
                (value, sink)
            }
        };
        let written = sink
            .finish()
            .map_err(|e| ShardError::transient(e.to_string()))?;
        let stored = Stored {
            bytes: written.bytes,
            sha256: written.sha256,
        };
        compress.record("bytes_out", stored.bytes);
        Ok((value, stored))
    });
    let upload = tracing::info_span!("upload", key = %key, bytes = tracing::field::Empty);
    let put = store
        .put(key, channel_reader(rx), cancel)
        .instrument(upload.clone())
        .await;
    if let Ok(n) = &put {
        upload.record("bytes", (*n) as i64);
    }
    let produced = producer
        .await
        .map_err(|e| ShardError::transient(format!("archive writer crashed: {e}")))?;
    match (produced, put) {
        (Ok((value, stored)), Ok(n)) => {
            debug_assert_eq!(n, stored.bytes);
            Ok((value, stored))
        }
        // The producer's error explains a storage-side "stopped before the end".
        (Err(e), _) => Err(e),
        (Ok(_), Err(StorageError::Cancelled)) => Err(ShardError::cancelled()),
        (Ok(_), Err(e)) => Err(ShardError::transient(format!("storage: {e}"))),
    }
}

/// Reads `key` through and checks its SHA-256, without decompressing. Returns its size.
pub async fn verify_object(
    store: &dyn ObjectStore,
    key: &str,
    expected: &str,
    progress: &std::sync::atomic::AtomicU64,
) -> Result<u64, ShardError> {
    let span = tracing::info_span!("verify", key = %key, bytes = tracing::field::Empty);
    let result = verify_inner(store, key, expected, progress)
        .instrument(span.clone())
        .await;
    if let Ok(n) = &result {
        span.record("bytes", (*n) as i64);
    }
    result
}

async fn verify_inner(
    store: &dyn ObjectStore,
    key: &str,
    expected: &str,
    progress: &std::sync::atomic::AtomicU64,
) -> Result<u64, ShardError> {
    let mut body = store.get(key).await.map_err(storage_error)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = body
            .read(&mut buf)
            .await
            .map_err(|e| ShardError::transient(format!("reading {key}: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        progress.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(ShardError::permanent(format!(
            "archive {key} is corrupt: SHA-256 is {actual}, the manifest says {expected}"
        )));
    }
    Ok(total)
}

fn storage_error(e: StorageError) -> ShardError {
    match e {
        StorageError::NotFound { key } => {
            ShardError::permanent(format!("archive {key} is missing from storage"))
        }
        other => ShardError::transient(format!("storage: {other}")),
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Streams `key` through zstd into `consume`, then checks the archive's SHA-256 once more (the
/// verify step already checked it; this catches a change in between). Reading, hashing and
/// decompressing run on one blocking thread and `consume` (tar extraction, a restore tool's
/// stdin) on another, joined by a few 1 MiB chunks: like `zstd -d | tar -x`, the two halves
/// overlap on two cores. A failure upstream reaches `consume` as a read error, never as a
/// clean end of its input.
pub async fn download_decompressed<T, F>(
    store: &dyn ObjectStore,
    key: &str,
    expected: Option<String>,
    decrypt: Option<Arc<Identities>>,
    consume: F,
) -> Result<T, ShardError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Read) -> Result<T, ShardError> + Send + 'static,
{
    let body = store.get(key).await.map_err(storage_error)?;
    let key = key.to_owned();
    let download = tracing::info_span!("download", key = %key, bytes = tracing::field::Empty);
    let (tx, rx) = chunk_channel();
    let decompress = tokio::task::spawn_blocking({
        let key = key.clone();
        move || {
            let _stage = download.enter();
            let result = decompress_into(body, &key, decrypt.as_deref(), &tx);
            if let Err(e) = &result {
                let _ = tx.send(Err(std::io::Error::other(e.message.clone())));
            }
            if let Ok(Some((bytes, _))) = &result {
                tracing::Span::current().record("bytes", (*bytes) as i64);
            }
            result
        }
    });
    let consumed = tokio::task::spawn_blocking(move || {
        let mut input = rx;
        let value = consume(&mut input)?;
        // Whatever the consumer left (tar padding) is read to the end: upstream errors count.
        std::io::copy(&mut input, &mut std::io::sink())
            .map_err(|e| ShardError::transient(format!("reading the archive: {e}")))?;
        Ok::<_, ShardError>(value)
    });
    let crashed = |e| ShardError::transient(format!("archive reader crashed: {e}"));
    let consumed = consumed.await.map_err(crashed)?;
    let decompressed = decompress.await.map_err(crashed)?;
    // The first failure explains the rest: an upstream error reaches the consumer as a read
    // error, and a consumer that stops leaves the upstream nobody to write to.
    let (value, actual) = match (decompressed, consumed) {
        (Ok(Some((_, actual))), Ok(value)) => (value, actual),
        (Err(upstream), _) => return Err(upstream),
        (Ok(_), Err(downstream)) => return Err(downstream),
        (Ok(None), Ok(_)) => {
            return Err(ShardError::transient("the restore stopped reading early"));
        }
    };
    if let Some(expected) = expected
        && actual != expected
    {
        return Err(ShardError::permanent(format!(
            "archive {key} changed while it was restored: SHA-256 is {actual}, the manifest says \
             {expected}"
        )));
    }
    Ok(value)
}

/// The upstream half of a restore: storage → SHA-256 → zstd → chunks. Returns the archive's size
/// and SHA-256, or `None` when the consumer stopped reading first.
fn decompress_into(
    body: BoxReader,
    key: &str,
    decrypt: Option<&Identities>,
    tx: &ChunkTx,
) -> Result<Option<(u64, String)>, ShardError> {
    let mut hashing = HashingReader {
        inner: std::io::BufReader::with_capacity(CHUNK, SyncIoBridge::new(body)),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let finished = match decrypt {
        None => inflate(&mut hashing, key, tx)?,
        // An encrypted archive: the age file is hashed as stored and opened on a thread of its
        // own, a few chunks ahead of decompression, so that the two overlap on two cores (as
        // `age -d | zstd -d` would).
        Some(ids) => std::thread::scope(|scope| {
            let (plain_tx, mut plain) = chunk_channel();
            let hashing = &mut hashing;
            let opener = scope.spawn(move || {
                let result = open_into(ids, hashing, key, &plain_tx);
                if let Err(e) = &result {
                    let _ = plain_tx.send(Err(std::io::Error::other(e.message.clone())));
                }
                result
            });
            let inflated = inflate(&mut plain, key, tx);
            drop(plain); // an opener still sending sees the end
            let opened = opener
                .join()
                .unwrap_or_else(|_| Err(ShardError::transient("decrypting crashed")));
            // The opener's failure explains the decompressor's.
            opened.and(inflated)
        })?,
    };
    if finished.is_none() {
        return Ok(None);
    }
    std::io::copy(&mut hashing, &mut std::io::sink())
        .map_err(|e| ShardError::transient(format!("reading {key}: {e}")))?;
    Ok(Some((
        hashing.bytes,
        hex::encode(hashing.hasher.finalize()),
    )))
}

/// The plaintext of the age file `sealed`, in chunks into `tx`, read to its end (which is what
/// authenticates the last chunk). Stops quietly when the receiver went away.
fn open_into(
    ids: &Identities,
    sealed: &mut dyn Read,
    key: &str,
    tx: &ChunkTx,
) -> Result<(), ShardError> {
    let mut plain = ids
        .decrypt(sealed, key)
        .map_err(|e| ShardError::permanent(e.to_string()))?;
    loop {
        let mut chunk = tx.buffer();
        let n = (&mut plain)
            .take(CHUNK as u64)
            .read_to_end(&mut chunk)
            .map_err(|e| ShardError::permanent(format!("decrypting {key}: {e}")))?;
        if n == 0 || tx.send(Ok(chunk)).is_err() {
            return Ok(());
        }
    }
}

/// zstd-decodes `input` in chunks into `tx`, then reads `input` to its end (its errors count).
/// `None` when the consumer stopped reading first.
fn inflate(input: &mut dyn Read, key: &str, tx: &ChunkTx) -> Result<Option<()>, ShardError> {
    {
        let mut decoder = zstd::stream::read::Decoder::new(&mut *input)
            .map_err(|e| ShardError::transient(format!("zstd: {e}")))?;
        loop {
            let mut chunk = tx.buffer();
            let n = (&mut decoder)
                .take(CHUNK as u64)
                .read_to_end(&mut chunk)
                .map_err(|e| ShardError::permanent(format!("decompressing {key}: {e}")))?;
            if n == 0 {
                break;
            }
            if tx.send(Ok(chunk)).is_err() {
                return Ok(None); // the consumer stopped early; its own result says why
            }
        }
    }
    std::io::copy(input, &mut std::io::sink())
        .map_err(|e| ShardError::transient(format!("reading {key}: {e}")))?;
    Ok(Some(()))
}

/// A channel of chunks between two blocking threads whose buffers go back to the sender once
/// read: the upstream refills the same few MiB (a fresh buffer per chunk costs page faults and
/// zeroing for every MiB, and the worker maps every buffer of 1 MiB or more on its own).
fn chunk_channel() -> (ChunkTx, ChunkReader) {
    let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_DEPTH);
    // Every chunk in the channel, one being read, one being filled.
    let (give_back, spare) = std::sync::mpsc::sync_channel(CHANNEL_DEPTH + 2);
    (
        ChunkTx { tx, spare },
        ChunkReader {
            rx,
            current: Vec::new(),
            at: 0,
            give_back,
        },
    )
}

/// The upstream end of [`chunk_channel`].
struct ChunkTx {
    tx: std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl ChunkTx {
    /// An empty buffer with room for a chunk: one the reader gave back, if there is one.
    fn buffer(&self) -> Vec<u8> {
        match self.spare.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(CHUNK),
        }
    }

    /// Sends a chunk (or an error); fails when the reader is gone.
    fn send(
        &self,
        chunk: std::io::Result<Vec<u8>>,
    ) -> Result<(), std::sync::mpsc::SendError<std::io::Result<Vec<u8>>>> {
        self.tx.send(chunk)
    }
}

/// The downstream half: chunks as a `Read`.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
    give_back: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let read = std::mem::replace(&mut self.current, chunk);
                    let _ = self.give_back.try_send(read);
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // upstream finished cleanly
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_storage::local::LocalStore;

    #[tokio::test]
    async fn round_trip_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 97) as u8).collect();
        let input = data.clone();
        let ((), stored) = upload_compressed(
            store.clone(),
            "k/a.zst",
            &CancellationToken::new(),
            None,
            move |w| {
                w.write_all(&input)
                    .map_err(|e| ShardError::transient(e.to_string()))
            },
        )
        .await
        .unwrap();
        assert!(stored.bytes < data.len() as u64 / 10, "not compressed");
        let progress = std::sync::atomic::AtomicU64::new(0);
        let size = verify_object(&*store, "k/a.zst", &stored.sha256, &progress)
            .await
            .unwrap();
        assert_eq!(size, stored.bytes);
        let back = download_decompressed(
            &*store,
            "k/a.zst",
            Some(stored.sha256.clone()),
            None,
            read_all,
        )
        .await
        .unwrap();
        assert_eq!(back, data);
        let err = verify_object(&*store, "k/a.zst", "00", &progress)
            .await
            .unwrap_err();
        assert!(err.permanent && err.message.contains("corrupt"), "{err:?}");
    }

    fn read_all(r: &mut dyn Read) -> Result<Vec<u8>, ShardError> {
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .map_err(|e| ShardError::transient(e.to_string()))?;
        Ok(out)
    }

    #[tokio::test]
    async fn an_encrypted_archive_is_an_age_file_that_only_its_identity_opens() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let pair = ferry_crypto::seal::KeyPair::generate();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 89) as u8).collect();
        let input = data.clone();
        let ((), stored) = upload_compressed(
            store.clone(),
            "k/e.zst.age",
            &CancellationToken::new(),
            Some(pair.recipient()),
            move |w| {
                w.write_all(&input)
                    .map_err(|e| ShardError::transient(e.to_string()))
            },
        )
        .await
        .unwrap();
        let raw = std::fs::read(dir.path().join("k/e.zst.age")).unwrap();
        assert!(raw.starts_with(b"age-encryption.org/v1\n"));
        assert!(
            stored.bytes < data.len() as u64 / 10,
            "compressed before encrypting"
        );
        // The checksum is that of what is stored.
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&raw)));
        let back = download_decompressed(
            &*store,
            "k/e.zst.age",
            Some(stored.sha256.clone()),
            Some(Arc::new(pair.identities())),
            read_all,
        )
        .await
        .unwrap();
        assert_eq!(back, data);
        let other = ferry_crypto::seal::KeyPair::generate();
        let err = download_decompressed(
            &*store,
            "k/e.zst.age",
            Some(stored.sha256.clone()),
            Some(Arc::new(other.identities())),
            read_all,
        )
        .await
        .unwrap_err();
        assert!(
            err.permanent && err.message.contains("none of the"),
            "{err:?}"
        );
        // A flipped byte in the last chunk: the authentication fails, nothing passes as whole.
        let mut damaged = raw.clone();
        let n = damaged.len();
        damaged[n - 3] ^= 0x40;
        std::fs::write(dir.path().join("k/d.zst.age"), &damaged).unwrap();
        let err = download_decompressed(
            &*store,
            "k/d.zst.age",
            None,
            Some(Arc::new(pair.identities())),
            read_all,
        )
        .await
        .unwrap_err();
        assert!(
            err.permanent && err.message.contains("decrypting"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_producer_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let err = upload_compressed(
            store.clone(),
            "k/b.zst",
            &CancellationToken::new(),
            None,
            |w| {
                w.write_all(&vec![7u8; 3 << 20]).unwrap();
                Err::<(), _>(ShardError::transient("dump died half-way"))
            },
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("dump died"), "{err:?}");
        assert_eq!(store.head("k/b.zst").await.unwrap(), None);
        assert!(store.list("k/").await.unwrap().is_empty());
    }
}
