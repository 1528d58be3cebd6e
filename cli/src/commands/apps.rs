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
