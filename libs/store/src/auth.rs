//! Authenticates API tokens: signature and expiry (pure, in `adze_core::token`), then
//! the revocation list in Postgres, cached briefly so hot calls do not hit the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use adze_core::token::{TokenError, TokenIdentity, TokenKeys};
use sqlx::PgPool;
use uuid::Uuid;

/// How long a revocation-list answer is trusted.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: bearer …` given.
    #[error("missing bearer token (send `authorization: bearer <token>`)")]
    Missing,
    /// Signature, format or expiry is wrong.
    #[error(transparent)]
    Invalid(#[from] TokenError),
    /// The token was revoked or is unknown to this server.
    #[error("API token is revoked or unknown")]
    Revoked,
    /// The revocation list could not be read.
    #[error("cannot check the token: {0}")]
    Store(#[from] crate::Error),
}

/// Verifies tokens for one server secret.
#[derive(Debug)]
pub struct Authenticator {
    keys: TokenKeys,
    pool: PgPool,
    cache: Mutex<HashMap<Uuid, (bool, Instant)>>,
}

impl Authenticator {
    /// A new authenticator.
    pub fn new(keys: TokenKeys, pool: PgPool) -> Self {
        Self {
            keys,
            pool,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The signing keys (for issuing tokens).
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// Authenticates the value of an `authorization` header (scheme case-insensitive).
    pub async fn authenticate(&self, header: Option<&str>) -> Result<TokenIdentity, AuthError> {
        let token = header.and_then(bearer).ok_or(AuthError::Missing)?;
        let id = self.keys.verify(token)?;
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&id.token_id).copied())
            .filter(|(_, at)| at.elapsed() < CACHE_TTL);
        let live = match cached {
            Some((live, _)) => live,
            None => {
                let live =
                    crate::tenants::token_is_live(&self.pool, id.tenant_id, id.token_id).await?;
                if let Ok(mut c) = self.cache.lock() {
                    if c.len() > 10_000 {
                        c.clear();
                    }
                    c.insert(id.token_id, (live, Instant::now()));
                }
                live
            }
        };
        if live {
            Ok(id)
        } else {
            Err(AuthError::Revoked)
        }
    }
}

/// The token of a `Bearer <token>` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(super::bearer("Bearer abc"), Some("abc"));
        assert_eq!(super::bearer("bearer abc"), Some("abc"));
        assert_eq!(super::bearer("Basic abc"), None);
        assert_eq!(super::bearer("bearer "), None);
    }
}
