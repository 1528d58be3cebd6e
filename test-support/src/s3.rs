//! A real S3 server for tests: `ferry-s3s-fs` (s3s-fs 0.14.1 plus ListMultipartUploads, see
//! `storage/s3s-test-server`) on a free port of 127.0.0.1 over a temporary directory. It can be
//! killed and started again on the same port and data, and is killed when dropped.
//!
//! A missing server binary fails the test, saying to run `scripts/setup`: tests never skip.

use std::net::{SocketAddr, TcpStream};

use crate::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use ferry_model::storage::{StorageBackend, StorageLocation};

/// The binary `scripts/setup` installs.
pub const BINARY: &str = "ferry-s3s-fs";

/// Names of the credential variables the test locations point at, and their values.
pub const ACCESS_KEY_ENV: &str = "FERRY_SECRET_TEST_S3_ACCESS_KEY";
pub const SECRET_KEY_ENV: &str = "FERRY_SECRET_TEST_S3_SECRET_KEY";
pub const ACCESS_KEY: &str = "ferry-test-access";
pub const SECRET_KEY: &str = "ferry-test-secret-5f1d0c";
/// A variable holding a secret the server does not accept.
pub const WRONG_SECRET_KEY_ENV: &str = "FERRY_SECRET_TEST_S3_WRONG_SECRET_KEY";
pub const WRONG_SECRET_KEY: &str = "ferry-wrong-secret-9a7e21";

/// The version line the current source of the server prints (`--version`).
fn expected_version() -> String {
    let src = include_str!("../../storage/s3s-test-server/src/main.rs");
    let line = src
        .lines()
        .find(|l| l.starts_with("const VERSION: &str = \""))
        .expect("VERSION in s3s-test-server/src/main.rs");
    line.trim_start_matches("const VERSION: &str = \"")
        .trim_end_matches("\";")
        .to_owned()
}

/// Where the S3 test server is: `$FERRY_S3S_FS`, else `ferry-s3s-fs` on PATH, else
/// `$HOME/.cache/ferry-tools/bin/ferry-s3s-fs`. Panics when it is missing or outdated.
pub fn server_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("FERRY_S3S_FS") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(BINARY)));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cache/ferry-tools/bin").join(BINARY));
    }
    let Some(bin) = candidates.into_iter().find(|p| p.is_file()) else {
        panic!(
            "the S3 test server `{BINARY}` is neither on PATH nor in ~/.cache/ferry-tools/bin: \
             run scripts/setup (it installs it from storage/s3s-test-server)"
        );
    };
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let expected = expected_version();
    assert_eq!(
        version,
        expected,
        "{} is outdated ({version:?}, the source says {expected:?}): run scripts/setup",
        bin.display()
    );
    bin
}

/// Points the credential variables of the test locations at the test keys, once per process.
pub fn set_credentials_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: set once, before any store of this process reads them, with the same values
        // in every test; nothing else in these tests writes the environment.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(ACCESS_KEY_ENV, ACCESS_KEY);
            std::env::set_var(SECRET_KEY_ENV, SECRET_KEY);
            std::env::set_var(WRONG_SECRET_KEY_ENV, WRONG_SECRET_KEY);
        }
    });
}

/// A running (or killed) S3 test server.
pub struct S3Server {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl S3Server {
    /// Starts a server on a free port over a fresh data directory.
    pub fn start() -> S3Server {
        set_credentials_env();
        let mut s = S3Server {
            bin: server_binary(),
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            starts: 0,
        };
        std::fs::create_dir_all(s.data_dir()).expect("data dir");
        s.spawn();
        s
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory the server keeps its buckets in.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("server-{}.log", self.starts))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "the S3 test server exited at start ({status}): {}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the S3 test server did not answer on {addr} within 20 s: {}",
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server (SIGKILL): open connections break, nothing is flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A location for `bucket` under `prefix`, with credentials from the test variables.
    pub fn location(&self, name: &str, bucket: &str, prefix: &str) -> StorageLocation {
        StorageLocation {
            name: name.to_owned(),
            encrypt_to: Vec::new(),
            backend: StorageBackend::S3 {
                endpoint: self.endpoint(),
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                region: String::new(),
                path_style: true,
                access_key_env: ACCESS_KEY_ENV.to_owned(),
                secret_key_env: SECRET_KEY_ENV.to_owned(),
            },
        }
    }

    /// A plain SDK client, independent of `S3Store`, to check what the server holds.
    pub fn client(&self) -> Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new("us-east-1"))
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .build();
        Client::from_conf(config)
    }

    /// Creates a bucket through the S3 API.
    pub async fn create_bucket(&self, bucket: &str) {
        self.client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CreateBucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
    }

    /// Every multipart upload the server lists in `bucket` (ListMultipartUploads), as
    /// `(key, upload id)`.
    pub async fn multipart_uploads(&self, bucket: &str) -> Vec<(String, String)> {
        let out = self
            .client()
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "ListMultipartUploads {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        out.uploads()
            .iter()
            .map(|u| {
                (
                    u.key().unwrap_or_default().to_owned(),
                    u.upload_id().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Every object key in `bucket` (ListObjectsV2, unpaginated: tests hold few objects).
    pub async fn object_keys(&self, bucket: &str) -> Vec<(String, i64)> {
        let out = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "ListObjectsV2 {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        out.contents()
            .iter()
            .map(|o| {
                (
                    o.key().unwrap_or_default().to_owned(),
                    o.size().unwrap_or(-1),
                )
            })
            .collect()
    }

    /// Part files of uploads still on the server's disk (s3s-fs keeps them as
    /// `.upload_id-ID.part-N` in the data directory): none may outlive an abort.
    pub fn part_files_on_disk(&self) -> Vec<String> {
        std::fs::read_dir(self.data_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".upload_id-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Blocking helpers for tests that are not async.
impl S3Server {
    /// Creates a bucket (blocking).
    pub fn bucket(&self, bucket: &str) {
        runtime().block_on(self.create_bucket(bucket));
    }

    /// Unfinished multipart uploads in a bucket (blocking).
    pub fn open_uploads(&self, bucket: &str) -> Vec<(String, String)> {
        runtime().block_on(self.multipart_uploads(bucket))
    }

    /// Where the server keeps object `key` of `bucket` on disk.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.data_dir().join(bucket).join(key)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
