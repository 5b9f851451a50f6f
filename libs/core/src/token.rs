//! API tokens: HS256-signed JWTs carrying the claims the Hatchet SDKs read
//! (`sub` = tenant id, `server_url`, `grpc_broadcast_address`). The server verifies
//! the signature, the expiry and the signing key's state here, and checks revocation
//! against the store.

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
    /// The signing key that signed it (0: the server secret itself).
    pub key: u32,
    /// When it expires, seconds since the epoch.
    pub expires_at: i64,
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
    /// The token names a signing key this server does not know.
    #[error("invalid API token: unknown signing key {0:?}")]
    UnknownKey(String),
    /// The key that signed it was retired by a finished key rotation.
    #[error("API token was signed with a retired key (re-issue it)")]
    RetiredKey,
    /// No key signs (the key states name no active key).
    #[error("no active token signing key (see `adze keys list`)")]
    NoSigningKey,
}

/// What a signing key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Signs new tokens and verifies.
    Active,
    /// Verifies the tokens it signed while a rotation runs; until the given time
    /// (seconds since the epoch) when one was set.
    Verifying {
        /// The rotation's deadline, if one was given.
        until: Option<i64>,
    },
    /// Verifies nothing.
    Retired,
}

impl KeyState {
    /// Whether tokens of a key in this state are accepted at `now` (seconds).
    pub fn accepts(self, now: i64) -> bool {
        match self {
            KeyState::Active => true,
            KeyState::Verifying { until } => until.is_none_or(|u| now < u),
            KeyState::Retired => false,
        }
    }

    /// When the key stops being accepted by itself (a rotation's deadline).
    pub fn accepted_until(self) -> Option<i64> {
        match self {
            KeyState::Verifying { until } => until,
            _ => None,
        }
    }
}

/// The signing keys and their states.
#[derive(Debug, Clone)]
struct Ring {
    /// Key id → state; the one `Active` key signs.
    states: Vec<(u32, KeyState)>,
    /// Derived secrets by key id (key 0 is the server secret).
    secrets: Vec<(u32, Vec<u8>)>,
}

/// Signs and verifies tokens. Every key derives from one server secret: key 0 is the
/// secret itself (tokens without a `kid`), key N is HMAC-SHA256(secret, "adze token
/// key N"), so a rotation needs no new secret and stores no key material. The key
/// states come from the store ([`TokenKeys::set_states`]); until then key 0 signs.
#[derive(Clone)]
pub struct TokenKeys {
    secret: std::sync::Arc<[u8]>,
    ring: std::sync::Arc<std::sync::RwLock<Ring>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

/// The `kid` header of key `id` (key 0 has none).
fn kid(id: u32) -> Option<String> {
    (id > 0).then(|| format!("k{id}"))
}

fn parse_kid(header: Option<&str>) -> Result<u32, TokenError> {
    match header {
        None => Ok(0),
        // Exactly the form `kid` writes (`k1`, not `k01` or `k+1`).
        Some(k) => k
            .strip_prefix('k')
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n > 0 && kid(*n).as_deref() == Some(k))
            .ok_or_else(|| TokenError::UnknownKey(k.to_string())),
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

impl Ring {
    fn new(secret: &[u8], mut states: Vec<(u32, KeyState)>) -> Self {
        if states.is_empty() {
            states.push((0, KeyState::Active));
        }
        let secrets = states
            .iter()
            .map(|(id, _)| {
                let derived = match id {
                    0 => secret.to_vec(),
                    n => hmac_sha256(secret, format!("adze token key {n}").as_bytes()).to_vec(),
                };
                (*id, derived)
            })
            .collect();
        Ring { states, secrets }
    }

    fn state(&self, id: u32) -> Option<KeyState> {
        self.states.iter().find(|(k, _)| *k == id).map(|(_, s)| *s)
    }

    fn secret(&self, id: u32) -> Option<&[u8]> {
        self.secrets
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, s)| s.as_slice())
    }
}

impl TokenKeys {
    /// Keys from the server secret, key 0 signing.
    pub fn new(secret: &[u8]) -> Result<Self, TokenError> {
        Ok(Self {
            ring: std::sync::Arc::new(std::sync::RwLock::new(Ring::new(secret, Vec::new()))),
            secret: secret.into(),
        })
    }

    /// Replaces the key states (from the store; empty: key 0 signs).
    pub fn set_states(&self, states: Vec<(u32, KeyState)>) {
        let ring = Ring::new(&self.secret, states);
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
    }

    /// Keys of the same secret with their own states (`self` is left as it is).
    pub fn with_states(&self, states: Vec<(u32, KeyState)>) -> Self {
        Self {
            ring: std::sync::Arc::new(std::sync::RwLock::new(Ring::new(&self.secret, states))),
            secret: self.secret.clone(),
        }
    }

    fn ring(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The key that signs new tokens.
    pub fn signing_key(&self) -> Option<u32> {
        self.ring()
            .states
            .iter()
            .find(|(_, s)| *s == KeyState::Active)
            .map(|(id, _)| *id)
    }

    /// The state of key `id` (`None`: unknown).
    pub fn state(&self, id: u32) -> Option<KeyState> {
        self.ring().state(id)
    }

    /// Signs `claims` with the active key; returns the token and the key's id.
    pub fn sign(&self, claims: &Claims) -> Result<(String, u32), TokenError> {
        let ring = self.ring();
        let (id, _) = ring
            .states
            .iter()
            .find(|(_, s)| *s == KeyState::Active)
            .ok_or(TokenError::NoSigningKey)?;
        let secret = ring.secret(*id).ok_or(TokenError::NoSigningKey)?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid(*id);
        let token = jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)?)?;
        Ok((token, *id))
    }

    /// Verifies signature, expiry and the signing key's state and returns who the
    /// token speaks for.
    pub fn verify(&self, token: &str) -> Result<TokenIdentity, TokenError> {
        self.verify_claims(token).map(|(id, _)| id)
    }

    /// [`TokenKeys::verify`], with the token's claims.
    pub fn verify_claims(&self, token: &str) -> Result<(TokenIdentity, Claims), TokenError> {
        let header = jsonwebtoken::decode_header(token)?;
        let key = parse_kid(header.kid.as_deref())?;
        let decoding = {
            let ring = self.ring();
            let state = ring
                .state(key)
                .ok_or_else(|| TokenError::UnknownKey(kid(key).unwrap_or_default()))?;
            if !state.accepts(chrono::Utc::now().timestamp()) {
                return Err(TokenError::RetiredKey);
            }
            DecodingKey::from_secret(ring.secret(key).unwrap_or_default())?
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &decoding, &validation)?;
        let tenant_id =
            Uuid::parse_str(&data.claims.sub).map_err(|_| TokenError::BadClaim("sub"))?;
        let token_id =
            Uuid::parse_str(&data.claims.jti).map_err(|_| TokenError::BadClaim("jti"))?;
        let id = TokenIdentity {
            tenant_id,
            token_id,
            key,
            expires_at: data.claims.exp,
        };
        Ok((id, data.claims))
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
        let (token, key) = keys.sign(&c).unwrap();
        assert_eq!(key, 0);
        assert!(token.starts_with("ey"));
        let id = keys.verify(&token).unwrap();
        assert_eq!(id.tenant_id.to_string(), c.sub);
    }

    #[test]
    fn rejects_other_key_and_expired() {
        let keys = TokenKeys::new(b"secret").unwrap();
        let (token, _) = keys
            .sign(&claims(chrono::Utc::now().timestamp() + 60))
            .unwrap();
        assert!(TokenKeys::new(b"other").unwrap().verify(&token).is_err());
        let (old, _) = keys
            .sign(&claims(chrono::Utc::now().timestamp() - 3600))
            .unwrap();
        assert!(keys.verify(&old).is_err());
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rotation_moves_signing_and_retires_old_tokens() {
        let keys = TokenKeys::new(b"secret").unwrap();
        let now = chrono::Utc::now().timestamp();
        let (old, _) = keys.sign(&claims(now + 60)).unwrap();
        keys.set_states(vec![
            (0, KeyState::Verifying { until: None }),
            (1, KeyState::Active),
        ]);
        let (new, key) = keys.sign(&claims(now + 60)).unwrap();
        assert_eq!(key, 1);
        assert_eq!(keys.verify(&new).unwrap().key, 1);
        assert_eq!(keys.verify(&old).unwrap().key, 0, "old tokens work during");
        // Key 1 is not the secret itself: another server secret cannot forge it.
        let other = TokenKeys::new(b"other").unwrap();
        other.set_states(vec![(1, KeyState::Active)]);
        assert!(other.verify(&new).is_err());
        keys.set_states(vec![(0, KeyState::Retired), (1, KeyState::Active)]);
        assert!(matches!(keys.verify(&old), Err(TokenError::RetiredKey)));
        assert!(keys.verify(&new).is_ok());
        // A deadline passed retires by itself.
        keys.set_states(vec![
            (
                0,
                KeyState::Verifying {
                    until: Some(now - 1),
                },
            ),
            (1, KeyState::Active),
        ]);
        assert!(matches!(keys.verify(&old), Err(TokenError::RetiredKey)));
        // Only the exact form names a key.
        for odd in ["k01", "k+1", "k0", "1", "k"] {
            assert!(parse_kid(Some(odd)).is_err(), "{odd}");
        }
        assert_eq!(parse_kid(Some("k12")).unwrap(), 12);
        // Other states for a copy leave the original alone.
        let copy = keys.with_states(vec![(0, KeyState::Active)]);
        assert!(copy.verify(&old).is_ok());
        assert!(
            keys.verify(&old).is_err(),
            "the original keeps its own states"
        );
        assert_eq!(keys.state(1), Some(KeyState::Active));
        // A kid this server never had.
        keys.set_states(vec![(0, KeyState::Active)]);
        assert!(matches!(keys.verify(&new), Err(TokenError::UnknownKey(_))));
    }
}
