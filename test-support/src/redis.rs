//! A redis-server of the test's own.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Proc, free_port, sh, wait_for};

/// A redis-server of the test's own on a free port, killed on drop.
pub struct Redis {
    pub port: u16,
    proc_: Proc,
}

impl Redis {
    /// Starts one in `dir` and waits until it answers.
    pub fn start(dir: &Path) -> Redis {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir);
        let proc_ = Proc::spawn(
            "redis-server",
            &mut cmd,
            dir.join(format!("redis-{port}.log")),
        );
        wait_for(Duration::from_secs(20), "redis-server to start", || {
            Command::new("redis-cli")
                .args(["-p", &port.to_string(), "ping"])
                .output()
                .map(|o| o.stdout.starts_with(b"PONG"))
                .unwrap_or(false)
        });
        Redis { port, proc_ }
    }

    /// Runs redis-cli against it.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-p".to_string(), self.port.to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        sh("redis-cli", &refs)
    }

    /// The process (to read its log).
    pub fn process(&self) -> &Proc {
        &self.proc_
    }
}
