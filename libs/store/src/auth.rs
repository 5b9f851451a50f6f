//! Authenticates API tokens: signature, expiry and signing key (pure, in
//! `adze_core::token`), then the revocation list in Postgres, cached so hot calls do
//! not hit the database.
//!
//! A credential that was accepted can be refused later: a token revoked, a tenant
//! deleted, a signing key retired. Each such change is a row of `auth_changes` written
//! with the change itself and announced by `NOTIFY adze_auth`; [`Authenticator::watch`]
//! applies the rows it has not seen (on a notice, after a reconnection, every [`RESYNC`],
//! and every second while it cannot listen), and [`Authenticator::refused`] lets an open
//! stream end as soon as its credential is refused. Refusals only ever go one way, so
//! applied ones are kept in memory as the final word: a cached "live" never outlasts
//! them, and streams decide without a read.
//!
//! Change numbers are taken when a row is inserted, not when it commits, so a lower
//! number can become visible after a higher one: numbers skipped over are asked for
//! again for [`GAP_PATIENCE`] (a rolled-back change leaves a number that never comes).

use std::collections::{BTreeMap, HashMap, HashSet};
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

/// How long a change number skipped over is asked for again (and, when a process
/// starts, how far back it applies changes: one still committing when it looked).
const GAP_PATIENCE: Duration = Duration::from_secs(60);

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
    known: Mutex<Known>,
    /// Bumped after every applied change, so open streams check their credential again.
    changes: tokio::sync::watch::Sender<u64>,
}

/// What this process knows of tokens.
#[derive(Debug, Default)]
struct Known {
    /// Token id → (tenant, live, when read): answers of the revocation list.
    cache: HashMap<Uuid, (Uuid, bool, Instant)>,
    /// Tokens revoked by a change applied here.
    revoked: HashSet<Uuid>,
    /// Tenants deleted by a change applied here.
    deleted: HashSet<Uuid>,
}

impl Known {
    /// Whether `id` is known to be refused (whatever the age of what says so).
    fn refuses(&self, id: &TokenIdentity) -> bool {
        self.revoked.contains(&id.token_id)
            || self.deleted.contains(&id.tenant_id)
            || self
                .cache
                .get(&id.token_id)
                .is_some_and(|(tenant, live, _)| *tenant == id.tenant_id && !live)
    }
}

/// Where this process stands in the change log.
#[derive(Debug, Default)]
struct LogPosition {
    /// The highest change number applied (`None`: not started).
    last: Option<i64>,
    /// Numbers below `last` not seen yet, with when they were first missed.
    gaps: BTreeMap<i64, Instant>,
}

impl Authenticator {
    /// A new authenticator.
    pub fn new(keys: TokenKeys, pool: PgPool) -> Self {
        Self {
            keys,
            pool,
            known: Mutex::new(Known::default()),
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

    /// Whether an identity verified earlier is still accepted: its expiry and key,
    /// what this process knows, then the revocation list.
    pub async fn check(&self, id: TokenIdentity) -> Result<(), AuthError> {
        if let Some(refused) = self.refused_by_time_or_key(&id) {
            return Err(refused);
        }
        {
            let known = self.known();
            if known.refuses(&id) {
                return Err(AuthError::Revoked);
            }
            if known
                .cache
                .get(&id.token_id)
                .is_some_and(|(tenant, _, at)| *tenant == id.tenant_id && at.elapsed() < CACHE_TTL)
            {
                return Ok(());
            }
        }
        let read = crate::tenants::token_is_live(&self.pool, id.tenant_id, id.token_id).await?;
        let mut known = self.known();
        // A change applied during the read has the last word.
        let live = read && !known.refuses(&id);
        if known.cache.len() > 10_000 {
            known.cache.clear();
        }
        known
            .cache
            .insert(id.token_id, (id.tenant_id, live, Instant::now()));
        if live {
            Ok(())
        } else {
            Err(AuthError::Revoked)
        }
    }

    /// Why `id` is refused, from what this process knows without a read.
    fn refused_now(&self, id: &TokenIdentity) -> Option<AuthError> {
        self.refused_by_time_or_key(id)
            .or_else(|| self.known().refuses(id).then_some(AuthError::Revoked))
    }

    /// Whether `id` has expired or its signing key no longer verifies.
    fn refused_by_time_or_key(&self, id: &TokenIdentity) -> Option<AuthError> {
        let now = chrono::Utc::now().timestamp();
        if id.expires_at <= now {
            return Some(AuthError::Expired);
        }
        if !self.keys.state(id.key).is_some_and(|s| s.accepts(now)) {
            return Some(AuthError::Invalid(TokenError::RetiredKey));
        }
        None
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the next time a credential change has been applied (then whatever was
    /// accepted should be checked again).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Resolves when `id` is refused (revoked, tenant deleted, key retired, expired):
    /// for open streams. It decides from what this process knows (every refusal is a
    /// change applied here), so a change wakes every stream without a read each.
    pub async fn refused(&self, id: TokenIdentity) -> AuthError {
        let mut changes = self.changes.subscribe();
        loop {
            // Also before the first wait: a change may have come since `id` was checked.
            if let Some(refused) = self.refused_now(&id) {
                return refused;
            }
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
        }
    }

    /// Reads the signing keys' states from the store.
    pub async fn load_keys(&self) -> crate::Result<()> {
        self.keys.set_states(signing_keys(&self.pool).await?);
        Ok(())
    }

    /// Applies credential changes for as long as the process runs: on `NOTIFY`
    /// [`CHANNEL`], after the listening connection reconnects, every [`RESYNC`], and
    /// every second while it cannot listen.
    pub async fn watch(self: std::sync::Arc<Self>) {
        let mut at = LogPosition::default();
        let mut listener: Option<sqlx::postgres::PgListener> = None;
        let mut warned = false;
        while !self.pool.is_closed() {
            if listener.is_none() {
                match self.listen().await {
                    Ok(l) => {
                        listener = Some(l);
                        warned = false;
                    }
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(error = %e, "cannot listen for credential changes; reading them every second");
                    }
                    Err(_) => {}
                }
            }
            if let Err(e) = self.apply_changes(&mut at).await {
                tracing::warn!(error = %e, "cannot read credential changes");
            }
            let wait = match (&listener, at.last) {
                (Some(_), Some(_)) => RESYNC,
                // Not listening, or the log's end not known yet (no tables yet).
                _ => Duration::from_secs(1),
            };
            match listener.as_mut() {
                Some(l) => match tokio::time::timeout(wait, l.try_recv()).await {
                    // A notice, a reconnection (`None`: notices may be lost), or time.
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "lost the credential-change listener");
                        listener = None;
                    }
                },
                None => tokio::time::sleep(wait).await,
            }
        }
    }

    async fn listen(&self) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }

    /// Applies the changes not seen yet. The first call starts [`GAP_PATIENCE`] back
    /// (a change committing late may hold a lower number than the newest) and loads the
    /// keys.
    async fn apply_changes(&self, at: &mut LogPosition) -> crate::Result<()> {
        let after = match at.last {
            Some(last) => last,
            None => {
                let start =
                    crate::tenants::auth_change_before(&self.pool, GAP_PATIENCE.as_secs_f64())
                        .await?;
                self.load_keys().await?;
                at.last = Some(start);
                self.changes.send_modify(|n| *n += 1);
                start
            }
        };
        at.gaps.retain(|_, missed| missed.elapsed() < GAP_PATIENCE);
        let gaps: Vec<i64> = at.gaps.keys().copied().collect();
        let changes = crate::tenants::auth_changes_after(&self.pool, after, &gaps).await?;
        if changes.is_empty() {
            return Ok(());
        }
        let mut expected = after + 1;
        for c in changes.iter().filter(|c| c.seq > after) {
            for missing in expected..c.seq {
                at.gaps.entry(missing).or_insert_with(Instant::now);
            }
            expected = expected.max(c.seq + 1);
        }
        for c in &changes {
            at.gaps.remove(&c.seq);
        }
        at.last = Some(expected - 1);
        if changes.iter().any(|c| c.kind == "keys") {
            self.load_keys().await?;
        }
        {
            let mut known = self.known();
            for c in &changes {
                match (c.kind.as_str(), c.token_id, c.tenant_id) {
                    ("token", Some(token), _) => {
                        known.revoked.insert(token);
                    }
                    ("tenant", _, Some(tenant)) => {
                        known.deleted.insert(tenant);
                    }
                    _ => {}
                }
            }
        }
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
    // The key that signs now, read here (the shared states are the watcher's to set).
    let keys = keys.with_states(signing_keys(pool).await?);
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
