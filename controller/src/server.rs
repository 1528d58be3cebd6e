//! Starting and stopping a controller: store, API, reconciler and (optionally) the in-process
//! worker, all tied to one cancellation token.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use ferry_model::app::DEFAULT_CLUSTER;
use ferry_model::storage::{DEFAULT_LOCATION, StorageBackend, StorageLocation};
use ferry_proto::v1::control_service_server::ControlServiceServer;
use ferry_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::control::ControlApi;
use crate::api::worker::WorkerApi;
use crate::config::{ControllerConfig, EMBEDDED_CLUSTER, StoreSpec};
use crate::context::Context;
use crate::election::{self, ControllerInfo};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::{apps, reconciler};

/// A controller running inside this process.
pub struct RunningController {
    /// The address the API listens on (the real port when started on port 0).
    pub addr: SocketAddr,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningController {
    /// The URL clients and workers dial.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops everything and waits for it.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Resolves when the controller stops by itself (the server failed).
    pub async fn wait(&mut self) {
        if let Some(server) = self.tasks.first_mut() {
            let _ = server.await;
        }
    }
}

async fn open_store(spec: &StoreSpec) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match spec {
        StoreSpec::Embedded(path) => Arc::new(
            EmbeddedStore::open(path).with_context(|| format!("store {}", path.display()))?,
        ),
        StoreSpec::Etcd(endpoints) => Arc::new(
            crate::store::etcd::EtcdStore::connect(endpoints)
                .await
                .with_context(|| format!("etcd at {}", endpoints.join(",")))?,
        ),
    };
    Ok(Arc::new(crate::store::group::GroupCommit::new(store)))
}

/// Starts a controller as configured.
pub async fn start(config: ControllerConfig) -> anyhow::Result<RunningController> {
    let store = open_store(&config.store).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let dialable = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let me = ControllerInfo {
        id: format!("{}-{}", ferry_worker::default_node_name(), addr.port()),
        url: config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{dialable}")),
    };
    let role = election::spawn(store.clone(), config.timings, me.clone(), cancel.clone());
    let (metrics, registry) = crate::metrics::Metrics::new();
    let ctx = Context::new(
        store.clone(),
        config.timings,
        config.settings.clone(),
        role,
        metrics,
    );
    if let Some(addr) = config.metrics_listen {
        ferry_worker::metrics::serve(addr, Arc::new(registry), cancel.clone())
            .await
            .with_context(|| format!("serving metrics on {addr}"))?;
    }
    if config.embedded_worker {
        ensure_local_storage(&*store, &config).await?;
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ControlServiceServer<ControlApi>>()
        .await;
    health.set_serving::<WorkerServiceServer<WorkerApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            // Imports carry a whole manifest in one message.
            ControlServiceServer::new(ControlApi { ctx: ctx.clone() })
                .max_decoding_message_size(crate::jobs::MANIFEST_LIMIT as usize + (1 << 20))
                .max_encoding_message_size(crate::jobs::MANIFEST_LIMIT as usize + (1 << 20)),
        )
        .add_service(WorkerServiceServer::new(WorkerApi { ctx: ctx.clone() }));
    let shutdown = cancel.clone();
    let server = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
            .await
        {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    tracing::info!(%addr, id = %me.id, url = %me.url, store = ?config.store, "controller listening");
    let mut tasks = vec![server];
    tasks.push(tokio::spawn(lead_while_elected(
        ctx.clone(),
        cancel.clone(),
    )));
    tasks.push(tokio::spawn(report_health(
        ctx.clone(),
        health,
        cancel.clone(),
    )));
    if config.embedded_worker {
        let worker_config = ferry_worker::WorkerConfig {
            controller: format!("http://{dialable}"),
            cluster: EMBEDDED_CLUSTER.to_owned(),
            node: ferry_worker::default_node_name(),
            max_shards: 2,
            work_dir: config.data_dir.join("work"),
            metrics_listen: None,
        };
        let worker_cancel = cancel.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = ferry_worker::run(worker_config, worker_cancel).await {
                tracing::error!(error = %e, "embedded worker stopped");
            }
        }));
    }
    Ok(RunningController {
        addr,
        cancel,
        tasks,
    })
}

/// Runs the leader-only work (the reconciler) for as long as this controller leads, and stops it
/// at once when leadership is lost.
async fn lead_while_elected(ctx: Arc<Context>, cancel: CancellationToken) {
    let mut role = ctx.role.clone();
    let mut term: Option<CancellationToken> = None;
    loop {
        let leading = role.borrow_and_update().is_leader();
        match (leading, &term) {
            (true, None) => {
                let t = cancel.child_token();
                tokio::spawn(reconciler::run(ctx.clone(), t.clone()));
                tokio::spawn(crate::schedules::run(ctx.clone(), t.clone()));
                tokio::spawn(crate::catalog::run(ctx.clone(), t.clone()));
                term = Some(t);
                ctx.notify();
            }
            (false, Some(t)) => {
                t.cancel();
                term = None;
                // Workers must follow the new leader: close their streams here.
                ctx.workers.detach_all();
            }
            _ => {}
        }
        tokio::select! {
            changed = role.changed() => if changed.is_err() { return },
            _ = cancel.cancelled() => return,
        }
    }
}

/// Serves `grpc.health.v1`: SERVING while the store answers, NOT_SERVING while it does not.
async fn report_health(
    ctx: Arc<Context>,
    health: tonic_health::server::HealthReporter,
    cancel: CancellationToken,
) {
    let mut last = None;
    loop {
        let ok = matches!(
            tokio::time::timeout(ctx.timings.heartbeat, ctx.store.get(&crate::keys::leader()))
                .await,
            Ok(Ok(_))
        );
        if last != Some(ok) {
            let status = if ok {
                tonic_health::ServingStatus::Serving
            } else {
                tracing::warn!("store unavailable: health is NOT_SERVING until it is back");
                tonic_health::ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health
                .set_service_status("ferry.v1.ControlService", status)
                .await;
            health
                .set_service_status("ferry.v1.WorkerService", status)
                .await;
            last = Some(ok);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ctx.timings.heartbeat) => {}
        }
    }
}

/// The `local` location of a one-machine install: a directory under the data dir, bound to the
/// embedded worker's cluster.
async fn ensure_local_storage(store: &dyn Store, config: &ControllerConfig) -> anyhow::Result<()> {
    if apps::find_storage(store, DEFAULT_LOCATION).await?.is_some() {
        return Ok(());
    }
    let dir = config.data_dir.join("storage");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = std::fs::canonicalize(&dir)?;
    let location = StorageLocation {
        name: DEFAULT_LOCATION.to_owned(),
        backend: StorageBackend::Local {
            path: path.to_string_lossy().into_owned(),
            cluster: DEFAULT_CLUSTER.to_owned(),
        },
    };
    apps::add_storage(store, location).await?;
    Ok(())
}
