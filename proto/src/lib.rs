//! The `ferry.v1` API: generated client/server code ([`v1`]), the descriptor set for gRPC
//! reflection, and the validated domain types every incoming message is turned into at the edge
//! ([`model`]). Code past the edge never touches raw prost structs.

pub mod model;

/// Generated from `ferry/v1/*.proto`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("ferry.v1");
}

/// Encoded descriptors of the ferry.v1 services, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferry_descriptor");

pub use model::ProtocolError;
