//! A real etcd (Debian's `etcd`) for tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{Proc, free_port, pki, wait_for};

/// A real etcd (Debian's `etcd`) on free ports with its own data dir; it can be killed and
/// started again on the same ports and data. It serves clients over TLS and accepts only
/// clients with a certificate of its own test CA, as a production etcd should.
pub struct Etcd {
    pub url: String,
    pub pki: pki::Pki,
    /// Plain HTTP without client certificates (`start_plain`).
    plain: bool,
    peer: String,
    data: PathBuf,
    log_dir: PathBuf,
    proc_: Option<Proc>,
    starts: usize,
}

impl Etcd {
    /// Starts etcd under `dir` and waits until it answers.
    pub fn start(dir: &Path) -> Etcd {
        Etcd::launch(dir, false)
    }

    /// Starts an etcd speaking plain HTTP without client authentication (store-level tests of
    /// the etcd client itself).
    pub fn start_plain(dir: &Path) -> Etcd {
        Etcd::launch(dir, true)
    }

    fn launch(dir: &Path, plain: bool) -> Etcd {
        let scheme = if plain { "http" } else { "https" };
        let mut etcd = Etcd {
            url: format!("{scheme}://127.0.0.1:{}", free_port()),
            pki: pki::Pki::generate(&dir.join("etcd-pki"), "etcd"),
            plain,
            peer: format!("http://127.0.0.1:{}", free_port()),
            data: dir.join("etcd-data"),
            log_dir: dir.to_path_buf(),
            proc_: None,
            starts: 0,
        };
        etcd.restart();
        etcd
    }

    /// The controller flags that use this etcd: its URL, its CA and a client certificate.
    pub fn controller_args(&self) -> Vec<String> {
        vec![
            "--store".into(),
            format!("etcd:{}", self.url),
            "--etcd-ca-cert".into(),
            self.pki.ca.to_string_lossy().into_owned(),
            "--etcd-cert".into(),
            self.pki.client_cert.to_string_lossy().into_owned(),
            "--etcd-key".into(),
            self.pki.client_key.to_string_lossy().into_owned(),
        ]
    }

    /// Starts it (again).
    pub fn restart(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new("etcd");
        cmd.arg("--data-dir")
            .arg(&self.data)
            .args(["--name", "it"])
            .args([
                "--listen-client-urls",
                &self.url,
                "--advertise-client-urls",
                &self.url,
            ])
            .args([
                "--listen-peer-urls",
                &self.peer,
                "--initial-advertise-peer-urls",
                &self.peer,
            ])
            .args(["--initial-cluster", &format!("it={}", self.peer)]);
        if !self.plain {
            cmd.arg("--cert-file")
                .arg(&self.pki.server_cert)
                .arg("--key-file")
                .arg(&self.pki.server_key)
                .arg("--trusted-ca-file")
                .arg(&self.pki.ca)
                .arg("--client-cert-auth");
        }
        let log = self.log_dir.join(format!("etcd-{}.log", self.starts));
        self.proc_ = Some(Proc::spawn("etcd", &mut cmd, log));
        wait_for(Duration::from_secs(30), "etcd to answer", || {
            self.get("/probe").is_some()
        });
    }

    /// SIGKILLs it.
    pub fn kill(&mut self) {
        if let Some(p) = self.proc_.as_mut() {
            p.kill();
        }
        self.proc_ = None;
    }

    /// `etcdctl` with this etcd's endpoint (and certificates).
    fn ctl(&self, timeout: &str) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url])
            .arg(format!("--command-timeout={timeout}"))
            .stdin(Stdio::null());
        if !self.plain {
            cmd.arg("--cacert")
                .arg(&self.pki.ca)
                .arg("--cert")
                .arg(&self.pki.client_cert)
                .arg("--key")
                .arg(&self.pki.client_key);
        }
        cmd
    }

    /// Runs `etcdctl` with this etcd's endpoint and certificates; panics when it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = self
            .ctl("5s")
            .args(args)
            .output()
            .expect("etcdctl is required (apt-get install etcd-client; scripts/setup)");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of a key (`Some("")` when absent), or `None` when etcd does not answer.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self
            .ctl("2s")
            .args(["get", key, "--print-value-only"])
            .output()
            .expect("etcdctl is required (apt-get install etcd-client; scripts/setup)");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The URL of the elected controller, if any.
    pub fn leader_url(&self) -> Option<String> {
        let value = self.get("/ferry/v1/leader")?;
        let v: Value = serde_json::from_str(&value).ok()?;
        v["url"].as_str().map(str::to_owned)
    }
}
