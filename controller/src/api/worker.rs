//! The worker-facing service.

use std::pin::Pin;
use std::sync::Arc;

use ferry_proto::model::{Progress, Registration, ShardReport};
use ferry_proto::v1;
use ferry_proto::v1::worker_service_server::WorkerService;
use futures::Stream;
use tonic::{Request, Response, Status};

use tracing::Instrument;

use crate::auth::WorkerIdentity;
use crate::auth::layer::JoinToken;
use crate::context::Context;
use crate::workers::Delivery;
use crate::{jobs, reconciler};

/// Handlers of `ferry.v1.WorkerService`.
pub struct WorkerApi {
    pub ctx: Arc<Context>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::AssignmentEvent, Status>> + Send>>;

fn event(d: Delivery) -> v1::AssignmentEvent {
    use v1::assignment_event::Event;
    let event = match d {
        Delivery::Assign(task) => Event::Assign(v1::Assignment {
            shard: Some(v1::ShardRef {
                job_id: task.job_id.clone(),
                shard_id: task.shard_id.clone(),
                attempt: task.attempt,
            }),
            task_json: serde_json::to_string(&task).unwrap_or_default(),
        }),
        Delivery::Cancel(key) => Event::Cancel((&key).into()),
    };
    v1::AssignmentEvent { event: Some(event) }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn register(
        &self,
        req: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        self.ctx.require_leader()?;
        let join = req
            .extensions()
            .get::<JoinToken>()
            .cloned()
            .ok_or_else(|| Status::internal("the call was not authorized (no join token)"))?;
        let reg: Registration = req.into_inner().try_into()?;
        // A join token is for one cluster: a worker cannot serve (and read the data of) another.
        if reg.cluster != join.cluster {
            return Err(Status::permission_denied(format!(
                "join token {:?} is for cluster {:?}, not {:?}",
                join.name, join.cluster, reg.cluster
            )));
        }
        let (record, session_key) = self.ctx.workers.register(reg, &join.name).await?;
        tracing::info!(worker = %record.id, cluster = %record.cluster, node = %record.node,
            max_shards = record.max_shards, token = %join.name, "worker registered");
        self.ctx.notify();
        Ok(Response::new(v1::RegisterResponse {
            worker_id: record.id,
            heartbeat_interval_ms: self.ctx.timings.heartbeat.as_millis() as u64,
            session_key,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        self.ctx.require_leader()?;
        let me = session(&req, |r: &v1::HeartbeatRequest| &r.worker_id)?;
        let r = req.into_inner();
        let known = self
            .ctx
            .workers
            .heartbeat(&me.worker_id, r.running_shards)
            .await?;
        Ok(Response::new(v1::HeartbeatResponse { known }))
    }

    type AssignmentsStream = EventStream;

    async fn assignments(
        &self,
        req: Request<v1::AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        self.ctx.require_leader()?;
        let id = session(&req, |r: &v1::AssignmentsRequest| &r.worker_id)?.worker_id;
        if !self.ctx.workers.is_live(&id).await? {
            return Err(Status::not_found(format!(
                "no live session {id:?}; register again"
            )));
        }
        let rx = self.ctx.workers.attach(&id);
        let held = reconciler::tasks_of_worker(&self.ctx, &id).await?;
        let stream = async_stream(held, rx);
        self.ctx.notify();
        Ok(Response::new(stream))
    }

    async fn report_progress(
        &self,
        req: Request<v1::ProgressReport>,
    ) -> Result<Response<v1::ReportAck>, Status> {
        self.ctx.require_leader()?;
        let me = session(&req, |r: &v1::ProgressReport| &r.worker_id)?;
        let p: Progress = req.into_inner().try_into()?;
        jobs::record_progress(&self.ctx, &me.worker_id, p).await?;
        Ok(Response::new(v1::ReportAck { accepted: true }))
    }

    async fn report_result(
        &self,
        req: Request<v1::ShardResult>,
    ) -> Result<Response<v1::ReportAck>, Status> {
        self.ctx.require_leader()?;
        let me = session(&req, |r: &v1::ShardResult| &r.worker_id)?;
        let parent = req
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let report: ShardReport = req.into_inner().try_into()?;
        let span = tracing::info_span!("record_result", job = %report.shard.job_id, shard = %report.shard.shard_id, attempt = report.shard.attempt);
        if let Some(parent) = &parent {
            ferry_telemetry::logging::set_parent(&span, parent);
        }
        let accepted = jobs::record_result(&self.ctx, &me.worker_id, report)
            .instrument(span)
            .await?;
        Ok(Response::new(v1::ReportAck { accepted }))
    }
}

/// The session the call was authenticated for; a worker id in the message must be that one (a
/// session cannot speak for another worker).
fn session<T>(req: &Request<T>, id: impl Fn(&T) -> &String) -> Result<WorkerIdentity, Status> {
    let me = crate::auth::layer::worker(req)?;
    let named = id(req.get_ref());
    if !named.is_empty() && *named != me.worker_id {
        return Err(Status::permission_denied(format!(
            "session {} cannot speak for worker {named:?}",
            me.worker_id
        )));
    }
    Ok(me)
}

/// The held tasks first, then whatever the channel delivers.
fn async_stream(
    held: Vec<ferry_model::task::ShardTask>,
    rx: tokio::sync::mpsc::Receiver<Delivery>,
) -> EventStream {
    use futures::StreamExt;
    let first = futures::stream::iter(
        held.into_iter()
            .map(|t| Ok(event(Delivery::Assign(Box::new(t))))),
    );
    let rest = tokio_stream::wrappers::ReceiverStream::new(rx).map(|d| Ok(event(d)));
    Box::pin(first.chain(rest))
}
