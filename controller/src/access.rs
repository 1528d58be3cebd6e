//! Tokens and the audit trail as the API offers them: who may create, see and revoke which
//! tokens, and whose audit entries a caller may read. The decisions come from `crate::auth`.

use std::time::Duration;

use ferry_model::access::{Grant, Role};
use ferry_model::names::check_name;
use ferry_model::now_ms;
use ferry_proto::v1;

use crate::audit::{self, AuditFilter};
use crate::auth::{Action, Caller};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::tokens::{self, TokenRecord};

/// The caller's token as `whoami` shows it.
pub fn identity(caller: &Caller) -> v1::Identity {
    v1::Identity {
        token: caller.token.clone(),
        team: caller.team.clone().unwrap_or_default(),
        all_teams: caller.team.is_none(),
        role: caller.role.to_string(),
        expires_at_ms: caller.expires_at_ms.unwrap_or(0),
    }
}

fn token_view(t: &TokenRecord) -> v1::Token {
    let (kind, team, all_teams, role, cluster) = match &t.grant {
        Grant::Caller { team, role } => (
            "caller",
            team.clone().unwrap_or_default(),
            team.is_none(),
            role.to_string(),
            String::new(),
        ),
        Grant::Worker { cluster } => (
            "worker",
            String::new(),
            false,
            String::new(),
            cluster.clone(),
        ),
    };
    v1::Token {
        name: t.name.clone(),
        kind: kind.into(),
        team,
        all_teams,
        role,
        cluster,
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms.unwrap_or(0),
        created_by: t.created_by.clone(),
    }
}

/// Whether a team-bound caller may see or revoke a token: only caller tokens of its own team.
fn within_team(caller: &Caller, t: &TokenRecord) -> bool {
    match (&caller.team, &t.grant) {
        (None, _) => true,
        (Some(own), Grant::Caller { team: Some(t), .. }) => own == t,
        _ => false,
    }
}

/// `token create`: a caller token of the caller's team (or, for a token of every team, of any
/// team, every team, or a worker join token).
pub async fn create_token(
    ctx: &Context,
    caller: &Caller,
    req: v1::CreateTokenRequest,
) -> Result<v1::CreatedToken> {
    check_name("token name", &req.name)?;
    let ttl = match req.ttl_seconds {
        0 => None,
        s if s > 0 => Some(Duration::from_secs(s as u64)),
        _ => return Err(Error::InvalidArgument("--ttl must be positive".into())),
    };
    let grant = if req.worker {
        caller.require(Action::BeyondTeam)?;
        check_name("cluster name", &req.cluster)?;
        Grant::Worker {
            cluster: req.cluster,
        }
    } else {
        let role: Role = req
            .role
            .parse()
            .map_err(|e: ferry_model::ModelError| Error::InvalidArgument(e.to_string()))?;
        let team = if req.all_teams {
            caller.require(Action::BeyondTeam)?;
            None
        } else if req.team.is_empty() && caller.team.is_none() {
            return Err(Error::InvalidArgument(
                "name the token's team with --team, or give --all-teams".into(),
            ));
        } else {
            if !req.team.is_empty() {
                check_name("team name", &req.team)?;
            }
            Some(caller.team(&req.team)?)
        };
        Grant::Caller { team, role }
    };
    let (record, secret) =
        tokens::create(&*ctx.store, &req.name, grant, ttl, &caller.token).await?;
    tracing::info!(token = %record.name, grant = %record.grant.describe(), by = %caller.token,
        "token created");
    Ok(v1::CreatedToken {
        token: Some(token_view(&record)),
        secret,
    })
}

/// `token list`: the caller's team's caller tokens; every token for a token of every team.
pub async fn list_tokens(ctx: &Context, caller: &Caller, team: &str) -> Result<Vec<v1::Token>> {
    let filter = caller.team_filter(team)?;
    let now = now_ms();
    Ok(tokens::list(&*ctx.store)
        .await?
        .iter()
        .filter(|t| within_team(caller, t))
        .filter(|t| match (&filter, &t.grant) {
            (None, _) => true,
            (Some(f), Grant::Caller { team: Some(t), .. }) => f == t,
            _ => false,
        })
        .map(|t| {
            let mut v = token_view(t);
            if t.expired(now) {
                v.role = format!("{} (expired)", v.role);
            }
            v
        })
        .collect())
}

/// `token revoke`: another team's token reads like a missing one.
pub async fn revoke_token(ctx: &Context, caller: &Caller, name: &str) -> Result<()> {
    check_name("token name", name)?;
    let missing = || Error::NotFound(format!("token {name:?} not found"));
    let record = tokens::get(&*ctx.store, name).await?.ok_or_else(missing)?;
    if !within_team(caller, &record) {
        return Err(missing());
    }
    tokens::revoke(&*ctx.store, name).await?;
    tracing::info!(token = %name, by = %caller.token, "token revoked");
    if let Grant::Worker { .. } = record.grant {
        // Its workers' sessions end at their next heartbeat (the layer re-checks the token).
        ctx.notify();
    }
    Ok(())
}

/// `audit list`: the caller's team's entries; every team's for a token of every team.
pub async fn list_audit(
    ctx: &Context,
    caller: &Caller,
    req: v1::ListAuditRequest,
) -> Result<Vec<v1::AuditEntry>> {
    let filter = AuditFilter {
        team: caller.team_filter(&req.team)?,
        since_ms: req.since_ms,
        token: (!req.token.is_empty()).then_some(req.token),
        limit: if req.limit == 0 {
            1000
        } else {
            req.limit as usize
        },
    };
    Ok(audit::list(&*ctx.store, &filter)
        .await?
        .into_iter()
        .map(|e| v1::AuditEntry {
            at_ms: e.at_ms,
            token: e.token,
            team: e.team,
            role: e.role,
            call: e.call,
            target: e.target,
            result: e.result,
            message: e.message,
            peer: e.peer,
        })
        .collect())
}
