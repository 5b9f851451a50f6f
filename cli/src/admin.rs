//! Administration: migrations, tenants, tokens.

use std::path::Path;

use adze_core::token::Claims;
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
    /// Revoke a token by id.
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
            if name.trim().is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            let (id, created) = adze_store::tenants::create_tenant(&pool, &name).await?;
            if !created {
                eprintln!("tenant {name:?} already exists");
            }
            println!("{id}");
        }
    }
    Ok(())
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
                server_url.unwrap_or_else(|| common.server.public_url.clone()),
                grpc_address.unwrap_or_else(|| common.server.public_grpc_address.clone()),
                ttl_days.unwrap_or(common.auth.token_ttl_days),
            )
            .await?;
            println!("{token}");
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
    if ttl_days <= 0 {
        anyhow::bail!("token lifetime must be positive, got {ttl_days} days");
    }
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::days(ttl_days);
    let id = Uuid::new_v4();
    adze_store::tenants::insert_token(pool, tenant, id, name, expires).await?;
    Ok(keys.sign(&Claims {
        sub: tenant.to_string(),
        jti: id.to_string(),
        iat: now.timestamp(),
        exp: expires.timestamp(),
        server_url,
        grpc_broadcast_address,
    })?)
}
