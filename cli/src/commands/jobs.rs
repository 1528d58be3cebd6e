//! `ferry backup …` and `ferry restore …`: creating jobs, listing and describing them, and
//! following them to their end.

use std::time::Duration;

use ferry_proto::v1;
use serde_json::json;

use super::Ctx;
use crate::args::{BackupCmd, RestoreCmd};
use crate::exit::{CliError, CliResult};
use crate::output::{self, is_final, job_json, print_job, print_json, print_table, table};

/// How long `--wait` keeps trying when the controller cannot be reached.
const UNREACHABLE_PATIENCE: Duration = Duration::from_secs(60);

/// Runs a `backup` subcommand.
pub async fn backup(ctx: &mut Ctx, cmd: BackupCmd) -> CliResult {
    match cmd {
        BackupCmd::Create {
            app,
            storage,
            ttl,
            labels,
            full,
            wait,
        } => {
            let mut parsed = std::collections::HashMap::new();
            for l in labels {
                let (k, v) = l.split_once('=').ok_or_else(|| {
                    CliError::input(format!("invalid label {l:?}: expected KEY=VALUE"))
                })?;
                parsed.insert(k.to_owned(), v.to_owned());
            }
            let job = ctx
                .client
                .create_backup(v1::CreateBackupRequest {
                    team: ctx.team.clone(),
                    app,
                    storage: storage.unwrap_or_default(),
                    labels: parsed,
                    ttl_seconds: ttl.map(|t| t.as_secs().max(1) as i64).unwrap_or(0),
                    full,
                })
                .await?
                .into_inner();
            finish_create(ctx, job, wait).await
        }
        BackupCmd::List { app, limit } => {
            let mut jobs = Vec::new();
            let mut token = String::new();
            loop {
                let page = ctx
                    .client
                    .list_backups(v1::ListBackupsRequest {
                        team: ctx.team.clone(),
                        app: app.clone().unwrap_or_default(),
                        page_size: page_size(limit, jobs.len()),
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                jobs.extend(page.jobs);
                token = page.next_page_token;
                if token.is_empty() || limit.is_some_and(|l| jobs.len() >= l) {
                    break;
                }
            }
            list(ctx, &jobs, true);
            Ok(())
        }
        BackupCmd::Get { id } => {
            let job = ctx
                .client
                .get_backup(v1::GetJobRequest {
                    team: ctx.team.clone(),
                    id,
                })
                .await?
                .into_inner();
            show(ctx, &job);
            Ok(())
        }
        BackupCmd::Watch { id } => {
            let job = follow(ctx, &id).await?;
            conclude(ctx, &job)
        }
        BackupCmd::Cancel { id, wait } => {
            let req = v1::GetJobRequest {
                team: ctx.team.clone(),
                id: id.clone(),
            };
            let job = ctx.client.cancel_backup(req).await?.into_inner();
            cancelled(ctx, job, wait).await
        }
        BackupCmd::Verify {
            id,
            read_data,
            no_wait,
        } => {
            let req = v1::VerifyBackupRequest {
                team: ctx.team.clone(),
                id,
                read_data,
            };
            let job = ctx.client.verify_backup(req).await?.into_inner();
            finish_create(ctx, job, !no_wait).await
        }
        BackupCmd::Export { id, file } => super::transfer::export(ctx, &id, &file).await,
        BackupCmd::Import { file, storage } => {
            let job = super::transfer::import(ctx, &file, &storage).await?;
            if ctx.json() {
                print_json(&job_json(&job));
            } else {
                println!(
                    "imported backup {} of app {} into storage {storage} ({} shards, {} stored); \
                     restore it with `ferry restore create {}`",
                    job.id,
                    job.app,
                    job.shards.len(),
                    output::size(job.stored_bytes),
                    job.id
                );
            }
            Ok(())
        }
        BackupCmd::Delete { id } => {
            let req = v1::GetJobRequest {
                team: ctx.team.clone(),
                id: id.clone(),
            };
            let resp = ctx.client.delete_backup(req).await?.into_inner();
            if ctx.json() {
                print_json(&json!({"deleted": id, "objects_deleted": resp.objects_deleted}));
            } else {
                println!(
                    "backup {id} deleted ({} objects removed from storage)",
                    resp.objects_deleted
                );
            }
            Ok(())
        }
    }
}

/// Runs a `restore` subcommand.
pub async fn restore(ctx: &mut Ctx, cmd: RestoreCmd) -> CliResult {
    match cmd {
        RestoreCmd::Create {
            backup_id,
            at,
            to_app,
            to_cluster,
            overwrite,
            numeric_owner,
            rewrites,
            wait,
        } => {
            for r in &rewrites {
                r.parse::<ferry_model::rewrite::Rewrite>()
                    .map_err(|e| CliError::input(e.to_string()))?;
            }
            let (backup_id, app, at_ms) = match at {
                Some(at) => {
                    let at_ms = ferry_model::pitr::parse_at(&at, ferry_model::now_ms())
                        .map_err(|e| CliError::input(e.to_string()))?;
                    (String::new(), backup_id, at_ms)
                }
                None => (backup_id, String::new(), 0),
            };
            let job = ctx
                .client
                .create_restore(v1::CreateRestoreRequest {
                    team: ctx.team.clone(),
                    backup_id,
                    to_app: to_app.unwrap_or_default(),
                    to_cluster: to_cluster.unwrap_or_default(),
                    overwrite,
                    numeric_owner,
                    rewrites,
                    app,
                    at_ms,
                })
                .await?
                .into_inner();
            finish_create(ctx, job, wait).await
        }
        RestoreCmd::List { app, limit } => {
            let mut jobs = Vec::new();
            let mut token = String::new();
            loop {
                let page = ctx
                    .client
                    .list_restores(v1::ListRestoresRequest {
                        team: ctx.team.clone(),
                        app: app.clone().unwrap_or_default(),
                        page_size: page_size(limit, jobs.len()),
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                jobs.extend(page.jobs);
                token = page.next_page_token;
                if token.is_empty() || limit.is_some_and(|l| jobs.len() >= l) {
                    break;
                }
            }
            list(ctx, &jobs, false);
            Ok(())
        }
        RestoreCmd::Cancel { id, wait } => {
            let req = v1::GetJobRequest {
                team: ctx.team.clone(),
                id,
            };
            let job = ctx.client.cancel_restore(req).await?.into_inner();
            cancelled(ctx, job, wait).await
        }
        RestoreCmd::Watch { id } => {
            let job = follow(ctx, &id).await?;
            conclude(ctx, &job)
        }
        RestoreCmd::Get { id } => {
            let job = ctx
                .client
                .get_restore(v1::GetJobRequest {
                    team: ctx.team.clone(),
                    id,
                })
                .await?
                .into_inner();
            show(ctx, &job);
            Ok(())
        }
    }
}

/// After a cancel request: print it, or wait until the job has stopped.
async fn cancelled(ctx: &mut Ctx, job: v1::Job, wait: bool) -> CliResult {
    let job = if wait {
        follow(ctx, &job.id).await?
    } else {
        job
    };
    if wait && job.state != v1::JobState::Cancelled as i32 {
        return conclude(ctx, &job);
    }
    if ctx.json() {
        print_json(&job_json(&job));
    } else if wait {
        println!("{} cancelled: {}", job.id, job.message);
    } else {
        println!("{}: cancel requested", job.id);
    }
    Ok(())
}

async fn finish_create(ctx: &mut Ctx, job: v1::Job, wait: bool) -> CliResult {
    if !wait {
        if ctx.json() {
            print_json(&job_json(&job));
        } else {
            println!(
                "{} created ({} shards); follow it with `ferry backup watch {}` or `get`",
                job.id,
                job.shards.len(),
                job.id
            );
        }
        return Ok(());
    }
    if !ctx.json() {
        eprintln!("{} created ({} shards)", job.id, job.shards.len());
    }
    let done = follow(ctx, &job.id).await?;
    conclude(ctx, &done)
}

/// The page to ask for: what is left of `--limit`, or the server's default.
fn page_size(limit: Option<usize>, have: usize) -> u32 {
    limit
        .map(|l| l.saturating_sub(have).clamp(1, 1000) as u32)
        .unwrap_or(0)
}

/// `ferry migrate`: creates both halves; with `--wait` follows the backup, then the restore (in
/// the target team), and exits 1 unless the restore completed.
pub async fn migrate(ctx: &mut Ctx, args: crate::args::MigrateArgs) -> CliResult {
    let to_team = args.to_team.clone().unwrap_or_else(|| ctx.team.clone());
    let m = ctx
        .client
        .migrate(v1::MigrateRequest {
            team: ctx.team.clone(),
            app: args.app.clone(),
            to_cluster: args.to_cluster.clone(),
            to_team: to_team.clone(),
            storage: args.storage.unwrap_or_default(),
            rewrites: args.rewrites,
        })
        .await?
        .into_inner();
    let (Some(backup), Some(restore)) = (m.backup, m.restore) else {
        return Err(CliError::failed(
            "the controller answered without the migration's jobs",
        ));
    };
    if !args.wait {
        if ctx.json() {
            print_json(&json!({"backup": job_json(&backup), "restore": job_json(&restore)}));
        } else {
            println!(
                "migrating {} to cluster {} (team {to_team}): backup {} then restore {}; \
                 follow with `ferry backup watch {}` and `ferry --team {to_team} restore watch {}`",
                args.app, args.to_cluster, backup.id, restore.id, backup.id, restore.id
            );
        }
        return Ok(());
    }
    if !ctx.json() {
        eprintln!(
            "migrating {}: backup {} in cluster {}, then restore {} in cluster {}",
            args.app, backup.id, backup.cluster, restore.id, args.to_cluster
        );
    }
    let backup = follow(ctx, &backup.id).await?;
    let source_team = std::mem::replace(&mut ctx.team, to_team);
    let restore = follow(ctx, &restore.id).await;
    ctx.team = source_team;
    let restore = restore?;
    if ctx.json() {
        print_json(&json!({"backup": job_json(&backup), "restore": job_json(&restore)}));
    } else {
        print_job(&restore);
    }
    if restore.state == v1::JobState::Completed as i32 {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "the migration did not complete: restore {} ended {}: {}",
            restore.id,
            output::job_state(restore.state),
            restore.message
        )))
    }
}

/// Prints the final job and turns its state into the exit code.
fn conclude(ctx: &Ctx, job: &v1::Job) -> CliResult {
    show(ctx, job);
    if job.state == v1::JobState::Completed as i32 {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "{} ended {}{}",
            job.id,
            output::job_state(job.state),
            if job.message.is_empty() {
                String::new()
            } else {
                format!(": {}", job.message)
            }
        )))
    }
}

fn show(ctx: &Ctx, job: &v1::Job) {
    if ctx.json() {
        print_json(&job_json(job));
    } else {
        print_job(job);
    }
}

/// Follows a job until it ends, printing a progress line on stderr whenever it changes (nothing
/// with `-o json`). Reconnects when the stream breaks; closing the CLI never affects the job.
pub async fn follow(ctx: &mut Ctx, id: &str) -> CliResult<v1::Job> {
    let mut progress = crate::progress::Progress::new(ctx.json());
    let result = follow_with(ctx, id, &mut progress).await;
    progress.finish();
    result
}

async fn follow_with(
    ctx: &mut Ctx,
    id: &str,
    progress: &mut crate::progress::Progress,
) -> CliResult<v1::Job> {
    let mut last_contact = tokio::time::Instant::now();
    loop {
        let req = v1::GetJobRequest {
            team: ctx.team.clone(),
            id: id.to_owned(),
        };
        match ctx.client.watch_job(req).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(job)) => {
                            last_contact = tokio::time::Instant::now();
                            progress.update(&job);
                            if is_final(job.state) {
                                return Ok(job);
                            }
                        }
                        Ok(None) => break,
                        Err(s) if s.code() == tonic::Code::NotFound => return Err(s.into()),
                        Err(_) => break,
                    }
                }
            }
            Err(s)
                if s.code() == tonic::Code::NotFound
                    || s.code() == tonic::Code::InvalidArgument =>
            {
                return Err(s.into());
            }
            Err(_) => {}
        }
        if last_contact.elapsed() > UNREACHABLE_PATIENCE {
            return Err(CliError::unreachable(format!(
                "lost the controller while following {id}; the job goes on — check it with `ferry backup get {id}`"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn list(ctx: &Ctx, jobs: &[v1::Job], backups: bool) {
    if ctx.json() {
        let key = if backups { "backups" } else { "restores" };
        print_json(&json!({ key: jobs.iter().map(job_json).collect::<Vec<_>>() }));
        return;
    }
    if backups {
        let mut t = table(&[
            "ID", "APP", "STATE", "SIZE", "STORED", "DURATION", "STORAGE", "TRIGGER", "CREATED",
        ]);
        for j in jobs {
            t.add_row(vec![
                j.id.clone(),
                j.app.clone(),
                output::job_state(j.state).into(),
                output::size(j.bytes),
                output::size(j.stored_bytes),
                output::duration(j.started_at_ms, j.finished_at_ms),
                j.storage.clone(),
                j.trigger.clone(),
                output::time(j.created_at_ms),
            ]);
        }
        print_table(&t);
    } else {
        let mut t = table(&[
            "ID",
            "BACKUP",
            "TARGET APP",
            "STATE",
            "SIZE",
            "DURATION",
            "CREATED",
        ]);
        for j in jobs {
            t.add_row(vec![
                j.id.clone(),
                j.backup_id.clone(),
                j.target_app.clone(),
                output::job_state(j.state).into(),
                output::size(j.bytes),
                output::duration(j.started_at_ms, j.finished_at_ms),
                output::time(j.created_at_ms),
            ]);
        }
        print_table(&t);
    }
}
