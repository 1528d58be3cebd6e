//! The shared shape of every dump-based shard (databases, exec): a command's stdout streamed
//! into the shard archive, and the archive streamed back into a command's stdin.
//!
//! Archive layout (a tar, then zstd like every shard):
//!
//! ```text
//! ferry-dump.json      DumpInfo: engine, tool version, source database and its options
//! dump/000000          the dump's bytes, in chunks of at most CHUNK bytes
//! dump/000001          (tar needs each entry's size up front; a dump's size is known only at
//! …                     its end, so it is cut into chunks buffered one at a time)
//! ```
//!
//! Commands run with `std::process` on the pipeline's blocking thread; their stderr is collected
//! on a side thread and its tail goes into the error when they fail. Secrets reach them only
//! through environment variables (PGPASSWORD, MYSQL_PWD, REDISCLI_AUTH), never arguments.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;

use ferry_model::app::DatabaseSpec;
use ferry_model::task::ShardOutcome;
use serde::{Deserialize, Serialize};

use super::{Run, ShardError};
use crate::executor::tail;
use crate::pipeline::{download_decompressed, upload_compressed};

/// Name of the metadata entry.
pub const INFO_ENTRY: &str = "ferry-dump.json";
/// Largest chunk of dump held in memory at once.
pub const CHUNK: usize = 4 << 20;
const INFO_LIMIT: u64 = 1 << 20;

/// What a dump archive says about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DumpInfo {
    /// `postgres`, `mariadb`, `mysql`, `redis`, `exec`.
    pub engine: String,
    /// The first line of `TOOL --version`.
    pub tool_version: String,
    /// The database dumped, when the engine has named databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Engine-specific facts needed to restore faithfully (encoding, collation, db number…).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// Resolves a database's password from its reference (`password_env`, `password_file`) on this
/// worker. The value never appears in errors or logs.
pub fn password(spec: &DatabaseSpec) -> Result<Option<String>, ShardError> {
    if let Some(var) = &spec.password_env {
        return match std::env::var(var) {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(ShardError::permanent(format!(
                "password_env {var:?} is not set on this worker"
            ))),
        };
    }
    if let Some(path) = &spec.password_file {
        return match std::fs::read_to_string(path) {
            Ok(v) => Ok(Some(v.trim_end_matches(['\r', '\n']).to_owned())),
            Err(e) => Err(ShardError::permanent(format!(
                "password_file {path:?} cannot be read: {}",
                e.kind()
            ))),
        };
    }
    Ok(None)
}

/// The database spec and the one named database of a database shard (PostgreSQL, MariaDB);
/// fails permanently on any other resource.
pub fn named_database<'a>(
    run: &'a Run,
    engine: &str,
) -> Result<(&'a DatabaseSpec, &'a str), ShardError> {
    match &run.task.resource {
        ferry_model::task::Resource::Database {
            spec,
            database: Some(db),
        } => Ok((spec, db)),
        ferry_model::task::Resource::Database { database: None, .. } => Err(ShardError::permanent(
            format!("a {engine} shard must name its database"),
        )),
        other => Err(ShardError::permanent(format!(
            "not a {engine} shard: {}",
            other.kind()
        ))),
    }
}

/// `host:port` of a database, for messages.
pub fn server_of(host: Option<&str>, port: Option<u16>) -> String {
    let host = host.unwrap_or("localhost");
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Collects a child's stderr on a side thread so that it can never block the child.
pub(crate) fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<Vec<u8>> {
    let mut stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stderr.as_mut() {
            // Keep only the tail: a tool that prints a lot must not grow memory.
            let mut buf = [0u8; 8192];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
                if out.len() > 64 << 10 {
                    out.drain(..out.len() - (16 << 10));
                }
            }
        }
        out
    })
}

/// The program's name for messages: `pg_restore`, not the path it was run from.
pub(crate) fn program(cmd: &Command) -> String {
    let program = std::path::Path::new(cmd.get_program());
    program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned()
}

pub(crate) fn spawn(cmd: &mut Command, stdin: Stdio, stdout: Stdio) -> Result<Child, ShardError> {
    cmd.stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ShardError::permanent(format!("{} is not installed on this worker", program(cmd)))
            }
            _ => ShardError::transient(format!("{} could not start: {e}", program(cmd))),
        })
}

/// Waits for a child and turns a failure into an error carrying its stderr tail (cut by
/// `relevant`, so an engine can keep data a tool echoes out of error messages).
pub(crate) fn finish(
    cmd: &Command,
    mut child: Child,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    relevant: fn(&[u8]) -> &[u8],
) -> Result<(), ShardError> {
    let status = child
        .wait()
        .map_err(|e| ShardError::transient(format!("waiting for {}: {e}", program(cmd))))?;
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    Err(ShardError::transient(format!(
        "{} failed ({status}): {}",
        program(cmd),
        tail(relevant(&stderr))
    )))
}

/// The whole of a tool's stderr is relevant.
pub fn everything(stderr: &[u8]) -> &[u8] {
    stderr
}

/// Pipes `input` into `first`, and `first`'s stdout through `filter` (on its own thread) into
/// `second`'s stdin: one tool's output adjusted on its way into another (pg_restore's script
/// into psql). Returns the bytes read from `input` and the filter's result. The second tool's
/// failure is reported first: it explains the broken pipes the others then see.
pub fn pipe_through<T: Send + 'static>(
    mut first: Command,
    filter: impl FnOnce(&mut dyn Read, &mut dyn Write) -> std::io::Result<T> + Send + 'static,
    mut second: Command,
    relevant: fn(&[u8]) -> &[u8],
    input: &mut dyn Read,
) -> Result<(u64, T), ShardError> {
    let mut a = spawn(&mut first, Stdio::piped(), Stdio::piped())?;
    let a_err = collect_stderr(&mut a);
    let mut b = match spawn(&mut second, Stdio::piped(), Stdio::null()) {
        Ok(b) => b,
        Err(e) => {
            let _ = a.kill();
            let _ = a.wait();
            return Err(e);
        }
    };
    let b_err = collect_stderr(&mut b);
    let (Some(mut a_in), Some(mut a_out), Some(mut b_in)) =
        (a.stdin.take(), a.stdout.take(), b.stdin.take())
    else {
        let _ = (a.kill(), b.kill());
        return Err(ShardError::transient("no pipes to the restore tools"));
    };
    let middle = std::thread::spawn(move || {
        let result = filter(&mut a_out, &mut b_in);
        drop(b_in);
        result
    });
    let copied = std::io::copy(input, &mut a_in);
    drop(a_in);
    if copied.is_err() {
        let _ = a.kill();
    }
    let filtered = middle
        .join()
        .map_err(|_| ShardError::transient("the filter between the restore tools panicked"))?;
    let first_done = finish(&first, a, a_err, relevant);
    finish(&second, b, b_err, relevant)?;
    first_done?;
    let filtered = filtered.map_err(|e| {
        ShardError::transient(format!(
            "passing {}'s output to {}: {e}",
            program(&first),
            program(&second)
        ))
    })?;
    let copied = copied.map_err(|e| {
        ShardError::transient(format!("streaming the dump into {}: {e}", program(&first)))
    })?;
    Ok((copied, filtered))
}

/// Writes the dump archive: the info entry, then `source` cut into chunks. Returns bytes read.
pub fn write_dump(
    out: &mut dyn Write,
    info: &DumpInfo,
    source: &mut dyn Read,
    progress: &std::sync::atomic::AtomicU64,
) -> std::io::Result<u64> {
    let mut tar = tar::Builder::new(out);
    let info_json = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
    append(&mut tar, INFO_ENTRY, &info_json)?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    for index in 0u64.. {
        let mut filled = 0;
        while filled < buf.len() {
            match source.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if filled == 0 && index > 0 {
            break;
        }
        append(&mut tar, &format!("dump/{index:06}"), &buf[..filled])?;
        total += filled as u64;
        progress.fetch_add(filled as u64, Ordering::Relaxed);
        if filled < buf.len() {
            break;
        }
    }
    tar.finish()?;
    Ok(total)
}

fn append(tar: &mut tar::Builder<&mut dyn Write>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)
}

/// Reads a dump archive: the info entry, then the concatenated chunks as one stream handed to
/// `consume`.
pub fn read_dump<T>(
    input: &mut dyn Read,
    consume: impl FnOnce(&DumpInfo, &mut dyn Read) -> Result<T, ShardError>,
) -> Result<T, ShardError> {
    let bad = |what: String| ShardError::permanent(format!("dump archive: {what}"));
    let mut archive = tar::Archive::new(input);
    let mut entries = archive.entries().map_err(|e| bad(e.to_string()))?;
    let info: DumpInfo = {
        let entry = entries
            .next()
            .ok_or_else(|| bad("empty".into()))?
            .map_err(|e| bad(e.to_string()))?;
        let name = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        if name.as_os_str() != INFO_ENTRY {
            return Err(bad(format!("starts with {name:?}, not {INFO_ENTRY}")));
        }
        let mut text = Vec::new();
        entry
            .take(INFO_LIMIT)
            .read_to_end(&mut text)
            .map_err(|e| bad(e.to_string()))?;
        serde_json::from_slice(&text).map_err(|e| bad(format!("{INFO_ENTRY}: {e}")))?
    };
    let mut chunks = Chunks {
        entries,
        current: None,
        next_index: 0,
    };
    let value = consume(&info, &mut chunks)?;
    // The consumer must have read everything: a dump cut short is an error, not a success.
    let mut rest = [0u8; 1];
    match chunks.read(&mut rest) {
        Ok(0) => Ok(value),
        Ok(_) => Err(ShardError::transient(
            "the restore command stopped before the end of the dump",
        )),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// The dump chunks of an archive as one reader, checking their order.
struct Chunks<'a, R: Read> {
    entries: tar::Entries<'a, R>,
    current: Option<tar::Entry<'a, R>>,
    next_index: u64,
}

impl<R: Read> Read for Chunks<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(entry) = self.current.as_mut() {
                let n = entry.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            match self.entries.next() {
                None => return Ok(0),
                Some(entry) => {
                    let entry = entry?;
                    let expected = format!("dump/{:06}", self.next_index);
                    let name = entry.path()?.into_owned();
                    if name.as_os_str() != expected.as_str() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("expected {expected}, found {name:?}"),
                        ));
                    }
                    self.next_index += 1;
                    self.current = Some(entry);
                }
            }
        }
    }
}

/// Backs up a shard from a command's stdout (`pg_dump`, `mariadb-dump`, an exec `backup`).
pub async fn backup_from_command(
    run: &Run,
    cmd: Command,
    info: DumpInfo,
) -> Result<ShardOutcome, ShardError> {
    backup_from_command_watched(run, cmd, info, |_| {}).await
}

/// [`backup_from_command`], showing every block of the command's stdout to `watch` on its way
/// into the archive (to pick a fact out of a dump's head without reading it twice).
pub async fn backup_from_command_watched(
    run: &Run,
    mut cmd: Command,
    info: DumpInfo,
    mut watch: impl FnMut(&[u8]) + Send + 'static,
) -> Result<ShardOutcome, ShardError> {
    let counters = run.counters.clone();
    let tool_version = info.tool_version.clone();
    let stage = tracing::info_span!("dump", tool = %program(&cmd), bytes = tracing::field::Empty);
    let (bytes, stored) = upload_compressed(
        run.store.clone(),
        &run.task.object_key,
        &run.cancel,
        run.encrypt_to(),
        move |out| {
            let _stage = stage.enter();
            let mut child = spawn(&mut cmd, Stdio::null(), Stdio::piped())?;
            let stderr = collect_stderr(&mut child);
            let mut stdout = child
                .stdout
                .take()
                .ok_or_else(|| ShardError::transient("no stdout"))?;
            let mut watched = Watched {
                inner: &mut stdout,
                watch: &mut watch,
            };
            let written = write_dump(out, &info, &mut watched, &counters.done);
            drop(stdout);
            if written.is_err() {
                // The upload side failed or was cancelled: stop the tool.
                let _ = child.kill();
            }
            let finished = finish(&cmd, child, stderr, everything);
            let bytes =
                written.map_err(|e| ShardError::transient(format!("streaming the dump: {e}")))?;
            finished?;
            tracing::Span::current().record("bytes", (bytes) as i64);
            Ok(bytes)
        },
    )
    .await?;
    Ok(ShardOutcome {
        source_bytes: bytes,
        stored_bytes: stored.bytes,
        sha256: stored.sha256,
        tool_version: Some(tool_version).filter(|v| !v.is_empty()),
        config: None,
        detail: String::new(),
        absent: false,
        staged: None,
        repo: None,
        log_position: None,
        reached_ms: None,
    })
}

/// Streams a shard's dump into a reader-consumer on a blocking thread (for engines that do more
/// than pipe it into one command, e.g. Redis).
pub async fn restore_with<T, F>(run: &Run, consume: F) -> Result<T, ShardError>
where
    T: Send + 'static,
    F: FnOnce(&DumpInfo, &mut dyn Read) -> Result<T, ShardError> + Send + 'static,
{
    let (key, sha256) = (
        run.task.object_key.clone(),
        run.task.expected_sha256.clone(),
    );
    read_archive(run, &key, sha256, consume).await
}

/// [`restore_with`] for any dump-shaped archive of the backup (`key`, checked against `sha256`):
/// a PostgreSQL base beside the shard's own dump.
pub async fn read_archive<T, F>(
    run: &Run,
    key: &str,
    sha256: Option<String>,
    consume: F,
) -> Result<T, ShardError>
where
    T: Send + 'static,
    F: FnOnce(&DumpInfo, &mut dyn Read) -> Result<T, ShardError> + Send + 'static,
{
    let counters = run.counters.clone();
    let stage = tracing::info_span!("restore", bytes = tracing::field::Empty);
    download_decompressed(
        &*run.store,
        key,
        sha256,
        run.archive_key().await?,
        move |input| {
            let _stage = stage.enter();
            read_dump(input, |info, dump| {
                let before = counters.done.load(Ordering::Relaxed);
                let mut counted = CountingReader {
                    inner: dump,
                    progress: &counters.done,
                };
                let value = consume(info, &mut counted);
                stage.record(
                    "bytes",
                    (counters.done.load(Ordering::Relaxed) - before) as i64,
                );
                value
            })
        },
    )
    .await
}

/// Restores a shard by streaming its dump into a command's stdin (`pg_restore`, `mariadb`, an
/// exec `restore`). `make` builds the command once the archive's info is known. Returns the
/// dump's size.
pub async fn restore_into_command<F>(run: &Run, make: F) -> Result<u64, ShardError>
where
    F: FnOnce(&DumpInfo) -> Result<Command, ShardError> + Send + 'static,
{
    restore_with(run, move |info, dump| {
        pipe_into(make(info)?, dump, everything)
    })
    .await
}

/// Streams `input` into a command's stdin (on the calling, blocking thread) and waits for it.
/// A failure carries the command's stderr tail, cut by `relevant`. Returns the bytes streamed.
pub fn pipe_into(
    mut cmd: Command,
    input: &mut dyn Read,
    relevant: fn(&[u8]) -> &[u8],
) -> Result<u64, ShardError> {
    let mut child = spawn(&mut cmd, Stdio::piped(), Stdio::null())?;
    let stderr = collect_stderr(&mut child);
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| ShardError::transient("no stdin"))?;
    let copied = std::io::copy(input, &mut stdin);
    drop(stdin);
    if copied.is_err() {
        let _ = child.kill();
    }
    // A tool that died explains a broken pipe better than the pipe does.
    finish(&cmd, child, stderr, relevant)?;
    copied.map_err(|e| {
        ShardError::transient(format!("streaming the dump into {}: {e}", program(&cmd)))
    })
}

/// Shows what is read through it to `watch`.
struct Watched<'a, R: Read, W: FnMut(&[u8])> {
    inner: &'a mut R,
    watch: &'a mut W,
}

impl<R: Read, W: FnMut(&[u8])> Read for Watched<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.watch)(&buf[..n]);
        Ok(n)
    }
}

struct CountingReader<'a> {
    inner: &'a mut dyn Read,
    progress: &'a std::sync::atomic::AtomicU64,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Runs a short command (a catalog query, CREATE DATABASE) and returns its stdout; fails with
/// the stderr tail.
pub fn run_capture(mut cmd: Command) -> Result<String, ShardError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ShardError::permanent(format!("{} is not installed on this worker", program(&cmd)))
            }
            _ => ShardError::transient(format!("{} could not start: {e}", program(&cmd))),
        })?;
    if !out.status.success() {
        return Err(ShardError::transient(format!(
            "{} failed ({}): {}",
            program(&cmd),
            out.status,
            tail(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_truncation_is_caught() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 12345)).map(|i| (i % 251) as u8).collect();
        let info = DumpInfo {
            engine: "exec".into(),
            tool_version: "t 1".into(),
            ..Default::default()
        };
        let progress = std::sync::atomic::AtomicU64::new(0);
        let mut archive = Vec::new();
        let n = write_dump(&mut archive, &info, &mut data.as_slice(), &progress).unwrap();
        assert_eq!(n, data.len() as u64);
        let back = read_dump(&mut archive.as_slice(), |i, r| {
            assert_eq!(i, &info);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            Ok(out)
        })
        .unwrap();
        assert_eq!(back, data);
        // An empty dump is one empty chunk, and reads back empty.
        let mut empty = Vec::new();
        write_dump(&mut empty, &info, &mut [].as_slice(), &progress).unwrap();
        let back = read_dump(&mut empty.as_slice(), |_, r| {
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            Ok(out)
        })
        .unwrap();
        assert!(back.is_empty());
        // A consumer that stops early fails the restore.
        let err = read_dump(&mut archive.as_slice(), |_, r| {
            let mut first = [0u8; 10];
            r.read_exact(&mut first).unwrap();
            Ok(())
        })
        .unwrap_err();
        assert!(err.message.contains("stopped before the end"), "{err:?}");
    }

    #[test]
    fn passwords_resolve_without_leaking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut spec: DatabaseSpec =
            serde_json::from_str(r#"{"name":"d","engine":"postgres","databases":["x"]}"#).unwrap();
        spec.password_file = Some(file.to_string_lossy().into_owned());
        assert_eq!(password(&spec).unwrap().as_deref(), Some("s3cret"));
        spec.password_file = None;
        spec.password_env = Some("FERRY_TEST_SURELY_UNSET_VAR".into());
        let err = password(&spec).unwrap_err();
        assert!(err.message.contains("FERRY_TEST_SURELY_UNSET_VAR") && err.permanent);
    }
}
