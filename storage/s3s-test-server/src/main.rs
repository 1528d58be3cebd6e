//! `ferry-s3s-fs`: the S3 server Ferry's storage tests run against.
//!
//! It is s3s-fs 0.14.1 — a real S3 protocol server (SigV4, checksums, multipart) over a
//! directory — with the same command line, plus what s3s-fs lacks and Ferry relies on:
//!
//! - `ListMultipartUploads` (s3s-fs answers `NotImplemented`): every upload that was created and
//!   neither completed nor aborted, filtered by prefix, paginated with key/upload-id markers.
//! - `NoSuchUpload` for parts, completions, aborts and part listings of an unknown upload, as
//!   AWS answers (s3s-fs answers `AccessDenied`).
//!
//! Uploads are recorded in `ROOT/.ferry-uploads/UPLOAD_ID.json` so that they survive a restart of
//! the server, like the parts s3s-fs keeps in ROOT.
//!
//! ```text
//! ferry-s3s-fs --host 127.0.0.1 --port 9000 --access-key K --secret-key S ROOT
//! ```

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// Printed by `--version`; scripts/setup and the test harness compare it to decide whether the
/// installed binary is current. Bump the last number with every change to this file.
const VERSION: &str = "ferry-s3s-fs 0.14.1+ferry.1";

const RECORDS: &str = ".ferry-uploads";

#[derive(Serialize, Deserialize)]
struct UploadRecord {
    bucket: String,
    key: String,
    upload_id: String,
    initiated_unix_ms: u64,
}

struct Server {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    records: PathBuf,
}

impl Server {
    fn record_path(&self, upload_id: &str) -> S3Result<PathBuf> {
        if upload_id.is_empty()
            || !upload_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok(self.records.join(format!("{upload_id}.json")))
    }

    async fn known(&self, bucket: &str, upload_id: &str) -> S3Result<()> {
        let path = self.record_path(upload_id)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let r: UploadRecord = serde_json::from_slice(&bytes)
                    .map_err(|e| s3_error!(InternalError, "upload record {path:?}: {e}"))?;
                if r.bucket == bucket {
                    Ok(())
                } else {
                    Err(s3_error!(NoSuchUpload))
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(s3_error!(NoSuchUpload)),
            Err(e) => Err(s3_error!(InternalError, "upload record {path:?}: {e}")),
        }
    }

    async fn record(&self, r: &UploadRecord) -> S3Result<()> {
        let path = self.record_path(&r.upload_id)?;
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(r).map_err(|e| s3_error!(InternalError, "{e}"))?;
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| s3_error!(InternalError, "{e}"))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| s3_error!(InternalError, "{e}"))
    }

    async fn forget(&self, upload_id: &str) {
        if let Ok(path) = self.record_path(upload_id) {
            let _ = tokio::fs::remove_file(path).await;
        }
    }

    async fn all_records(&self, bucket: &str) -> S3Result<Vec<UploadRecord>> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.records)
            .await
            .map_err(|e| s3_error!(InternalError, "{e}"))?;
        while let Some(entry) = dir
            .next_entry()
            .await
            .map_err(|e| s3_error!(InternalError, "{e}"))?
        {
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with(".json") {
                continue;
            }
            let Ok(bytes) = tokio::fs::read(entry.path()).await else {
                continue; // completed or aborted meanwhile
            };
            let r: UploadRecord = serde_json::from_slice(&bytes)
                .map_err(|e| s3_error!(InternalError, "upload record {name:?}: {e}"))?;
            if r.bucket == bucket {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl S3 for Server {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.fs.put_object(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        // An upload into a bucket that does not exist fails like a put does.
        if !self.root.join(&bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        let resp = self.fs.create_multipart_upload(req).await?;
        if let Some(upload_id) = &resp.output.upload_id {
            let initiated_unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.record(&UploadRecord {
                bucket,
                key,
                upload_id: upload_id.clone(),
                initiated_unix_ms,
            })
            .await?;
        }
        Ok(resp)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.known(&req.input.bucket, &req.input.upload_id).await?;
        self.fs.upload_part(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.known(&req.input.bucket, &req.input.upload_id).await?;
        self.fs.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let upload_id = req.input.upload_id.clone();
        self.known(&req.input.bucket, &upload_id).await?;
        let resp = self.fs.complete_multipart_upload(req).await?;
        self.forget(&upload_id).await;
        Ok(resp)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let upload_id = req.input.upload_id.clone();
        self.known(&req.input.bucket, &upload_id).await?;
        // Forget first: from here on the upload can neither take parts nor complete.
        self.forget(&upload_id).await;
        self.fs.abort_multipart_upload(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        if !self.root.join(&input.bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        if input.delimiter.is_some() {
            return Err(s3_error!(NotImplemented, "delimiter is not supported"));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let id_marker = input.upload_id_marker.clone().unwrap_or_default();

        let mut all: Vec<UploadRecord> = self
            .all_records(&input.bucket)
            .await?
            .into_iter()
            .filter(|r| r.key.starts_with(&prefix))
            .filter(|r| {
                key_marker.is_empty()
                    || r.key > key_marker
                    || (r.key == key_marker && !id_marker.is_empty() && r.upload_id > id_marker)
            })
            .collect();
        all.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        let is_truncated = all.len() > max;
        all.truncate(max);
        let (next_key, next_id) = match (is_truncated, all.last()) {
            (true, Some(last)) => (Some(last.key.clone()), Some(last.upload_id.clone())),
            _ => (None, None),
        };
        let uploads: Vec<MultipartUpload> = all
            .into_iter()
            .map(|r| MultipartUpload {
                key: Some(r.key),
                upload_id: Some(r.upload_id),
                initiated: Some(Timestamp::from(
                    UNIX_EPOCH + Duration::from_millis(r.initiated_unix_ms),
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(is_truncated),
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

struct Opt {
    host: String,
    port: u16,
    access_key: Option<String>,
    secret_key: Option<String>,
    root: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: ferry-s3s-fs [--host HOST] [--port PORT] [--access-key K --secret-key S] ROOT\n       ferry-s3s-fs --version"
    );
    std::process::exit(2)
}

fn parse_args() -> Opt {
    let mut opt = Opt {
        host: "localhost".into(),
        port: 8014,
        access_key: None,
        secret_key: None,
        root: PathBuf::new(),
    };
    let mut root = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--version" | "-V" => {
                println!("{VERSION}");
                std::process::exit(0)
            }
            "--host" => opt.host = value(),
            "--port" => opt.port = value().parse().unwrap_or_else(|_| usage()),
            "--access-key" => opt.access_key = Some(value()),
            "--secret-key" => opt.secret_key = Some(value()),
            s if s.starts_with('-') => usage(),
            _ if root.is_none() => root = Some(PathBuf::from(a)),
            _ => usage(),
        }
    }
    if opt.access_key.is_some() != opt.secret_key.is_some() {
        eprintln!("ferry-s3s-fs: --access-key and --secret-key go together");
        std::process::exit(2)
    }
    opt.root = root.unwrap_or_else(|| usage());
    opt
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opt = parse_args();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let records = opt.root.join(RECORDS);
    std::fs::create_dir_all(&records)?;
    let server = Server {
        fs: s3s_fs::FileSystem::new(&opt.root)
            .map_err(|e| format!("cannot serve {:?}: {e:?}", opt.root))?,
        root: opt.root.clone(),
        records,
    };
    let service = {
        let mut b = S3ServiceBuilder::new(server);
        if let (Some(ak), Some(sk)) = (opt.access_key, opt.secret_key) {
            b.set_auth(SimpleAuth::from_single(ak, sk));
        }
        b.build()
    };

    let listener = TcpListener::bind((opt.host.as_str(), opt.port)).await?;
    eprintln!(
        "ferry-s3s-fs: listening on http://{}",
        listener.local_addr()?
    );
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ferry-s3s-fs: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
