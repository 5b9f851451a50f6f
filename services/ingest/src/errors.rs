//! Mapping of internal errors onto gRPC statuses, and request authentication.

use adze_core::token::TokenIdentity;
use adze_store::auth::{AuthError, Authenticator};
use tonic::{Request, Status};

/// Authenticates a gRPC request by its `authorization` metadata.
pub(crate) async fn authenticate<T>(
    auth: &Authenticator,
    req: &Request<T>,
) -> Result<TokenIdentity, Status> {
    let header = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    auth.authenticate(header).await.map_err(auth_status)
}

pub(crate) fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Store(e) => store_status(e),
        other => Status::unauthenticated(other.to_string()),
    }
}

pub(crate) fn store_status(e: adze_store::Error) -> Status {
    match e {
        adze_store::Error::NotFound(what) => Status::not_found(format!("{what} not found")),
        adze_store::Error::Conflict(m) => Status::already_exists(m),
        other => {
            tracing::error!(error = %other, "store failure");
            Status::unavailable(format!("storage unavailable: {other}"))
        }
    }
}

pub(crate) fn parse_uuid(what: &str, s: &str) -> Result<uuid::Uuid, Status> {
    uuid::Uuid::parse_str(s)
        .map_err(|_| Status::invalid_argument(format!("{what} {s:?} is not a UUID")))
}
