//! The `ferry.v1` API: generated client/server code ([`v1`]), the descriptor set for gRPC
//! reflection, and the validated domain types every incoming message is turned into at the edge
//! ([`model`]). Code past the edge never touches raw prost structs.

pub mod model;
pub mod names;

/// Generated from `ferry/v1/*.proto`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("ferry.v1");
}

/// Encoded descriptors of the ferry.v1 services, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferry_descriptor");

pub use model::ProtocolError;

pub mod transport;

/// gRPC metadata key naming the leader's URL when a follower refuses a call.
pub const LEADER_HEADER: &str = "ferry-leader";
/// gRPC metadata key of a worker session's id (every worker call after Register).
pub const WORKER_ID_HEADER: &str = "ferry-worker-id";
/// gRPC metadata key of a worker session's secret (every worker call after Register).
pub const SESSION_HEADER: &str = "ferry-session";
/// Where a one-machine install keeps its data, relative to where the controller starts.
pub const DEFAULT_DATA_DIR: &str = "ferry-data";
/// The file in the data directory that holds the installation's admin token (first start).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The largest message either way, on both services and in every client: an import carries a
/// whole manifest in one message, and an assignment a whole app spec.
pub const MAX_MESSAGE_SIZE: usize = 65 << 20;
