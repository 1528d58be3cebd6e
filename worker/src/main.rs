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
    let config = ferry_worker::WorkerConfig {
        controller: args.controller,
        cluster: args.cluster,
        node: args.node.unwrap_or_else(ferry_worker::default_node_name),
        max_shards: args.max_shards.max(1),
        work_dir: args.work_dir,
        metrics_listen: args.metrics_listen,
    };
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
