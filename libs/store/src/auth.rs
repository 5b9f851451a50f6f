//! Authenticates API tokens: signature, expiry and signing key (pure, in
//! `adze_core::token`), then the revocation list in Postgres, cached so hot calls do
//! not hit the database.
//!
//! A credential that was accepted can be refused later: a token revoked, a tenant
//! deleted, a signing key retired. Each such change is a row of `auth_changes` written
//! with the change itself and announced by `NOTIFY adze_auth`; [`Authenticator::watch`]
//! applies the rows after the last one it saw (on a notice, after a reconnection, and
//! every [`RESYNC`] as a safety net), and [`Authenticator::refused`] lets an open stream
//! end as soon as its credential is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use adze_core::token::{KeyState, TokenError, TokenIdentity, TokenKeys};
use sqlx::PgPool;
use uuid::Uuid;

/// How long a cached answer is trusted without a change announcing otherwise (a safety
/// net: changes invalidate entries at once).
const CACHE_TTL: Duration = Duration::from_secs(60);

/// How often the change log is read without a notice.
const RESYNC: Duration = Duration::from_secs(5);

/// The `LISTEN` channel of credential changes.
pub const CHANNEL: &str = "adze_auth";

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: bearer …` given.
    #[error("missing bearer token (send `authorization: bearer <token>`)")]
    Missing,
    /// Signature, format, expiry or signing key is wrong.
    #[error(transparent)]
    Invalid(#[from] TokenError),
    /// The token was revoked, its tenant deleted, or it is unknown to this server.
    #[error("API token is revoked or unknown")]
    Revoked,
    /// The token's lifetime ended while a stream was open.
    #[error("API token expired")]
    Expired,
    /// The revocation list could not be read.
    #[error("cannot check the token: {0}")]
    Store(#[from] crate::Error),
}

/// Verifies tokens for one server secret.
#[derive(Debug)]
pub struct Authenticator {
    keys: TokenKeys,
    pool: PgPool,
    /// Token id → (tenant, live, when read).
    cache: Mutex<HashMap<Uuid, (Uuid, bool, Instant)>>,
    /// Bumped after every applied change, so open streams check their credential again.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Authenticator {
    /// A new authenticator.
    pub fn new(keys: TokenKeys, pool: PgPool) -> Self {
        Self {
            keys,
            pool,
            cache: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::Sender::new(0),
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
        self.check(id).await?;
        Ok(id)
    }

    /// Whether an identity verified earlier is still accepted: its key, then the
    /// revocation list.
    pub async fn check(&self, id: TokenIdentity) -> Result<(), AuthError> {
        let now = chrono::Utc::now().timestamp();
        if id.expires_at <= now {
            return Err(AuthError::Expired);
        }
        if !self.keys.state(id.key).is_some_and(|s| s.accepts(now)) {
            return Err(AuthError::Invalid(TokenError::RetiredKey));
        }
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&id.token_id).copied())
            .filter(|(tenant, _, at)| *tenant == id.tenant_id && at.elapsed() < CACHE_TTL);
        let live = match cached {
            Some((_, live, _)) => live,
            None => {
                let live =
                    crate::tenants::token_is_live(&self.pool, id.tenant_id, id.token_id).await?;
                if let Ok(mut c) = self.cache.lock() {
                    if c.len() > 10_000 {
                        c.clear();
                    }
                    c.insert(id.token_id, (id.tenant_id, live, Instant::now()));
                }
                live
            }
        };
        if live {
            Ok(())
        } else {
            Err(AuthError::Revoked)
        }
    }

    /// Changes the next time a credential change has been applied (then whatever was
    /// accepted should be checked again).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Resolves when `id` is refused (revoked, tenant deleted, key retired, expired):
    /// for open streams. A store failure while checking does not refuse (the stream
    /// stays; the next change or the next request checks again).
    pub async fn refused(&self, id: TokenIdentity) -> AuthError {
        let mut changes = self.changes.subscribe();
        loop {
            let now = chrono::Utc::now().timestamp();
            let until = self
                .keys
                .state(id.key)
                .and_then(KeyState::accepted_until)
                .map_or(id.expires_at, |u| u.min(id.expires_at));
            let wait = Duration::from_secs(u64::try_from(until - now).unwrap_or(0));
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The authenticator is gone: nothing will refuse.
                        return std::future::pending().await;
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
            match self.check(id).await {
                Ok(()) | Err(AuthError::Store(_)) => {}
                Err(refused) => return refused,
            }
        }
    }

    /// Reads the signing keys' states from the store.
    pub async fn load_keys(&self) -> crate::Result<()> {
        self.keys.set_states(signing_keys(&self.pool).await?);
        Ok(())
    }

    /// Applies credential changes for as long as the process runs: on `NOTIFY`
    /// [`CHANNEL`], after the listening connection reconnects, and every [`RESYNC`].
    pub async fn watch(self: std::sync::Arc<Self>) {
        let mut last = None;
        while !self.pool.is_closed() {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for credential changes; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "cannot listen for credential changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            while !self.pool.is_closed() {
                if let Err(e) = self.apply_changes(&mut last).await {
                    tracing::warn!(error = %e, "cannot read credential changes");
                }
                // Until the log's end is known (the tables may not exist yet), soon.
                let wait = if last.is_some() {
                    RESYNC
                } else {
                    Duration::from_secs(1)
                };
                match tokio::time::timeout(wait, listener.try_recv()).await {
                    // A notice, a reconnection (`None`: notices may be lost), or time.
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "lost the credential-change listener");
                        break;
                    }
                }
            }
        }
    }

    /// Applies the changes after `last`. The first call finds where the log ends,
    /// loads the keys and forgets what was cached before (it may predate a change).
    async fn apply_changes(&self, last: &mut Option<i64>) -> crate::Result<()> {
        let Some(after) = *last else {
            let end = crate::tenants::last_auth_change(&self.pool).await?;
            self.load_keys().await?;
            if let Ok(mut cache) = self.cache.lock() {
                cache.clear();
            }
            *last = Some(end);
            self.changes.send_modify(|n| *n += 1);
            return Ok(());
        };
        let changes = crate::tenants::auth_changes_after(&self.pool, after).await?;
        let Some(newest) = changes.last().map(|c| c.seq) else {
            return Ok(());
        };
        if changes.iter().any(|c| c.kind == "keys") {
            self.load_keys().await?;
        }
        // Both changes only ever refuse (a revoked token stays revoked, a deleted
        // tenant's tokens are all revoked), so the answer is known without a read.
        if let Ok(mut cache) = self.cache.lock() {
            let now = Instant::now();
            for c in &changes {
                match (c.kind.as_str(), c.token_id, c.tenant_id) {
                    ("token", Some(token), Some(tenant)) => {
                        cache.insert(token, (tenant, false, now));
                    }
                    ("tenant", _, Some(tenant)) => {
                        for (t, live, at) in cache.values_mut() {
                            if *t == tenant {
                                (*live, *at) = (false, now);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        *last = Some(newest);
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }
}

/// Records and signs a token for a live tenant with the key that signs now; the token
/// (shown once: only its id is stored).
pub async fn issue_token(
    pool: &PgPool,
    keys: &TokenKeys,
    tenant: Uuid,
    name: &str,
    server_url: String,
    grpc_broadcast_address: String,
    expires: chrono::DateTime<chrono::Utc>,
) -> crate::Result<(Uuid, String)> {
    if !crate::tenants::tenant_exists(pool, tenant).await? {
        return Err(crate::Error::NotFound("tenant"));
    }
    let now = chrono::Utc::now();
    let id = Uuid::new_v4();
    // The key that signs now (a rotation may have moved it since `keys` were loaded).
    keys.set_states(signing_keys(pool).await?);
    let (token, key) = keys
        .sign(&adze_core::token::Claims {
            sub: tenant.to_string(),
            jti: id.to_string(),
            iat: now.timestamp(),
            exp: expires.timestamp(),
            server_url,
            grpc_broadcast_address,
        })
        .map_err(|e| crate::Error::Corrupt(format!("cannot sign a token: {e}")))?;
    crate::tenants::insert_token(pool, tenant, id, name, expires, key).await?;
    Ok((id, token))
}

/// The signing keys' states (empty: none rotated yet, key 0 signs).
pub async fn signing_keys(db: impl sqlx::PgExecutor<'_>) -> crate::Result<Vec<(u32, KeyState)>> {
    let rows: Vec<(i32, String, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("SELECT id, state, retire_at FROM signing_keys ORDER BY id")
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, state, retire_at)| {
            let state = match state.as_str() {
                "active" => KeyState::Active,
                "verifying" => KeyState::Verifying {
                    until: retire_at.map(|t| t.timestamp()),
                },
                _ => KeyState::Retired,
            };
            (u32::try_from(id).unwrap_or_default(), state)
        })
        .collect())
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
