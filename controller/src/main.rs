//! `ferry-controller`: with no flags, a complete one-machine install.

use clap::Parser;
use ferry_controller::{Args, ControllerConfig};

fn main() -> std::process::ExitCode {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime")
        .block_on(run())
}

async fn run() -> std::process::ExitCode {
    let config = match ControllerConfig::resolve(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-controller: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let _telemetry = ferry_telemetry::logging::init_with(
        config.json_logs,
        "info",
        config.otlp_endpoint.as_deref(),
        "ferry-controller",
    );
    let mut running = match ferry_controller::start(config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return std::process::ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = running.wait() => std::process::ExitCode::from(1),
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            running.shutdown().await;
            std::process::ExitCode::SUCCESS
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
