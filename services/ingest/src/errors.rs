//! Mapping of internal errors onto gRPC statuses, and request authentication.

use adze_core::token::TokenIdentity;
use adze_store::auth::AuthError;
use tonic::{Request, Status};

use crate::Deps;

/// Authenticates a gRPC request by its `authorization` metadata; the call takes one
/// request from its token's budget ([`crate::budget`]).
pub(crate) async fn authenticate<T>(
    deps: &Deps,
    req: &Request<T>,
) -> Result<TokenIdentity, Status> {
    let header = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let who = deps.auth.authenticate(header).await.map_err(auth_status)?;
    deps.budget.take(&who).map_err(|over| {
        let mut status = Status::resource_exhausted(over.to_string());
        let hint = over.retry_after_secs().to_string();
        if let Ok(v) = hint.parse() {
            status.metadata_mut().insert("retry-after", v);
        }
        status
    })?;
    Ok(who)
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
