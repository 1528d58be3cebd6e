//! The web console (DESIGN §11): server-rendered pages over the same API the CLI uses, served by
//! `ferry-controller --http-listen ADDR` with the API's TLS, tokens and roles.
//!
//! - [`calls`]: the only way to the domain — the gRPC handlers called in process, authorized by
//!   the gRPC table's own decision and audited like gRPC calls.
//! - [`session`]: sign-in with a token → an HttpOnly session cookie; CSRF tokens of forms.
//! - [`pages`]: one handler per page and form; [`live`]: progress as server-sent events.
//! - [`views`]: the HTML (maud); `assets/`: the CSS and the little JavaScript, embedded.
//! - [`health`], [`filters`], [`rewrites`]: the pure decisions pages show (health verdict,
//!   backup filters, proposed restore rewrites).
//!
//! A request is authenticated by a session cookie or an `Authorization: Bearer` token; without
//! either, every page answers the sign-in form (401) and nothing else. POSTs with a session must
//! carry the session's CSRF token (403 otherwise).

pub mod calls;
pub mod filters;
pub mod health;
pub mod live;
pub mod pages;
pub mod rewrites;
pub mod session;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_model::access::Grant;
use ferry_model::now_ms;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::control::ControlApi;
use crate::auth::Caller;
use crate::context::Context;
use crate::tokens;
use calls::Visitor;
use session::Sessions;

/// Where the one-machine install serves the console when nothing says otherwise.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7421";
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// A client must finish its TLS handshake and send its request head within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const CSS: &str = include_str!("console/assets/console.css");
const JS: &str = include_str!("console/assets/console.js");

/// The console's shared state.
pub struct Console {
    pub ctx: Arc<Context>,
    pub api: ControlApi,
    pub sessions: Sessions,
    /// Cookies are `Secure` when the console speaks TLS.
    pub tls: bool,
    /// `--trace-url-template`, e.g. `http://jaeger:16686/trace/{trace_id}`.
    pub trace_url_template: Option<String>,
}

/// The remote address of a connection (request extension).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A page that could not be served: its status and what to tell the visitor.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// 400 with a reason.
    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The HTTP status of an API refusal.
pub fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        let status = http_status(s.code());
        let message = match s.code() {
            tonic::Code::Unavailable
                if s.metadata().get(crate::context::LEADER_HEADER).is_some() =>
            {
                let leader = s
                    .metadata()
                    .get(crate::context::LEADER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                format!(
                    "{} (this controller is a follower; changes go through the leader at {leader})",
                    s.message()
                )
            }
            _ => s.message().to_owned(),
        };
        Failure { status, message }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::BAD_REQUEST => "Cannot do that",
            StatusCode::CONFLICT => "Cannot do that now",
            _ => "Something went wrong",
        };
        (self.status, html(views::error(title, &self.message))).into_response()
    }
}

/// An HTML response.
pub fn html(markup: maud::Markup) -> axum::response::Html<String> {
    axum::response::Html(markup.into_string())
}

/// The visitor of a request, or why there is none (the sign-in page answers).
pub struct Unauthenticated {
    pub next: String,
    pub message: Option<String>,
    /// The console speaks TLS (the sign-in form's cookie is then `Secure`).
    pub secure: bool,
}

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        pages::signin_page(
            StatusCode::UNAUTHORIZED,
            &self.next,
            self.message.as_deref(),
            self.secure,
        )
    }
}

fn peer_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<Peer>()
        .map(|p| p.0.to_string())
        .unwrap_or_default()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// The caller a token record grants; worker join tokens cannot use the console.
fn caller_of(record: tokens::TokenRecord) -> Result<Caller, String> {
    match record.grant {
        Grant::Caller { team, role } => Ok(Caller {
            token: record.name,
            team,
            role,
            expires_at_ms: record.expires_at_ms,
        }),
        Grant::Worker { .. } => Err(format!(
            "token {:?} is a worker join token: it cannot sign in",
            record.name
        )),
    }
}

impl Console {
    /// The session id a request's cookie names, if any.
    pub fn session_id(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| session::cookie(h, session::COOKIE))
            .map(str::to_owned)
    }

    /// Authenticates a request: a bearer token, else a live session whose token is still valid
    /// and still the same token.
    pub async fn authenticate(&self, parts: &Parts) -> Result<Visitor, Unauthenticated> {
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let refuse = |message: Option<String>| Unauthenticated {
            next: next.clone(),
            message,
            secure: self.tls,
        };
        let peer = peer_of(parts);
        if let Some(secret) = bearer(&parts.headers) {
            #[derive(serde::Deserialize)]
            struct TeamQuery {
                #[serde(default)]
                team: String,
            }
            let team = parts
                .uri
                .query()
                .and_then(|q| serde_urlencoded::from_str::<TeamQuery>(q).ok())
                .map(|q| q.team)
                .unwrap_or_default();
            let record = match tokens::verify(&*self.ctx.store, secret).await {
                Ok(Ok(r)) => r,
                Ok(Err(refused)) => return Err(refuse(Some(refused.to_string()))),
                Err(e) => return Err(refuse(Some(format!("the store did not answer: {e}")))),
            };
            let caller = caller_of(record).map_err(|m| refuse(Some(m)))?;
            return Ok(Visitor {
                caller,
                team,
                peer,
                csrf: None,
            });
        }
        let Some(id) = Self::session_id(&parts.headers) else {
            return Err(refuse(None));
        };
        let now = now_ms();
        let Some(s) = self.sessions.get(&id, now) else {
            return Err(refuse(Some("your session ended; sign in again".into())));
        };
        let record = match tokens::get(&*self.ctx.store, &s.token_name).await {
            Ok(Some(r)) if r.sha256 == s.token_sha256 && !r.expired(now) => r,
            Ok(_) => {
                self.sessions.close(&id);
                return Err(refuse(Some(
                    "the token of your session was revoked or expired; sign in again".into(),
                )));
            }
            Err(e) => return Err(refuse(Some(format!("the store did not answer: {e}")))),
        };
        let caller = caller_of(record).map_err(|m| refuse(Some(m)))?;
        Ok(Visitor {
            caller,
            team: s.team,
            peer,
            csrf: Some(s.csrf),
        })
    }

    /// The trace link of a trace id, if a template is configured.
    pub fn trace_url(&self, trace_id: &str) -> Option<String> {
        trace_url(self.trace_url_template.as_deref()?, trace_id)
    }
}

/// `template` with `{trace_id}` replaced; `None` for an empty id or a template without one.
pub fn trace_url(template: &str, trace_id: &str) -> Option<String> {
    if trace_id.is_empty()
        || !template.contains("{trace_id}")
        || !trace_id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    Some(template.replace("{trace_id}", trace_id))
}

impl FromRequestParts<Arc<Console>> for Visitor {
    type Rejection = Unauthenticated;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        console.authenticate(parts).await
    }
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        JS,
    )
}

/// Headers every answer carries: no framing, no sniffing, scripts and styles from here only, and
/// pages (which hold a team's data) never cached.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
    resp
}

/// Every route of the console.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/signin", get(pages::signin_form).post(pages::signin))
        .route("/signout", post(pages::signout))
        .route("/team", post(pages::switch_team))
        .route("/backups", get(pages::backups).post(pages::create_backup))
        .route("/backups/{id}", get(pages::backup))
        .route(
            "/backups/{id}/restore",
            get(pages::restore_form).post(pages::create_restore),
        )
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/cancel", post(pages::cancel))
        .route("/jobs/{id}/events", get(live::events))
        .route(
            "/schedules",
            get(pages::schedules).post(pages::create_schedule),
        )
        .route("/schedules/{name}/{action}", post(pages::schedule_action))
        .route("/workers", get(pages::workers))
        .route("/storage", get(pages::storage))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

async fn not_found(State(_): State<Arc<Console>>) -> Failure {
    Failure::new(StatusCode::NOT_FOUND, "There is no such page.")
}

/// Where and how to serve the console.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// The API's TLS (the same certificate; the same client CA when one is required).
    pub tls: Option<crate::config::ServerTls>,
    pub trace_url_template: Option<String>,
    /// A default address (the one-machine install's): when it is taken, the controller warns
    /// and runs without a console instead of failing.
    pub best_effort: bool,
}

/// The rustls settings of the console: the API's certificate (and client CA), HTTP/1.1.
fn tls_config(tls: &crate::config::ServerTls) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .with_context(|| format!("reading the TLS certificate {}", tls.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("reading the TLS key {}", tls.key.display()))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading the client CA {}", ca.display()))?
            {
                roots.add(cert?)?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Starts serving the console; returns its address and task, or `None` when a best-effort
/// default address was taken.
pub async fn serve(
    ctx: Arc<Context>,
    config: ConsoleConfig,
    cancel: CancellationToken,
) -> anyhow::Result<Option<(SocketAddr, JoinHandle<()>)>> {
    let acceptor = match &config.tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(tls)?))),
        None => None,
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) if config.best_effort => {
            tracing::warn!(listen = %config.listen, error = %e,
                "the web console's default address is taken: running without a console (give --http-listen ADDR to choose another)");
            return Ok(None);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("serving the console on {}", config.listen));
        }
    };
    let addr = listener.local_addr()?;
    let console = Arc::new(Console {
        api: ControlApi { ctx: ctx.clone() },
        ctx,
        sessions: Sessions::default(),
        tls: acceptor.is_some(),
        trace_url_template: config.trace_url_template,
    });
    let app = router(console);
    let task = tokio::spawn(accept_loop(listener, acceptor, app, cancel));
    Ok(Some((addr, task)))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    cancel: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "console: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (app, acceptor, cancel) = (app.clone(), acceptor.clone(), cancel.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = tower::ServiceExt::map_request(
                app,
                move |mut r: axum::http::Request<hyper::body::Incoming>| {
                    r.extensions_mut().insert(Peer(peer));
                    r
                },
            );
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(tls, svc, cancel).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "console: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "console: TLS handshake timed out"),
                    }
                }
                None => connection(tcp, svc, cancel).await,
            }
        });
    }
}

async fn connection<I, S>(io: I, svc: S, cancel: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(
            hyper_util::rt::TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(svc),
        );
    tokio::select! {
        r = conn => if let Err(e) = r { tracing::debug!(error = %e, "console: connection ended"); },
        _ = cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_links_fill_the_template_with_hex_ids_only() {
        let t = "http://jaeger:16686/trace/{trace_id}";
        assert_eq!(
            trace_url(t, "4bf92f3577b34da6a3ce929d0e0e4736").as_deref(),
            Some("http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_url(t, ""), None);
        assert_eq!(trace_url(t, "x\" onclick=\"y"), None);
        assert_eq!(trace_url("http://jaeger/", "abc"), None);
    }

    #[test]
    fn api_refusals_map_to_http() {
        assert_eq!(http_status(tonic::Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(tonic::Code::PermissionDenied),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            http_status(tonic::Code::InvalidArgument),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            http_status(tonic::Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer fry_x_1"),
        );
        assert_eq!(bearer(&h), Some("fry_x_1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
