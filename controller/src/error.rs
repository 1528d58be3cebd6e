//! The controller's error type and its one mapping to gRPC status codes.

use ferry_model::ModelError;
use ferry_storage::StorageError;

use crate::store::StoreError;

/// Why a controller operation failed. Logged where it is handled, not where it is raised.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is valid but the system is not in a state to do it (with what to do instead).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cancelled")]
    Cancelled,
    /// Stored data is damaged or inconsistent (an export that cannot be rebuilt).
    #[error("{0}")]
    DataLoss(String),
    /// An access decision (not found for another team, denied for a role), passed on as is.
    #[error("{}", .0.message())]
    Access(tonic::Status),
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::Access(s)
    }
}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        match e {
            Error::NotFound(m) => Status::not_found(m),
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::Store(e @ StoreError::Refused(_)) => Status::internal(e.to_string()),
            Error::Store(e) => Status::unavailable(e.to_string()),
            Error::Storage(e @ StorageError::Config(_)) => {
                Status::failed_precondition(e.to_string())
            }
            Error::Storage(StorageError::NotFound { key }) => {
                Status::not_found(format!("object {key:?} is missing from storage"))
            }
            Error::Storage(e) => Status::unavailable(e.to_string()),
            Error::Cancelled => Status::cancelled("cancelled"),
            Error::DataLoss(m) => Status::data_loss(m),
            Error::Access(s) => s,
        }
    }
}

/// Shorthand for controller results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
