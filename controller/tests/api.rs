//! The API in process: the real services behind the real authorization layer, over a tonic
//! channel on an in-memory duplex stream, on an embedded store. Decisions that need neither a
//! worker process nor a network are tested here, quickly.

use std::sync::Arc;
use std::time::Duration;

use ferry_controller::auth::layer::AuthLayer;
use ferry_controller::context::{Context, Settings};
use ferry_controller::election::Role;
use ferry_controller::store::embedded::EmbeddedStore;
use ferry_controller::timing::Timings;
use ferry_proto::v1;
use ferry_proto::v1::control_service_client::ControlServiceClient;
use ferry_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::{Channel, Endpoint, Server};

/// An API served in this process; the admin token of its first start.
struct Api {
    channel: Channel,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn serve() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).unwrap());
    let admin_file = ferry_controller::tokens::bootstrap(&*store, dir.path())
        .await
        .unwrap()
        .unwrap();
    let (_, role) = tokio::sync::watch::channel(Role::Leader);
    let (metrics, _) = ferry_controller::metrics::Metrics::new();
    let ctx = Context::new(
        store,
        Timings::new(Duration::from_millis(300)),
        Settings::default(),
        role,
        metrics,
    );
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let router = Server::builder()
        .layer(AuthLayer::new(ctx.clone()))
        .add_service(ferry_controller::api::control_service(ctx.clone()))
        .add_service(ferry_controller::api::worker_service(ctx.clone()));
    tokio::spawn(async move {
        let incoming = tokio_stream::once(Ok::<_, std::io::Error>(server_io));
        let _ = router.serve_with_incoming(incoming).await;
    });
    let mut client_io = Some(client_io);
    let channel = Endpoint::from_static("http://in-process")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let io = client_io.take();
            async move {
                io.map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("one connection only"))
            }
        }))
        .await
        .unwrap();
    Api {
        channel,
        admin: std::fs::read_to_string(admin_file)
            .unwrap()
            .trim()
            .to_owned(),
        _dir: dir,
    }
}

fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

impl Api {
    fn control(&self) -> ControlServiceClient<Channel> {
        ControlServiceClient::new(self.channel.clone())
    }

    async fn token(&self, name: &str, team: &str, role: &str) -> String {
        let req = v1::CreateTokenRequest {
            name: name.into(),
            team: team.into(),
            role: role.into(),
            ..Default::default()
        };
        self.control()
            .create_token(with_token(&self.admin, req))
            .await
            .unwrap()
            .into_inner()
            .secret
    }
}

const APP: &str = "name: shop\ncomponents:\n  - name: web\n    config: {a: 1}\n";

#[tokio::test]
async fn roles_and_teams_are_decided_by_the_layer() {
    let api = serve().await;
    let viewer = api.token("a-view", "a", "viewer").await;
    let admin_a = api.token("a-admin", "a", "admin").await;
    let mut c = api.control();

    // No token, a bad one.
    let e = c
        .list_apps(v1::ListAppsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = c
        .list_apps(with_token("fry_x_00", v1::ListAppsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // A team admin applies into its own team whatever the request names... unless it names
    // another team, which reads as not found.
    let apply = |team: &str| v1::ApplyAppRequest {
        team: team.into(),
        spec_yaml: APP.into(),
    };
    let app = c
        .apply_app(with_token(&admin_a, apply("")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(app.team, "a");
    let e = c
        .apply_app(with_token(&admin_a, apply("b")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // A viewer reads but cannot back up; the refusal names the role needed.
    let apps = c
        .list_apps(with_token(&viewer, v1::ListAppsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert_eq!(apps.len(), 1);
    let e = c
        .create_backup(with_token(
            &viewer,
            v1::CreateBackupRequest {
                app: "shop".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("operator"), "{}", e.message());

    // The installation's admin reads team a when it names it, and the default team otherwise.
    let mine = c
        .list_apps(with_token(
            &api.admin,
            v1::ListAppsRequest { team: "a".into() },
        ))
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert_eq!(mine.len(), 1);
    let default = c
        .list_apps(with_token(&api.admin, v1::ListAppsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert!(default.is_empty());

    // Revocation is immediate.
    c.revoke_token(with_token(
        &api.admin,
        v1::RevokeTokenRequest {
            name: "a-view".into(),
        },
    ))
    .await
    .unwrap();
    let e = c
        .list_apps(with_token(&viewer, v1::ListAppsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // Every call above that changed something, and every refusal, is in the audit trail.
    let entries = c
        .list_audit(with_token(&api.admin, v1::ListAuditRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let has = |token: &str, call: &str, result: &str| {
        entries
            .iter()
            .any(|e| e.token == token && e.call == call && e.result == result)
    };
    assert!(has("a-admin", "ApplyApp", "ok"));
    assert!(has("a-admin", "ApplyApp", "NotFound"));
    assert!(has("a-view", "CreateBackup", "PermissionDenied"));
    assert!(has("", "ListApps", "Unauthenticated"));
    assert!(has("admin", "RevokeToken", "ok"));
}

#[tokio::test]
async fn workers_need_a_join_token_of_their_cluster_and_their_session() {
    let api = serve().await;
    let mut c = api.control();
    let join = c
        .create_token(with_token(
            &api.admin,
            v1::CreateTokenRequest {
                name: "join-a".into(),
                worker: true,
                cluster: "dc-a".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let mut w = WorkerServiceClient::new(api.channel.clone());
    let register = |cluster: &str| v1::RegisterRequest {
        cluster: cluster.into(),
        node: "n1".into(),
        max_shards: 1,
        ..Default::default()
    };
    let e = w
        .register(with_token(&join, register("dc-b")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = w
        .register(with_token(&api.admin, register("dc-a")))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::PermissionDenied,
        "a caller token is no join token"
    );
    let session = w
        .register(with_token(&join, register("dc-a")))
        .await
        .unwrap()
        .into_inner();
    let beat = |id: &str, key: &str| {
        let mut req = with_token(
            &join,
            v1::HeartbeatRequest {
                worker_id: id.into(),
                running_shards: 0,
            },
        );
        req.metadata_mut()
            .insert(ferry_proto::WORKER_ID_HEADER, id.parse().unwrap());
        req.metadata_mut()
            .insert(ferry_proto::SESSION_HEADER, key.parse().unwrap());
        req
    };
    assert!(
        w.heartbeat(beat(&session.worker_id, &session.session_key))
            .await
            .unwrap()
            .into_inner()
            .known
    );
    let e = w
        .heartbeat(beat(&session.worker_id, "fry_session_0"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // Revoking the join token ends the session at its next heartbeat.
    c.revoke_token(with_token(
        &api.admin,
        v1::RevokeTokenRequest {
            name: "join-a".into(),
        },
    ))
    .await
    .unwrap();
    let e = w
        .heartbeat(beat(&session.worker_id, &session.session_key))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let workers = c
        .list_workers(with_token(&api.admin, v1::ListWorkersRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(workers.is_empty(), "{workers:?}");
}
