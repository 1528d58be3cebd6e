//! The connection to the controllers. `--controller` may list several (`URL[,URL…]`): reads go
//! to whichever answers; a follower refuses writes naming the leader (`ferry-leader` header),
//! and the call is repeated there. While an election is in progress, calls are retried for a
//! few seconds. Every call carries the caller's token.

use std::future::Future;
use std::time::Duration;

use ferry_proto::v1;
use ferry_proto::v1::control_service_client::ControlServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

use crate::exit::{CliError, CliResult};

use ferry_proto::LEADER_HEADER;
use ferry_proto::transport::ClientTls;
/// How long a call keeps trying through a leader change.
const FAILOVER_PATIENCE: Duration = Duration::from_secs(30);

/// Adds `authorization: Bearer TOKEN` when a token was given.
#[derive(Clone)]
pub struct Auth {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

type Client = ControlServiceClient<InterceptedService<Channel, Auth>>;

fn client(channel: Channel, auth: Auth) -> Client {
    ControlServiceClient::with_interceptor(channel, auth)
        .max_decoding_message_size(ferry_proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(ferry_proto::MAX_MESSAGE_SIZE)
}

/// A client of the CLI-facing API that follows the leader.
pub struct Api {
    urls: Vec<String>,
    current: String,
    auth: Auth,
    tls: ClientTls,
    client: Client,
}

fn endpoint(url: &str, tls: &ClientTls) -> CliResult<Endpoint> {
    ferry_proto::transport::endpoint(url, tls).map_err(CliError::input)
}

/// Connects to the first controller of the list that answers, or says clearly that none can be
/// reached (exit code 5) and why (TLS, scheme, address).
pub async fn connect(list: &str, token: Option<&str>, tls: &ClientTls) -> CliResult<Api> {
    ferry_proto::transport::install_crypto_provider();
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(CliError::input("--controller names no URL"));
    }
    let header =
        match token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                CliError::input("the token contains characters a header cannot carry")
            })?),
            None => None,
        };
    let auth = Auth { header };
    let mut last = String::new();
    for url in &urls {
        match endpoint(url, tls)?.connect().await {
            Ok(channel) => {
                return Ok(Api {
                    client: client(channel, auth.clone()),
                    current: url.clone(),
                    urls,
                    auth,
                    tls: tls.clone(),
                });
            }
            Err(e) => {
                let chain = ferry_proto::transport::error_chain(&e);
                last = ferry_proto::transport::explain_connect_error(url, &chain);
            }
        }
    }
    Err(CliError::unreachable(format!(
        "cannot reach the controller at {list}: {last} (is ferry-controller running? set --controller or FERRY_CONTROLLER)"
    )))
}

impl Api {
    fn switch(&mut self, url: &str) -> bool {
        match endpoint(url, &self.tls) {
            Ok(e) => {
                self.client = client(e.connect_lazy(), self.auth.clone());
                self.current = url.to_owned();
                true
            }
            Err(_) => false,
        }
    }

    /// Runs one call, following the leader and riding out an election.
    async fn call<Req, T, F, Fut>(&mut self, f: F, req: Req) -> Result<Response<T>, Status>
    where
        Req: Clone,
        F: Fn(Client, Req) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + FAILOVER_PATIENCE;
        loop {
            let status = match f(self.client.clone(), req.clone()).await {
                Ok(r) => return Ok(r),
                Err(s) => s,
            };
            // A failure of the connection itself (TLS, HTTP/2): say why; retry only what a
            // controller change could mend.
            let status = match ferry_proto::transport::transport_failure(&self.current, &status) {
                Some(t) if ferry_proto::transport::is_configuration_error(t.message()) => {
                    return Err(t);
                }
                Some(t) => t,
                None => status,
            };
            if status.code() != Code::Unavailable || tokio::time::Instant::now() > deadline {
                return Err(status);
            }
            let hint = status
                .metadata()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match hint {
                Some(leader) if leader != self.current => {
                    if !self.switch(&leader) {
                        return Err(status);
                    }
                }
                _ => {
                    // Down, or no leader yet: try the next controller after a pause.
                    let i = self.urls.iter().position(|u| *u == self.current);
                    let next = self.urls[i.map(|i| (i + 1) % self.urls.len()).unwrap_or(0)].clone();
                    self.switch(&next);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

/// Generates one leader-following method per RPC, with the generated client's signature.
macro_rules! rpcs {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        impl Api {
            $(
                #[doc = concat!("`", stringify!($name), "`, on the leader if needed.")]
                pub async fn $name(&mut self, req: $req) -> Result<Response<$resp>, Status> {
                    self.call(|mut c, r| async move { c.$name(r).await }, req).await
                }
            )*
        }
    };
}

rpcs! {
    apply_app(v1::ApplyAppRequest) -> v1::App;
    list_apps(v1::ListAppsRequest) -> v1::ListAppsResponse;
    get_app(v1::GetAppRequest) -> v1::App;
    get_recovery_window(v1::GetAppRequest) -> v1::RecoveryWindow;
    delete_app(v1::DeleteAppRequest) -> v1::DeleteAppResponse;
    add_storage(v1::AddStorageRequest) -> v1::StorageLocation;
    list_storage(v1::ListStorageRequest) -> v1::ListStorageResponse;
    list_workers(v1::ListWorkersRequest) -> v1::ListWorkersResponse;
    list_clusters(v1::ListClustersRequest) -> v1::ListClustersResponse;
    create_backup(v1::CreateBackupRequest) -> v1::Job;
    list_backups(v1::ListBackupsRequest) -> v1::ListJobsResponse;
    get_backup(v1::GetJobRequest) -> v1::Job;
    cancel_backup(v1::GetJobRequest) -> v1::Job;
    delete_backup(v1::GetJobRequest) -> v1::DeleteBackupResponse;
    verify_backup(v1::VerifyBackupRequest) -> v1::Job;
    cancel_restore(v1::GetJobRequest) -> v1::Job;
    create_restore(v1::CreateRestoreRequest) -> v1::Job;
    list_restores(v1::ListRestoresRequest) -> v1::ListJobsResponse;
    get_restore(v1::GetJobRequest) -> v1::Job;
    watch_job(v1::GetJobRequest) -> tonic::Streaming<v1::Job>;
    create_schedule(v1::CreateScheduleRequest) -> v1::Schedule;
    list_schedules(v1::ListSchedulesRequest) -> v1::ListSchedulesResponse;
    get_schedule(v1::ScheduleRef) -> v1::Schedule;
    pause_schedule(v1::ScheduleRef) -> v1::Schedule;
    resume_schedule(v1::ScheduleRef) -> v1::Schedule;
    delete_schedule(v1::ScheduleRef) -> v1::DeleteScheduleResponse;
    migrate(v1::MigrateRequest) -> v1::Migration;
    sync_storage(v1::SyncStorageRequest) -> v1::SyncStorageResponse;
    collect_garbage(v1::CollectGarbageRequest) -> v1::CollectGarbageResponse;
    export_backup(v1::GetJobRequest) -> tonic::Streaming<v1::ExportChunk>;
    who_am_i(v1::WhoAmIRequest) -> v1::Identity;
    create_token(v1::CreateTokenRequest) -> v1::CreatedToken;
    list_tokens(v1::ListTokensRequest) -> v1::ListTokensResponse;
    revoke_token(v1::RevokeTokenRequest) -> v1::RevokeTokenResponse;
    list_audit(v1::ListAuditRequest) -> v1::ListAuditResponse;
    add_trust(v1::AddTrustRequest) -> v1::TrustEntry;
    list_trust(v1::ListTrustRequest) -> v1::ListTrustResponse;
    remove_trust(v1::RemoveTrustRequest) -> v1::RemoveTrustResponse;
    set_recipients(v1::SetRecipientsRequest) -> v1::StorageLocation;
    list_key_files(v1::ListKeyFilesRequest) -> v1::ListKeyFilesResponse;
    rewrite_key_files(v1::RewriteKeyFilesRequest) -> v1::RewriteKeyFilesResponse;
}

impl Api {
    /// `import_backup`, once, on the current controller: a stream cannot be replayed. When a
    /// follower refused it, [`Api::follow_leader`] switches to the leader for another try.
    pub async fn import_backup(
        &mut self,
        parts: impl tokio_stream::Stream<Item = v1::ExportChunk> + Send + 'static,
    ) -> Result<Response<v1::Job>, Status> {
        self.client.clone().import_backup(parts).await
    }

    /// Switches to the leader a refusal named; false when it named none (or this one).
    pub fn follow_leader(&mut self, status: &Status) -> bool {
        let leader = status
            .metadata()
            .get(LEADER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match leader {
            Some(l) if l != self.current => self.switch(&l),
            _ => false,
        }
    }
}
