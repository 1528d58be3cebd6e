//! Encryption at rest, the controller's part (DESIGN §6 "Data at rest"). The controller never
//! holds an identity: it makes each backup's key pair, keeps only the public half (workers
//! encrypt to it) and stores the identity **sealed** to the location's recipients as the
//! backup's key file, beside where its manifest will be. Rotating recipients is done by a
//! client holding an identity: it lists the key files, reseals them and writes them back; this
//! module only checks that what comes back is a key file, in place of one.

use ferry_crypto::seal::{KEY_FILE_LIMIT, KeyPair, check_recipients};
use ferry_model::layout;
use ferry_model::storage::StorageLocation;
use ferry_model::task::Sealed;
use ferry_proto::v1;

use crate::apps;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys;

/// Key files listed per page.
const PAGE: usize = 200;

/// For a backup into an encrypted location: a fresh key pair, its identity sealed to the
/// location's recipients and written as the backup's key file. If the recipients change while
/// this runs (a rotation started), the key file is sealed again to the new ones, so a rotation
/// never misses a backup planned meanwhile. `None` for a location that does not encrypt.
pub async fn new_backup_key(
    ctx: &Context,
    location: &StorageLocation,
    team: &str,
    app: &str,
    id: &str,
) -> Result<Option<Sealed>> {
    if location.encrypt_to.is_empty() {
        return Ok(None);
    }
    let pair = KeyPair::generate();
    let key_file = layout::key_file(team, app, id);
    let store = ferry_storage::open(location)?;
    let mut recipients = location.encrypt_to.clone();
    loop {
        let sealed = pair
            .sealed_to(&recipients)
            .map_err(|e| Error::FailedPrecondition(format!("storage {}: {e}", location.name)))?;
        store.put_bytes(&key_file, sealed).await?;
        let now = apps::find_storage(&*ctx.store, &location.name)
            .await?
            .map(|l| l.encrypt_to)
            .unwrap_or_default();
        if now == recipients || now.is_empty() {
            break;
        }
        recipients = now;
    }
    Ok(Some(Sealed {
        recipient: pair.recipient(),
        key_file,
    }))
}

/// Replaces an encrypted location's recipients. New backups seal their keys to the new ones at
/// once; existing key files are resealed by the client (`ferry storage rotate-recipients`).
pub async fn set_recipients(
    ctx: &Context,
    name: &str,
    recipients: Vec<String>,
) -> Result<StorageLocation> {
    let recipients: Vec<String> = recipients.iter().map(|r| r.trim().to_owned()).collect();
    check_recipients(&recipients).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let (mut location, rev) =
        crate::store::get_json::<StorageLocation>(&*ctx.store, &keys::storage(name))
            .await?
            .ok_or_else(|| Error::NotFound(format!("storage location {name:?} not found")))?;
    if location.encrypt_to.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "storage location {name:?} does not encrypt; encryption is chosen when a location is \
             added (ferry storage add … --encrypt-to RECIPIENT)"
        )));
    }
    location.encrypt_to = recipients;
    let done = ctx
        .store
        .txn(
            vec![crate::store::Condition::ModRevision(
                keys::storage(name),
                rev,
            )],
            vec![crate::store::Op::put_json(keys::storage(name), &location)],
        )
        .await?;
    if !done {
        return Err(Error::FailedPrecondition(format!(
            "storage location {name:?} changed meanwhile; try again"
        )));
    }
    tracing::info!(storage = %name, recipients = location.encrypt_to.len(), "recipients replaced");
    Ok(location)
}

/// A page of the location's key files (in key order, after `after`).
pub async fn list_key_files(
    ctx: &Context,
    name: &str,
    after: &str,
) -> Result<(Vec<v1::KeyFile>, String)> {
    let location = encrypted_location(ctx, name).await?;
    let store = ferry_storage::open(&location)?;
    let mut keys: Vec<String> = store
        .list("teams/")
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| is_key_file(k) && k.as_str() > after)
        .collect();
    keys.sort();
    let more = keys.len() > PAGE;
    keys.truncate(PAGE);
    let mut files = Vec::with_capacity(keys.len());
    for key in keys {
        let sealed = store.get_bytes(&key, KEY_FILE_LIMIT).await?;
        files.push(v1::KeyFile { key, sealed });
    }
    let next = if more {
        files.last().map(|f| f.key.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok((files, next))
}

/// Writes resealed key files back, each in place of an existing one.
pub async fn rewrite_key_files(ctx: &Context, name: &str, files: Vec<v1::KeyFile>) -> Result<u64> {
    let location = encrypted_location(ctx, name).await?;
    let store = ferry_storage::open(&location)?;
    for f in &files {
        if !is_key_file(&f.key) {
            return Err(Error::InvalidArgument(format!(
                "{:?} is not a key file",
                f.key
            )));
        }
        if !ferry_crypto::seal::is_key_file(&f.sealed) {
            return Err(Error::InvalidArgument(format!(
                "the new content of {} is not a sealed key file",
                f.key
            )));
        }
        if store.head(&f.key).await?.is_none() {
            return Err(Error::NotFound(format!(
                "{} does not exist in storage {name} (only existing key files are rewritten)",
                f.key
            )));
        }
    }
    for f in files.iter() {
        store.put_bytes(&f.key, f.sealed.clone()).await?;
    }
    tracing::info!(storage = %name, written = files.len(), "key files resealed");
    Ok(files.len() as u64)
}

async fn encrypted_location(ctx: &Context, name: &str) -> Result<StorageLocation> {
    let location = apps::find_storage(&*ctx.store, name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("storage location {name:?} not found")))?;
    if location.encrypt_to.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "storage location {name:?} does not encrypt"
        )));
    }
    Ok(location)
}

/// `teams/T/apps/A/backups/ID/key.age`
fn is_key_file(key: &str) -> bool {
    matches!(
        key.split('/').collect::<Vec<_>>().as_slice(),
        ["teams", t, "apps", a, "backups", id, layout::KEY_FILE]
            if [t, a, id].iter().all(|p| ferry_model::names::check_name("name", p).is_ok())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backup_key_files_are_key_files() {
        assert!(is_key_file("teams/t/apps/a/backups/a-1/key.age"));
        assert!(!is_key_file("teams/t/apps/a/backups/a-1/manifest.json"));
        assert!(!is_key_file("teams/t/apps/a/backups/a-1/shards/key.age"));
        assert!(!is_key_file("teams/../apps/a/backups/a-1/key.age"));
        assert!(!is_key_file("key.age"));
    }
}
