//! `ferry app …`

use std::io::Read;
use std::path::Path;

use ferry_proto::v1;
use serde_json::json;

use super::Ctx;
use crate::args::AppCmd;
use crate::exit::{CliError, CliResult};
use crate::output::{self, print_json, print_table, table};

/// Runs an `app` subcommand.
pub async fn run(ctx: &mut Ctx, cmd: AppCmd) -> CliResult {
    match cmd {
        AppCmd::Apply { file } => apply(ctx, &file).await,
        AppCmd::List => list(ctx).await,
        AppCmd::Get { name } => get(ctx, name).await,
        AppCmd::RecoveryWindow { name } => recovery_window(ctx, name).await,
        AppCmd::Delete { name } => {
            let req = v1::DeleteAppRequest {
                team: ctx.team.clone(),
                name: name.clone(),
            };
            ctx.client.delete_app(req).await?;
            if ctx.json() {
                print_json(&json!({"deleted": name}));
            } else {
                println!("app {name} deleted (its backups are kept)");
            }
            Ok(())
        }
    }
}

fn app_json(a: &v1::App) -> serde_json::Value {
    let spec: serde_json::Value = ferry_model::app::AppSpec::from_yaml(&a.spec_yaml)
        .ok()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(serde_json::Value::Null);
    json!({
        "name": a.name,
        "team": a.team,
        "cluster": a.cluster,
        "components": a.components,
        "volumes": a.volumes,
        "databases": a.databases,
        "updated_at": output::time_json(a.updated_at_ms),
        "spec": spec,
    })
}

/// Reads and checks the manifest locally first, so that mistakes are reported with the file
/// name before anything is sent.
async fn apply(ctx: &mut Ctx, file: &Path) -> CliResult {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::input(format!("cannot read {}: {e}", file.display())))?
    };
    ferry_model::app::AppSpec::from_yaml(&text)
        .map_err(|e| CliError::input(format!("{}: {e}", file.display())))?;
    let app = ctx
        .client
        .apply_app(v1::ApplyAppRequest {
            team: ctx.team.clone(),
            spec_yaml: text,
        })
        .await?
        .into_inner();
    if ctx.json() {
        print_json(&app_json(&app));
    } else {
        println!(
            "app {} applied (cluster {}, {} components, {} volumes, {} databases)",
            app.name, app.cluster, app.components, app.volumes, app.databases
        );
    }
    Ok(())
}

async fn list(ctx: &mut Ctx) -> CliResult {
    let apps = ctx
        .client
        .list_apps(v1::ListAppsRequest {
            team: ctx.team.clone(),
        })
        .await?
        .into_inner()
        .apps;
    if ctx.json() {
        print_json(&json!({"apps": apps.iter().map(app_json).collect::<Vec<_>>()}));
        return Ok(());
    }
    let mut t = table(&[
        "NAME",
        "CLUSTER",
        "COMPONENTS",
        "VOLUMES",
        "DATABASES",
        "UPDATED",
    ]);
    for a in &apps {
        t.add_row(vec![
            a.name.clone(),
            a.cluster.clone(),
            a.components.to_string(),
            a.volumes.to_string(),
            a.databases.to_string(),
            output::time(a.updated_at_ms),
        ]);
    }
    print_table(&t);
    Ok(())
}

async fn recovery_window(ctx: &mut Ctx, name: String) -> CliResult {
    use ferry_model::pitr::format_ms;
    let w = ctx
        .client
        .get_recovery_window(v1::GetAppRequest {
            team: ctx.team.clone(),
            name,
        })
        .await?
        .into_inner();
    let ranges = |v: &[v1::TimeRange]| -> Vec<serde_json::Value> {
        v.iter()
            .map(
                |r| json!({"from": output::time_json(r.from_ms), "to": output::time_json(r.to_ms)}),
            )
            .collect()
    };
    if ctx.json() {
        let streams: Vec<_> = w
            .streams
            .iter()
            .map(|s| {
                json!({
                    "stream": s.stream,
                    "engine": s.engine,
                    "ranges": ranges(&s.ranges),
                    "gaps": ranges(&s.gaps),
                    "last_position": s.last_position,
                    "state": s.state,
                    "worker": s.worker,
                    "attempt": s.attempt,
                    "error": s.error,
                    "job": s.job,
                    "last_received": output::time_json(s.last_received_ms),
                    "lag_seconds": (s.last_received_ms > 0)
                        .then(|| (ferry_model::now_ms() - s.last_received_ms) as f64 / 1000.0),
                })
            })
            .collect();
        print_json(&json!({"app": w.app, "streams": streams}));
        return Ok(());
    }
    let mut t = table(&[
        "STREAM",
        "ENGINE",
        "FROM",
        "TO",
        "GAP AFTER",
        "ARCHIVED UP TO",
        "STREAM STATE",
    ]);
    let state = |s: &v1::StreamWindow| {
        if s.state.is_empty() {
            "not started".to_owned()
        } else if s.worker.is_empty() {
            s.state.clone()
        } else {
            format!("{} on {} (attempt {})", s.state, s.worker, s.attempt)
        }
    };
    for s in &w.streams {
        let archived = if s.last_received_ms > 0 {
            format!("{} ({})", s.last_position, format_ms(s.last_received_ms))
        } else {
            "nothing yet".into()
        };
        if s.ranges.is_empty() {
            t.add_row(vec![
                s.stream.clone(),
                s.engine.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                archived,
                state(s),
            ]);
            continue;
        }
        for (i, r) in s.ranges.iter().enumerate() {
            let gap = s
                .gaps
                .get(i)
                .map(|g| format!("{} to {}", format_ms(g.from_ms), format_ms(g.to_ms)))
                .unwrap_or_else(|| "-".into());
            t.add_row(vec![
                s.stream.clone(),
                s.engine.clone(),
                format_ms(r.from_ms),
                format_ms(r.to_ms),
                gap,
                if i == 0 {
                    archived.clone()
                } else {
                    String::new()
                },
                if i == 0 { state(s) } else { String::new() },
            ]);
        }
    }
    print_table(&t);
    for s in w.streams.iter().filter(|s| !s.error.is_empty()) {
        eprintln!("{}: last error: {}", s.stream, s.error);
    }
    Ok(())
}

async fn get(ctx: &mut Ctx, name: String) -> CliResult {
    let app = ctx
        .client
        .get_app(v1::GetAppRequest {
            team: ctx.team.clone(),
            name,
        })
        .await?
        .into_inner();
    if ctx.json() {
        print_json(&app_json(&app));
    } else {
        print!("{}", app.spec_yaml);
    }
    Ok(())
}
