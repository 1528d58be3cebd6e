//! The worker's session with the controller: register, heartbeat, receive assignments; on any
//! break, open the session again (with the leader, wherever it is now) while running shards carry
//! on and report when they can.

use std::time::Duration;

use ferry_proto::v1;
use tokio_util::sync::CancellationToken;

use crate::WorkerConfig;
use crate::controllers::Controllers;
use crate::executor::Executor;

/// Longest pause between attempts to reach the controller.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs the worker until `cancel` fires.
pub async fn run(config: WorkerConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    ferry_proto::transport::install_crypto_provider();
    let credentials = crate::controllers::Credentials::new(&config.token)?;
    let controllers = Controllers::new(&config.controller, config.tls.clone(), credentials)?;
    let tools = crate::tools::detect().await;
    tracing::info!(cluster = %config.cluster, node = %config.node, tools = ?tools.keys().collect::<Vec<_>>(),
        "worker starting");
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = crate::metrics::WorkerMetrics::register(&mut registry);
    if let Some(addr) = config.metrics_listen {
        crate::metrics::serve(addr, std::sync::Arc::new(registry), cancel.clone()).await?;
    }
    let executor = Executor::new(
        controllers.clone(),
        config.max_shards,
        tools.clone(),
        metrics,
        config.policy.clone(),
        config.identities.clone(),
        config.work_dir.clone(),
    );
    let mut backoff = Duration::from_millis(200);
    let mut known_id: Option<String> = None;
    loop {
        let session = session(&config, &tools, &controllers, &executor, &mut known_id);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            result = session => {
                let e = result.unwrap_err();
                if refused(&e) {
                    // Not allowed (any more): whatever runs here is no longer this worker's.
                    executor.cancel_all();
                    tracing::error!(controller = %controllers.current(), error = %format!("{e:#}"),
                        "the controller refused this worker's join token or session; retrying");
                } else {
                    tracing::warn!(controller = %controllers.current(), error = %format!("{e:#}"), "session interrupted; reconnecting");
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

/// Why a session ended: the controller's answer when it gave one.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
struct Refusal {
    what: String,
    code: tonic::Code,
    message: String,
}

fn failed(controllers: &Controllers, what: &str, status: tonic::Status) -> anyhow::Error {
    controllers.failed(&status);
    let chain = ferry_proto::transport::error_chain(&status);
    let message = if status.code() == tonic::Code::Unavailable {
        ferry_proto::transport::explain_connect_error(&controllers.current(), &chain)
    } else {
        status.message().to_owned()
    };
    Refusal {
        what: what.to_owned(),
        code: status.code(),
        message,
    }
    .into()
}

/// True when the controller refused the worker's credentials.
fn refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Refusal>().is_some_and(|r| {
        matches!(
            r.code,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        )
    })
}

/// One session; returns only with the reason it ended.
async fn session(
    config: &WorkerConfig,
    tools: &std::collections::BTreeMap<String, String>,
    controllers: &Controllers,
    executor: &Executor,
    known_id: &mut Option<String>,
) -> anyhow::Result<std::convert::Infallible> {
    let mut client = controllers.client();
    // Keep the session across a controller change when the new leader still knows it (the
    // session lives in the store): running shards keep their assignments.
    let id = match known_id.clone() {
        Some(id) if controllers.credentials().has_session() => {
            let beat = v1::HeartbeatRequest {
                worker_id: id.clone(),
                running_shards: executor.running(),
            };
            match client.heartbeat(beat).await {
                Ok(r) if r.get_ref().known => Some(id),
                Ok(_) => None,
                Err(s) if s.code() == tonic::Code::Unauthenticated => None,
                Err(s) => return Err(failed(controllers, "heartbeat", s)),
            }
        }
        _ => None,
    };
    let (id, interval) = match id {
        Some(id) => (id, executor.heartbeat_interval()),
        None => {
            controllers.credentials().set_session(None);
            let reply = client
                .register(v1::RegisterRequest {
                    cluster: config.cluster.clone(),
                    node: config.node.clone(),
                    max_shards: config.max_shards,
                    tools: tools.clone().into_iter().collect(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                })
                .await
                .map_err(|s| failed(controllers, "registering", s))?
                .into_inner();
            let interval = Duration::from_millis(reply.heartbeat_interval_ms.max(100));
            executor.set_heartbeat_interval(interval);
            controllers
                .credentials()
                .set_session(Some((&reply.worker_id, &reply.session_key)));
            tracing::info!(worker = %reply.worker_id, controller = %controllers.current(), "registered");
            (reply.worker_id, interval)
        }
    };
    *known_id = Some(id.clone());
    executor.set_worker_id(&id);
    let mut stream = client
        .assignments(v1::AssignmentsRequest {
            worker_id: id.clone(),
        })
        .await
        .map_err(|s| failed(controllers, "opening assignments", s))?
        .into_inner();
    let heartbeat = heartbeat(controllers.clone(), id.clone(), interval, executor.clone());
    tokio::pin!(heartbeat);
    loop {
        tokio::select! {
            err = &mut heartbeat => {
                if err.to_string().contains("no longer knows") || refused(&err) {
                    *known_id = None;
                }
                return Err(err);
            }
            msg = stream.message() => {
                let event = msg.map_err(|s| failed(controllers, "assignment stream", s))?
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
    controllers: Controllers,
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
        match tokio::time::timeout(interval, controllers.client().heartbeat(beat)).await {
            Ok(Ok(r)) if r.get_ref().known => failures = 0,
            Ok(Ok(_)) => return anyhow::anyhow!("the controller no longer knows session {id}"),
            Ok(Err(s))
                if matches!(
                    s.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                return failed(&controllers, "heartbeat", s);
            }
            Ok(Err(s)) => {
                failures += 1;
                let leader_moved = s
                    .metadata()
                    .get(crate::controllers::LEADER_HEADER)
                    .is_some();
                controllers.failed(&s);
                tracing::warn!(error = %s.message(), failures, "heartbeat failed");
                if leader_moved {
                    return anyhow::anyhow!("the leader moved");
                }
            }
            Err(_) => {
                failures += 1;
                tracing::warn!(failures, "heartbeat timed out");
            }
        }
        // Past the lease, the session is gone anyway.
        if failures >= 3 {
            return anyhow::anyhow!("{failures} heartbeats in a row failed");
        }
    }
}
