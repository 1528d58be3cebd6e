//! Any S3-compatible endpoint as object storage.
//!
//! Keys live under the location's prefix in one bucket. A `put` streams its body in parts of
//! [`S3Tuning::part_size`] and uploads up to [`S3Tuning::concurrency`] parts at once, so it holds
//! at most `part_size × (concurrency + 1)` bytes of body in memory (15 MiB by default); past
//! 1,000 parts, parts grow and fewer go up at once to stay within that (see [`in_flight`]). A
//! body that is fully available at once and smaller than one part (a manifest) goes up in one
//! PutObject; any other body is a multipart upload, registered (CreateMultipartUpload) as soon as
//! the body makes the put wait, so that [`ObjectStore::abort_incomplete`] sees it and an aborted
//! upload can never complete afterwards — the same guarantee as the local backend's partial files.
//!
//! On an error or a cancellation the multipart upload is aborted before `put` returns; if the
//! server cannot be reached for that either, the error says so and `abort_incomplete` removes the
//! upload later. Transient failures (5xx, throttling, timeouts, refused connections) are retried
//! by the SDK with exponential backoff ([`S3Tuning::max_attempts`], [`S3Tuning::max_backoff`]).
//!
//! Credentials come from the environment variables the location names; they are read once, when
//! the store is opened, and never appear in errors, logs or `Debug` output.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{BufMut, BytesMut};
use ferry_model::storage::{StorageBackend, StorageLocation};
use futures::FutureExt;
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{BoxReader, ObjectInfo, ObjectStore, StorageError, check_key};

/// Default size of one uploaded part: S3's minimum. Parts are held in memory until uploaded,
/// so the worker's peak RSS grows with it; 5 MiB parts go up as fast as 8 MiB ones.
pub const DEFAULT_PART_SIZE: usize = MIN_PART_SIZE;
/// The smallest part S3 accepts (except for the last part of an upload).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// Default number of parts uploaded at once: with one part filling, 3 × 5 MiB of body in memory.
/// Two parts in flight keep up with two cores compressing (a local S3 server took 5 MiB parts
/// at 160 MB/s with three in flight, twice what the pipeline produces); three put a worker
/// backing up 10 GiB at 62 MiB, too close to the 64 MiB bound.
pub const DEFAULT_CONCURRENCY: usize = 2;
/// S3 allows at most this many parts in one upload.
const MAX_PARTS: i32 = 10_000;
/// The part size doubles every this many parts, so that 10,000 parts reach S3's 5 TiB limit.
const PARTS_PER_SIZE_STEP: i32 = 1_000;
/// The largest part S3 accepts.
const MAX_PART_SIZE: usize = 5 << 30;
/// Region used when the location names none (any value works for most S3-compatible servers).
pub const DEFAULT_REGION: &str = "us-east-1";
/// Environment variables read when a location names none.
pub const DEFAULT_ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const DEFAULT_SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";

/// Knobs of the S3 backend. `Default` is what `ferry_storage::open` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Tuning {
    /// Bytes per uploaded part (at least [`MIN_PART_SIZE`]). Memory held by one `put` is at most
    /// `part_size × (concurrency + 1)`: past 1,000 parts the part size doubles every 1,000 parts
    /// (S3 allows 10,000) and fewer parts go up at once to stay within it, until a single part
    /// is larger (past 15 GB at the defaults).
    pub part_size: usize,
    /// Parts uploaded at once by one `put` (at least 1).
    pub concurrency: usize,
    /// Attempts per request, first one included (standard retry mode).
    pub max_attempts: u32,
    /// First retry delay; it doubles with every attempt (with full jitter) up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest delay between two attempts.
    pub max_backoff: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one request to be answered, its body upload included: a part must go up
    /// within it.
    pub request_timeout: Duration,
    /// Keys per List request; `None` leaves it to the server (1,000 on AWS).
    pub list_page_size: Option<i32>,
}

impl Default for S3Tuning {
    fn default() -> Self {
        S3Tuning {
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(300),
            list_page_size: None,
        }
    }
}

/// Objects kept in an S3 bucket under a prefix.
pub struct S3Store {
    client: Client,
    location: String,
    endpoint: String,
    bucket: String,
    /// Normalised: empty, or segments joined by `/` with a trailing `/`.
    prefix: String,
    region: String,
    access_key_env: String,
    tuning: S3Tuning,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand: the client's configuration holds the credentials.
        f.debug_struct("S3Store")
            .field("location", &self.location)
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access_key_env", &self.access_key_env)
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

fn config_err(msg: String) -> StorageError {
    StorageError::Config(msg)
}

/// Reads one credential from the environment; the error names the variable, never a value.
fn credential(location: &str, var: &str, what: &str) -> Result<String, StorageError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(config_err(format!(
            "storage {location:?}: the environment variable {var} (the S3 {what}) is empty"
        ))),
        Err(std::env::VarError::NotPresent) => Err(config_err(format!(
            "storage {location:?}: the environment variable {var} (the S3 {what}) is not set"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(config_err(format!(
            "storage {location:?}: the environment variable {var} (the S3 {what}) is not valid UTF-8"
        ))),
    }
}

/// `a//b/` → `a/b/`; empty stays empty. Refuses `.` and `..` segments.
fn normalise_prefix(location: &str, prefix: &str) -> Result<String, StorageError> {
    let segs: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    if segs.iter().any(|s| *s == "." || *s == "..") || prefix.contains('\0') {
        return Err(config_err(format!(
            "storage {location:?}: invalid prefix {prefix:?} (no '.' or '..' segments)"
        )));
    }
    if segs.is_empty() {
        Ok(String::new())
    } else {
        Ok(format!("{}/", segs.join("/")))
    }
}

impl S3Store {
    /// Opens an S3 location with the default tuning.
    pub fn from_location(location: &StorageLocation) -> Result<Self, StorageError> {
        Self::new(location, S3Tuning::default())
    }

    /// Opens an S3 location. Synchronous: nothing is sent until the first call.
    pub fn new(location: &StorageLocation, tuning: S3Tuning) -> Result<Self, StorageError> {
        let name = location.name.as_str();
        let StorageBackend::S3 {
            endpoint,
            bucket,
            prefix,
            region,
            path_style,
            access_key_env,
            secret_key_env,
        } = &location.backend
        else {
            return Err(config_err(format!(
                "storage {name:?} is not an s3 location"
            )));
        };
        if endpoint.is_empty() || bucket.is_empty() {
            return Err(config_err(format!(
                "storage {name:?}: s3 needs an endpoint and a bucket"
            )));
        }
        if tuning.part_size < MIN_PART_SIZE || tuning.part_size > MAX_PART_SIZE {
            return Err(config_err(format!(
                "storage {name:?}: the part size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes (got {})",
                tuning.part_size
            )));
        }
        if tuning.concurrency == 0 || tuning.max_attempts == 0 {
            return Err(config_err(format!(
                "storage {name:?}: concurrency and max_attempts must be at least 1"
            )));
        }
        let prefix = normalise_prefix(name, prefix)?;
        let region = if region.is_empty() {
            DEFAULT_REGION
        } else {
            region
        };
        let access_key_env = if access_key_env.is_empty() {
            DEFAULT_ACCESS_KEY_ENV
        } else {
            access_key_env
        };
        let secret_key_env = if secret_key_env.is_empty() {
            DEFAULT_SECRET_KEY_ENV
        } else {
            secret_key_env
        };
        let access_key = credential(name, access_key_env, "access key")?;
        let secret_key = credential(name, secret_key_env, "secret key")?;

        let retry = RetryConfig::standard()
            .with_max_attempts(tuning.max_attempts)
            .with_initial_backoff(tuning.initial_backoff)
            .with_max_backoff(tuning.max_backoff);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(tuning.connect_timeout)
            .read_timeout(tuning.request_timeout)
            .build();
        // A retry quota of its own, sized so that every part in flight can use all its attempts
        // through an outage (the SDK's shared default would let one busy store starve others).
        let retry_cost = 10; // what the standard mode charges for a timeout; others cost less
        let quota = (tuning.concurrency + 2) * tuning.max_attempts as usize * retry_cost;
        let partition = RetryPartition::custom(format!("ferry-s3-{name}"))
            .token_bucket(TokenBucket::builder().capacity(quota.max(500)).build())
            .build();
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .endpoint_url(endpoint.clone())
            .region(Region::new(region.to_owned()))
            .force_path_style(*path_style)
            .credentials_provider(Credentials::new(
                access_key,
                secret_key,
                None,
                None,
                "ferry-storage-location",
            ))
            .retry_config(retry)
            .retry_partition(partition)
            .timeout_config(timeouts)
            .build();
        Ok(S3Store {
            client: Client::from_conf(config),
            location: name.to_owned(),
            endpoint: endpoint.clone(),
            bucket: bucket.clone(),
            prefix,
            region: region.to_owned(),
            access_key_env: access_key_env.to_owned(),
            tuning,
        })
    }

    /// The tuning this store runs with.
    pub fn tuning(&self) -> &S3Tuning {
        &self.tuning
    }

    /// The bucket key of `key`.
    fn full_key(&self, key: &str) -> Result<String, StorageError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// The key relative to the prefix, if it is one this store could have written.
    fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        let rel = full.strip_prefix(&self.prefix)?;
        check_key(rel).ok()?;
        Some(rel)
    }

    /// The bucket prefix for a `list`/`abort_incomplete` prefix.
    fn full_prefix(&self, prefix: &str) -> Result<String, StorageError> {
        if prefix.contains('\0') || prefix.starts_with('/') {
            return Err(StorageError::InvalidKey {
                key: prefix.to_owned(),
                reason: "a prefix must be relative",
            });
        }
        if let Some(i) = prefix.rfind('/') {
            check_key(&prefix[..i])?;
        }
        Ok(format!("{}{prefix}", self.prefix))
    }

    fn part_size(&self, part_number: i32) -> usize {
        let steps = ((part_number - 1) / PARTS_PER_SIZE_STEP).clamp(0, 20) as u32;
        self.tuning
            .part_size
            .saturating_mul(1usize << steps)
            .min(MAX_PART_SIZE)
    }

    fn sdk_err<E>(&self, op: &str, key: &str, e: SdkError<E, HttpResponse>) -> StorageError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        sdk_error(&self.ctx(), op, key, e)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            endpoint: self.endpoint.clone(),
            max_attempts: self.tuning.max_attempts,
        }
    }

    async fn create_upload(&self, key: &str, full: &str) -> Result<String, StorageError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| self.sdk_err("CreateMultipartUpload", key, e))?;
        out.upload_id.ok_or_else(|| StorageError::Io {
            key: key.to_owned(),
            source: std::io::Error::other("s3 CreateMultipartUpload answered without an upload id"),
        })
    }

    /// Aborts an upload. `Ok(false)` when it was gone already.
    async fn abort_upload(&self, full: &str, upload_id: &str) -> Result<bool, StorageError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_no_such_upload(&e) => Ok(false),
            Err(e) => Err(self.sdk_err("AbortMultipartUpload", full, e)),
        }
    }

    /// One PutObject of a body held in memory. Cancelling drops the request; S3 has no way to
    /// take back a PutObject the server received whole, so a cancellation at that very moment
    /// may still leave the (complete) object.
    async fn put_single(
        &self,
        key: &str,
        full: &str,
        data: BytesMut,
        cancel: &CancellationToken,
    ) -> Result<u64, StorageError> {
        let n = data.len() as u64;
        let send = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_length(n as i64)
            .body(ByteStream::from(data.freeze()))
            .send();
        tokio::select! {
            r = send => r.map(|_| n).map_err(|e| self.sdk_err("PutObject", key, e)),
            _ = cancel.cancelled() => Err(StorageError::Cancelled),
        }
    }

    /// The multipart part of `put`: `upload` holds the upload id once there is one and the part
    /// uploads in flight, so that the caller can stop them and abort the upload on any error.
    async fn put_streaming(
        &self,
        key: &str,
        full: &str,
        body: &mut BoxReader,
        cancel: &CancellationToken,
        upload: &mut Upload,
    ) -> Result<u64, StorageError> {
        let mut total: u64 = 0;
        let mut part_number: i32 = 0;
        loop {
            let want = self.part_size(part_number + 1);
            let mut buf = BytesMut::with_capacity(want);
            let eof = self
                .fill(key, full, body, &mut buf, want, cancel, upload)
                .await?;
            total += buf.len() as u64;
            if upload.id.is_none() {
                if eof {
                    // The whole body was there at once and fits in one part.
                    return self.put_single(key, full, buf, cancel).await;
                }
                upload.id = Some(self.create_upload(key, full).await?);
            }
            // An empty tail adds no part, unless the object would have none.
            if !buf.is_empty() || part_number == 0 {
                part_number += 1;
                self.start_part(key, upload, part_number, buf, cancel)
                    .await?;
            }
            if eof {
                break;
            }
        }
        // Every part must be in before the upload completes.
        while !upload.tasks.is_empty() {
            upload.wait_one(cancel).await?;
        }
        if cancel.is_cancelled() {
            return Err(StorageError::Cancelled);
        }
        let upload_id = upload.id.clone().unwrap_or_default();
        let mut parts = std::mem::take(&mut upload.parts);
        parts.sort_by_key(|p| p.part_number);
        // Not raced against `cancel`: once sent, a completion cannot be taken back.
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => {
                upload.id = None;
                Ok(total)
            }
            Err(e) if is_no_such_upload(&e) => {
                // Either someone aborted the upload, or an earlier attempt of this very request
                // completed it and its answer was lost: only the object can tell.
                if self.head(key).await? == Some(total) {
                    upload.id = None;
                    Ok(total)
                } else {
                    Err(aborted_err(key))
                }
            }
            Err(e) => Err(self.sdk_err("CompleteMultipartUpload", key, e)),
        }
    }

    /// Starts the upload of part `n`, then waits until few enough parts are in flight for the
    /// next one to fill (see [`in_flight`]).
    async fn start_part(
        &self,
        key: &str,
        upload: &mut Upload,
        n: i32,
        data: BytesMut,
        cancel: &CancellationToken,
    ) -> Result<(), StorageError> {
        if n > MAX_PARTS {
            return Err(StorageError::Io {
                key: key.to_owned(),
                source: std::io::Error::other(format!(
                    "larger than S3 allows in {MAX_PARTS} parts (part size {} bytes)",
                    self.tuning.part_size
                )),
            });
        }
        let ctx = self.ctx();
        let full = upload.full.clone();
        let upload_id = upload.id.clone().unwrap_or_default();
        let data = data.freeze();
        let key = key.to_owned();
        upload.tasks.spawn(async move {
            let result = ctx
                .client
                .upload_part()
                .bucket(&ctx.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .part_number(n)
                .content_length(data.len() as i64)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(data))
                .send()
                .await;
            match result {
                Ok(out) => Ok(CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag)
                    .set_checksum_crc32(out.checksum_crc32)
                    .build()),
                Err(e) if is_no_such_upload(&e) => Err(aborted_err(&key)),
                Err(e) => Err(sdk_error(&ctx, &format!("UploadPart {n}"), &key, e)),
            }
        });
        // The next part fills while at most `limit` parts upload (see `in_flight`).
        let limit = in_flight(&self.tuning, self.part_size(n + 1));
        while upload.tasks.len() > limit {
            upload.wait_one(cancel).await?;
        }
        Ok(())
    }

    /// Reads `body` into `buf` until it holds `want` bytes or the body ends (`Ok(true)`). The
    /// first time the body makes it wait, the multipart upload is created; finished part uploads
    /// are collected meanwhile, so a failed part stops the put without waiting for the body.
    #[allow(clippy::too_many_arguments)]
    async fn fill(
        &self,
        key: &str,
        full: &str,
        body: &mut BoxReader,
        buf: &mut BytesMut,
        want: usize,
        cancel: &CancellationToken,
        upload: &mut Upload,
    ) -> Result<bool, StorageError> {
        let body_err = |source| StorageError::Io {
            key: key.to_owned(),
            source,
        };
        while buf.len() < want {
            let room = want - buf.len();
            let ready = {
                let mut limited = (&mut *buf).limit(room);
                body.read_buf(&mut limited).now_or_never()
            };
            let n = match ready {
                Some(r) => r.map_err(body_err)?,
                None => {
                    if upload.id.is_none() {
                        // Not cancellable: an upload created behind our back could not be
                        // aborted. It is one short request.
                        upload.id = Some(self.create_upload(key, full).await?);
                    }
                    loop {
                        let mut limited = (&mut *buf).limit(room);
                        tokio::select! {
                            biased;
                            _ = cancel.cancelled() => return Err(StorageError::Cancelled),
                            done = upload.tasks.join_next(), if !upload.tasks.is_empty() => {
                                if let Some(done) = done {
                                    upload.absorb(done)?;
                                }
                            }
                            r = body.read_buf(&mut limited) => break r.map_err(body_err)?,
                        }
                    }
                }
            };
            if n == 0 {
                return Ok(true);
            }
            if cancel.is_cancelled() {
                return Err(StorageError::Cancelled);
            }
        }
        Ok(false)
    }
}

/// Parts of `part_size` bytes that may be uploading while the next one fills: the tuning's
/// `concurrency` while parts have the tuning's size, fewer once parts grow (past 1,000 parts),
/// so that the parts in memory — those in flight and the one filling — stay within the
/// tuning's budget of `part_size × (concurrency + 1)` bytes; none (fill, upload, wait) once a
/// second part would not fit. Only a single part larger than the budget exceeds it.
fn in_flight(tuning: &S3Tuning, part_size: usize) -> usize {
    let budget = tuning
        .part_size
        .saturating_mul(tuning.concurrency.saturating_add(1));
    (budget / part_size.max(1))
        .saturating_sub(1)
        .min(tuning.concurrency)
}

fn aborted_err(key: &str) -> StorageError {
    StorageError::Io {
        key: key.to_owned(),
        source: std::io::Error::other(
            "the multipart upload was aborted before it completed (abort_incomplete by a newer \
             attempt, or a cleanup): nothing was stored",
        ),
    }
}

fn is_no_such_upload<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("NoSuchUpload")
}

fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    matches!(e.code(), Some("NoSuchKey" | "NotFound"))
        || e.raw_response().map(|r| r.status().as_u16()) == Some(404)
}

/// What a part upload task needs of the store.
struct Ctx {
    client: Client,
    bucket: String,
    endpoint: String,
    max_attempts: u32,
}

fn sdk_error<E>(ctx: &Ctx, op: &str, key: &str, e: SdkError<E, HttpResponse>) -> StorageError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let hint = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            format!(
                " (gave up after {} attempts; is {} reachable?)",
                ctx.max_attempts, ctx.endpoint
            )
        }
        _ => String::new(),
    };
    StorageError::Io {
        key: key.to_owned(),
        source: std::io::Error::other(format!(
            "s3 {op} in bucket {:?}: {}{hint}",
            ctx.bucket,
            describe(&e)
        )),
    }
}

/// One line for an SDK error: the service's code and message, or the chain of causes of a
/// transport failure. (Not `DisplayErrorContext`, which appends the raw response.)
fn describe<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    if let SdkError::ServiceError(se) = e {
        let status = se.raw().status().as_u16();
        let code = e.code().unwrap_or("unknown error");
        return match e.message() {
            Some(m) => format!("{code} (HTTP {status}): {m}"),
            None => format!("{code} (HTTP {status})"),
        };
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// What a `StorageError` says beyond the key it names.
fn detail(e: &StorageError) -> String {
    match e {
        StorageError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// The state of one `put`'s multipart upload. Dropped with an upload id still set (the `put`
/// future itself was dropped), it aborts the upload in the background.
struct Upload {
    client: Client,
    bucket: String,
    full: String,
    id: Option<String>,
    tasks: JoinSet<Result<CompletedPart, StorageError>>,
    parts: Vec<CompletedPart>,
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(upload_id) = self.id.take() else {
            return;
        };
        self.tasks.abort_all();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let bucket = std::mem::take(&mut self.bucket);
        let full = std::mem::take(&mut self.full);
        rt.spawn(async move {
            let r = client
                .abort_multipart_upload()
                .bucket(&bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = r
                && !is_no_such_upload(&e)
            {
                tracing::warn!(key = %full, error = %describe(&e),
                    "could not abort the upload of a dropped put; abort_incomplete removes it");
            }
        });
    }
}

impl Upload {
    fn absorb(
        &mut self,
        done: Result<Result<CompletedPart, StorageError>, tokio::task::JoinError>,
    ) -> Result<(), StorageError> {
        match done {
            Ok(Ok(part)) => {
                self.parts.push(part);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(StorageError::Io {
                key: String::new(),
                source: std::io::Error::other(format!("part upload task failed: {e}")),
            }),
        }
    }

    async fn wait_one(&mut self, cancel: &CancellationToken) -> Result<(), StorageError> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(StorageError::Cancelled),
            done = self.tasks.join_next() => match done {
                Some(done) => self.absorb(done),
                None => Ok(()),
            },
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(
        &self,
        key: &str,
        mut body: BoxReader,
        cancel: &CancellationToken,
    ) -> Result<u64, StorageError> {
        let full = self.full_key(key)?;
        let mut upload = Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            full: full.clone(),
            id: None,
            tasks: JoinSet::new(),
            parts: Vec::new(),
        };
        let result = self
            .put_streaming(key, &full, &mut body, cancel, &mut upload)
            .await;
        let Err(err) = result else {
            return result;
        };
        // Stop the parts in flight first, so that none lands after the abort.
        upload.tasks.shutdown().await;
        let Some(upload_id) = upload.id.take() else {
            return Err(err);
        };
        match self.abort_upload(&full, &upload_id).await {
            Ok(_) => Err(err),
            Err(abort) => {
                tracing::warn!(key, error = %abort, "could not abort a failed multipart upload");
                Err(StorageError::Io {
                    key: key.to_owned(),
                    source: std::io::Error::other(format!(
                        "{}; the multipart upload could not be aborted either ({}): \
                         abort_incomplete on this prefix removes it later",
                        detail(&err),
                        detail(&abort)
                    )),
                })
            }
        }
    }

    async fn get(&self, key: &str) -> Result<BoxReader, StorageError> {
        let full = self.full_key(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => Ok(Box::pin(out.body.into_async_read())),
            Err(e) if is_not_found(&e) => Err(StorageError::NotFound {
                key: key.to_owned(),
            }),
            Err(e) => Err(self.sdk_err("GetObject", key, e)),
        }
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let full = self.full_key(key)?;
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .range(format!("bytes={offset}-{}", offset + len - 1))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => {
                return Err(StorageError::NotFound {
                    key: key.to_owned(),
                });
            }
            Err(e) => return Err(self.sdk_err("GetObject", key, e)),
        };
        let mut body = Vec::with_capacity(len as usize);
        out.body
            .into_async_read()
            .take(len + 1)
            .read_to_end(&mut body)
            .await
            .map_err(|source| StorageError::Io {
                key: key.to_owned(),
                source,
            })?;
        if body.len() as u64 != len {
            return Err(crate::short_range(key, offset, len, body.len() as u64));
        }
        Ok(body)
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let full = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length.unwrap_or(0).max(0) as u64)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.sdk_err("HeadObject", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let full_prefix = self.full_prefix(prefix)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_max_keys(self.tuning.list_page_size)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.sdk_err("ListObjectsV2", prefix, e))?;
            for obj in page.contents() {
                let Some(rel) = obj.key().and_then(|k| self.relative(k)) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: rel.to_owned(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.sdk_err("DeleteObject", key, e)),
        }
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        // In memory already: one PutObject whatever the size (S3 allows 5 GiB).
        let full = self.full_key(key)?;
        if bytes.len() > MAX_PART_SIZE {
            let body: BoxReader = Box::pin(std::io::Cursor::new(bytes));
            self.put(key, body, &CancellationToken::new()).await?;
            return Ok(());
        }
        self.put_single(
            key,
            &full,
            BytesMut::from(&bytes[..]),
            &CancellationToken::new(),
        )
        .await?;
        Ok(())
    }

    async fn abort_incomplete(&self, prefix: &str) -> Result<u64, StorageError> {
        self.abort_uploads(prefix, None).await
    }

    async fn abort_stale(
        &self,
        prefix: &str,
        before: std::time::SystemTime,
    ) -> Result<u64, StorageError> {
        self.abort_uploads(prefix, Some(before)).await
    }
}

impl S3Store {
    /// Aborts the incomplete multipart uploads under `prefix` (initiated before `before`, when
    /// given; an upload whose start the server does not say is then kept).
    async fn abort_uploads(
        &self,
        prefix: &str,
        before: Option<std::time::SystemTime>,
    ) -> Result<u64, StorageError> {
        let full_prefix = self.full_prefix(prefix)?;
        // Collect first, abort after: aborting while paging could shift the markers.
        let mut uploads: Vec<(String, String)> = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_max_uploads(self.tuning.list_page_size)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.sdk_err("ListMultipartUploads", prefix, e))?;
            for u in page.uploads() {
                let stale = match before {
                    None => true,
                    Some(before) => u
                        .initiated()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                        .is_some_and(|started| started < before),
                };
                if !stale {
                    continue;
                }
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    uploads.push((k.to_owned(), id.to_owned()));
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        let mut n = 0;
        for (full, id) in uploads {
            if self.abort_upload(&full, &id).await? {
                tracing::debug!(key = %full, upload_id = %id, "aborted an incomplete upload");
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_flight_stay_within_the_first_parts_budget() {
        let t = S3Tuning::default();
        // 5 MiB parts (the first 1,000): 2 upload while the third fills, 15 MiB.
        assert_eq!(in_flight(&t, t.part_size), 2);
        // 10 MiB parts: a second would not fit in 15 MiB, so fill, upload, wait.
        assert_eq!(in_flight(&t, 2 * t.part_size), 0);
        assert_eq!(in_flight(&t, 64 * t.part_size), 0);
        let wide = S3Tuning {
            part_size: 8 << 20,
            concurrency: 8,
            ..S3Tuning::default()
        };
        // A budget of 72 MiB.
        assert_eq!(in_flight(&wide, 8 << 20), 8);
        assert_eq!(in_flight(&wide, 16 << 20), 3);
        assert_eq!(in_flight(&wide, 32 << 20), 1);
        assert_eq!(in_flight(&wide, 64 << 20), 0);
        // Never more than configured, even for a part smaller than the tuning's.
        assert_eq!(in_flight(&wide, 1 << 20), 8);
        for parts in [1, 2, 4, 8, 16, 32, 64] {
            let p = parts * (8 << 20);
            let in_memory = (in_flight(&wide, p) + 1) * p;
            assert!(in_memory <= (72 << 20).max(p), "{parts}: {in_memory}");
        }
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalise_prefix("x", "").unwrap(), "");
        assert_eq!(normalise_prefix("x", "/").unwrap(), "");
        assert_eq!(normalise_prefix("x", "a").unwrap(), "a/");
        assert_eq!(normalise_prefix("x", "/a//b/").unwrap(), "a/b/");
        assert!(normalise_prefix("x", "a/../b").is_err());
    }
}
