//! The worker of a one-machine install: the `ferry-worker` binary run as a child process of the
//! controller (beside it, or `FERRY_WORKER_BIN`), for cluster `local`, with its own join token
//! (renewed at every start, in `DATA_DIR/embedded-worker.token`) and the policy of
//! `--worker-allow-path`, `--worker-allow-exec` and `--worker-secrets-dir`. A process of its own
//! keeps the controller free of the worker's code and dependencies; if it exits, it is started
//! again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{ControllerConfig, EMBEDDED_CLUSTER};
use crate::store::Store;

/// The `ferry-worker` binary to run: `FERRY_WORKER_BIN`, else the one beside this executable.
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("FERRY_WORKER_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let beside = exe.with_file_name("ferry-worker");
    if beside.is_file() {
        return Ok(beside);
    }
    anyhow::bail!(
        "the in-process worker needs the ferry-worker binary beside {} (or FERRY_WORKER_BIN); \
         install it, or start the controller with --no-embedded-worker",
        exe.display()
    )
}

/// The worker's command line.
fn command(
    bin: &Path,
    config: &ControllerConfig,
    url: &str,
    token_file: &Path,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--controller")
        .arg(url)
        .args(["--cluster", EMBEDDED_CLUSTER, "--max-shards", "2"])
        .arg("--node")
        .arg(ferry_telemetry::default_node_name())
        .arg("--work-dir")
        .arg(config.data_dir.join("work"))
        .arg("--token-file")
        .arg(token_file)
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_CONTROLLER")
        // It exits when this process is gone, also after a SIGKILL (kill_on_drop needs us alive).
        .env("FERRY_WORKER_PARENT_PID", std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let policy = &config.embedded_worker_policy;
    for path in &policy.allow_paths {
        cmd.arg("--allow-path").arg(path);
    }
    for program in &policy.allow_exec {
        cmd.arg("--allow-exec").arg(program);
    }
    if let Some(dir) = &policy.secrets_dir {
        cmd.arg("--secrets-dir").arg(dir);
    }
    for file in &policy.identity_files {
        cmd.arg("--identity-file").arg(file);
    }
    if let Some(tls) = &config.tls {
        // It trusts --ca-cert, else the certificates of --tls-cert (a self-signed certificate,
        // or a chain file with its CA), and presents the controller's own certificate when
        // clients must have one.
        cmd.arg("--ca-cert")
            .arg(tls.ca.as_ref().unwrap_or(&tls.cert));
        if tls.client_ca.is_some() {
            cmd.arg("--client-cert")
                .arg(&tls.cert)
                .arg("--client-key")
                .arg(&tls.key);
        }
    }
    if let Some(endpoint) = &config.otlp_endpoint {
        cmd.arg("--otlp-endpoint").arg(endpoint);
    }
    if config.json_logs {
        cmd.args(["--log-format", "json"]);
    }
    cmd
}

/// Starts the worker (and starts it again when it exits) until `cancel`.
pub async fn spawn(
    store: &dyn Store,
    config: &ControllerConfig,
    url: String,
    port: u16,
    cancel: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let bin = binary()?;
    let token = crate::tokens::replace(
        store,
        &format!("embedded-worker-{port}"),
        ferry_model::access::Grant::Worker {
            cluster: EMBEDDED_CLUSTER.to_owned(),
        },
    )
    .await?;
    let token_file = config.data_dir.join("embedded-worker.token");
    crate::tokens::write_private(&token_file, &token)
        .with_context(|| format!("writing {}", token_file.display()))?;
    let mut cmd = command(&bin, config, &url, &token_file);
    Ok(tokio::spawn(async move {
        loop {
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(binary = %bin.display(), error = %e, "cannot start the in-process worker");
                    return;
                }
            };
            tracing::info!(pid = child.id(), "in-process worker started");
            tokio::select! {
                status = child.wait() => {
                    tracing::warn!(status = ?status.ok(), "the in-process worker exited; starting it again");
                }
                _ = cancel.cancelled() => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }))
}
