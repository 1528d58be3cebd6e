//! Authorization: one table of every RPC and what it needs, and the pure decisions made from it.
//! The tower layer in [`layer`] applies the table to every call before any handler runs; handlers
//! only ask [`Caller::team`] which team a request is about (the team comes from the token, never
//! from the request) and, for the few calls whose need depends on their content (an in-place
//! restore, a migration into another team, a token of another team), [`Caller::require`] with an
//! [`Action`] of the same table.
//!
//! Roles (DESIGN §6): a viewer lists, gets and watches; an operator also backs up, verifies,
//! exports, restores into a new app and manages schedules; an admin also applies and deletes
//! apps, restores in place, deletes and imports backups, migrates and manages tokens. Calls on
//! what every team shares (storage locations, worker join tokens, other teams' tokens) need an
//! admin of every team (the installation's `admin` token is one).

pub mod layer;

use ferry_model::access::{Grant, Role};
use ferry_proto::model::DEFAULT_TEAM;
use tonic::Status;

/// Who may make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone: health checks and reflection.
    Open,
    /// A caller token with at least this role, of the request's team (`Reach::Team`) or of every
    /// team (`Reach::Installation`).
    Caller(Role, Reach),
    /// A worker join token (opening a session).
    Join,
    /// A worker session (its id and key) — and for heartbeats also a join token that is still
    /// valid, so revoking it ends the session.
    Session { recheck_token: bool },
}

/// How far a caller token must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Team,
    Installation,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub service: &'static str,
    pub method: &'static str,
    pub need: Need,
    /// Recorded in the audit trail (every mutating call, and exports, which read everything).
    pub audit: bool,
    /// A unary call, bounded by the request timeout (streams are not).
    pub unary: bool,
}

const CONTROL: &str = "ferry.v1.ControlService";
const WORKER: &str = "ferry.v1.WorkerService";

const fn caller(method: &'static str, role: Role, audit: bool) -> Rule {
    Rule {
        service: CONTROL,
        method,
        need: Need::Caller(role, Reach::Team),
        audit,
        unary: true,
    }
}

const fn installation(method: &'static str, role: Role, audit: bool) -> Rule {
    Rule {
        service: CONTROL,
        method,
        need: Need::Caller(role, Reach::Installation),
        audit,
        unary: true,
    }
}

const fn stream(rule: Rule) -> Rule {
    Rule {
        unary: false,
        ..rule
    }
}

const fn worker(method: &'static str, need: Need, unary: bool) -> Rule {
    Rule {
        service: WORKER,
        method,
        need,
        audit: false,
        unary,
    }
}

use Role::{Admin, Operator, Viewer};

/// Every RPC of the API and what it needs. A call that is not here is refused.
pub const TABLE: &[Rule] = &[
    caller("WhoAmI", Viewer, false),
    caller("ListApps", Viewer, false),
    caller("GetApp", Viewer, false),
    caller("GetRecoveryWindow", Viewer, false),
    caller("ApplyApp", Admin, true),
    caller("DeleteApp", Admin, true),
    caller("ListStorage", Viewer, false),
    installation("AddStorage", Admin, true),
    installation("SyncStorage", Admin, true),
    installation("CollectGarbage", Admin, true),
    installation("SetRecipients", Admin, true),
    installation("ListKeyFiles", Admin, true),
    installation("RewriteKeyFiles", Admin, true),
    installation("AddTrust", Admin, true),
    installation("RemoveTrust", Admin, true),
    caller("ListTrust", Viewer, false),
    caller("ListWorkers", Viewer, false),
    caller("ListClusters", Viewer, false),
    caller("CreateBackup", Operator, true),
    caller("ListBackups", Viewer, false),
    caller("GetBackup", Viewer, false),
    caller("CancelBackup", Operator, true),
    caller("DeleteBackup", Admin, true),
    caller("VerifyBackup", Operator, true),
    stream(caller("ExportBackup", Operator, true)),
    stream(caller("ImportBackup", Admin, true)),
    caller("CreateRestore", Operator, true),
    caller("ListRestores", Viewer, false),
    caller("GetRestore", Viewer, false),
    caller("CancelRestore", Operator, true),
    caller("Migrate", Admin, true),
    caller("CreateSchedule", Operator, true),
    caller("ListSchedules", Viewer, false),
    caller("GetSchedule", Viewer, false),
    caller("PauseSchedule", Operator, true),
    caller("ResumeSchedule", Operator, true),
    caller("DeleteSchedule", Operator, true),
    stream(caller("WatchJob", Viewer, false)),
    caller("CreateToken", Admin, true),
    caller("ListTokens", Admin, false),
    caller("RevokeToken", Admin, true),
    caller("ListAudit", Admin, false),
    worker("Register", Need::Join, true),
    worker(
        "Heartbeat",
        Need::Session {
            recheck_token: true,
        },
        true,
    ),
    worker(
        "Assignments",
        Need::Session {
            recheck_token: false,
        },
        false,
    ),
    worker(
        "ReportProgress",
        Need::Session {
            recheck_token: false,
        },
        true,
    ),
    worker(
        "ReportResult",
        Need::Session {
            recheck_token: false,
        },
        true,
    ),
];

/// Services anyone may call.
const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The rule of a gRPC path (`/ferry.v1.ControlService/CreateBackup`), if the table has one.
pub fn rule(path: &str) -> Option<Rule> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if OPEN_SERVICES.contains(&service) {
        return Some(Rule {
            service: "open",
            method: "open",
            need: Need::Open,
            audit: false,
            unary: false,
        });
    }
    TABLE
        .iter()
        .find(|r| r.service == service && r.method == method)
        .copied()
}

/// Parts of a call whose need depends on what it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `restore create --overwrite`: replaces what an app holds.
    RestoreOverwrite,
    /// A migration into another team.
    MigrateToOtherTeam,
    /// A token, or a listing of tokens or audit entries, beyond the caller's team (worker join
    /// tokens and installation-wide tokens included).
    BeyondTeam,
}

impl Action {
    /// What it needs.
    pub fn need(self) -> (Role, Reach, &'static str) {
        match self {
            Action::RestoreOverwrite => (Admin, Reach::Team, "restore --overwrite"),
            Action::MigrateToOtherTeam => {
                (Admin, Reach::Installation, "a migration into another team")
            }
            Action::BeyondTeam => (
                Admin,
                Reach::Installation,
                "tokens and audit entries beyond one team",
            ),
        }
    }
}

/// Who is calling: a caller token that passed the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (audit, messages).
    pub token: String,
    /// Its team; `None`: every team.
    pub team: Option<String>,
    pub role: Role,
    pub expires_at_ms: Option<i64>,
}

/// A worker session that passed the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerIdentity {
    pub worker_id: String,
    pub cluster: String,
    pub token: String,
}

/// Whether a grant meets a caller need; the refusal names what is missing.
pub fn check_caller(
    token: &str,
    grant: &Grant,
    role: Role,
    reach: Reach,
    what: &str,
) -> Result<(), Status> {
    match grant {
        Grant::Worker { .. } => Err(Status::permission_denied(format!(
            "token {token:?} is a worker join token: it cannot call {what}"
        ))),
        Grant::Caller { team, role: has } => {
            if *has < role {
                return Err(Status::permission_denied(format!(
                    "{what} needs the {role} role; token {token:?} has {has}"
                )));
            }
            if reach == Reach::Installation && team.is_some() {
                return Err(Status::permission_denied(format!(
                    "{what} needs a token of every team with the {role} role (the installation's \
                     admin token is one); token {token:?} is for team {}",
                    team.as_deref().unwrap_or_default()
                )));
            }
            Ok(())
        }
    }
}

impl Caller {
    /// The team a request is about. A team's token always works on its own team: naming
    /// another answers exactly like a team with nothing in it would for a missing object — not
    /// found. A token of every team works on the team the request names (`default` if none).
    pub fn team(&self, requested: &str) -> Result<String, Status> {
        match &self.team {
            Some(own) if requested.is_empty() || requested == own => Ok(own.clone()),
            Some(_) => Err(Status::not_found(format!("team {requested:?} not found"))),
            None if requested.is_empty() => Ok(DEFAULT_TEAM.to_owned()),
            None => Ok(requested.to_owned()),
        }
    }

    /// The team filter of a listing that may span teams (tokens, audit): `None` = every team,
    /// only for a token of every team that names none.
    pub fn team_filter(&self, requested: &str) -> Result<Option<String>, Status> {
        match (&self.team, requested.is_empty()) {
            (None, true) => Ok(None),
            _ => self.team(requested).map(Some),
        }
    }

    /// Refuses an action the caller's token does not allow.
    pub fn require(&self, action: Action) -> Result<(), Status> {
        let (role, reach, what) = action.need();
        let grant = Grant::Caller {
            team: self.team.clone(),
            role: self.role,
        };
        check_caller(&self.token, &grant, role, reach, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(team: Option<&str>, role: Role) -> Grant {
        Grant::Caller {
            team: team.map(str::to_owned),
            role,
        }
    }

    fn caller(team: Option<&str>, role: Role) -> Caller {
        Caller {
            token: "t".into(),
            team: team.map(str::to_owned),
            role,
            expires_at_ms: None,
        }
    }

    #[test]
    fn every_rpc_of_the_api_has_a_rule() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(ferry_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = 0;
        for file in &set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                for m in &service.method {
                    let path = format!("/{full}/{}", m.name());
                    let rule = rule(&path).unwrap_or_else(|| panic!("no rule for {path}"));
                    assert_ne!(rule.need, Need::Open, "{path} must not be open");
                    let streaming = m.client_streaming() || m.server_streaming();
                    assert_eq!(rule.unary, !streaming, "{path}: unary flag");
                    methods += 1;
                }
            }
        }
        assert_eq!(
            methods,
            TABLE.len(),
            "the table has rows for calls that do not exist"
        );
    }

    #[test]
    fn unknown_calls_have_no_rule_and_health_is_open() {
        assert_eq!(rule("/ferry.v1.ControlService/DropEverything"), None);
        assert_eq!(rule("garbage"), None);
        assert_eq!(
            rule("/grpc.health.v1.Health/Check").map(|r| r.need),
            Some(Need::Open)
        );
    }

    #[test]
    fn roles_follow_the_design_table() {
        let need = |m: &str| rule(&format!("/{CONTROL}/{m}")).unwrap().need;
        for m in [
            "ListBackups",
            "GetBackup",
            "WatchJob",
            "ListWorkers",
            "ListStorage",
        ] {
            assert_eq!(need(m), Need::Caller(Viewer, Reach::Team), "{m}");
        }
        for m in [
            "CreateBackup",
            "CancelBackup",
            "VerifyBackup",
            "ExportBackup",
            "CreateRestore",
            "CreateSchedule",
            "PauseSchedule",
        ] {
            assert_eq!(need(m), Need::Caller(Operator, Reach::Team), "{m}");
        }
        for m in [
            "ApplyApp",
            "DeleteApp",
            "DeleteBackup",
            "ImportBackup",
            "Migrate",
            "CreateToken",
            "RevokeToken",
            "ListAudit",
        ] {
            assert_eq!(need(m), Need::Caller(Admin, Reach::Team), "{m}");
        }
        assert_eq!(need("AddStorage"), Need::Caller(Admin, Reach::Installation));
    }

    #[test]
    fn a_lower_role_is_refused_naming_the_role_needed() {
        let s = check_caller(
            "ci",
            &grant(Some("a"), Viewer),
            Operator,
            Reach::Team,
            "CreateBackup",
        )
        .unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("operator") && s.message().contains("viewer"));
        assert!(check_caller("ci", &grant(Some("a"), Admin), Operator, Reach::Team, "x").is_ok());
        assert!(check_caller("ci", &grant(None, Viewer), Viewer, Reach::Team, "x").is_ok());
    }

    #[test]
    fn installation_calls_need_a_token_of_every_team() {
        let s = check_caller(
            "a-admin",
            &grant(Some("a"), Admin),
            Admin,
            Reach::Installation,
            "AddStorage",
        )
        .unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(check_caller("root", &grant(None, Admin), Admin, Reach::Installation, "x").is_ok());
    }

    #[test]
    fn worker_tokens_cannot_call_the_cli_api() {
        let w = Grant::Worker {
            cluster: "dc-a".into(),
        };
        let s = check_caller("w", &w, Viewer, Reach::Team, "ListApps").unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn the_team_comes_from_the_token() {
        let a = caller(Some("a"), Admin);
        assert_eq!(a.team("").unwrap(), "a");
        assert_eq!(a.team("a").unwrap(), "a");
        // Another team looks exactly like a team that does not exist.
        assert_eq!(a.team("b").unwrap_err().code(), tonic::Code::NotFound);
        let root = caller(None, Viewer);
        assert_eq!(root.team("").unwrap(), DEFAULT_TEAM);
        assert_eq!(root.team("b").unwrap(), "b");
        assert_eq!(root.team_filter("").unwrap(), None);
        assert_eq!(a.team_filter("").unwrap(), Some("a".into()));
    }

    #[test]
    fn content_dependent_actions() {
        let op = caller(Some("a"), Operator);
        let s = op.require(Action::RestoreOverwrite).unwrap_err();
        assert!(s.message().contains("admin"), "{}", s.message());
        assert!(
            caller(Some("a"), Admin)
                .require(Action::RestoreOverwrite)
                .is_ok()
        );
        assert!(
            caller(Some("a"), Admin)
                .require(Action::MigrateToOtherTeam)
                .is_err()
        );
        assert!(
            caller(None, Admin)
                .require(Action::MigrateToOtherTeam)
                .is_ok()
        );
        assert!(
            caller(Some("a"), Admin)
                .require(Action::BeyondTeam)
                .is_err()
        );
    }
}
