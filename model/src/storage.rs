//! Storage locations: where archives go. The backends themselves live in `ferry-storage`.

use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::names::check_name;

/// The name of the location a controller creates for itself when started without flags.
pub const DEFAULT_LOCATION: &str = "local";

/// A named place for archives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageLocation {
    pub name: String,
    pub backend: StorageBackend,
    /// Encryption at rest: the age X25519 recipients (`age1…`) every backup's key is sealed to.
    /// Empty: archives are stored as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypt_to: Vec<String>,
}

/// The backend of a location and its settings. Credentials appear only as references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StorageBackend {
    /// A directory, reachable only from one cluster's machines.
    Local { path: String, cluster: String },
    /// Any S3-compatible endpoint.
    S3 {
        endpoint: String,
        bucket: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        region: String,
        #[serde(default)]
        path_style: bool,
        #[serde(default)]
        access_key_env: String,
        #[serde(default)]
        secret_key_env: String,
    },
}

impl StorageLocation {
    /// Checks the name and the backend's settings.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_name("storage name", &self.name)?;
        match &self.backend {
            StorageBackend::Local { path, cluster } => {
                check_name("cluster name", cluster)?;
                if !std::path::Path::new(path).is_absolute() {
                    return Err(ModelError::Manifest(format!(
                        "storage {:?}: the local path must be absolute (got {path:?})",
                        self.name
                    )));
                }
            }
            StorageBackend::S3 {
                endpoint,
                bucket,
                access_key_env,
                secret_key_env,
                ..
            } => {
                if endpoint.is_empty() || bucket.is_empty() {
                    return Err(ModelError::Manifest(format!(
                        "storage {:?}: s3 needs an endpoint and a bucket",
                        self.name
                    )));
                }
                // Empty: the standard AWS variables of the controller's and workers' own set-up.
                for (what, var) in [
                    ("--access-key-env", access_key_env),
                    ("--secret-key-env", secret_key_env),
                ] {
                    if !var.is_empty() {
                        crate::access::check_secret_env(what, var)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The only cluster that can reach the location, if it is bound to one.
    pub fn bound_cluster(&self) -> Option<&str> {
        match &self.backend {
            StorageBackend::Local { cluster, .. } => Some(cluster),
            StorageBackend::S3 { .. } => None,
        }
    }

    /// `local` or `s3`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            StorageBackend::Local { .. } => "local",
            StorageBackend::S3 { .. } => "s3",
        }
    }

    /// Where it points, for listings.
    pub fn describe(&self) -> String {
        match &self.backend {
            StorageBackend::Local { path, cluster } => format!("{path} (cluster {cluster})"),
            StorageBackend::S3 {
                endpoint,
                bucket,
                prefix,
                ..
            } => format!("{endpoint}/{bucket}/{prefix}"),
        }
    }
}
