//! The gRPC edge: thin handlers that validate (through `ferry_proto::model`), call the domain
//! modules and map errors. Conversions to wire types live in `convert`. Access was checked by
//! `crate::auth::layer` before any handler runs; handlers take the team from the token through
//! [`scoped`].

pub mod control;
pub mod convert;
pub mod worker;

use ferry_proto::v1;
use tonic::{Request, Status};

use crate::auth::Caller;
use crate::context::Context;
use ferry_proto::v1::control_service_server::ControlServiceServer;
use ferry_proto::v1::worker_service_server::WorkerServiceServer;

/// The CLI-facing service, with the message limit every service and client shares.
pub fn control_service(ctx: std::sync::Arc<Context>) -> ControlServiceServer<control::ControlApi> {
    ControlServiceServer::new(control::ControlApi { ctx })
        .max_decoding_message_size(ferry_proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(ferry_proto::MAX_MESSAGE_SIZE)
}

/// The worker-facing service, with the same limit.
pub fn worker_service(ctx: std::sync::Arc<Context>) -> WorkerServiceServer<worker::WorkerApi> {
    WorkerServiceServer::new(worker::WorkerApi { ctx })
        .max_decoding_message_size(ferry_proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(ferry_proto::MAX_MESSAGE_SIZE)
}
use crate::auth::layer::{AuditTarget, caller};

/// A request message that names a team, and what it is about (for the audit trail).
pub trait TeamScoped {
    fn team_mut(&mut self) -> &mut String;
    fn target(&self) -> String;
}

macro_rules! scoped {
    ($($t:ty => |$m:ident| $target:expr;)*) => {$(
        impl TeamScoped for $t {
            fn team_mut(&mut self) -> &mut String {
                &mut self.team
            }
            fn target(&self) -> String {
                let $m = self;
                $target
            }
        }
    )*};
}

/// The `name:` of an app manifest, for the audit trail (the manifest is validated later).
fn app_name(yaml: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    serde_norway::from_str::<Named>(yaml)
        .map(|n| n.name)
        .unwrap_or_default()
}

scoped! {
    v1::ApplyAppRequest => |m| format!("app {}", app_name(&m.spec_yaml));
    v1::ListAppsRequest => |_m| String::new();
    v1::GetAppRequest => |m| format!("app {}", m.name);
    v1::DeleteAppRequest => |m| format!("app {}", m.name);
    v1::CreateBackupRequest => |m| format!("app {}", m.app);
    v1::ListBackupsRequest => |_m| String::new();
    v1::GetJobRequest => |m| format!("job {}", m.id);
    v1::VerifyBackupRequest => |m| {
        let how = if m.read_data { " (reading every chunk)" } else { "" };
        format!("backup {}{how}", m.id)
    };
    v1::CreateRestoreRequest => |m| {
        let into = if m.to_app.is_empty() { "its app".to_owned() } else { format!("app {}", m.to_app) };
        let how = if m.overwrite { " (overwrite)" } else { "" };
        if m.at_ms != 0 {
            format!("app {} at {} into {into}{how}", m.app, ferry_model::pitr::format_ms(m.at_ms))
        } else {
            format!("backup {} into {into}{how}", m.backup_id)
        }
    };
    v1::ListRestoresRequest => |_m| String::new();
    v1::CreateScheduleRequest => |m| format!("schedule {} of app {}", m.name, m.app);
    v1::ScheduleRef => |m| format!("schedule {}", m.name);
    v1::ListSchedulesRequest => |_m| String::new();
    v1::MigrateRequest => |m| {
        let team = if m.to_team.is_empty() { String::new() } else { format!(" team {}", m.to_team) };
        format!("app {} to cluster {}{team}", m.app, m.to_cluster)
    };
}

/// The caller and the request with its team resolved from the caller's token (another team
/// answers not found), noting the team and target for the audit trail.
pub fn scoped<M: TeamScoped>(req: Request<M>) -> Result<(Caller, M), Status> {
    let caller = caller(&req)?;
    let note = req.extensions().get::<AuditTarget>().cloned();
    let mut msg = req.into_inner();
    let requested = msg.team_mut().clone();
    let team = caller.team(&requested);
    if let Some(note) = note {
        let team = team.as_deref().unwrap_or(&requested);
        note.set(team, msg.target());
    }
    *msg.team_mut() = team?;
    Ok((caller, msg))
}

/// Notes what a call that names no team is about, for the audit trail.
pub fn note<T>(req: &Request<T>, team: &str, target: String) {
    if let Some(note) = req.extensions().get::<AuditTarget>() {
        note.set(team, target);
    }
}
