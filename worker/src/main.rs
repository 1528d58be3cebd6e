//! `ferry-worker`: joins a controller and runs the shards of its cluster.

use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Runs backup and restore shards for one cluster.
#[derive(Debug, Parser)]
#[command(name = "ferry-worker", version)]
struct Args {
    /// URL of the controller.
    #[arg(
        long,
        env = "FERRY_CONTROLLER",
        default_value = "http://127.0.0.1:7420"
    )]
    controller: String,
    /// The cluster (data center) this worker serves.
    #[arg(long, env = "FERRY_CLUSTER")]
    cluster: String,
    /// This machine's name, for volumes bound to a node [default: the host name].
    #[arg(long, env = "FERRY_NODE")]
    node: Option<String>,
    /// Shards run at once.
    #[arg(long, env = "FERRY_MAX_SHARDS", default_value_t = 2)]
    max_shards: u32,
    /// Scratch directory.
    #[arg(long, env = "FERRY_WORK_DIR", default_value = "ferry-work")]
    work_dir: PathBuf,
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9101).
    #[arg(long, env = "FERRY_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Export traces over OTLP/gRPC to this endpoint [default: $OTEL_EXPORTER_OTLP_ENDPOINT].
    #[arg(long, env = "FERRY_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log format: human or json.
    #[arg(long, env = "FERRY_LOG_FORMAT", default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
    /// File holding the join token (`ferry token create NAME --worker --cluster C`).
    #[arg(long, env = "FERRY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA that signed the controller's certificate (https:// URLs) [default: system roots].
    #[arg(long, env = "FERRY_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a controller started with --tls-client-ca.
    #[arg(long, env = "FERRY_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM key of --client-cert.
    #[arg(long, env = "FERRY_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// A directory volumes may lie beneath (repeatable; comma-separated in the variable).
    /// Without one, no volume is backed up or restored here.
    #[arg(long = "allow-path", env = "FERRY_ALLOW_PATH", value_delimiter = ',')]
    allow_path: Vec<PathBuf>,
    /// A program exec shards and hooks may run, as the app manifest writes it (repeatable).
    #[arg(long = "allow-exec", env = "FERRY_ALLOW_EXEC", value_delimiter = ',')]
    allow_exec: Vec<String>,
    /// The directory `password_file` references must lie beneath.
    #[arg(long, env = "FERRY_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// An age identity file (`age-keygen` output) whose identities open encrypted backups
    /// (repeatable; comma-separated in the variable). Backing up into an encrypted location
    /// needs none.
    #[arg(
        long = "identity-file",
        env = "FERRY_IDENTITY_FILE",
        value_delimiter = ','
    )]
    identity_file: Vec<PathBuf>,
    /// Longest a pre/post backup hook may run before it is killed.
    #[arg(long, env = "FERRY_HOOK_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    hook_timeout: std::time::Duration,
    /// Longest an exec shard's command may run before it is stopped.
    #[arg(long, env = "FERRY_EXEC_TIMEOUT", default_value = "24h", value_parser = humantime::parse_duration)]
    exec_timeout: std::time::Duration,
}

fn main() -> std::process::ExitCode {
    ferry_worker::memory::limit_heap_retention();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime")
        .block_on(run())
}

async fn run() -> std::process::ExitCode {
    let args = Args::parse();
    let _telemetry = ferry_worker::logging::init_with(
        args.log_format == "json",
        "info",
        args.otlp_endpoint.as_deref(),
        "ferry-worker",
    );
    ferry_worker::parent::exit_with_parent();
    let token = match (&args.token_file, std::env::var("FERRY_TOKEN")) {
        (Some(file), _) => match std::fs::read_to_string(file) {
            Ok(t) => t.trim().to_owned(),
            Err(e) => {
                eprintln!(
                    "ferry-worker: reading the join token {}: {e}",
                    file.display()
                );
                return std::process::ExitCode::from(2);
            }
        },
        (None, Ok(t)) => t.trim().to_owned(),
        (None, Err(_)) => {
            eprintln!(
                "ferry-worker: no join token: give --token-file F (create one with `ferry token create NAME --worker --cluster {}`)",
                args.cluster
            );
            return std::process::ExitCode::from(2);
        }
    };
    let identities = match ferry_crypto::seal::Identities::load(&args.identity_file) {
        Ok(ids) => std::sync::Arc::new(ids),
        Err(e) => {
            eprintln!("ferry-worker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = ferry_worker::WorkerConfig {
        identities,
        controller: args.controller,
        cluster: args.cluster,
        node: args.node.unwrap_or_else(ferry_worker::default_node_name),
        max_shards: args.max_shards.max(1),
        work_dir: args.work_dir,
        metrics_listen: args.metrics_listen,
        token,
        tls: ferry_proto::transport::ClientTls {
            ca_cert: args.ca_cert,
            client_identity: args.client_cert.zip(args.client_key),
            domain: None,
        },
        policy: ferry_worker::policy::Policy {
            allow_paths: args.allow_path,
            allow_exec: args.allow_exec,
            secrets_dir: args.secrets_dir,
            hook_timeout: args.hook_timeout,
            exec_timeout: args.exec_timeout,
        },
    };
    tracing::info!(allow_paths = ?config.policy.allow_paths, allow_exec = ?config.policy.allow_exec,
        secrets_dir = ?config.policy.secrets_dir, identity_files = args.identity_file.len(),
        "worker policy");
    for (what, name) in [("cluster", &config.cluster), ("node", &config.node)] {
        if let Err(e) = ferry_model::names::check_name(
            if what == "cluster" {
                "cluster name"
            } else {
                "node name"
            },
            name,
        ) {
            eprintln!("ferry-worker: {e}");
            return std::process::ExitCode::from(2);
        }
    }
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    match ferry_worker::run(config, cancel).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
