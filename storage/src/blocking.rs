//! Objects written from a blocking thread: an [`ObjectWriter`] is a [`Write`] whose bytes stream
//! through a bounded channel into [`ObjectStore::put`] running on the async runtime. Memory is
//! the channel depth times the chunk size; nothing is spooled to disk. The object appears only
//! after [`ObjectWriter::finish`]: dropping the writer (an error on the producing side) makes
//! the put fail, so nothing half-written is ever visible.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::StreamReader;
use tokio_util::sync::CancellationToken;

use crate::{BoxReader, ObjectStore, StorageError};

/// Bytes per message from the writer to the put.
const CHUNK: usize = 1 << 20;
/// Messages in flight.
const DEPTH: usize = 4;

/// Size and SHA-256 of an object as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub sha256: String,
}

/// What a blocking producer sends to the put reading from [`channel_reader`].
pub enum Message {
    Data(Bytes),
    /// The producer finished: the object is whole.
    End,
}

/// A streaming put driven from a blocking thread (see the module docs).
pub struct ObjectWriter {
    key: String,
    rt: Handle,
    sender: ChunkSender,
    put: JoinHandle<Result<u64, StorageError>>,
}

/// The sync end of a channel into a put: hashes what is written and sends it on in chunks of
/// [`CHUNK`] bytes. The chunks' buffers come back when the put has read them and are filled
/// again: a producer touches the same few MiB of memory however large the object (a fresh
/// buffer per chunk costs page faults and zeroing for every MiB, and the worker maps every
/// buffer of 1 MiB or more on its own).
pub struct ChunkSender {
    tx: mpsc::Sender<Message>,
    buf: Vec<u8>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    give_back: std::sync::mpsc::SyncSender<Vec<u8>>,
    hasher: Sha256,
    bytes: u64,
}

impl ChunkSender {
    /// A sender into `tx` (the other end goes to [`channel_reader`]).
    pub fn new(tx: mpsc::Sender<Message>) -> ChunkSender {
        // Every chunk in the channel, one being read, one being filled.
        let (give_back, spare) = std::sync::mpsc::sync_channel(DEPTH + 2);
        ChunkSender {
            tx,
            buf: Vec::with_capacity(CHUNK),
            spare,
            give_back,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.bytes
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = match self.spare.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(CHUNK),
        };
        let full = std::mem::replace(&mut self.buf, next);
        let chunk = Bytes::from_owner(Returned {
            buf: full,
            to: self.give_back.clone(),
        });
        self.tx.blocking_send(Message::Data(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "storage stopped reading")
        })
    }

    /// Sends what is left and the end mark; returns the size and SHA-256 of all that was
    /// written.
    pub fn finish(mut self) -> std::io::Result<Written> {
        self.send()?;
        self.tx.blocking_send(Message::End).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "storage stopped reading")
        })?;
        Ok(Written {
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        let mut rest = data;
        while !rest.is_empty() {
            let n = (CHUNK - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == CHUNK {
                self.send()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A chunk's buffer, handed back to its sender when the last reference to the chunk goes.
struct Returned {
    buf: Vec<u8>,
    to: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        // A full pool (or a sender that is gone) lets the buffer go.
        let _ = self.to.try_send(std::mem::take(&mut self.buf));
    }
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("key", &self.key)
            .field("bytes", &self.sender.written())
            .finish()
    }
}

impl ObjectWriter {
    /// Starts the put of `key` on `rt`. Call from a thread that may block (not from async code).
    pub fn create(
        rt: &Handle,
        store: Arc<dyn ObjectStore>,
        key: &str,
        cancel: &CancellationToken,
    ) -> ObjectWriter {
        let (tx, rx) = mpsc::channel(DEPTH);
        let (owned_key, cancel) = (key.to_owned(), cancel.clone());
        let put = rt.spawn(async move { store.put(&owned_key, channel_reader(rx), &cancel).await });
        ObjectWriter {
            key: key.to_owned(),
            rt: rt.clone(),
            sender: ChunkSender::new(tx),
            put,
        }
    }

    /// The key being written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.sender.written()
    }

    /// Ends the object and waits until storage committed it.
    pub fn finish(self) -> Result<Written, StorageError> {
        self.finish_later()?.wait()
    }

    /// Ends the object; the returned [`PendingPut`] waits for storage to commit it, so that
    /// the caller may go on writing the next object meanwhile.
    pub fn finish_later(self) -> Result<PendingPut, StorageError> {
        let key = self.key.clone();
        let written = self.sender.written();
        let sent = self.sender.finish().map_err(|_| StorageError::Io {
            key: key.clone(),
            source: stopped(&key),
        });
        let pending = PendingPut {
            key,
            rt: self.rt,
            put: self.put,
            written: match &sent {
                Ok(w) => w.clone(),
                Err(_) => Written {
                    bytes: written,
                    sha256: String::new(),
                },
            },
        };
        match sent {
            Ok(_) => Ok(pending),
            // The put ended early: its own error says why.
            Err(e) => Err(pending.wait().err().unwrap_or(e)),
        }
    }
}

fn stopped(key: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        format!("storage stopped reading {key}"),
    )
}

impl Write for ObjectWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.sender.write(data).map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => stopped(&self.key),
            _ => e,
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An object whose bytes were all sent; [`PendingPut::wait`] returns once it is committed.
#[derive(Debug)]
pub struct PendingPut {
    key: String,
    rt: Handle,
    put: JoinHandle<Result<u64, StorageError>>,
    written: Written,
}

impl PendingPut {
    /// The key being committed.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Waits for the commit (call from a thread that may block).
    pub fn wait(self) -> Result<Written, StorageError> {
        let stored = self.rt.block_on(self.put).map_err(|e| StorageError::Io {
            key: self.key.clone(),
            source: std::io::Error::other(format!("the upload task failed: {e}")),
        })??;
        if stored != self.written.bytes {
            return Err(StorageError::Io {
                key: self.key,
                source: std::io::Error::other(format!(
                    "stored {stored} bytes of {}",
                    self.written.bytes
                )),
            });
        }
        Ok(self.written)
    }
}

/// The async end of a producer's channel: the chunks, and an error — never a clean end — if
/// the producer went away before `End`, so a dying producer cannot commit a truncated object.
pub fn channel_reader(rx: mpsc::Receiver<Message>) -> BoxReader {
    let stream = futures::stream::unfold((rx, false), |(mut rx, ended)| async move {
        if ended {
            return None;
        }
        match rx.recv().await {
            Some(Message::Data(b)) => Some((Ok(b), (rx, false))),
            Some(Message::End) => None,
            None => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the producer stopped before the end",
                )),
                (rx, true),
            )),
        }
    });
    Box::pin(StreamReader::new(stream))
}

/// Opens `key` for reading from a blocking thread.
pub fn open_reader(
    rt: &Handle,
    store: &dyn ObjectStore,
    key: &str,
) -> Result<impl std::io::Read + Send + use<>, StorageError> {
    let body = rt.block_on(store.get(key))?;
    Ok(tokio_util::io::SyncIoBridge::new_with_handle(
        body,
        rt.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalStore;

    #[test]
    fn an_object_appears_only_when_finished() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let cancel = CancellationToken::new();
        let mut w = ObjectWriter::create(rt.handle(), store.clone(), "a/b", &cancel);
        w.write_all(&data).unwrap();
        let written = w.finish().unwrap();
        assert_eq!(written.bytes, data.len() as u64);
        assert_eq!(written.sha256, hex::encode(Sha256::digest(&data)));
        let mut back = Vec::new();
        std::io::Read::read_to_end(
            &mut open_reader(rt.handle(), &*store, "a/b").unwrap(),
            &mut back,
        )
        .unwrap();
        assert_eq!(back, data);

        // Dropped before the end: nothing is left.
        let mut w = ObjectWriter::create(rt.handle(), store.clone(), "a/c", &cancel);
        w.write_all(&data).unwrap();
        drop(w);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(rt.block_on(store.head("a/c")).unwrap(), None);
    }
}
