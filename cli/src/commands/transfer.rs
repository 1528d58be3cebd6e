//! `ferry backup export` and `ferry backup import`: one portable `.ferry` file per backup.
//!
//! The file is a plain tar (the `tar` crate writes and reads it; any `tar` can list it):
//! `manifest.json` first, then `shards/SHARD.ATTEMPT.tar.zst` for each archive, exactly as they
//! lie in the backup's directory in storage. The archives are already compressed, so the file is
//! not. Both directions stream: the gRPC side runs on the runtime, the tar side on a blocking
//! thread, joined by a small channel, so memory stays at a few chunks whatever the size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_model::manifest::BackupManifest;
use ferry_proto::v1;
use ferry_proto::v1::export_chunk::Part;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Ctx;
use crate::exit::{CliError, CliResult};
use crate::output::{print_json, size};

/// Bytes per chunk sent on import.
const CHUNK: usize = 1 << 20;
/// Largest manifest accepted from a file.
const MANIFEST_LIMIT: u64 = 64 << 20;

/// Writes backup `id` to `file` (via `file.partial`, renamed once whole).
pub async fn export(ctx: &mut Ctx, id: &str, file: &Path) -> CliResult {
    let req = v1::GetJobRequest {
        team: ctx.team.clone(),
        id: id.to_owned(),
    };
    let mut stream = ctx.client.export_backup(req).await?.into_inner();
    let partial = PathBuf::from(format!("{}.partial", file.display()));
    let out = File::create(&partial)
        .map_err(|e| CliError::input(format!("cannot create {}: {e}", partial.display())))?;
    let (tx, rx) = mpsc::channel::<Part>(4);
    let writer = tokio::task::spawn_blocking(move || write_tar(out, rx));
    let received = async {
        while let Some(chunk) = stream.message().await? {
            let part = chunk
                .part
                .ok_or_else(|| CliError::failed("the controller sent an empty export chunk"))?;
            if tx.send(part).await.is_err() {
                break; // the writer failed; its error is the one to report
            }
        }
        Ok::<_, CliError>(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| CliError::failed(format!("export writer crashed: {e}")))?;
    let result = received.and(written);
    let (archives, bytes) = match result {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, file)?;
    if ctx.json() {
        print_json(&serde_json::json!({
            "backup": id, "file": file.display().to_string(), "archives": archives, "bytes": bytes,
        }));
    } else {
        println!(
            "exported backup {id} to {} ({archives} archives, {}; every checksum matched)",
            file.display(),
            size(bytes)
        );
    }
    Ok(())
}

/// The tar side of an export: checks each archive against the manifest's SHA-256 as it passes.
fn write_tar(out: File, mut rx: mpsc::Receiver<Part>) -> CliResult<(u32, u64)> {
    let mut tar = tar::Builder::new(BufWriter::new(out));
    let Some(Part::Manifest(raw)) = rx.blocking_recv() else {
        return Err(CliError::failed(
            "the export did not start with its manifest",
        ));
    };
    let manifest = BackupManifest::from_json(&raw)
        .map_err(|e| CliError::failed(format!("the backup's manifest is unreadable: {e}")))?;
    let checksums: HashMap<String, String> = manifest
        .shards
        .iter()
        .filter_map(|s| {
            let file = s.object_key.rsplit('/').next()?;
            Some((format!("shards/{file}"), s.sha256.clone()))
        })
        .collect();
    append(&mut tar, "manifest.json", raw.len() as u64, &raw[..])?;
    let (mut archives, mut bytes) = (0u32, raw.len() as u64);
    let mut pending: Option<Part> = rx.blocking_recv();
    while let Some(part) = pending.take() {
        let Part::Archive(start) = part else {
            return Err(CliError::failed("the export sent data outside an archive"));
        };
        let mut reader = ChunkReader {
            rx: &mut rx,
            left: start.size,
            current: Bytes::new(),
            hasher: Sha256::new(),
        };
        append(&mut tar, &start.name, start.size, &mut reader)?;
        let sha = hex::encode(reader.hasher.finalize_reset());
        pending = rx.blocking_recv();
        // An encrypted backup's sealed key file travels beside its archives, unchecksummed:
        // a changed one only fails to open, and every archive is still checked.
        if start.name == ferry_model::layout::KEY_FILE && manifest.encrypted_to.is_some() {
            bytes += start.size;
            continue;
        }
        if checksums.get(&start.name) != Some(&sha) {
            return Err(CliError::failed(format!(
                "archive {} does not match its checksum in the manifest: the backup is damaged \
                 in storage (see `ferry backup verify {}`); no file was written",
                start.name, manifest.id
            )));
        }
        archives += 1;
        bytes += start.size;
    }
    tar.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok((archives, bytes))
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, len: u64, data: impl Read) -> CliResult {
    let mut header = tar::Header::new_gnu();
    header.set_size(len);
    header.set_mode(0o644);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    tar.append_data(&mut header, name, data)
        .map_err(|e| CliError::failed(format!("writing {name} into the export: {e}")))
}

/// Reads one archive's `data` parts off the channel as a `Read`, hashing them.
struct ChunkReader<'a> {
    rx: &'a mut mpsc::Receiver<Part>,
    left: u64,
    current: Bytes,
    hasher: Sha256,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.left == 0 {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Part::Data(d)) => {
                    if d.len() as u64 > self.left {
                        return Err(std::io::Error::other("an archive is longer than announced"));
                    }
                    self.left -= d.len() as u64;
                    self.hasher.update(&d);
                    self.current = Bytes::from(d);
                }
                Some(_) => return Err(std::io::Error::other("an archive ended early")),
                None => return Err(std::io::Error::other("the export stream ended early")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Sends the backup in `file` to the controller for storage location `storage`.
pub async fn import(ctx: &mut Ctx, file: &Path, storage: &str) -> CliResult<v1::Job> {
    // Checked here first so that a missing or foreign file gets a plain answer.
    File::open(file)
        .map_err(|e| CliError::input(format!("cannot read {}: {e}", file.display())))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (tx, rx) = mpsc::channel::<v1::ExportChunk>(4);
        let target = Part::Target(v1::ImportTarget {
            team: ctx.team.clone(),
            storage: storage.to_owned(),
        });
        let _ = tx.try_send(v1::ExportChunk { part: Some(target) });
        let path = file.to_owned();
        let reader = tokio::task::spawn_blocking(move || read_tar(&path, &tx));
        let answer = ctx
            .client
            .import_backup(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let read = reader
            .await
            .map_err(|e| CliError::failed(format!("import reader crashed: {e}")))?;
        match answer {
            Ok(job) => return Ok(job.into_inner()),
            // A broken file explains a refusal better than the controller can.
            Err(_) if read.is_err() => return Err(read.unwrap_err()),
            Err(s) if attempt == 1 && ctx.client.follow_leader(&s) => continue,
            Err(s) => return Err(s.into()),
        }
    }
}

/// The tar side of an import: every entry must be a plain file; `manifest.json` first. The
/// names are passed on as they are; the controller accepts only the ones its manifest lists.
fn read_tar(path: &Path, tx: &mpsc::Sender<v1::ExportChunk>) -> CliResult {
    let bad = |m: String| CliError::input(format!("{} is not a .ferry file: {m}", path.display()));
    let send = |part: Part| {
        tx.blocking_send(v1::ExportChunk { part: Some(part) })
            .is_ok()
    };
    let file = File::open(path)?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut first = true;
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!(
                "it holds a {:?} entry; only plain files belong in one",
                entry.header().entry_type()
            )));
        }
        let name = entry.path().map_err(|e| bad(e.to_string()))?;
        let name = name.to_string_lossy().into_owned();
        let len = entry.size();
        if first {
            first = false;
            if name != "manifest.json" || len > MANIFEST_LIMIT {
                return Err(bad("it must start with manifest.json".into()));
            }
            let mut raw = Vec::with_capacity(len as usize);
            entry
                .read_to_end(&mut raw)
                .map_err(|e| bad(e.to_string()))?;
            if !send(Part::Manifest(raw)) {
                return Ok(()); // the controller refused; its answer says why
            }
            continue;
        }
        if !send(Part::Archive(v1::ArchiveStart { name, size: len })) {
            return Ok(());
        }
        loop {
            let mut buf = Vec::with_capacity(CHUNK);
            let n = (&mut entry)
                .take(CHUNK as u64)
                .read_to_end(&mut buf)
                .map_err(|e| bad(e.to_string()))?;
            if n == 0 {
                break;
            }
            if !send(Part::Data(buf)) {
                return Ok(());
            }
        }
    }
    if first {
        return Err(bad("it is empty".into()));
    }
    Ok(())
}
