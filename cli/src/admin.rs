//! Administration: migrations, tenants, tokens, signing keys. These commands speak to
//! Postgres (and Redis, to delete a tenant's rate-limit buckets) with the server's
//! configuration; every change that refuses a credential is announced to the fleet by
//! the store (see `adze_store::auth`).

use std::path::Path;

use adze_runtime::Loaded;
use uuid::Uuid;

pub async fn migrate(config: Option<&Path>) -> anyhow::Result<()> {
    let loaded = Loaded::load(config, &[])?;
    let pool = adze_store::connect(&loaded.common.database_url, 2).await?;
    adze_store::migrate(&pool).await?;
    eprintln!("migrations applied");
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum TenantCmd {
    /// Create a tenant (prints its id; an existing tenant of that name is reused).
    Create {
        /// Tenant name.
        #[arg(long)]
        name: String,
    },
    /// List tenants.
    List {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rename a tenant.
    Rename {
        /// Tenant id.
        #[arg(long)]
        id: Uuid,
        /// The new name.
        #[arg(long)]
        name: String,
    },
    /// Delete a tenant and all its data: its tokens are refused at once (open worker
    /// streams close), then its rows go in small batches while the fleet runs. Asks to
    /// type the tenant's name unless `--confirm NAME` gives it. Run it again to finish
    /// an interrupted deletion.
    Delete {
        /// Tenant id.
        #[arg(long)]
        id: Uuid,
        /// The tenant's name, to confirm without a prompt.
        #[arg(long)]
        confirm: Option<String>,
        /// Rows per delete statement.
        #[arg(long, default_value_t = 2_000)]
        batch: i64,
    },
}

#[derive(clap::Subcommand)]
pub enum TokenCmd {
    /// Issue an API token (prints it). The official Hatchet SDKs accept it as
    /// HATCHET_CLIENT_TOKEN.
    Create {
        /// Tenant id.
        #[arg(long)]
        tenant: Uuid,
        /// A name for the token.
        #[arg(long, default_value = "default")]
        name: String,
        /// REST base URL for SDKs (default: server.public_url).
        #[arg(long)]
        server_url: Option<String>,
        /// gRPC host:port for SDKs (default: server.public_grpc_address).
        #[arg(long)]
        grpc_address: Option<String>,
        /// Lifetime in days (default: auth.token_ttl_days).
        #[arg(long)]
        ttl_days: Option<i64>,
    },
    /// List a tenant's tokens (never the tokens themselves: they are not stored).
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: Uuid,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: refused everywhere within a second, open streams closed.
    Revoke {
        /// Tenant id.
        #[arg(long)]
        tenant: Uuid,
        /// Token id (the `jti` claim).
        #[arg(long)]
        id: Uuid,
    },
}

pub async fn tenant(config: Option<&Path>, cmd: TenantCmd) -> anyhow::Result<()> {
    let loaded = Loaded::load(config, &[])?;
    let pool = adze_store::connect(&loaded.common.database_url, 2).await?;
    match cmd {
        TenantCmd::Create { name } => {
            let name = checked_name(&name)?;
            let (id, created) = adze_store::tenants::create_tenant(&pool, name).await?;
            if !created {
                eprintln!("tenant {name:?} already exists");
            }
            println!("{id}");
        }
        TenantCmd::List { json } => {
            let tenants = adze_store::tenants::list_tenants(&pool).await?;
            if json {
                let rows: Vec<_> = tenants
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id, "name": t.name, "created_at": t.created_at,
                            "being_deleted": t.deleted_at.is_some(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(
                    &["ID", "NAME", "CREATED", "STATE"],
                    tenants.iter().map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name.clone(),
                            stamp(t.created_at),
                            if t.deleted_at.is_some() {
                                "being deleted"
                            } else {
                                "live"
                            }
                            .into(),
                        ]
                    }),
                );
            }
        }
        TenantCmd::Rename { id, name } => {
            let name = checked_name(&name)?;
            if !adze_store::tenants::rename_tenant(&pool, id, name).await? {
                anyhow::bail!("no live tenant {id}");
            }
            eprintln!("tenant {id} is now {name:?}");
        }
        TenantCmd::Delete { id, confirm, batch } => {
            if batch <= 0 {
                anyhow::bail!("--batch must be positive, got {batch}");
            }
            let Some(t) = adze_store::tenants::get_tenant(&pool, id).await? else {
                anyhow::bail!("no tenant {id}");
            };
            let typed = match confirm {
                Some(c) => c,
                None => prompt(&format!(
                    "Delete tenant {:?} ({id}) and all its runs, workflows, workers and tokens? Type its name to confirm: ",
                    t.name
                ))?,
            };
            if typed.trim() != t.name {
                anyhow::bail!(
                    "not deleted: {typed:?} is not the tenant's name {:?}",
                    t.name
                );
            }
            adze_store::tenants::mark_tenant_deleted(&pool, id).await?;
            eprintln!("tenant {id}: tokens refused; deleting its data");
            let started = std::time::Instant::now();
            let pause = std::time::Duration::from_millis(5);
            let progress = |table: &str, n: u64| eprintln!("  {table}: {n} rows");
            adze_store::tenant_purge::purge_tenant(&pool, id, batch, pause, progress).await?;
            // Before the tenant row: an interrupted run can still find the tenant.
            let buckets = delete_buckets(&loaded.common.redis_url, &loaded.common.prefix, id).await;
            match buckets {
                Ok(n) => eprintln!("  rate-limit buckets: {n}"),
                Err(e) => eprintln!(
                    "  rate-limit buckets left in Redis ({e}); they expire with their windows"
                ),
            }
            adze_store::tenant_purge::drop_tenant(&pool, id, batch, pause, progress).await?;
            eprintln!("tenant {id} deleted in {:.1?}", started.elapsed());
        }
    }
    Ok(())
}

/// A tenant name: not blank, at most 200 characters.
fn checked_name(name: &str) -> anyhow::Result<&str> {
    let name = name.trim();
    if name.is_empty() {
        anyhow::bail!("--name must not be empty");
    }
    if name.chars().count() > 200 {
        anyhow::bail!("--name is longer than 200 characters");
    }
    Ok(name)
}

/// Asks on the terminal; one line back.
fn prompt(question: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("not deleted: confirm with --confirm <tenant name> when not on a terminal");
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line)
}

/// Deletes the tenant's rate-limit buckets (`<prefix>:rl:<tenant>:*`); returns how many.
async fn delete_buckets(url: &str, prefix: &str, tenant: Uuid) -> anyhow::Result<usize> {
    let client = redis::Client::open(url)?;
    let mut conn = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("Redis at {url} did not answer"))??;
    let pattern = format!("{prefix}:rl:{tenant}:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let n: usize = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Prints rows under a header as the client commands' tables.
fn print_table(header: &[&'static str], rows: impl Iterator<Item = Vec<String>>) {
    let mut table = crate::output::Table::new(header);
    for row in rows {
        table.row(row.into_iter().map(crate::output::Cell::from));
    }
    print!("{}", table.render(crate::output::Style::detect()));
}

pub async fn token(config: Option<&Path>, cmd: TokenCmd) -> anyhow::Result<()> {
    let loaded = Loaded::load(config, &[])?;
    let common = &loaded.common;
    let pool = adze_store::connect(&common.database_url, 2).await?;
    match cmd {
        TokenCmd::Create {
            tenant,
            name,
            server_url,
            grpc_address,
            ttl_days,
        } => {
            let keys = adze_runtime::token_keys(common)?;
            let token = issue(
                &pool,
                &keys,
                tenant,
                &name,
                server_url.unwrap_or_else(|| common.server.rest_url()),
                grpc_address.unwrap_or_else(|| common.server.public_grpc_address.clone()),
                ttl_days.unwrap_or(common.auth.token_ttl_days),
            )
            .await?;
            println!("{token}");
        }
        TokenCmd::List { tenant, json } => {
            let tokens = adze_store::tenants::list_tokens(&pool, tenant).await?;
            let now = chrono::Utc::now();
            let state = |t: &adze_store::tenants::TokenRow| match t.revoked_at {
                Some(_) => "revoked",
                None if t.expires_at <= now => "expired",
                None => "live",
            };
            if json {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id, "name": t.name, "created_at": t.created_at,
                            "expires_at": t.expires_at, "revoked_at": t.revoked_at,
                            "key": t.key_id, "state": state(t),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(
                    &["ID", "NAME", "CREATED", "EXPIRES", "KEY", "STATE"],
                    tokens.iter().map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name.clone(),
                            stamp(t.created_at),
                            stamp(t.expires_at),
                            t.key_id.to_string(),
                            state(t).into(),
                        ]
                    }),
                );
            }
        }
        TokenCmd::Revoke { tenant, id } => {
            if !adze_store::tenants::revoke_token(&pool, tenant, id).await? {
                anyhow::bail!("no live token {id} for tenant {tenant}");
            }
            eprintln!("token {id} revoked");
        }
    }
    Ok(())
}

/// Records and signs a token for an existing tenant.
pub async fn issue(
    pool: &adze_store::Pool,
    keys: &adze_core::token::TokenKeys,
    tenant: Uuid,
    name: &str,
    server_url: String,
    grpc_broadcast_address: String,
    ttl_days: i64,
) -> anyhow::Result<String> {
    if !adze_store::tenants::tenant_exists(pool, tenant).await? {
        anyhow::bail!(
            "tenant {tenant} does not exist (create it with `adze tenant create --name …`)"
        );
    }
    if !(1..=36_500).contains(&ttl_days) {
        anyhow::bail!("token lifetime must be 1 to 36500 days, got {ttl_days}");
    }
    let expires = chrono::Utc::now() + chrono::Duration::days(ttl_days);
    let (_, token) = adze_store::auth::issue_token(
        pool,
        keys,
        tenant,
        name,
        server_url,
        grpc_broadcast_address,
        expires,
    )
    .await?;
    Ok(token)
}

#[derive(clap::Subcommand)]
pub enum KeysCmd {
    /// List the token signing keys with their states and live tokens.
    List {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a rotation: a new key signs new tokens; tokens of the old key keep working
    /// until `adze keys finish` (or until `--grace` has passed). Re-issue tokens meanwhile.
    Rotate {
        /// Retire the old key by itself after this long (e.g. `24h`, `30m`, `7d`).
        #[arg(long)]
        grace: Option<String>,
    },
    /// Finish a rotation: tokens signed by the old key are refused everywhere within a
    /// second, open streams closed.
    Finish,
}

pub async fn keys(config: Option<&Path>, cmd: KeysCmd) -> anyhow::Result<()> {
    let loaded = Loaded::load(config, &[])?;
    let pool = adze_store::connect(&loaded.common.database_url, 2).await?;
    match cmd {
        KeysCmd::List { json } => {
            let keys = adze_store::keys::list(&pool).await?;
            if json {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id, "state": k.state, "created_at": k.created_at,
                            "retire_at": k.retire_at, "retired_at": k.retired_at,
                            "live_tokens": k.live_tokens,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(
                    &["KEY", "STATE", "CREATED", "RETIRES/RETIRED", "LIVE TOKENS"],
                    keys.iter().map(|k| {
                        vec![
                            k.id.to_string(),
                            k.state.clone(),
                            stamp(k.created_at),
                            k.retire_at.or(k.retired_at).map(stamp).unwrap_or_default(),
                            k.live_tokens.to_string(),
                        ]
                    }),
                );
            }
        }
        KeysCmd::Rotate { grace } => {
            let retire_at = grace
                .map(|g| parse_grace(&g).map(|d| chrono::Utc::now() + d))
                .transpose()?;
            let id = adze_store::keys::rotate(&pool, retire_at).await?;
            eprintln!(
                "key {id} signs new tokens; tokens of the previous key work until `adze keys finish`{}",
                retire_at
                    .map(|t| format!(" or {}", stamp(t)))
                    .unwrap_or_default()
            );
            println!("{id}");
        }
        KeysCmd::Finish => {
            let retired = adze_store::keys::finish(&pool).await?;
            if retired.is_empty() {
                anyhow::bail!("no rotation to finish (start one with `adze keys rotate`)");
            }
            eprintln!("retired key(s) {retired:?}: their tokens are refused");
        }
    }
    Ok(())
}

/// A grace period (`24h`, `90m`, `7d`): positive.
fn parse_grace(s: &str) -> anyhow::Result<chrono::Duration> {
    let d = crate::when::parse_duration(s.trim()).map_err(|e| anyhow::anyhow!("--grace: {e}"))?;
    if d <= chrono::Duration::zero() {
        anyhow::bail!("--grace must be positive, got {s:?}");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn grace_periods() {
        assert_eq!(
            super::parse_grace("24h").unwrap(),
            chrono::Duration::hours(24)
        );
        assert_eq!(
            super::parse_grace("90s").unwrap(),
            chrono::Duration::seconds(90)
        );
        assert!(super::parse_grace("0h").is_err());
        assert!(super::parse_grace("5y").is_err());
        assert_eq!(super::parse_grace("1w").unwrap(), chrono::Duration::days(7));
        assert!(super::parse_grace("h").is_err());
    }
}
