//! `ferry token …`, `ferry audit list`, `ferry whoami`, `ferry login`, `ferry logout`,
//! `ferry context …`.

use ferry_proto::v1;
use serde_json::json;

use super::Ctx;
use crate::args::{AuditCmd, ContextCmd, LoginArgs, Output, TokenCmd, TrustCmd};
use crate::exit::{CliError, CliResult};
use crate::login::{self, Config, Target};
use crate::output::{self, print_json, print_table, table};

fn token_json(t: &v1::Token) -> serde_json::Value {
    json!({
        "name": t.name, "kind": t.kind, "team": t.team, "all_teams": t.all_teams,
        "role": t.role, "cluster": t.cluster, "created_by": t.created_by,
        "created_at": output::time_json(t.created_at_ms),
        "expires_at": output::time_json(t.expires_at_ms),
    })
}

fn grant(t: &v1::Token) -> String {
    match t.kind.as_str() {
        "worker" => format!("worker of cluster {}", t.cluster),
        _ if t.all_teams => format!("{} of every team", t.role),
        _ => format!("{} of team {}", t.role, t.team),
    }
}

/// `ferry token create|list|revoke`.
pub async fn token(ctx: &mut Ctx, cmd: TokenCmd) -> CliResult {
    match cmd {
        TokenCmd::Create {
            name,
            role,
            all_teams,
            worker,
            cluster,
            ttl,
        } => {
            let created = ctx
                .client
                .create_token(v1::CreateTokenRequest {
                    name,
                    team: ctx.team.clone(),
                    all_teams,
                    role: role.unwrap_or_default(),
                    worker,
                    cluster: cluster.unwrap_or_default(),
                    ttl_seconds: ttl.map(|d| d.as_secs().max(1) as i64).unwrap_or(0),
                })
                .await?
                .into_inner();
            let t = created.token.unwrap_or_default();
            if ctx.json() {
                let mut doc = token_json(&t);
                doc["token"] = json!(created.secret);
                print_json(&doc);
            } else {
                println!(
                    "token {} ({}) created. Its secret, shown this once:",
                    t.name,
                    grant(&t)
                );
                println!("{}", created.secret);
            }
            Ok(())
        }
        TokenCmd::List => {
            let tokens = ctx
                .client
                .list_tokens(v1::ListTokensRequest {
                    team: ctx.team.clone(),
                })
                .await?
                .into_inner()
                .tokens;
            if ctx.json() {
                let list: Vec<_> = tokens.iter().map(token_json).collect();
                print_json(&json!({ "tokens": list }));
                return Ok(());
            }
            let mut t = table(&["NAME", "GRANTS", "CREATED", "EXPIRES", "CREATED BY"]);
            for tok in &tokens {
                t.add_row(vec![
                    tok.name.clone(),
                    grant(tok),
                    output::time(tok.created_at_ms),
                    if tok.expires_at_ms > 0 {
                        output::time(tok.expires_at_ms)
                    } else {
                        "never".into()
                    },
                    if tok.created_by.is_empty() {
                        "-".into()
                    } else {
                        tok.created_by.clone()
                    },
                ]);
            }
            print_table(&t);
            Ok(())
        }
        TokenCmd::Revoke { name } => {
            ctx.client
                .revoke_token(v1::RevokeTokenRequest { name: name.clone() })
                .await?;
            if ctx.json() {
                print_json(&json!({"name": name, "revoked": true}));
            } else {
                println!("token {name} revoked");
            }
            Ok(())
        }
    }
}

/// `--since`: a duration back from now, or an RFC 3339 time.
fn since_ms(since: &str) -> CliResult<i64> {
    if let Ok(d) = humantime::parse_duration(since) {
        return Ok(ferry_model::now_ms() - d.as_millis() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(since)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            CliError::input(format!(
                "--since {since:?}: expected a duration (24h, 7d) or an RFC 3339 time"
            ))
        })
}

/// `ferry trust …`
pub async fn trust(ctx: &mut Ctx, cmd: TrustCmd) -> CliResult {
    match cmd {
        TrustCmd::Add { name, public_key } => {
            let t = ctx
                .client
                .add_trust(v1::AddTrustRequest { name, public_key })
                .await?
                .into_inner();
            if ctx.json() {
                print_json(&json!({"name": t.name, "public_key": t.public_key}));
            } else {
                println!(
                    "trusting {}: its signed backups restore in full here",
                    t.name
                );
            }
        }
        TrustCmd::List => {
            let r = ctx
                .client
                .list_trust(v1::ListTrustRequest {})
                .await?
                .into_inner();
            if ctx.json() {
                print_json(&json!({
                    "own_public_key": r.own_public_key,
                    "trusted": r.trusted.iter().map(|t| json!({"name": t.name,
                        "public_key": t.public_key, "added_at_ms": t.added_at_ms}))
                        .collect::<Vec<_>>(),
                }));
            } else {
                let mut t = table(&["NAME", "PUBLIC KEY"]);
                t.add_row(vec!["(this installation)".into(), r.own_public_key]);
                for e in r.trusted {
                    t.add_row(vec![e.name, e.public_key]);
                }
                print_table(&t);
            }
        }
        TrustCmd::Remove { name } => {
            ctx.client
                .remove_trust(v1::RemoveTrustRequest { name: name.clone() })
                .await?;
            if !ctx.json() {
                println!("{name} is no longer trusted: its backups restore data only");
            } else {
                print_json(&json!({"removed": name}));
            }
        }
    }
    Ok(())
}

/// `ferry audit list`.
pub async fn audit(ctx: &mut Ctx, cmd: AuditCmd) -> CliResult {
    let AuditCmd::List {
        since,
        token,
        limit,
    } = cmd;
    let entries = ctx
        .client
        .list_audit(v1::ListAuditRequest {
            team: ctx.team.clone(),
            since_ms: since_ms(&since)?,
            token: token.unwrap_or_default(),
            limit,
        })
        .await?
        .into_inner()
        .entries;
    if ctx.json() {
        let list: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "at": output::time_json(e.at_ms), "token": e.token, "team": e.team,
                    "role": e.role, "call": e.call, "target": e.target, "result": e.result,
                    "message": e.message, "peer": e.peer,
                })
            })
            .collect();
        print_json(&json!({ "entries": list }));
        return Ok(());
    }
    let mut t = table(&["TIME", "TOKEN", "TEAM", "ROLE", "CALL", "TARGET", "RESULT"]);
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    for e in &entries {
        let result = if e.message.is_empty() {
            e.result.clone()
        } else {
            format!("{}: {}", e.result, e.message)
        };
        t.add_row(vec![
            output::time(e.at_ms),
            dash(&e.token),
            dash(&e.team),
            dash(&e.role),
            e.call.clone(),
            dash(&e.target),
            result,
        ]);
    }
    print_table(&t);
    Ok(())
}

fn identity_text(id: &v1::Identity) -> String {
    let reach = if id.all_teams {
        "every team".to_owned()
    } else {
        format!("team {}", id.team)
    };
    let expiry = if id.expires_at_ms > 0 {
        format!(", expires {}", output::time(id.expires_at_ms))
    } else {
        String::new()
    };
    format!("token {}: {} of {reach}{expiry}", id.token, id.role)
}

/// `ferry whoami`.
pub async fn whoami(ctx: &mut Ctx) -> CliResult {
    let id = ctx
        .client
        .who_am_i(v1::WhoAmIRequest {})
        .await?
        .into_inner();
    if ctx.json() {
        print_json(&json!({
            "token": id.token, "team": id.team, "all_teams": id.all_teams, "role": id.role,
            "expires_at": output::time_json(id.expires_at_ms),
        }));
    } else {
        println!("{}", identity_text(&id));
    }
    Ok(())
}

fn config_dir() -> CliResult<std::path::PathBuf> {
    login::config_dir().ok_or_else(|| {
        CliError::input("no config directory: set FERRY_CONFIG_DIR or HOME".to_owned())
    })
}

/// `ferry login URL --token-file F`: checks the token against the controller, then saves it.
pub async fn login(args: LoginArgs, target: &Target, out: Output) -> CliResult {
    let token = login::read_token(&args.token_file)?;
    let mut client = crate::client::connect(&args.url, Some(&token), &target.tls).await?;
    let id = client
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .map_err(|s| {
            let mut e = CliError::from(s);
            e.message = format!("login refused, nothing saved: {}", e.message);
            e
        })?
        .into_inner();
    let name = args.name.unwrap_or_else(|| login::name_from_url(&args.url));
    ferry_model::names::check_name("context name", &name)
        .map_err(|e| CliError::input(e.to_string()))?;
    let dir = config_dir()?;
    let token_file = dir.join("tokens").join(format!("{name}.token"));
    login::write_private(&token_file, format!("{token}\n").as_bytes())?;
    let ca_cert = match &target.tls.ca_cert {
        Some(p) => Some(std::path::absolute(p)?),
        None => None,
    };
    let mut config = Config::load(&dir)?;
    config.contexts.insert(
        name.clone(),
        login::Context {
            controller: args.url.clone(),
            token_file,
            ca_cert,
            team: (!target.team.is_empty()).then(|| target.team.clone()),
        },
    );
    config.current = Some(name.clone());
    config.save(&dir)?;
    if out == Output::Json {
        print_json(
            &json!({"context": name, "controller": args.url, "token": id.token,
            "team": id.team, "all_teams": id.all_teams, "role": id.role}),
        );
    } else {
        println!(
            "logged in to {} as {}; saved as context {name} (now current)",
            args.url,
            identity_text(&id)
        );
    }
    Ok(())
}

/// `ferry logout [NAME]`.
pub fn logout(name: Option<&str>) -> CliResult {
    let dir = config_dir()?;
    let mut config = Config::load(&dir)?;
    let name = match name.map(str::to_owned).or(config.current.clone()) {
        Some(n) => n,
        None => return Err(CliError::input("no current context to log out of")),
    };
    let Some(context) = config.contexts.remove(&name) else {
        return Err(CliError {
            code: crate::exit::NOT_FOUND,
            message: format!("no saved context {name:?}"),
        });
    };
    let _ = std::fs::remove_file(&context.token_file);
    if config.current.as_deref() == Some(&name) {
        config.current = None;
    }
    config.save(&dir)?;
    println!("context {name} and its token forgotten");
    Ok(())
}

/// `ferry context list|use`.
pub fn context(cmd: &ContextCmd, out: Output) -> CliResult {
    let dir = config_dir()?;
    let mut config = Config::load(&dir)?;
    match cmd {
        ContextCmd::List => {
            if out == Output::Json {
                let list: Vec<_> = config
                    .contexts
                    .iter()
                    .map(|(n, c)| {
                        json!({"name": n, "controller": c.controller, "team": c.team,
                            "current": config.current.as_deref() == Some(n.as_str())})
                    })
                    .collect();
                print_json(&json!({ "contexts": list }));
                return Ok(());
            }
            let mut t = table(&["CURRENT", "NAME", "CONTROLLER", "TEAM"]);
            for (n, c) in &config.contexts {
                let current = if config.current.as_deref() == Some(n.as_str()) {
                    "*"
                } else {
                    ""
                };
                t.add_row(vec![
                    current.to_owned(),
                    n.clone(),
                    c.controller.clone(),
                    c.team.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            print_table(&t);
            Ok(())
        }
        ContextCmd::Use { name } => {
            if !config.contexts.contains_key(name) {
                return Err(CliError {
                    code: crate::exit::NOT_FOUND,
                    message: format!("no saved context {name:?} (see `ferry context list`)"),
                });
            }
            config.current = Some(name.clone());
            config.save(&dir)?;
            println!("now using context {name}");
            Ok(())
        }
    }
}
