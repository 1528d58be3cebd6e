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
use crate::config::{ControllerConfig, StoreSpec};
use crate::context::Context;
use crate::election::{self, ControllerInfo};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::{apps, reconciler};

/// A controller running inside this process.
pub struct RunningController {
    /// The address the API listens on (the real port when started on port 0).
    pub addr: SocketAddr,
    /// Whether the API speaks TLS.
    pub tls: bool,
    /// The data directory (where a first start wrote `admin.token`).
    pub data_dir: std::path::PathBuf,
    /// Where the web console listens, if it does.
    pub console_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningController {
    /// The URL clients and workers dial.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The installation's admin token, if this controller's data directory holds it.
    pub fn admin_token(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir.join(crate::tokens::ADMIN_TOKEN_FILE))
            .ok()
            .map(|s| s.trim().to_owned())
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

async fn open_store(config: &ControllerConfig) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match &config.store {
        StoreSpec::Embedded(path) => Arc::new(
            EmbeddedStore::open(path).with_context(|| format!("store {}", path.display()))?,
        ),
        StoreSpec::Etcd(endpoints) => {
            let security = config.etcd.resolve().map_err(anyhow::Error::msg)?;
            Arc::new(
                crate::store::etcd::EtcdStore::connect_with(endpoints, &security)
                    .await
                    .with_context(|| format!("etcd at {}", endpoints.join(",")))?,
            )
        }
    };
    Ok(Arc::new(crate::store::group::GroupCommit::new(store)))
}

/// Starts a controller as configured.
pub async fn start(config: ControllerConfig) -> anyhow::Result<RunningController> {
    ferry_proto::transport::install_crypto_provider();
    config.check_transport().map_err(anyhow::Error::msg)?;
    if config.tls.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen,
            "--insecure: the API is served WITHOUT TLS on an address other machines reach; tokens and data cross the network in the clear");
    }
    let server_tls = match &config.tls {
        Some(tls) => Some(server_tls(tls)?),
        None => None,
    };
    let store = open_store(&config).await?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    if let Some(file) = crate::tokens::bootstrap(&*store, &config.data_dir).await? {
        tracing::info!(file = %file.display(),
            "first start: the installation's admin token (every team) was written here; keep it safe");
    }
    let installation = installation_id(&*store).await?;
    let signing = crate::trust::signing_key(&*store).await?;
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
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let me = ControllerInfo {
        id: format!("{}-{}", ferry_telemetry::default_node_name(), addr.port()),
        url: config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{dialable}")),
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
    let _ = ctx.installation.set(installation);
    tracing::info!(public_key = %signing.public_key(),
        "manifests are signed with this installation's key (`ferry trust list` shows it)");
    let _ = ctx.signing.set(signing);
    if let Some(addr) = config.metrics_listen {
        ferry_telemetry::metrics::serve(addr, Arc::new(registry), cancel.clone())
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
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = server_tls {
        builder = builder.tls_config(tls)?;
    }
    // Every call: at most N at once (more wait), then the access check of crate::auth.
    let layers = tower::ServiceBuilder::new()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            config.max_concurrent_requests,
        ))
        .layer(crate::auth::layer::AuthLayer::new(ctx.clone()));
    let router = builder
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .layer(layers)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(crate::api::control_service(ctx.clone()))
        .add_service(crate::api::worker_service(ctx.clone()));
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
    let mut console_addr = None;
    if let Some(console) = config.console()
        && let Some((at, task)) =
            crate::console::serve(ctx.clone(), console, cancel.clone()).await?
    {
        let host = if at.ip().is_unspecified() {
            dialable.ip()
        } else {
            at.ip()
        };
        tracing::info!(url = %format!("{scheme}://{}/", SocketAddr::new(host, at.port())),
            "web console listening: sign in with a token (a first start's admin token is in DATA_DIR/admin.token)");
        console_addr = Some(at);
        tasks.push(task);
    }
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
        // Over TLS it dials the advertised URL (the certificate names that host).
        let url = if config.tls.is_some() {
            me.url.clone()
        } else {
            format!("http://{dialable}")
        };
        tasks.push(
            crate::embedded_worker::spawn(&*store, &config, url, addr.port(), cancel.clone())
                .await?,
        );
    }
    Ok(RunningController {
        addr,
        tls: config.tls.is_some(),
        data_dir: config.data_dir.clone(),
        console_addr,
        cancel,
        tasks,
    })
}

/// This installation's id, created by the first start (every controller of one store agrees).
async fn installation_id(store: &dyn Store) -> anyhow::Result<String> {
    use crate::store::{Condition, Op};
    loop {
        if let Some((id, _)) =
            crate::store::get_json::<String>(store, &crate::keys::installation()).await?
        {
            return Ok(id);
        }
        let id = uuid::Uuid::new_v4().to_string();
        store
            .txn(
                vec![Condition::Absent(crate::keys::installation())],
                vec![Op::put_json(crate::keys::installation(), &id)],
            )
            .await?;
    }
}

/// The API's rustls settings, with the files read now so a missing one is named at start.
fn server_tls(tls: &crate::config::ServerTls) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("reading the {what} {}", p.display()))
    };
    let identity = tonic::transport::Identity::from_pem(
        read("TLS certificate", &tls.cert)?,
        read("TLS key", &tls.key)?,
    );
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(
            "client CA certificate",
            ca,
        )?));
    }
    Ok(config)
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
                tokio::spawn(crate::streams::run(ctx.clone(), t.clone()));
                tokio::spawn(crate::catalog::run(ctx.clone(), t.clone()));
                tokio::spawn(crate::gc::run(ctx.clone(), t.clone()));
                tokio::spawn(crate::audit::run(ctx.clone(), t.clone()));
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
        ctx.workers.prune();
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
        encrypt_to: Vec::new(),
        backend: StorageBackend::Local {
            path: path.to_string_lossy().into_owned(),
            cluster: DEFAULT_CLUSTER.to_owned(),
        },
    };
    apps::add_storage(store, location).await?;
    Ok(())
}
