//! `ferry schedule …`

use ferry_proto::v1;
use serde_json::json;

use super::Ctx;
use crate::args::ScheduleCmd;
use crate::exit::CliResult;
use crate::output::{self, print_json, print_table, table};

/// Runs a `schedule` subcommand.
pub async fn run(ctx: &mut Ctx, cmd: ScheduleCmd) -> CliResult {
    let reference = |ctx: &Ctx, name: String| v1::ScheduleRef {
        team: ctx.team.clone(),
        name,
    };
    match cmd {
        ScheduleCmd::Create {
            name,
            app,
            cron,
            tz,
            every,
            keep,
            keep_window,
            storage,
        } => {
            let req = v1::CreateScheduleRequest {
                team: ctx.team.clone(),
                name,
                app,
                cron: cron.unwrap_or_default(),
                every: every.unwrap_or_default(),
                tz: tz.unwrap_or_default(),
                keep: keep.unwrap_or(0),
                keep_window_seconds: keep_window.map_or(0, |d| d.as_secs() as i64),
                storage: storage.unwrap_or_default(),
            };
            let s = ctx.client.create_schedule(req).await?.into_inner();
            show(ctx, &s, "created");
        }
        ScheduleCmd::List => {
            let req = v1::ListSchedulesRequest {
                team: ctx.team.clone(),
            };
            let all = ctx.client.list_schedules(req).await?.into_inner().schedules;
            if ctx.json() {
                print_json(
                    &json!({"schedules": all.iter().map(schedule_json).collect::<Vec<_>>()}),
                );
                return Ok(());
            }
            let mut t = table(&[
                "NAME",
                "APP",
                "WHEN",
                "TZ",
                "KEEP",
                "NEXT RUN",
                "STATE",
                "RUNS",
                "SKIPPED",
                "LAST BACKUP",
            ]);
            for s in &all {
                t.add_row(vec![
                    s.name.clone(),
                    s.app.clone(),
                    when(s),
                    s.tz.clone(),
                    if s.keep == 0 {
                        "all".into()
                    } else {
                        s.keep.to_string()
                    },
                    if s.paused {
                        "-".into()
                    } else {
                        output::time(s.next_run_ms)
                    },
                    if s.paused {
                        "paused".into()
                    } else {
                        "active".into()
                    },
                    s.runs.to_string(),
                    s.skipped.to_string(),
                    s.last_backup.clone(),
                ]);
            }
            print_table(&t);
        }
        ScheduleCmd::Get { name } => {
            let s = ctx
                .client
                .get_schedule(reference(ctx, name))
                .await?
                .into_inner();
            show(ctx, &s, "");
        }
        ScheduleCmd::Pause { name } => {
            let s = ctx
                .client
                .pause_schedule(reference(ctx, name))
                .await?
                .into_inner();
            show(ctx, &s, "paused");
        }
        ScheduleCmd::Resume { name } => {
            let s = ctx
                .client
                .resume_schedule(reference(ctx, name))
                .await?
                .into_inner();
            show(ctx, &s, "resumed");
        }
        ScheduleCmd::Delete { name } => {
            ctx.client
                .delete_schedule(reference(ctx, name.clone()))
                .await?;
            if ctx.json() {
                print_json(&json!({"deleted": name}));
            } else {
                println!("schedule {name} deleted (its backups are kept)");
            }
        }
    }
    Ok(())
}

fn when(s: &v1::Schedule) -> String {
    if s.every.is_empty() {
        s.cron.clone()
    } else {
        s.every.clone()
    }
}

fn schedule_json(s: &v1::Schedule) -> serde_json::Value {
    json!({
        "name": s.name, "team": s.team, "app": s.app, "cron": s.cron,
        "every": if s.every.is_empty() { serde_json::Value::Null } else { s.every.clone().into() },
        "tz": s.tz, "keep": if s.keep == 0 { serde_json::Value::Null } else { s.keep.into() },
        "keep_window_seconds": if s.keep_window_seconds == 0 { serde_json::Value::Null } else { s.keep_window_seconds.into() },
        "storage": s.storage, "paused": s.paused,
        "next_run": if s.paused { serde_json::Value::Null } else { output::time_json(s.next_run_ms) },
        "last_run": output::time_json(s.last_run_ms), "last_backup": s.last_backup,
        "runs": s.runs, "skipped": s.skipped, "last_skip": s.last_skip,
    })
}

fn show(ctx: &Ctx, s: &v1::Schedule, what: &str) {
    if ctx.json() {
        print_json(&schedule_json(s));
        return;
    }
    if !what.is_empty() {
        println!("schedule {} {what}", s.name);
    }
    println!("App:\t{}", s.app);
    println!("When:\t{} ({})", when(s), s.tz);
    let window = (s.keep_window_seconds > 0).then(|| {
        humantime::format_duration(std::time::Duration::from_secs(s.keep_window_seconds as u64))
    });
    println!(
        "Keep:\t{}",
        match (s.keep, window) {
            (0, None) => "every backup".into(),
            (n, None) => format!("newest {n}"),
            (0, Some(w)) => format!("what a restore to any moment of the last {w} needs"),
            (n, Some(w)) =>
                format!("newest {n}, and what a restore to any moment of the last {w} needs"),
        }
    );
    println!("State:\t{}", if s.paused { "paused" } else { "active" });
    if !s.paused {
        println!("Next run:\t{}", output::time(s.next_run_ms));
    }
    println!("Runs:\t{} ({} skipped)", s.runs, s.skipped);
    if !s.last_backup.is_empty() {
        println!("Last backup:\t{}", s.last_backup);
    }
    if !s.last_skip.is_empty() {
        println!("Last skip:\t{}", s.last_skip);
    }
}
