//! Registered applications and storage locations: plain records in the store.

use ferry_model::app::AppSpec;
use ferry_model::now_ms;
use ferry_model::storage::{StorageBackend, StorageLocation};

use crate::error::{Error, Result};
use crate::keys;
use crate::records::AppRecord;
use crate::store::{Store, get_json, list_json};

/// Registers or replaces an app.
pub async fn apply(store: &dyn Store, team: &str, spec: AppSpec) -> Result<AppRecord> {
    let record = AppRecord {
        team: team.to_owned(),
        spec,
        updated_at_ms: now_ms(),
    };
    let value = serde_json::to_vec(&record).unwrap_or_default();
    store
        .put(&keys::app(team, &record.spec.name), value)
        .await?;
    Ok(record)
}

/// An app, if registered.
pub async fn find(store: &dyn Store, team: &str, name: &str) -> Result<Option<AppRecord>> {
    Ok(get_json::<AppRecord>(store, &keys::app(team, name))
        .await?
        .map(|(a, _)| a))
}

/// An app, or NotFound.
pub async fn get(store: &dyn Store, team: &str, name: &str) -> Result<AppRecord> {
    find(store, team, name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("app {name:?} not found in team {team:?}")))
}

/// A team's apps, by name.
pub async fn list(store: &dyn Store, team: &str) -> Result<Vec<AppRecord>> {
    Ok(list_json::<AppRecord>(store, &keys::apps_of_team(team))
        .await?
        .into_iter()
        .map(|(a, _)| a)
        .collect())
}

/// Forgets an app. Its backups stay.
pub async fn delete(store: &dyn Store, team: &str, name: &str) -> Result<()> {
    get(store, team, name).await?;
    store.delete(&keys::app(team, name)).await?;
    Ok(())
}

/// Adds a storage location. Adding the same location twice is fine; a different one under an
/// existing name is refused.
pub async fn add_storage(store: &dyn Store, location: StorageLocation) -> Result<StorageLocation> {
    if !location.encrypt_to.is_empty() {
        ferry_crypto::seal::check_recipients(&location.encrypt_to)
            .map_err(|e| Error::InvalidArgument(format!("storage {:?}: {e}", location.name)))?;
    }
    if let Some(existing) = find_storage(store, &location.name).await? {
        if existing == location {
            return Ok(existing);
        }
        return Err(Error::AlreadyExists(format!(
            "storage location {:?} already exists ({}); pick another name",
            location.name,
            existing.describe()
        )));
    }
    let value = serde_json::to_vec(&location).unwrap_or_default();
    store.put(&keys::storage(&location.name), value).await?;
    Ok(location)
}

/// A storage location, if it exists.
pub async fn find_storage(store: &dyn Store, name: &str) -> Result<Option<StorageLocation>> {
    Ok(get_json::<StorageLocation>(store, &keys::storage(name))
        .await?
        .map(|(l, _)| l))
}

/// Every storage location, by name.
pub async fn list_storage(store: &dyn Store) -> Result<Vec<StorageLocation>> {
    Ok(list_json::<StorageLocation>(store, &keys::storages())
        .await?
        .into_iter()
        .map(|(l, _)| l)
        .collect())
}

/// The location a backup of an app in `cluster` goes to: the one named, or else the only kind
/// that needs no choice — `local` if it serves the cluster, else the first S3 location.
pub async fn choose_storage(
    store: &dyn Store,
    named: Option<&str>,
    cluster: &str,
) -> Result<StorageLocation> {
    let location = match named {
        Some(name) => find_storage(store, name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("storage location {name:?} not found")))?,
        None => {
            let all = list_storage(store).await?;
            let local = all
                .iter()
                .find(|l| l.bound_cluster() == Some(cluster))
                .cloned();
            let s3 = all.into_iter().find(|l| l.bound_cluster().is_none());
            local.or(s3).ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "no storage location serves cluster {cluster:?}; add one with \
                     `ferry storage add NAME --local PATH --cluster {cluster}` or `--s3 …`"
                ))
            })?
        }
    };
    check_reachable(&location, cluster)?;
    Ok(location)
}

/// The location a migration goes through: the one named, or else the first s3 location. A
/// local directory is bound to one cluster and cannot carry data to another.
pub async fn choose_migration_storage(
    store: &dyn Store,
    named: Option<&str>,
) -> Result<StorageLocation> {
    let location = match named {
        Some(name) => find_storage(store, name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("storage location {name:?} not found")))?,
        None => list_storage(store)
            .await?
            .into_iter()
            .find(|l| l.bound_cluster().is_none())
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "a migration goes through object storage both clusters reach, and there is \
                     none: add one with `ferry storage add NAME --s3 --endpoint URL --bucket B`"
                        .into(),
                )
            })?,
    };
    if let Some(bound) = location.bound_cluster() {
        return Err(Error::FailedPrecondition(format!(
            "storage location {:?} is a local directory of cluster {bound:?} and cannot carry a \
             migration to another cluster; use an s3 location (`ferry storage add NAME --s3 …`)",
            location.name
        )));
    }
    Ok(location)
}

/// Refuses a location that the cluster's workers cannot reach.
pub fn check_reachable(location: &StorageLocation, cluster: &str) -> Result<()> {
    if let StorageBackend::Local { cluster: bound, .. } = &location.backend
        && bound != cluster
    {
        return Err(Error::FailedPrecondition(format!(
            "storage location {:?} is a local directory of cluster {bound:?}; workers of \
                 cluster {cluster:?} cannot reach it (use an s3 location to move data between \
                 clusters)",
            location.name
        )));
    }
    Ok(())
}
