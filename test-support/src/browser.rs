//! A real headless Chromium for the web console's tests, driven over WebDriver: `chromedriver`
//! on a free port (killed on drop), one browser session with a profile directory of its own,
//! trusting exactly one test server key (by its SPKI hash, no CA installed anywhere). Also a
//! tiny HTTPS client (one request per connection) for checks a browser cannot make: statuses,
//! headers, requests without cookies.
//!
//! Missing `chromium` or `chromedriver` fails the test naming what is missing (`scripts/setup`
//! installs Debian's `chromium` and `chromium-driver`); nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fantoccini::{Client, ClientBuilder, Locator};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Proc, free_port};

/// Where Debian installs them; `PATH` is searched too.
const CHROMIUM: &[&str] = &["/usr/bin/chromium", "chromium", "chromium-browser"];
const CHROMEDRIVER: &[&str] = &["/usr/bin/chromedriver", "chromedriver"];
/// Every wait of these tests is bounded by this unless it says otherwise.
pub const WAIT: Duration = Duration::from_secs(30);

fn find(candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.is_file() {
                return Some(p.to_path_buf());
            }
        } else if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let full = dir.join(c);
                if full.is_file() {
                    return Some(full);
                }
            }
        }
    }
    None
}

/// The browser and its driver, or a panic naming what is missing.
pub fn require_tools() -> (PathBuf, PathBuf) {
    let chromium = find(CHROMIUM);
    let driver = find(CHROMEDRIVER);
    let mut missing = Vec::new();
    if chromium.is_none() {
        missing.push("chromium (Debian package `chromium`)");
    }
    if driver.is_none() {
        missing.push("chromedriver (Debian package `chromium-driver`)");
    }
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        _ => panic!(
            "the web console's browser tests need {}: run scripts/setup",
            missing.join(" and ")
        ),
    }
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of a PEM private key's public key: what
/// `--ignore-certificate-errors-spki-list` takes.
pub fn spki_hash(key_pem: &Path) -> String {
    use rcgen::PublicKeyData;
    let pem = std::fs::read_to_string(key_pem)
        .unwrap_or_else(|e| panic!("reading {}: {e}", key_pem.display()));
    let key = rcgen::KeyPair::from_pem(&pem).expect("a PEM key");
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(key.subject_public_key_info()))
}

/// A browser session; its driver is killed on drop.
pub struct Browser {
    pub client: Client,
    /// Screenshots go here.
    pub shots: PathBuf,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that trusts the server key `trusted_key`
    /// (a PEM private key file), with a desktop-sized window. Logs go to `log_dir`.
    pub async fn start(log_dir: &Path, trusted_key: &Path, shots: &Path) -> Browser {
        let (chromium, chromedriver) = require_tools();
        std::fs::create_dir_all(shots).expect("creating the screenshot directory");
        let port = free_port();
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"));
        // A process group of its own: the browsers it starts (and their crash handlers) are in
        // it, and all of them end with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = Proc::spawn("chromedriver", &mut cmd, log_dir.join("chromedriver.log"));
        let profile = tempfile::Builder::new()
            .prefix("ferry-chromium-")
            .tempdir()
            .expect("a profile directory");
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!(
                "--ignore-certificate-errors-spki-list={}",
                spki_hash(trusted_key)
            ),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            // Each attempt bounded too: a browser that never comes up must not hang the test.
            let mut builder = ClientBuilder::new(connector);
            builder.capabilities(caps.clone());
            let attempt = builder.connect(&url);
            match tokio::time::timeout(WAIT, attempt)
                .await
                .map_err(|_| format!("no session within {WAIT:?}"))
                .and_then(|r| r.map_err(|e| e.to_string()))
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver at {url} did not give a Chromium session within {WAIT:?}: {e}\n{}",
                        driver.log_tail(30)
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser {
            client,
            shots: shots.to_path_buf(),
            _driver: driver,
            _profile: profile,
        }
    }

    /// Saves a PNG of the page as `NAME.png` in the screenshot directory; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }

    /// Goes to `url` and waits until `css` is on the page.
    pub async fn open(&self, url: &str, css: &str) -> fantoccini::elements::Element {
        tokio::time::timeout(WAIT, self.client.goto(url))
            .await
            .unwrap_or_else(|_| panic!("{url} did not load within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("navigating to {url}: {e}"));
        self.wait_for(css).await
    }

    /// Waits (bounded) until an element matching `css` exists.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let body = self.text("body").await;
                panic!("no {css:?} on {url:?} within {WAIT:?} ({e}); the page says:\n{body}")
            }
        }
    }

    /// The text of the first element matching `css` (empty when there is none).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// Polls `script` (a JavaScript expression) until it is `true`, at most `timeout`.
    pub async fn wait_until(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self
                .client
                .execute(&format!("return !!({script});"), vec![])
                .await
                .expect("running a script");
            if v == serde_json::Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                let body = self.text("body").await;
                panic!("timed out after {timeout:?} waiting for {what}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session (the driver is killed when dropped).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// Ends chromedriver's process group — chromedriver, the Chromium it started, its helpers
    /// and crash handlers, which a failed test's unclosed session would leave behind — and waits
    /// until they are gone before the profile directory is removed.
    fn drop(&mut self) {
        let group = self._driver.pid();
        if group <= 0 {
            return;
        }
        // SAFETY: kill(2) on the process group this browser's chromedriver leads (made by
        // `process_group(0)` at its start); no memory is involved.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while group_alive(group) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// True while a process of group `pgid` runs (zombies waiting for their parent do not).
fn group_alive(pgid: i32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|entry| {
        std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // `PID (COMM) STATE PPID PGRP …`: the fields after the last `)`.
                let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
                let state = fields.next()?;
                let pgrp: i32 = fields.nth(1)?.parse().ok()?;
                Some(pgrp == pgid && state != "Z" && state != "X")
            })
            .unwrap_or(false)
    })
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// Every value of a header.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of cookie `name` among the `Set-Cookie` headers.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.header_values("set-cookie").into_iter().find_map(|c| {
            let first = c.split(';').next()?;
            let (k, v) = first.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    }
}

/// One HTTPS/1.1 request to `127.0.0.1:port`, trusting the PEM CA `ca`; the connection is closed
/// after the answer (no chunked bodies to decode: the console's pages come in one piece, and a
/// chunked answer is decoded below).
pub async fn https(
    port: u16,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpAnswer {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("adding the CA");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let request = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connecting to the console");
        let name = ServerName::try_from("127.0.0.1").expect("a server name");
        let mut tls = connector.connect(name, tcp).await.expect("a TLS handshake");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).await.expect("writing");
        tls.write_all(body.as_bytes()).await.expect("writing");
        let mut raw = Vec::new();
        // A peer that closes without close_notify still gave its whole answer here.
        let _ = tls.read_to_end(&mut raw).await;
        raw
    };
    let raw = tokio::time::timeout(WAIT, request)
        .await
        .expect("the console answered in time");
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> HttpAnswer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    HttpAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_and_dechunked() {
        let a = parse_answer(b"HTTP/1.1 401 Unauthorized\r\nSet-Cookie: a=1; HttpOnly\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        assert_eq!(a.status, 401);
        assert_eq!(a.body, "abcde");
        assert_eq!(a.set_cookie("a").as_deref(), Some("1"));
        assert_eq!(a.set_cookie("b"), None);
    }
}
