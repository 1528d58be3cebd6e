//! S3 measure: Ferry's backup of the mixed tree to an S3 location (tar + zstd + multipart upload,
//! streamed) ÷ what a user would run instead, the same work as one streamed pipeline:
//! `tar -cf - DIR | zstd -3 -T2 | rclone rcat remote:bucket/key`, to the same ferry-s3s-fs server.
//! A plain aws-sdk-s3 multipart upload of the ready-made `tar | zstd -3` file is timed too, for
//! the notes only: it does none of the compression, so it is no baseline for a backup.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use crate::Config;
use crate::data;
use crate::procs::{self, Ferry, S3Server, require_tools};
use crate::report::{Row, Samples};

const BUCKET: &str = "ferry-bench";
/// What Ferry's S3 backend uses by default (storage/src/s3.rs).
const PART_SIZE: usize = ferry_storage::s3::DEFAULT_PART_SIZE;
const CONCURRENCY: usize = ferry_storage::s3::DEFAULT_CONCURRENCY;
/// The rclone remote the baseline uploads through, configured by environment variables only.
const RCLONE_REMOTE: &str = "ferrybench";

/// rclone's configuration of the remote `ferrybench`: the S3 server at `endpoint`, path-style,
/// with the benchmark's keys (`RCLONE_CONFIG_<NAME>_<OPTION>`, no config file).
pub fn rclone_env(endpoint: &str) -> Vec<(String, String)> {
    let name = RCLONE_REMOTE.to_ascii_uppercase();
    [
        ("TYPE", "s3"),
        ("PROVIDER", "Other"),
        ("ENDPOINT", endpoint),
        ("REGION", "us-east-1"),
        ("FORCE_PATH_STYLE", "true"),
        ("NO_CHECK_BUCKET", "true"),
        ("ACCESS_KEY_ID", procs::S3_ACCESS_KEY),
        ("SECRET_ACCESS_KEY", procs::S3_SECRET_KEY),
    ]
    .into_iter()
    .map(|(k, v)| (format!("RCLONE_CONFIG_{name}_{k}"), v.to_owned()))
    .chain([("RCLONE_CONFIG".to_owned(), "/dev/null".to_owned())])
    .collect()
}

fn client(endpoint: &str) -> Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            procs::S3_ACCESS_KEY,
            procs::S3_SECRET_KEY,
            None,
            None,
            "ferry-bench",
        ))
        .build();
    Client::from_conf(config)
}

/// Creates `bucket` on the S3 server at `endpoint`.
pub fn create_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(client(endpoint).create_bucket().bucket(bucket).send())
        .map_err(|e| sdk_err("CreateBucket", e))?;
    Ok(())
}

fn sdk_err<E: std::error::Error + Send + Sync + 'static>(what: &str, e: E) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
}

/// Reads up to `PART_SIZE` bytes (fewer only at the end of the file).
async fn read_part(file: &mut tokio::fs::File) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; PART_SIZE];
    let mut filled = 0;
    while filled < PART_SIZE {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// A plain multipart upload of `path`: Ferry's part size and concurrency; returns seconds.
async fn raw_upload(client: &Client, path: &Path, key: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let upload = client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .map_err(|e| sdk_err("CreateMultipartUpload", e))?;
    let upload_id = upload.upload_id().context("no upload id")?.to_owned();
    let mut file = tokio::fs::File::open(path).await?;
    let mut tasks: JoinSet<anyhow::Result<CompletedPart>> = JoinSet::new();
    let mut parts = Vec::new();
    let mut number = 0;
    loop {
        let body = read_part(&mut file).await?;
        if body.is_empty() && number > 0 {
            break;
        }
        let last = body.len() < PART_SIZE;
        number += 1;
        while tasks.len() >= CONCURRENCY {
            parts.push(tasks.join_next().await.context("a part task")???);
        }
        let (client, key, id) = (client.clone(), key.to_owned(), upload_id.clone());
        tasks.spawn(async move {
            let out = client
                .upload_part()
                .bucket(BUCKET)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| sdk_err("UploadPart", e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                .build())
        });
        if last {
            break;
        }
    }
    while let Some(part) = tasks.join_next().await {
        parts.push(part??);
    }
    parts.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| sdk_err("CompleteMultipartUpload", e))?;
    Ok(started.elapsed().as_secs_f64())
}

pub fn run(cfg: &Config, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    require_tools(&["tar", "zstd", "bash", "rclone"])?;
    let tree = data::mixed_tree(&cfg.work_dir, cfg.tree_size, cfg.seed)?;
    let run_dir = tempfile::Builder::new()
        .prefix("s3-")
        .tempdir_in(&cfg.work_dir)?;
    let server = S3Server::start(run_dir.path())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let s3 = client(&server.endpoint);
    create_bucket(&server.endpoint, BUCKET)?;

    let compressed = run_dir.path().join("tree.tar.zst");
    let mut compress = Samples::default();
    compress.take(&[], || {
        procs::timed_bash(
            r#"tar -cf - -C "$1" . | zstd -3 -T2 -q > "$2""#,
            &[tree.root.as_os_str(), compressed.as_os_str()],
            &[],
        )
    })?;
    let compressed_size = std::fs::metadata(&compressed)?.len();

    let env = [
        (procs::S3_ACCESS_KEY_ENV, procs::S3_ACCESS_KEY),
        (procs::S3_SECRET_KEY_ENV, procs::S3_SECRET_KEY),
    ];
    let mut ferry = Ferry::start(&cfg.bins, &run_dir.path().join("ferry"), &[], &env)?;
    ferry.add_worker("bench", "bench-1")?;
    ferry.add_s3_storage("s3", &server.endpoint, BUCKET)?;
    ferry.apply(
        "vol",
        &format!(
            "name: vol\ncluster: bench\ncomponents:\n  - name: data\n    volumes:\n      - {{name: tree, path: {}}}\n",
            tree.root.display()
        ),
    )?;
    // CPU counts the worker, the controller, the CLI and the S3 server; or this process (the
    // raw upload) and the S3 server.
    let ferry_pids = [ferry.workers[0].pid(), ferry.controller.pid(), server.pid()];
    let mut stored = 0;
    let mut ferry_round = |samples: &mut Samples| -> anyhow::Result<f64> {
        procs::settle()?;
        let mut id = String::new();
        let secs = samples.take(&ferry_pids, || {
            let (secs, backup, job) = ferry.backup("vol", &["--storage", "s3", "--full"])?;
            anyhow::ensure!(
                job["bytes"].as_u64() == Some(tree.stats.bytes),
                "the S3 backup read {} bytes of {}",
                job["bytes"],
                tree.stats.bytes
            );
            stored = job["stored_bytes"].as_u64().unwrap_or(0);
            id = backup;
            Ok(secs)
        })?;
        ferry.delete_backup(&id)?;
        Ok(secs)
    };
    let object_size = |key: &str| -> anyhow::Result<u64> {
        let head = rt
            .block_on(s3.head_object().bucket(BUCKET).key(key).send())
            .map_err(|e| sdk_err("HeadObject", e))?;
        rt.block_on(s3.delete_object().bucket(BUCKET).key(key).send())
            .map_err(|e| sdk_err("DeleteObject", e))?;
        Ok(head.content_length().unwrap_or(0) as u64)
    };
    let raw_round = |samples: &mut Samples, n: usize| -> anyhow::Result<f64> {
        let key = format!("raw/tree-{n}.tar.zst");
        procs::settle()?;
        let secs = samples.take(&[server.pid()], || {
            rt.block_on(raw_upload(&s3, &compressed, &key))
        })?;
        let size = object_size(&key)?;
        anyhow::ensure!(
            size == compressed_size,
            "the raw upload stored {size} bytes of {compressed_size}"
        );
        Ok(secs)
    };
    let rclone_env = rclone_env(&server.endpoint);
    let rclone_env: Vec<(&str, &str)> = rclone_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // CPU counts tar, zstd and rclone (children of this process) and the S3 server.
    let rclone_round = |samples: &mut Samples, n: usize| -> anyhow::Result<f64> {
        let key = format!("rclone/tree-{n}.tar.zst");
        let dest = format!("{RCLONE_REMOTE}:{BUCKET}/{key}");
        procs::settle()?;
        let secs = samples.take(&[server.pid()], || {
            procs::timed_bash(
                // rclone fails on an AWS_CA_BUNDLE in the environment (some CI images set
                // one); the server is plain http.
                r#"unset AWS_CA_BUNDLE; tar -cf - -C "$1" . | zstd -3 -T2 -q | rclone rcat "$2""#,
                &[tree.root.as_os_str(), std::ffi::OsStr::new(&dest)],
                &rclone_env,
            )
        })?;
        // The same tar of the same tree through the same zstd: the same bytes as the file.
        let size = object_size(&key)?;
        anyhow::ensure!(
            size == compressed_size,
            "rclone stored {size} bytes, tar | zstd -3 makes {compressed_size}"
        );
        Ok(secs)
    };

    eprintln!("s3: warm-up (one Ferry backup to S3, one tar|zstd|rclone rcat, one raw upload)");
    ferry_round(&mut Samples::default()).context("Ferry warm-up")?;
    rclone_round(&mut Samples::default(), 0).context("rclone warm-up")?;
    raw_round(&mut Samples::default(), 0).context("raw upload warm-up")?;
    let (mut fs, mut cs, mut rs) = (Samples::default(), Samples::default(), Samples::default());
    for round in 1..=cfg.rounds {
        let ferry_first = round % 2 == 1;
        for ferry_turn in [ferry_first, !ferry_first] {
            if ferry_turn {
                let secs = ferry_round(&mut fs)?;
                eprintln!("s3 round {round}: Ferry backup to S3 {secs:.2} s");
            } else {
                let secs = rclone_round(&mut cs, round)?;
                eprintln!("s3 round {round}: tar | zstd -3 -T2 | rclone rcat {secs:.2} s");
            }
        }
        let secs = raw_round(&mut rs, round)?;
        eprintln!("s3 round {round}: raw multipart upload of the compressed file {secs:.2} s");
    }
    let worker_hwm = ferry.workers[0].peak_rss_mib()?;
    notes.push(format!(
        "s3: ferry-s3s-fs on 127.0.0.1 (same 2 CPUs); Ferry's backup of the mixed tree ({:.1} MiB \
         archive, {} MiB parts, {CONCURRENCY} in flight) timed as `ferry backup create --wait`; \
         the baseline is `tar -cf - DIR | zstd -3 -T2 | rclone rcat` ({}) to the same server \
         ({:.1} MiB object; rclone's defaults: 5 MiB parts, 4 at once); medians per run — Ferry \
         {} (worker + controller + CLI + S3 server), tar|zstd|rclone {} (tar + zstd + rclone + \
         S3 server); for reference, not a baseline: a raw multipart upload of the ready-made \
         tar|zstd -3 file in Ferry's part size and concurrency took {} (uploader + S3 server) \
         and making that file {} (tar + zstd); worker VmHWM after the S3 rounds \
         {worker_hwm:.1} MiB",
        stored as f64 / (1 << 20) as f64,
        PART_SIZE >> 20,
        procs::tool_version("rclone"),
        compressed_size as f64 / (1 << 20) as f64,
        fs.describe(),
        cs.describe(),
        rs.describe(),
        compress.describe(),
    ));
    drop(ferry);
    drop(server);
    Ok(vec![Row::ratio(
        "S3 backup ÷ tar|zstd -3 -T2|rclone rcat",
        fs.median(),
        cs.median(),
        1.00,
    )])
}
