//! ferry-worker: dials the controller, registers its cluster, node, capacity and tools, and runs
//! the shards it is handed as streaming pipelines (dump → tar → zstd → storage, and back).
//! See README.md for the module map.

pub mod controllers;
pub mod engines;
pub mod executor;
pub mod memory;
pub mod metrics;
pub mod parent;
pub mod pipeline;
pub mod policy;
pub mod session;
pub mod tools;

use std::path::PathBuf;

pub use session::run;

/// How a worker joins.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// URL of the controller, e.g. `http://10.0.0.1:7420`; several, comma-separated, for HA.
    pub controller: String,
    pub cluster: String,
    pub node: String,
    /// Shards run at once.
    pub max_shards: u32,
    /// Scratch space (never used for whole archives).
    pub work_dir: PathBuf,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The join token (`ferry token create NAME --worker --cluster C`).
    pub token: String,
    /// TLS for `https://` controller URLs.
    pub tls: ferry_proto::transport::ClientTls,
    /// What this worker agrees to do.
    pub policy: policy::Policy,
    /// The age identities that open encrypted backups (`--identity-file`); none: this worker
    /// backs up into encrypted locations (public keys suffice) but restores none of them.
    pub identities: std::sync::Arc<ferry_crypto::seal::Identities>,
}

pub use ferry_telemetry::{default_node_name, logging};
