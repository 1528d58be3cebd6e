//! Objects written from a blocking thread: an [`ObjectWriter`] is a [`Write`] whose bytes stream
//! through a bounded channel into [`ObjectStore::put`] running on the async runtime. Memory is
//! the channel depth times the chunk size; nothing is spooled to disk. The object appears only
//! after [`ObjectWriter::finish`]: dropping the writer (an error on the producing side) makes
//! the put fail, so nothing half-written is ever visible.

use std::io::Write;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
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
    tx: mpsc::Sender<Message>,
    buf: BytesMut,
    hasher: Sha256,
    bytes: u64,
    put: JoinHandle<Result<u64, StorageError>>,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("key", &self.key)
            .field("bytes", &self.bytes)
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
            tx,
            buf: BytesMut::with_capacity(CHUNK),
            hasher: Sha256::new(),
            bytes: 0,
            put,
        }
    }

    /// The key being written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.bytes
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Message::Data(chunk))
            .map_err(|_| stopped(&self.key))
    }

    /// Ends the object and waits until storage committed it.
    pub fn finish(self) -> Result<Written, StorageError> {
        self.finish_later()?.wait()
    }

    /// Ends the object; the returned [`PendingPut`] waits for storage to commit it, so that
    /// the caller may go on writing the next object meanwhile.
    pub fn finish_later(mut self) -> Result<PendingPut, StorageError> {
        let key = self.key.clone();
        let sent = self
            .send()
            .and_then(|()| {
                self.tx
                    .blocking_send(Message::End)
                    .map_err(|_| stopped(&self.key))
            })
            .map_err(|source| StorageError::Io {
                key: key.clone(),
                source,
            });
        let pending = PendingPut {
            key,
            rt: self.rt,
            put: self.put,
            written: Written {
                bytes: self.bytes,
                sha256: hex::encode(self.hasher.finalize()),
            },
        };
        match sent {
            Ok(()) => Ok(pending),
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
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
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
