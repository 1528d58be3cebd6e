//! `ferry demo`: the whole main job on one machine, in one command, with nothing to install.
//! A one-machine controller (`ferry-controller` beside this binary, with its in-process worker)
//! starts in the demo's directory; an example app with a volume of generated files is backed up,
//! damaged, restored into a copy, and the copy is compared with the original file by file
//! (content, modes, mtimes, links, sparse files). The controller is stopped at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::v1;

use crate::args::{DemoArgs, Output};
use crate::commands::{Ctx, jobs};
use crate::exit::{CliError, CliResult};
use crate::output;

/// The demo's controller: a `ferry-controller` process in the demo's directory.
struct Controller {
    child: tokio::process::Child,
    url: String,
    token: String,
    log: PathBuf,
}

/// A sibling binary of this one (or `FERRY_CONTROLLER_BIN`).
fn controller_binary() -> CliResult<PathBuf> {
    if let Some(bin) = std::env::var_os("FERRY_CONTROLLER_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("ferry-controller");
    if beside.is_file() {
        return Ok(beside);
    }
    Err(CliError::failed(format!(
        "ferry demo runs ferry-controller (and ferry-worker) from beside {}: install them there, \
         or set FERRY_CONTROLLER_BIN",
        exe.display()
    )))
}

impl Controller {
    /// Starts it on a free loopback port and waits for its admin token and its API.
    async fn start(root: &Path) -> CliResult<Controller> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(fail("finding a free port"))?
            .port();
        let data = root.join("ferry-data");
        let log = root.join("controller.log");
        let out = std::fs::File::create(&log).map_err(fail("creating the controller log"))?;
        let err = out.try_clone()?;
        let child = tokio::process::Command::new(controller_binary()?)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--heartbeat-interval", "500ms"])
            .env_remove("FERRY_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(fail("starting ferry-controller"))?;
        let mut controller = Controller {
            child,
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            log,
        };
        let token_file = data.join("admin.token");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = controller.child.try_wait() {
                return Err(CliError::failed(format!(
                    "ferry-controller exited ({status}); see {}",
                    controller.log.display()
                )));
            }
            if let Ok(token) = crate::login::read_token(&token_file)
                && crate::client::connect(&controller.url, Some(&token), &Default::default())
                    .await
                    .is_ok()
            {
                controller.token = token;
                return Ok(controller);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(CliError::failed(format!(
                    "ferry-controller did not answer within 30s; see {}",
                    controller.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn step(n: u32, text: &str) {
    println!("\n[{n}/6] {text}");
}

fn fail(what: &str) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |e| CliError::failed(format!("{what}: {e}"))
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> CliResult {
    let tmp;
    let root: PathBuf = match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(fail("creating the demo directory"))?;
            std::path::absolute(dir)?
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("ferry-demo-")
                .tempdir()
                .map_err(fail("creating a temporary directory"))?;
            tmp.path().to_path_buf()
        }
    };
    println!("Ferry demo in {}", root.display());

    step(1, "Starting a one-machine controller and its worker");
    let mut controller = Controller::start(&root).await?;
    let url = controller.url.clone();
    let client = crate::client::connect(&url, Some(&controller.token), &Default::default()).await?;
    let mut ctx = Ctx {
        client,
        team: "demo".into(),
        output: Output::Table,
    };
    let result = tour(&mut ctx, &root, &url).await;
    controller.stop().await;
    if result.is_err() {
        eprintln!("controller log: {}", controller.log.display());
    }
    result?;
    println!("\nDemo complete: the restored copy is identical to the original.");
    Ok(())
}

async fn tour(ctx: &mut Ctx, root: &Path, url: &str) -> CliResult {
    let worker = wait_for_worker(ctx).await?;
    println!("      controller at {url}, worker {worker} (cluster local)");

    step(
        2,
        "Creating the example app `shop` with a volume of generated files",
    );
    let uploads = root.join("srv/shop/uploads");
    let reference = root.join("reference");
    let made = ferry_archive::sample::generate(&uploads, 7).map_err(fail("generating files"))?;
    ferry_archive::sample::generate(&reference, 7).map_err(fail("generating files"))?;
    println!("      {} ({made})", uploads.display());
    let spec = format!(
        "name: shop\ncluster: local\ncomponents:\n  - name: web\n    config: {{ingress_host: shop.demo.local, env: {{LOG_LEVEL: info}}}}\n    volumes:\n      - {{name: uploads, path: {}}}\n",
        uploads.display()
    );
    ctx.client
        .apply_app(v1::ApplyAppRequest {
            team: ctx.team.clone(),
            spec_yaml: spec,
        })
        .await?;

    step(
        3,
        "Backing it up (tar → zstd → local storage, manifest written last)",
    );
    let backup = ctx
        .client
        .create_backup(v1::CreateBackupRequest {
            team: ctx.team.clone(),
            app: "shop".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let backup = jobs::follow(ctx, &backup.id).await?;
    expect_completed(&backup)?;
    println!(
        "      backup {}: {} shards, {} read, {} stored",
        backup.id,
        backup.shards.len(),
        output::size(backup.bytes),
        output::size(backup.stored_bytes)
    );

    step(4, "Damaging the app's files");
    let damage = ferry_archive::sample::damage(&uploads).map_err(fail("damaging files"))?;
    let diffs = ferry_archive::compare_trees(&reference, &uploads).map_err(fail("comparing"))?;
    println!(
        "      {damage}; the volume now differs from the original in {} places",
        diffs.len()
    );

    step(
        5,
        "Restoring into a copy: app shop-copy, paths and host names rewritten",
    );
    let old = root.join("srv/shop");
    let new = root.join("srv/shop-copy");
    let restore = ctx
        .client
        .create_restore(v1::CreateRestoreRequest {
            team: ctx.team.clone(),
            backup_id: backup.id.clone(),
            to_app: "shop-copy".into(),
            rewrites: vec![
                format!("{}={}", old.display(), new.display()),
                "shop.demo.local=shop-copy.demo.local".into(),
            ],
            ..Default::default()
        })
        .await?
        .into_inner();
    let restore = jobs::follow(ctx, &restore.id).await?;
    expect_completed(&restore)?;

    step(6, "Verifying the copy against the original");
    let copy = new.join("uploads");
    let diffs = ferry_archive::compare_trees(&reference, &copy).map_err(fail("comparing"))?;
    if !diffs.is_empty() {
        return Err(CliError::failed(format!(
            "the restored copy differs from the original:\n  {}",
            diffs.join("\n  ")
        )));
    }
    println!(
        "      {}: every file, mode, mtime, link and hole matches",
        copy.display()
    );
    let app = ctx
        .client
        .get_app(v1::GetAppRequest {
            team: ctx.team.clone(),
            name: "shop-copy".into(),
        })
        .await?
        .into_inner();
    if !app.spec_yaml.contains("shop-copy.demo.local") {
        return Err(CliError::failed(
            "the restored app's config was not rewritten",
        ));
    }
    println!("      app shop-copy registered with ingress_host shop-copy.demo.local");
    Ok(())
}

fn expect_completed(job: &v1::Job) -> CliResult {
    if job.state == v1::JobState::Completed as i32 {
        return Ok(());
    }
    Err(CliError::failed(format!(
        "{} ended {}: {}",
        job.id,
        output::job_state(job.state),
        job.message
    )))
}

async fn wait_for_worker(ctx: &mut Ctx) -> CliResult<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let workers = ctx
            .client
            .list_workers(v1::ListWorkersRequest::default())
            .await?
            .into_inner()
            .workers;
        if let Some(w) = workers.first() {
            return Ok(w.id.clone());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::failed(
                "the embedded worker did not register within 30s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
