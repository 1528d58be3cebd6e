//! `ferry storage …`

use ferry_proto::v1;
use serde_json::json;

use super::Ctx;
use crate::args::StorageCmd;
use crate::exit::{CliError, CliResult};
use crate::output::{print_json, print_table, table};

/// Runs a `storage` subcommand.
pub async fn run(ctx: &mut Ctx, cmd: StorageCmd) -> CliResult {
    match cmd {
        StorageCmd::Add {
            name,
            local,
            cluster,
            s3,
            endpoint,
            bucket,
            prefix,
            region,
            path_style,
            access_key_env,
            secret_key_env,
            encrypt_to,
        } => {
            let backend = if s3 {
                // clap checked the endpoint's scheme and the variable names.
                v1::storage_location::Backend::S3(v1::S3Storage {
                    endpoint: endpoint.unwrap_or_default(),
                    bucket: bucket.unwrap_or_default(),
                    prefix: prefix.unwrap_or_default(),
                    region: region.unwrap_or_default(),
                    path_style,
                    access_key_env: access_key_env.unwrap_or_default(),
                    secret_key_env: secret_key_env.unwrap_or_default(),
                })
            } else {
                let Some(path) = local else {
                    return Err(CliError::input(
                        "say where: --local PATH --cluster C, or --s3 --endpoint URL --bucket B",
                    ));
                };
                let path = std::path::absolute(&path)
                    .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
                v1::storage_location::Backend::Local(v1::LocalStorage {
                    path: path.to_string_lossy().into_owned(),
                    cluster: cluster.unwrap_or_default(),
                })
            };
            let location = v1::StorageLocation {
                name,
                encrypt_to,
                backend: Some(backend),
            };
            let added = ctx
                .client
                .add_storage(v1::AddStorageRequest {
                    location: Some(location),
                })
                .await?
                .into_inner();
            if ctx.json() {
                print_json(&location_json(&added));
            } else {
                println!("storage {} added ({})", added.name, describe(&added));
            }
            Ok(())
        }
        StorageCmd::RotateRecipients {
            name,
            encrypt_to,
            identity_file,
        } => rotate_recipients(ctx, name, encrypt_to, identity_file).await,
        StorageCmd::Sync { name } => {
            let r = ctx
                .client
                .sync_storage(v1::SyncStorageRequest { name: name.clone() })
                .await?
                .into_inner();
            if ctx.json() {
                print_json(
                    &json!({"storage": name, "listed": r.listed, "added": r.added,
                    "removed": r.removed, "invalid": r.invalid}),
                );
            } else {
                println!(
                    "storage {name} synced: {} backups there, {} added to the catalog, {} removed \
                     (manifest gone), {} unreadable (see the controller log)",
                    r.listed, r.added, r.removed, r.invalid
                );
            }
            Ok(())
        }
        StorageCmd::Gc { name, dry_run } => {
            let r = ctx
                .client
                .collect_garbage(v1::CollectGarbageRequest {
                    name: name.clone(),
                    dry_run,
                })
                .await?
                .into_inner();
            if ctx.json() {
                print_json(&json!({"storage": name, "dry_run": dry_run,
                    "packs_deleted": r.packs_deleted, "bytes_freed": r.bytes_freed,
                    "packs_referenced": r.packs_referenced, "packs_young": r.packs_young,
                    "uploads_aborted": r.uploads_aborted,
                    "log_chunks_deleted": r.log_chunks_deleted}));
            } else {
                let verb = if dry_run { "would delete" } else { "deleted" };
                println!(
                    "storage {name}: {verb} {} unreferenced pack(s), {}; kept {} referenced and {} \
                     too young to collect; aborted {} unfinished upload(s); {verb} {} log chunk(s) \
                     no kept backup needs",
                    r.packs_deleted,
                    bytesize::ByteSize(r.bytes_freed),
                    r.packs_referenced,
                    r.packs_young,
                    r.uploads_aborted,
                    r.log_chunks_deleted
                );
            }
            Ok(())
        }
        StorageCmd::List => {
            let all = ctx
                .client
                .list_storage(v1::ListStorageRequest {})
                .await?
                .into_inner()
                .locations;
            if ctx.json() {
                print_json(
                    &json!({"locations": all.iter().map(location_json).collect::<Vec<_>>()}),
                );
                return Ok(());
            }
            let mut t = table(&["NAME", "TYPE", "WHERE", "ENCRYPTED"]);
            for l in &all {
                let encrypted = match l.encrypt_to.len() {
                    0 => "no".to_owned(),
                    n => format!("{n} recipient(s)"),
                };
                t.add_row(vec![l.name.clone(), kind(l).into(), describe(l), encrypted]);
            }
            print_table(&t);
            Ok(())
        }
    }
}

/// Sets the new recipients first (backups planned from now on seal their keys to them), then
/// reseals every existing key file here and writes it back, page by page.
async fn rotate_recipients(
    ctx: &mut Ctx,
    name: String,
    encrypt_to: Vec<String>,
    identity_files: Vec<std::path::PathBuf>,
) -> CliResult {
    let identities = ferry_crypto::seal::Identities::load(&identity_files)
        .map_err(|e| CliError::input(e.to_string()))?;
    ferry_crypto::seal::check_recipients(&encrypt_to)
        .map_err(|e| CliError::input(e.to_string()))?;
    ctx.client
        .set_recipients(v1::SetRecipientsRequest {
            storage: name.clone(),
            encrypt_to: encrypt_to.clone(),
        })
        .await?;
    let (mut written, mut unopened) = (0u64, Vec::new());
    let mut page_token = String::new();
    loop {
        let page = ctx
            .client
            .list_key_files(v1::ListKeyFilesRequest {
                storage: name.clone(),
                page_token: page_token.clone(),
            })
            .await?
            .into_inner();
        let mut files = Vec::with_capacity(page.files.len());
        for f in page.files {
            match identities.open(&f.sealed, &f.key) {
                Ok(text) => files.push(v1::KeyFile {
                    sealed: ferry_crypto::seal::seal(&encrypt_to, &text)
                        .map_err(|e| CliError::input(e.to_string()))?,
                    key: f.key,
                }),
                Err(_) => unopened.push(f.key),
            }
        }
        if !files.is_empty() {
            written += ctx
                .client
                .rewrite_key_files(v1::RewriteKeyFilesRequest {
                    storage: name.clone(),
                    files,
                })
                .await?
                .into_inner()
                .written;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if ctx.json() {
        print_json(
            &json!({"storage": name, "recipients": encrypt_to, "resealed": written,
            "not_opened": unopened}),
        );
    } else {
        println!(
            "storage {name}: {} recipient(s) now; {written} key file(s) resealed",
            encrypt_to.len()
        );
    }
    if let Some(first) = unopened.first() {
        return Err(CliError::input(format!(
            "{} key file(s) did not open with the identities given (e.g. {first}); they still \
             open only with their old recipients: run again with an identity that opens them",
            unopened.len()
        )));
    }
    Ok(())
}

fn kind(l: &v1::StorageLocation) -> &'static str {
    match &l.backend {
        Some(v1::storage_location::Backend::Local(_)) => "local",
        Some(v1::storage_location::Backend::S3(_)) => "s3",
        None => "unknown",
    }
}

fn describe(l: &v1::StorageLocation) -> String {
    match &l.backend {
        Some(v1::storage_location::Backend::Local(x)) => {
            format!("{} (cluster {})", x.path, x.cluster)
        }
        Some(v1::storage_location::Backend::S3(s)) => {
            format!("{}/{}/{}", s.endpoint, s.bucket, s.prefix)
        }
        None => String::new(),
    }
}

fn location_json(l: &v1::StorageLocation) -> serde_json::Value {
    match &l.backend {
        Some(v1::storage_location::Backend::Local(x)) => {
            json!({"name": l.name, "type": "local", "path": x.path, "cluster": x.cluster,
                "encrypt_to": l.encrypt_to})
        }
        Some(v1::storage_location::Backend::S3(s)) => json!({
            "name": l.name, "type": "s3", "endpoint": s.endpoint, "bucket": s.bucket,
            "prefix": s.prefix, "region": s.region, "path_style": s.path_style,
            "access_key_env": s.access_key_env, "secret_key_env": s.secret_key_env,
            "encrypt_to": l.encrypt_to,
        }),
        None => json!({"name": l.name}),
    }
}
