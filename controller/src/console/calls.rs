//! The console's only way to the domain: every page and form is one or more calls of the gRPC
//! API's own handlers ([`ControlApi`]), made in process. Each call is authorized first by the
//! same table and the same pure decision as a gRPC call (`auth::rule` of the RPC's path, then
//! `auth::check_caller`), carries the caller the way the auth layer hands it to handlers (so the
//! team comes from the token and another team's objects answer not found), is bounded by the
//! request timeout, and is written to the audit trail like a gRPC call (peer `ADDR (console)`).

use std::future::Future;
use std::time::Duration;

use ferry_model::access::Grant;
use ferry_model::now_ms;
use tonic::{Request, Response, Status};

use crate::api::control::ControlApi;
use crate::audit::{self, AuditRecord};
use crate::auth::layer::AuditTarget;
use crate::auth::{self, Caller, Need};
use crate::context::Context;

/// The service every console call is a method of.
pub const SERVICE: &str = "ferry.v1.ControlService";

/// Whether `caller` may make RPC `method`: the gRPC table's rule and decision, nothing else.
/// Unknown methods and rules that are not for callers are refused.
pub fn allows(caller: &Caller, method: &str) -> Result<auth::Rule, Status> {
    let rule = auth::rule(&format!("/{SERVICE}/{method}"))
        .ok_or_else(|| Status::permission_denied(format!("no such call {method}")))?;
    let Need::Caller(role, reach) = rule.need else {
        return Err(Status::permission_denied(format!(
            "{method} is not a call for caller tokens"
        )));
    };
    let grant = Grant::Caller {
        team: caller.team.clone(),
        role: caller.role,
    };
    auth::check_caller(&caller.token, &grant, role, reach, method)?;
    Ok(rule)
}

/// True when the caller may make `method` (to show or hide a button).
pub fn can(caller: &Caller, method: &str) -> bool {
    allows(caller, method).is_ok()
}

/// Who is asking, and from where.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub caller: Caller,
    /// The team the pages are about as requested (empty: the token's own, or `default` for a
    /// token of every team); the API resolves it exactly as for a CLI call's `--team`.
    pub team: String,
    /// The remote address, for the audit trail.
    pub peer: String,
    /// The session's CSRF token; `None` when the request carried a bearer token instead of a
    /// session cookie (a browser never sends that header on its own, so no CSRF is possible).
    pub csrf: Option<String>,
}

fn role_name(caller: &Caller) -> String {
    caller.role.to_string()
}

/// Makes one API call as `visitor`: authorize, call the handler, audit.
pub async fn call<'a, M, R, Fut>(
    ctx: &Context,
    api: &'a ControlApi,
    visitor: &Visitor,
    method: &'static str,
    msg: M,
    handler: impl FnOnce(&'a ControlApi, Request<M>) -> Fut,
) -> Result<R, Status>
where
    Fut: Future<Output = Result<Response<R>, Status>> + 'a,
{
    let caller = &visitor.caller;
    let audit_entry = |team: String, target: String, result: String, message: String| AuditRecord {
        at_ms: now_ms(),
        token: caller.token.clone(),
        team: if team.is_empty() {
            caller.team.clone().unwrap_or_default()
        } else {
            team
        },
        role: role_name(caller),
        call: method.to_owned(),
        target,
        result,
        message,
        peer: format!("{} (console)", visitor.peer),
    };
    let rule = match allows(caller, method) {
        Ok(rule) => rule,
        Err(status) => {
            audit::record(
                ctx,
                audit_entry(
                    String::new(),
                    String::new(),
                    format!("{:?}", status.code()),
                    status.message().to_owned(),
                ),
            )
            .await;
            return Err(status);
        }
    };
    let mut req = Request::new(msg);
    req.extensions_mut().insert(caller.clone());
    let target = rule.audit.then(AuditTarget::default);
    if let Some(t) = &target {
        req.extensions_mut().insert(t.clone());
    }
    let result = if rule.unary {
        bounded(ctx.settings.request_timeout, method, handler(api, req)).await
    } else {
        handler(api, req).await
    };
    if let Some(target) = target {
        let (team, object) = target.get();
        let (code, message) = match &result {
            Ok(_) => ("ok".to_owned(), String::new()),
            Err(s) => (format!("{:?}", s.code()), s.message().to_owned()),
        };
        audit::record(ctx, audit_entry(team, object, code, message)).await;
    }
    result.map(Response::into_inner)
}

async fn bounded<R>(
    limit: Duration,
    method: &str,
    fut: impl Future<Output = Result<Response<R>, Status>>,
) -> Result<Response<R>, Status> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{method} took longer than {limit:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::access::Role;

    fn caller(team: Option<&str>, role: Role) -> Caller {
        Caller {
            token: "t".into(),
            team: team.map(str::to_owned),
            role,
            expires_at_ms: None,
        }
    }

    /// Every console action and the RPC it is: the buttons follow the gRPC table.
    const ACTIONS: &[(&str, Role)] = &[
        ("ListApps", Role::Viewer),
        ("ListBackups", Role::Viewer),
        ("GetBackup", Role::Viewer),
        ("WatchJob", Role::Viewer),
        ("ListSchedules", Role::Viewer),
        ("ListWorkers", Role::Viewer),
        ("ListClusters", Role::Viewer),
        ("ListStorage", Role::Viewer),
        ("CreateBackup", Role::Operator),
        ("CancelBackup", Role::Operator),
        ("CancelRestore", Role::Operator),
        ("CreateRestore", Role::Operator),
        ("CreateSchedule", Role::Operator),
        ("PauseSchedule", Role::Operator),
        ("ResumeSchedule", Role::Operator),
    ];

    #[test]
    fn console_actions_need_what_their_rpc_needs() {
        for (method, needed) in ACTIONS {
            for role in [Role::Viewer, Role::Operator, Role::Admin] {
                assert_eq!(
                    can(&caller(Some("a"), role), method),
                    role >= *needed,
                    "{method} as {role}"
                );
            }
        }
    }

    #[test]
    fn refusals_name_the_role_needed() {
        let s = allows(&caller(Some("a"), Role::Viewer), "CreateBackup").unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("operator"), "{}", s.message());
        // Installation-wide calls need a token of every team, as over gRPC.
        assert!(!can(&caller(Some("a"), Role::Admin), "AddStorage"));
        assert!(can(&caller(None, Role::Admin), "AddStorage"));
    }

    #[test]
    fn unknown_and_worker_calls_are_refused() {
        let admin = caller(None, Role::Admin);
        assert!(!can(&admin, "DropEverything"));
        assert!(!can(&admin, "Register"));
        assert!(!can(&admin, "Heartbeat"));
    }
}
