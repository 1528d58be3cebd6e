#![recursion_limit = "256"]
//! `ferry`: the command line. Talks only to the controller (except `demo`, which starts one).

mod args;
mod client;
mod commands;
mod demo;
mod exit;
mod login;
mod output;
mod progress;

use clap::Parser;

use args::{ClusterCmd, Command, WorkerCmd};
use commands::Ctx;
use exit::{CliError, CliResult};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::BAD_INPUT
            } else {
                exit::OK
            };
            let _ = e.print();
            return std::process::ExitCode::from(code);
        }
    };
    // The CLI logs only warnings unless RUST_LOG says otherwise.
    let _telemetry = ferry_telemetry::logging::init(false, "warn");
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            std::process::ExitCode::from(e.code)
        }
    }
}

async fn run(cli: args::Cli) -> CliResult {
    if let Command::Demo(args) = cli.command {
        return demo::run(args).await;
    }
    if let Command::Completions { shell } = cli.command {
        let mut command = <args::Cli as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, "ferry", &mut script);
        // A closed pipe (`| head`) is not an error worth a message.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        return Ok(());
    }
    if let Command::Context(cmd) = &cli.command {
        return commands::access::context(cmd, cli.output);
    }
    if let Command::Logout { name } = &cli.command {
        return commands::access::logout(name.as_deref());
    }
    let target = login::resolve(&cli)?;
    if !target.team.is_empty() {
        ferry_model::names::check_name("team name", &target.team)
            .map_err(|e| CliError::input(e.to_string()))?;
    }
    if let Command::Login(args) = cli.command {
        return commands::access::login(args, &target, cli.output).await;
    }
    let client = client::connect(&target.url, target.token.as_deref(), &target.tls).await?;
    let mut ctx = Ctx {
        client,
        team: target.team,
        output: cli.output,
    };
    match cli.command {
        Command::App(cmd) => commands::apps::run(&mut ctx, cmd).await,
        Command::Storage(cmd) => commands::storage::run(&mut ctx, cmd).await,
        Command::Worker(WorkerCmd::List { cluster }) => {
            commands::workers::list_workers(&mut ctx, cluster).await
        }
        Command::Cluster(ClusterCmd::List) => commands::workers::list_clusters(&mut ctx).await,
        Command::Backup(cmd) => commands::jobs::backup(&mut ctx, cmd).await,
        Command::Restore(cmd) => commands::jobs::restore(&mut ctx, cmd).await,
        Command::Migrate(args) => commands::jobs::migrate(&mut ctx, args).await,
        Command::Schedule(cmd) => commands::schedules::run(&mut ctx, cmd).await,
        Command::Token(cmd) => commands::access::token(&mut ctx, cmd).await,
        Command::Audit(cmd) => commands::access::audit(&mut ctx, cmd).await,
        Command::Trust(cmd) => commands::access::trust(&mut ctx, cmd).await,
        Command::Whoami => commands::access::whoami(&mut ctx).await,
        Command::Demo(_)
        | Command::Completions { .. }
        | Command::Login(_)
        | Command::Logout { .. }
        | Command::Context(_) => unreachable!("handled above"),
    }
}
