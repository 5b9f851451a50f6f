//! API tokens: HS256-signed JWTs carrying the claims the Hatchet SDKs read
//! (`sub` = tenant id, `server_url`, `grpc_broadcast_address`). The server verifies
//! the signature and expiry here, and checks revocation against the store.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Claims of an Adze API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Tenant id.
    pub sub: String,
    /// Token id (the revocation key).
    pub jti: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// REST base URL for the SDKs.
    pub server_url: String,
    /// `host:port` of the gRPC endpoint for the SDKs.
    pub grpc_broadcast_address: String,
}

/// A verified token's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The tenant the token acts for.
    pub tenant_id: Uuid,
    /// The token's own id.
    pub token_id: Uuid,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signature, format or expiry is wrong.
    #[error("invalid API token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// A claim is not a UUID.
    #[error("invalid API token: claim {0} is not a UUID")]
    BadClaim(&'static str),
}

/// Signs and verifies tokens with one server secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys from the server secret.
    pub fn new(secret: &[u8]) -> Result<Self, TokenError> {
        Ok(Self {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
        })
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// Verifies signature and expiry and returns who the token speaks for.
    pub fn verify(&self, token: &str) -> Result<TokenIdentity, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)?;
        let tenant_id =
            Uuid::parse_str(&data.claims.sub).map_err(|_| TokenError::BadClaim("sub"))?;
        let token_id =
            Uuid::parse_str(&data.claims.jti).map_err(|_| TokenError::BadClaim("jti"))?;
        Ok(TokenIdentity {
            tenant_id,
            token_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: Uuid::new_v4().to_string(),
            jti: Uuid::new_v4().to_string(),
            iat: 0,
            exp,
            server_url: "http://127.0.0.1:7077".into(),
            grpc_broadcast_address: "127.0.0.1:7077".into(),
        }
    }

    #[test]
    fn signs_and_verifies() {
        let keys = TokenKeys::new(b"secret").unwrap();
        let c = claims(chrono::Utc::now().timestamp() + 60);
        let token = keys.sign(&c).unwrap();
        assert!(token.starts_with("ey"));
        let id = keys.verify(&token).unwrap();
        assert_eq!(id.tenant_id.to_string(), c.sub);
    }

    #[test]
    fn rejects_other_key_and_expired() {
        let keys = TokenKeys::new(b"secret").unwrap();
        let token = keys
            .sign(&claims(chrono::Utc::now().timestamp() + 60))
            .unwrap();
        assert!(TokenKeys::new(b"other").unwrap().verify(&token).is_err());
        let old = keys
            .sign(&claims(chrono::Utc::now().timestamp() - 3600))
            .unwrap();
        assert!(keys.verify(&old).is_err());
    }
}
