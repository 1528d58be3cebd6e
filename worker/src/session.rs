//! The worker's session with the controller: register, heartbeat, receive assignments; on any
//! break, register again (a new session) while running shards carry on and report when they can.

use std::time::Duration;

use anyhow::Context as _;
use ferry_proto::v1;
use ferry_proto::v1::worker_service_client::WorkerServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::WorkerConfig;
use crate::executor::Executor;

/// Longest pause between attempts to reach the controller.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs the worker until `cancel` fires.
pub async fn run(config: WorkerConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let endpoint = Endpoint::from_shared(config.controller.clone())
        .with_context(|| format!("invalid controller URL {:?}", config.controller))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(10)));
    let channel = endpoint.connect_lazy();
    let client = WorkerServiceClient::new(channel);
    let tools = crate::tools::detect().await;
    tracing::info!(cluster = %config.cluster, node = %config.node, tools = ?tools.keys().collect::<Vec<_>>(),
        "worker starting");
    let executor = Executor::new(client.clone(), config.max_shards, tools.clone());
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = session(&config, &tools, client.clone(), &executor, &cancel);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            result = session => {
                if let Err(e) = result {
                    tracing::warn!(error = %format!("{e:#}"), "session ended; registering again");
                } else {
                    backoff = Duration::from_millis(200);
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(
    config: &WorkerConfig,
    tools: &std::collections::BTreeMap<String, String>,
    mut client: WorkerServiceClient<Channel>,
    executor: &Executor,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let reply = client
        .register(v1::RegisterRequest {
            cluster: config.cluster.clone(),
            node: config.node.clone(),
            max_shards: config.max_shards,
            tools: tools.clone().into_iter().collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("registering: {}", s.message()))?
        .into_inner();
    let id = reply.worker_id;
    executor.set_worker_id(&id);
    let interval = Duration::from_millis(reply.heartbeat_interval_ms.max(100));
    tracing::info!(worker = %id, "registered");
    let mut stream = client
        .assignments(v1::AssignmentsRequest {
            worker_id: id.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("opening assignments: {}", s.message()))?
        .into_inner();
    let heartbeat = heartbeat(client.clone(), id.clone(), interval, executor.clone());
    tokio::pin!(heartbeat);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            err = &mut heartbeat => return Err(err),
            msg = stream.message() => {
                let event = msg.map_err(|s| anyhow::anyhow!("assignment stream: {}", s.message()))?
                    .ok_or_else(|| anyhow::anyhow!("the controller closed the assignment stream"))?;
                handle(executor, event);
            }
        }
    }
}

fn handle(executor: &Executor, event: v1::AssignmentEvent) {
    use v1::assignment_event::Event;
    match event.event {
        Some(Event::Assign(a)) => match serde_json::from_str(&a.task_json) {
            Ok(task) => executor.start(task),
            Err(e) => tracing::error!(error = %e, "unreadable assignment ignored"),
        },
        Some(Event::Cancel(r)) => {
            if let Ok(key) = ferry_proto::model::ShardKey::try_from(Some(r)) {
                executor.cancel(&key);
            }
        }
        None => {}
    }
}

/// Heartbeats until the session is lost; returns why.
async fn heartbeat(
    mut client: WorkerServiceClient<Channel>,
    id: String,
    interval: Duration,
    executor: Executor,
) -> anyhow::Error {
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(interval).await;
        let beat = v1::HeartbeatRequest {
            worker_id: id.clone(),
            running_shards: executor.running(),
        };
        match tokio::time::timeout(interval, client.heartbeat(beat)).await {
            Ok(Ok(r)) if r.get_ref().known => failures = 0,
            Ok(Ok(_)) => return anyhow::anyhow!("the controller no longer knows session {id}"),
            Ok(Err(s)) => {
                failures += 1;
                tracing::warn!(error = %s.message(), failures, "heartbeat failed");
            }
            Err(_) => {
                failures += 1;
                tracing::warn!(failures, "heartbeat timed out");
            }
        }
        // Past the lease, the session is gone anyway.
        if failures >= 5 {
            return anyhow::anyhow!("{failures} heartbeats in a row failed");
        }
    }
}
