//! Exit codes (DESIGN.md §4) and the one error type of the CLI.

use tonic::Code;

/// Everything worked.
pub const OK: u8 = 0;
/// The job did not complete.
pub const JOB_FAILED: u8 = 1;
/// Bad usage or input.
pub const BAD_INPUT: u8 = 2;
/// No such app, backup, restore or storage location.
pub const NOT_FOUND: u8 = 3;
/// Not allowed.
pub const DENIED: u8 = 4;
/// The controller could not be reached.
pub const UNREACHABLE: u8 = 5;

/// A failed command: what to print and which code to exit with.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    /// Bad usage or input.
    pub fn input(message: impl Into<String>) -> Self {
        CliError {
            code: BAD_INPUT,
            message: message.into(),
        }
    }

    /// The job did not complete, or something else went wrong.
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: JOB_FAILED,
            message: message.into(),
        }
    }

    /// The controller cannot be reached.
    pub fn unreachable(message: impl Into<String>) -> Self {
        CliError {
            code: UNREACHABLE,
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        let code = match s.code() {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange => BAD_INPUT,
            Code::NotFound => NOT_FOUND,
            Code::PermissionDenied | Code::Unauthenticated => DENIED,
            Code::Unavailable => UNREACHABLE,
            _ => JOB_FAILED,
        };
        let message = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_owned()
        };
        CliError { code, message }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::failed(e.to_string())
    }
}

/// Shorthand for command results.
pub type CliResult<T = ()> = Result<T, CliError>;
