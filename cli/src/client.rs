//! The connection to the controller, with the caller's token attached to every call.

use std::time::Duration;

use ferry_proto::v1::control_service_client::ControlServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::exit::{CliError, CliResult};

/// Adds `authorization: Bearer TOKEN` when a token was given.
#[derive(Clone)]
pub struct Auth {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// A client of the CLI-facing API.
pub type Client = ControlServiceClient<InterceptedService<Channel, Auth>>;

/// Connects, or says clearly that the controller cannot be reached (exit code 5).
pub async fn connect(url: &str, token: Option<&str>) -> CliResult<Client> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| CliError::input(format!("invalid controller URL {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
        CliError::unreachable(format!(
            "cannot reach the controller at {url}: {cause} (is ferry-controller running? set --controller or FERRY_CONTROLLER)"
        ))
    })?;
    let header =
        match token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                CliError::input("the token contains characters a header cannot carry")
            })?),
            None => None,
        };
    Ok(ControlServiceClient::with_interceptor(
        channel,
        Auth { header },
    ))
}
