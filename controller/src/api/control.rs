//! The CLI-facing service.

use std::pin::Pin;
use std::sync::Arc;

use ferry_model::storage::StorageLocation;
use ferry_proto::model::{
    AppRef, ApplyApp, CreateBackup, CreateRestore, CreateSchedule, JobRef, Migrate, ScheduleRef,
    TeamFilter,
};
use ferry_proto::v1;
use ferry_proto::v1::control_service_server::ControlService;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::{convert, scoped};
use crate::auth::Action;
use crate::context::Context;
use crate::records::JobKind;
use crate::{access, apps, catalog, jobs, schedules};

/// Handlers of `ferry.v1.ControlService`.
pub struct ControlApi {
    pub ctx: Arc<Context>,
}

type JobStream = Pin<Box<dyn Stream<Item = Result<v1::Job, Status>> + Send>>;
type ExportStream = Pin<Box<dyn Stream<Item = Result<v1::ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ControlService for ControlApi {
    async fn apply_app(
        &self,
        req: Request<v1::ApplyAppRequest>,
    ) -> Result<Response<v1::App>, Status> {
        self.ctx.require_leader()?;
        let (_, msg) = scoped(req)?;
        let ApplyApp { team, spec } = msg.try_into()?;
        let record = apps::apply(&*self.ctx.store, &team, spec).await?;
        Ok(Response::new(convert::app(&record)))
    }

    async fn list_apps(
        &self,
        req: Request<v1::ListAppsRequest>,
    ) -> Result<Response<v1::ListAppsResponse>, Status> {
        let TeamFilter { team, .. } = scoped(req)?.1.try_into()?;
        let apps = apps::list(&*self.ctx.store, &team).await?;
        Ok(Response::new(v1::ListAppsResponse {
            apps: apps.iter().map(convert::app).collect(),
        }))
    }

    async fn get_app(&self, req: Request<v1::GetAppRequest>) -> Result<Response<v1::App>, Status> {
        let AppRef { team, name } = scoped(req)?.1.try_into()?;
        let record = apps::get(&*self.ctx.store, &team, &name).await?;
        Ok(Response::new(convert::app(&record)))
    }

    async fn get_recovery_window(
        &self,
        req: Request<v1::GetAppRequest>,
    ) -> Result<Response<v1::RecoveryWindow>, Status> {
        let AppRef { team, name } = scoped(req)?.1.try_into()?;
        let windows = crate::jobs::pitr::windows(&self.ctx, &team, &name).await?;
        let range = |i: &ferry_model::pitr::Interval| v1::TimeRange {
            from_ms: i.from_ms,
            to_ms: i.to_ms,
        };
        Ok(Response::new(v1::RecoveryWindow {
            app: name,
            streams: windows
                .iter()
                .map(|w| v1::StreamWindow {
                    stream: w.stream.clone(),
                    engine: w.engine.clone(),
                    ranges: w.window.intervals.iter().map(range).collect(),
                    gaps: w.window.gaps.iter().map(range).collect(),
                    last_position: w.last.as_ref().map(|l| l.0.to_string()).unwrap_or_default(),
                    last_received_ms: w.last.as_ref().map_or(0, |l| l.1),
                    state: w
                        .shard
                        .as_ref()
                        .map(|s| {
                            // A stream shard reports progress as it archives: running once
                            // handed out and reporting.
                            let progress = self.ctx.progress_of(&s.job_id, &s.id, s.attempt);
                            let state = convert::shard_state(s.state, progress.is_some());
                            ferry_proto::names::shard_state(state as i32).to_owned()
                        })
                        .unwrap_or_default(),
                    worker: w
                        .shard
                        .as_ref()
                        .map(|s| s.worker.clone())
                        .unwrap_or_default(),
                    attempt: w.shard.as_ref().map_or(0, |s| s.attempt),
                    error: w
                        .shard
                        .as_ref()
                        .map(|s| s.error.clone())
                        .unwrap_or_default(),
                    job: w
                        .shard
                        .as_ref()
                        .map(|s| s.job_id.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn delete_app(
        &self,
        req: Request<v1::DeleteAppRequest>,
    ) -> Result<Response<v1::DeleteAppResponse>, Status> {
        self.ctx.require_leader()?;
        let AppRef { team, name } = scoped(req)?.1.try_into()?;
        apps::delete(&*self.ctx.store, &team, &name).await?;
        Ok(Response::new(v1::DeleteAppResponse {}))
    }

    async fn add_storage(
        &self,
        req: Request<v1::AddStorageRequest>,
    ) -> Result<Response<v1::StorageLocation>, Status> {
        self.ctx.require_leader()?;
        let name = req
            .get_ref()
            .location
            .as_ref()
            .map(|l| l.name.clone())
            .unwrap_or_default();
        super::note(&req, "", format!("storage {name}"));
        let raw = req
            .into_inner()
            .location
            .ok_or_else(|| Status::invalid_argument("missing field location"))?;
        let location: StorageLocation = raw.try_into()?;
        let location = apps::add_storage(&*self.ctx.store, location).await?;
        // A bucket another installation wrote: its backups show up without waiting for the
        // periodic sync.
        let (ctx, added) = (self.ctx.clone(), location.clone());
        tokio::spawn(async move { catalog::sync_location(&ctx, &added).await });
        Ok(Response::new((&location).into()))
    }

    async fn sync_storage(
        &self,
        req: Request<v1::SyncStorageRequest>,
    ) -> Result<Response<v1::SyncStorageResponse>, Status> {
        self.ctx.require_leader()?;
        super::note(&req, "", format!("storage {}", req.get_ref().name));
        let name = req.into_inner().name;
        let location = apps::find_storage(&*self.ctx.store, &name)
            .await?
            .ok_or_else(|| Status::not_found(format!("storage location {name:?} not found")))?;
        let r = catalog::sync_location(&self.ctx, &location).await?;
        Ok(Response::new(v1::SyncStorageResponse {
            listed: r.listed,
            added: r.added,
            removed: r.removed,
            invalid: r.invalid,
        }))
    }

    async fn collect_garbage(
        &self,
        req: Request<v1::CollectGarbageRequest>,
    ) -> Result<Response<v1::CollectGarbageResponse>, Status> {
        self.ctx.require_leader()?;
        super::note(&req, "", format!("storage {}", req.get_ref().name));
        let req = req.into_inner();
        let location = apps::find_storage(&*self.ctx.store, &req.name)
            .await?
            .ok_or_else(|| {
                Status::not_found(format!("storage location {:?} not found", req.name))
            })?;
        let r = crate::gc::collect_location(&self.ctx, &location, req.dry_run).await?;
        Ok(Response::new(v1::CollectGarbageResponse {
            packs_deleted: r.deleted,
            bytes_freed: r.bytes,
            packs_referenced: r.referenced,
            packs_young: r.young,
            uploads_aborted: r.aborted,
            log_chunks_deleted: r.log_chunks,
        }))
    }

    async fn migrate(
        &self,
        req: Request<v1::MigrateRequest>,
    ) -> Result<Response<v1::Migration>, Status> {
        self.ctx.require_leader()?;
        let (caller, msg) = scoped(req)?;
        let req: Migrate = msg.try_into()?;
        if req.to_team != req.team {
            caller.require(Action::MigrateToOtherTeam)?;
        }
        let (backup, restore) = jobs::create_migration(&self.ctx, req).await?;
        let backup = jobs::view(&self.ctx, &backup.team, &backup.id).await?;
        let restore = jobs::view(&self.ctx, &restore.team, &restore.id).await?;
        Ok(Response::new(v1::Migration {
            backup: Some(convert::job(&self.ctx, &backup)),
            restore: Some(convert::job(&self.ctx, &restore)),
        }))
    }

    type ExportBackupStream = ExportStream;

    async fn export_backup(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<Self::ExportBackupStream>, Status> {
        let JobRef { team, id } = scoped(req)?.1.try_into()?;
        let stream = catalog::export(&self.ctx, &team, &id).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn import_backup(
        &self,
        req: Request<tonic::Streaming<v1::ExportChunk>>,
    ) -> Result<Response<v1::Job>, Status> {
        self.ctx.require_leader()?;
        let caller = crate::auth::layer::caller(&req)?;
        let note = req
            .extensions()
            .get::<crate::auth::layer::AuditTarget>()
            .cloned();
        let scope = |requested: &str| {
            let team = caller.team(requested);
            if let Some(note) = &note {
                note.set(
                    team.as_deref().unwrap_or(requested),
                    "an imported backup".into(),
                );
            }
            team
        };
        let job = catalog::import(&self.ctx, req.into_inner(), scope).await?;
        if let Some(note) = &note {
            note.set(&job.team, format!("backup {}", job.id));
        }
        let view = jobs::view(&self.ctx, &job.team, &job.id).await?;
        Ok(Response::new(convert::job(&self.ctx, &view)))
    }

    async fn list_storage(
        &self,
        _req: Request<v1::ListStorageRequest>,
    ) -> Result<Response<v1::ListStorageResponse>, Status> {
        let all = apps::list_storage(&*self.ctx.store).await?;
        Ok(Response::new(v1::ListStorageResponse {
            locations: all.iter().map(Into::into).collect(),
        }))
    }

    async fn list_workers(
        &self,
        req: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let cluster = req.into_inner().cluster;
        let workers = self.ctx.workers.live().await?;
        Ok(Response::new(v1::ListWorkersResponse {
            workers: workers
                .iter()
                .filter(|w| cluster.is_empty() || w.cluster == cluster)
                .map(|w| convert::worker(&self.ctx, w))
                .collect(),
        }))
    }

    async fn list_clusters(
        &self,
        _req: Request<v1::ListClustersRequest>,
    ) -> Result<Response<v1::ListClustersResponse>, Status> {
        let mut clusters: std::collections::BTreeMap<String, v1::ClusterInfo> = Default::default();
        for w in self.ctx.workers.live().await? {
            let c = clusters
                .entry(w.cluster.clone())
                .or_insert(v1::ClusterInfo {
                    name: w.cluster.clone(),
                    workers: 0,
                    capacity: 0,
                });
            c.workers += 1;
            c.capacity += w.max_shards;
        }
        Ok(Response::new(v1::ListClustersResponse {
            clusters: clusters.into_values().collect(),
        }))
    }

    async fn create_backup(
        &self,
        req: Request<v1::CreateBackupRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        self.ctx.require_leader()?;
        let req: CreateBackup = scoped(req)?.1.try_into()?;
        let job = jobs::create_backup(&self.ctx, req).await?;
        let view = jobs::view(&self.ctx, &job.team, &job.id).await?;
        Ok(Response::new(convert::job(&self.ctx, &view)))
    }

    async fn list_backups(
        &self,
        req: Request<v1::ListBackupsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let f: TeamFilter = scoped(req)?.1.try_into()?;
        self.list_jobs(f, JobKind::Backup).await
    }

    async fn get_backup(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        self.get_job(scoped(req)?.1.try_into()?, JobKind::Backup)
            .await
    }

    async fn cancel_backup(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        self.ctx.require_leader()?;
        self.cancel(scoped(req)?.1.try_into()?, JobKind::Backup)
            .await
    }

    async fn delete_backup(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::DeleteBackupResponse>, Status> {
        self.ctx.require_leader()?;
        let JobRef { team, id } = scoped(req)?.1.try_into()?;
        let objects_deleted = jobs::delete_backup(&self.ctx, &team, &id).await?;
        Ok(Response::new(v1::DeleteBackupResponse { objects_deleted }))
    }

    async fn verify_backup(
        &self,
        req: Request<v1::VerifyBackupRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        self.ctx.require_leader()?;
        let (_, msg) = scoped(req)?;
        let read_data = msg.read_data;
        let JobRef { team, id } = v1::GetJobRequest {
            team: msg.team,
            id: msg.id,
        }
        .try_into()?;
        let job = jobs::create_verify(&self.ctx, &team, &id, read_data).await?;
        let view = jobs::view(&self.ctx, &job.team, &job.id).await?;
        Ok(Response::new(convert::job(&self.ctx, &view)))
    }

    async fn cancel_restore(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        self.ctx.require_leader()?;
        self.cancel(scoped(req)?.1.try_into()?, JobKind::Restore)
            .await
    }

    async fn create_restore(
        &self,
        req: Request<v1::CreateRestoreRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        self.ctx.require_leader()?;
        let (caller, msg) = scoped(req)?;
        let req: CreateRestore = msg.try_into()?;
        if req.overwrite {
            caller.require(Action::RestoreOverwrite)?;
        }
        let job = jobs::create_restore(&self.ctx, req).await?;
        let view = jobs::view(&self.ctx, &job.team, &job.id).await?;
        Ok(Response::new(convert::job(&self.ctx, &view)))
    }

    async fn list_restores(
        &self,
        req: Request<v1::ListRestoresRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let f: TeamFilter = scoped(req)?.1.try_into()?;
        self.list_jobs(f, JobKind::Restore).await
    }

    async fn get_restore(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        self.get_job(scoped(req)?.1.try_into()?, JobKind::Restore)
            .await
    }

    async fn create_schedule(
        &self,
        req: Request<v1::CreateScheduleRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.ctx.require_leader()?;
        let req: CreateSchedule = scoped(req)?.1.try_into()?;
        let record = schedules::create(&self.ctx, req).await?;
        Ok(Response::new(convert::schedule(&record)))
    }

    async fn list_schedules(
        &self,
        req: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        let team = v1::ListAppsRequest {
            team: scoped(req)?.1.team,
        };
        let TeamFilter { team, .. } = team.try_into()?;
        let all = schedules::list(&self.ctx, &team).await?;
        Ok(Response::new(v1::ListSchedulesResponse {
            schedules: all.iter().map(convert::schedule).collect(),
        }))
    }

    async fn get_schedule(
        &self,
        req: Request<v1::ScheduleRef>,
    ) -> Result<Response<v1::Schedule>, Status> {
        let ScheduleRef { team, name } = scoped(req)?.1.try_into()?;
        let (record, _) = schedules::get(&self.ctx, &team, &name).await?;
        Ok(Response::new(convert::schedule(&record)))
    }

    async fn pause_schedule(
        &self,
        req: Request<v1::ScheduleRef>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.ctx.require_leader()?;
        let ScheduleRef { team, name } = scoped(req)?.1.try_into()?;
        let record = schedules::set_paused(&self.ctx, &team, &name, true).await?;
        Ok(Response::new(convert::schedule(&record)))
    }

    async fn resume_schedule(
        &self,
        req: Request<v1::ScheduleRef>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.ctx.require_leader()?;
        let ScheduleRef { team, name } = scoped(req)?.1.try_into()?;
        let record = schedules::set_paused(&self.ctx, &team, &name, false).await?;
        Ok(Response::new(convert::schedule(&record)))
    }

    async fn delete_schedule(
        &self,
        req: Request<v1::ScheduleRef>,
    ) -> Result<Response<v1::DeleteScheduleResponse>, Status> {
        self.ctx.require_leader()?;
        let ScheduleRef { team, name } = scoped(req)?.1.try_into()?;
        schedules::delete(&self.ctx, &team, &name).await?;
        Ok(Response::new(v1::DeleteScheduleResponse {}))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let JobRef { team, id } = scoped(req)?.1.try_into()?;
        jobs::get_job(&self.ctx, &team, &id).await?;
        let ctx = self.ctx.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut changed = ctx.changed.subscribe();
            let mut states = ctx.states.subscribe();
            let mut last: Option<v1::Job> = None;
            loop {
                let sent = match jobs::view(&ctx, &team, &id).await {
                    Ok(view) => {
                        let job = convert::job(&ctx, &view);
                        let done = view.job.state.is_final();
                        if last.as_ref() != Some(&job) {
                            last = Some(job.clone());
                            if tx.send(Ok(job)).await.is_err() {
                                return; // the client went away; the job goes on
                            }
                        }
                        if done {
                            return;
                        }
                        true
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                debug_assert!(sent);
                // At most a few progress updates a second, however often workers report; a
                // change of state (a shard or the job finishing) ends the wait at once, so the
                // client learns that the job finished without waiting out the throttle.
                tokio::time::sleep(ctx.timings.pass_gap()).await;
                tokio::select! {
                    _ = tokio::time::sleep(ctx.timings.watch_poll() / 5) => {}
                    _ = states.changed() => {}
                }
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = tokio::time::sleep(ctx.timings.watch_poll()) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn who_am_i(
        &self,
        req: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::Identity>, Status> {
        let caller = crate::auth::layer::caller(&req)?;
        Ok(Response::new(access::identity(&caller)))
    }

    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreatedToken>, Status> {
        self.ctx.require_leader()?;
        let caller = crate::auth::layer::caller(&req)?;
        super::note(
            &req,
            &req.get_ref().team,
            format!("token {}", req.get_ref().name),
        );
        let created = access::create_token(&self.ctx, &caller, req.into_inner()).await?;
        Ok(Response::new(created))
    }

    async fn list_tokens(
        &self,
        req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let caller = crate::auth::layer::caller(&req)?;
        let tokens = access::list_tokens(&self.ctx, &caller, &req.into_inner().team).await?;
        Ok(Response::new(v1::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        self.ctx.require_leader()?;
        let caller = crate::auth::layer::caller(&req)?;
        super::note(&req, "", format!("token {}", req.get_ref().name));
        access::revoke_token(&self.ctx, &caller, &req.into_inner().name).await?;
        Ok(Response::new(v1::RevokeTokenResponse {}))
    }

    async fn list_audit(
        &self,
        req: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let caller = crate::auth::layer::caller(&req)?;
        let entries = access::list_audit(&self.ctx, &caller, req.into_inner()).await?;
        Ok(Response::new(v1::ListAuditResponse { entries }))
    }

    async fn add_trust(
        &self,
        req: Request<v1::AddTrustRequest>,
    ) -> Result<Response<v1::TrustEntry>, Status> {
        self.ctx.require_leader()?;
        super::note(&req, "", format!("trust {}", req.get_ref().name));
        let r = req.into_inner();
        let t = crate::trust::add(&self.ctx, &r.name, &r.public_key).await?;
        Ok(Response::new(trust_entry(t)))
    }

    async fn list_trust(
        &self,
        _req: Request<v1::ListTrustRequest>,
    ) -> Result<Response<v1::ListTrustResponse>, Status> {
        let trusted = crate::trust::list(&*self.ctx.store).await?;
        Ok(Response::new(v1::ListTrustResponse {
            own_public_key: crate::trust::own_key(&self.ctx),
            trusted: trusted.into_iter().map(trust_entry).collect(),
        }))
    }

    async fn remove_trust(
        &self,
        req: Request<v1::RemoveTrustRequest>,
    ) -> Result<Response<v1::RemoveTrustResponse>, Status> {
        self.ctx.require_leader()?;
        super::note(&req, "", format!("trust {}", req.get_ref().name));
        crate::trust::remove(&self.ctx, &req.into_inner().name).await?;
        Ok(Response::new(v1::RemoveTrustResponse {}))
    }

    async fn set_recipients(
        &self,
        req: Request<v1::SetRecipientsRequest>,
    ) -> Result<Response<v1::StorageLocation>, Status> {
        self.ctx.require_leader()?;
        super::note(&req, "", format!("storage {}", req.get_ref().storage));
        let r = req.into_inner();
        let location = crate::sealing::set_recipients(&self.ctx, &r.storage, r.encrypt_to).await?;
        Ok(Response::new((&location).into()))
    }

    async fn list_key_files(
        &self,
        req: Request<v1::ListKeyFilesRequest>,
    ) -> Result<Response<v1::ListKeyFilesResponse>, Status> {
        super::note(&req, "", format!("storage {}", req.get_ref().storage));
        let r = req.into_inner();
        let (files, next_page_token) =
            crate::sealing::list_key_files(&self.ctx, &r.storage, &r.page_token).await?;
        Ok(Response::new(v1::ListKeyFilesResponse {
            files,
            next_page_token,
        }))
    }

    async fn rewrite_key_files(
        &self,
        req: Request<v1::RewriteKeyFilesRequest>,
    ) -> Result<Response<v1::RewriteKeyFilesResponse>, Status> {
        self.ctx.require_leader()?;
        super::note(&req, "", format!("storage {}", req.get_ref().storage));
        let r = req.into_inner();
        let written = crate::sealing::rewrite_key_files(&self.ctx, &r.storage, r.files).await?;
        Ok(Response::new(v1::RewriteKeyFilesResponse { written }))
    }
}

fn trust_entry(t: crate::trust::TrustRecord) -> v1::TrustEntry {
    v1::TrustEntry {
        name: t.name,
        public_key: t.public_key,
        added_at_ms: t.added_at_ms,
    }
}

impl ControlApi {
    async fn cancel(&self, r: JobRef, kind: JobKind) -> Result<Response<v1::Job>, Status> {
        jobs::cancel(&self.ctx, &r.team, &r.id, kind).await?;
        let view = jobs::view(&self.ctx, &r.team, &r.id).await?;
        Ok(Response::new(convert::job(&self.ctx, &view)))
    }

    async fn list_jobs(
        &self,
        f: TeamFilter,
        kind: JobKind,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let (views, next_page_token) =
            jobs::list_views(&self.ctx, &f.team, f.app.as_deref(), kind, &f.page).await?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs: views.iter().map(|v| convert::job(&self.ctx, v)).collect(),
            next_page_token,
        }))
    }

    async fn get_job(&self, r: JobRef, kind: JobKind) -> Result<Response<v1::Job>, Status> {
        let view = jobs::view(&self.ctx, &r.team, &r.id).await?;
        if view.job.kind != kind {
            return Err(Status::not_found(format!(
                "{} is a {:?} job, not a {kind:?}",
                r.id, view.job.kind
            )));
        }
        Ok(Response::new(convert::job(&self.ctx, &view)))
    }
}
