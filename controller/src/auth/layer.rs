//! The tower layer in front of every gRPC service: finds the call's [`Rule`](super::Rule),
//! authenticates the token or worker session it needs, refuses what the table does not allow,
//! hands the identity to the handler (request extensions), bounds unary calls by the request
//! timeout, and writes the audit trail.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use ferry_model::access::Grant;
use ferry_model::now_ms;
use futures::Future;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use super::{Caller, Need, Rule, WorkerIdentity, check_caller};
use crate::audit::{self, AuditRecord};
use crate::context::Context;
use crate::tokens::{self, Refused};

/// A valid worker join token (request extension of `Register`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub name: String,
    pub cluster: String,
}

/// Where a handler notes what an audited call is about (request extension).
#[derive(Debug, Clone, Default)]
pub struct AuditTarget(Arc<Mutex<(String, String)>>);

impl AuditTarget {
    /// Notes the team and the target (`backup shop-2026…`).
    pub fn set(&self, team: &str, target: String) {
        if let Ok(mut t) = self.0.lock() {
            *t = (team.to_owned(), target);
        }
    }

    pub(crate) fn get(&self) -> (String, String) {
        self.0.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// The layer; see the module doc.
#[derive(Clone)]
pub struct AuthLayer {
    ctx: Arc<Context>,
}

impl AuthLayer {
    /// A layer that authorizes against `ctx`'s store and worker sessions.
    pub fn new(ctx: Arc<Context>) -> Self {
        AuthLayer { ctx }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// The service the layer wraps around the router.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    ctx: Arc<Context>,
}

type Response = http::Response<Body>;

impl<S> Service<http::Request<Body>> for Auth<S>
where
    S: Service<http::Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone is not ready; the one that was polled ready serves this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let ctx = self.ctx.clone();
        Box::pin(authorize(ctx, inner, req))
    }
}

fn peer(req: &http::Request<Body>) -> String {
    let ext = req.extensions();
    let addr: Option<SocketAddr> = ext
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<tonic::transport::server::TlsConnectInfo<
                    tonic::transport::server::TcpConnectInfo,
                >>()
                .and_then(|i| i.get_ref().remote_addr())
        });
    addr.map(|a| a.to_string()).unwrap_or_default()
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = header(headers, "authorization")?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

fn refusal(status: Status) -> Response {
    status.into_http()
}

/// The gRPC status a response carries in its headers (a call that failed before any message);
/// `None`: the call went on (its status, if not OK, is in the trailers).
fn status_of(resp: &Response) -> Option<(tonic::Code, String)> {
    let code = resp.headers().get("grpc-status")?.to_str().ok()?;
    let code = tonic::Code::from(code.parse::<i32>().ok()?);
    let message = resp
        .headers()
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, message))
}

/// `grpc-message` is percent-encoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the audit entry of a call says about the caller.
#[derive(Default)]
struct Who {
    token: String,
    team: String,
    role: String,
}

async fn authorize<S>(
    ctx: Arc<Context>,
    mut inner: S,
    mut req: http::Request<Body>,
) -> Result<Response, S::Error>
where
    S: Service<http::Request<Body>, Response = Response>,
{
    let path = req.uri().path().to_owned();
    let Some(rule) = super::rule(&path) else {
        return Ok(refusal(Status::permission_denied(format!(
            "no such call {path}"
        ))));
    };
    let peer = peer(&req);
    let found = identify(&ctx, rule, req.headers()).await;
    let who = match found {
        Ok((who, identity)) => {
            let ext = req.extensions_mut();
            match identity {
                Identity::None => {}
                Identity::Caller(c) => {
                    ext.insert(c);
                }
                Identity::Join(j) => {
                    ext.insert(j);
                }
                Identity::Worker(w) => {
                    ext.insert(w);
                }
            }
            who
        }
        Err((who, status)) => {
            if rule.need != Need::Open && rule.service != "open" {
                let entry = AuditRecord {
                    at_ms: now_ms(),
                    token: who.token,
                    team: who.team,
                    role: who.role,
                    call: rule.method.to_owned(),
                    target: String::new(),
                    result: format!("{:?}", status.code()),
                    message: status.message().to_owned(),
                    peer,
                };
                audit::record(&ctx, entry).await;
            }
            return Ok(refusal(status));
        }
    };
    let target = rule.audit.then(AuditTarget::default);
    if let Some(t) = &target {
        req.extensions_mut().insert(t.clone());
    }
    let response = if rule.unary {
        match tokio::time::timeout(ctx.settings.request_timeout, inner.call(req)).await {
            Ok(r) => r?,
            Err(_) => refusal(Status::deadline_exceeded(format!(
                "{} took longer than {:?}",
                rule.method, ctx.settings.request_timeout
            ))),
        }
    } else {
        inner.call(req).await?
    };
    if let Some(target) = target {
        let (team, object) = target.get();
        let (result, message) = match status_of(&response) {
            Some((code, message)) if code != tonic::Code::Ok => (format!("{code:?}"), message),
            _ => ("ok".to_owned(), String::new()),
        };
        let entry = AuditRecord {
            at_ms: now_ms(),
            token: who.token,
            team: if team.is_empty() { who.team } else { team },
            role: who.role,
            call: rule.method.to_owned(),
            target: object,
            result,
            message,
            peer,
        };
        audit::record(&ctx, entry).await;
    }
    Ok(response)
}

/// What the layer hands to handlers.
enum Identity {
    None,
    Caller(Caller),
    Join(JoinToken),
    Worker(WorkerIdentity),
}

/// Authenticates what the rule needs.
async fn identify(
    ctx: &Context,
    rule: Rule,
    headers: &http::HeaderMap,
) -> Result<(Who, Identity), (Who, Status)> {
    let anonymous = |s: Status| (Who::default(), s);
    match rule.need {
        Need::Open => Ok((Who::default(), Identity::None)),
        Need::Caller(role, reach) => {
            let record = token(ctx, headers).await.map_err(anonymous)?;
            let (team, who_role) = match &record.grant {
                Grant::Caller { team, role } => (team.clone(), role.to_string()),
                Grant::Worker { .. } => (None, "worker".to_owned()),
            };
            let who = Who {
                token: record.name.clone(),
                team: team.clone().unwrap_or_default(),
                role: who_role,
            };
            if let Err(s) = check_caller(&record.name, &record.grant, role, reach, rule.method) {
                return Err((who, s));
            }
            let Grant::Caller { team, role } = record.grant else {
                unreachable!("check_caller refuses worker tokens");
            };
            let caller = Caller {
                token: record.name,
                team,
                role,
                expires_at_ms: record.expires_at_ms,
            };
            Ok((who, Identity::Caller(caller)))
        }
        Need::Join => {
            let record = token(ctx, headers).await.map_err(anonymous)?;
            let Grant::Worker { cluster } = record.grant else {
                return Err(anonymous(Status::permission_denied(format!(
                    "token {:?} is not a worker join token (create one with `ferry token create NAME --worker --cluster C`)",
                    record.name
                ))));
            };
            let join = JoinToken {
                name: record.name,
                cluster,
            };
            Ok((Who::default(), Identity::Join(join)))
        }
        Need::Session { recheck_token } => {
            let id = header(headers, ferry_proto::WORKER_ID_HEADER).unwrap_or_default();
            let key = header(headers, ferry_proto::SESSION_HEADER).unwrap_or_default();
            let session = ctx
                .workers
                .authenticate(id, key)
                .await
                .map_err(|e| anonymous(Status::unavailable(e.to_string())))?
                .ok_or_else(|| {
                    anonymous(Status::unauthenticated(format!(
                        "no live session {id:?} with this key; register again"
                    )))
                })?;
            if recheck_token {
                // The join token must still be valid and be the one that opened the session:
                // revoking it ends the session here, at the next heartbeat.
                let still = match token(ctx, headers).await {
                    Ok(t) => t.name == session.token,
                    Err(_) => false,
                };
                if !still {
                    tracing::warn!(worker = %session.worker_id, token = %session.token,
                        "join token revoked or expired: ending the worker's session");
                    let _ = ctx.workers.end_session(&session.worker_id).await;
                    ctx.notify();
                    return Err(anonymous(Status::unauthenticated(format!(
                        "the join token {:?} of session {} is no longer valid",
                        session.token, session.worker_id
                    ))));
                }
            }
            Ok((Who::default(), Identity::Worker(session)))
        }
    }
}

/// The valid token a request carries.
async fn token(ctx: &Context, headers: &http::HeaderMap) -> Result<tokens::TokenRecord, Status> {
    let Some(secret) = bearer(headers) else {
        return Err(Status::unauthenticated(Refused::Missing.to_string()));
    };
    match tokens::verify(&*ctx.store, secret).await {
        Ok(Ok(record)) => Ok(record),
        Ok(Err(refused)) => Err(Status::unauthenticated(refused.to_string())),
        Err(e) => Err(Status::unavailable(e.to_string())),
    }
}

/// The identity the layer found, for handlers.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("the call was not authorized (no caller)"))
}

/// The worker session the layer found, for handlers.
pub fn worker<T>(req: &tonic::Request<T>) -> Result<WorkerIdentity, Status> {
    req.extensions()
        .get::<WorkerIdentity>()
        .cloned()
        .ok_or_else(|| Status::internal("the call was not authorized (no session)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b%3A%25"), "a b:%");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }
}
