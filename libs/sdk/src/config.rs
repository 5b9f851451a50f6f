//! Client configuration: the API token, the engine address and TLS, read from the same
//! `HATCHET_CLIENT_*` environment variables as the official SDKs.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::SdkError;
use crate::transport::ClientTls;

/// How the client secures its connections (`HATCHET_CLIENT_TLS_STRATEGY`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsStrategy {
    /// Plaintext HTTP/2 (h2c), for local engines: `none`.
    None,
    /// TLS: `tls` (the Hatchet default). The engine's certificate is checked against
    /// [`ClientConfig::tls_root_ca_file`] when set, else against the public web roots.
    #[default]
    Tls,
    /// Mutual TLS: `mtls`. As `tls`, and the client presents
    /// [`ClientConfig::tls_cert_file`] with its [`ClientConfig::tls_key_file`].
    Mtls,
}

impl TlsStrategy {
    fn parse(value: &str) -> Result<Self, SdkError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(TlsStrategy::None),
            "tls" => Ok(TlsStrategy::Tls),
            "mtls" => Ok(TlsStrategy::Mtls),
            other => Err(SdkError::Config(format!(
                "HATCHET_CLIENT_TLS_STRATEGY must be none, tls or mtls, got \"{other}\""
            ))),
        }
    }
}

/// Settings for [`Client::new`](crate::Client::new).
///
/// Only `token` is required. The default strategy is TLS checked against the public
/// web roots; a local engine without TLS takes
/// `ClientConfig { token, tls_strategy: TlsStrategy::None, ..Default::default() }`, one
/// with a self-signed certificate (`adze dev certs`) `tls_root_ca_file: Some(ca)`.
#[derive(Clone, Default)]
pub struct ClientConfig {
    /// The API token (a JWT). Its payload gives the tenant and the engine address.
    pub token: String,
    /// `host:port` of the engine's gRPC endpoint; overrides the token's
    /// `grpc_broadcast_address`.
    pub host_port: Option<String>,
    /// `host:port` of the `Dispatcher` gRPC service, when it is served apart from the
    /// client services (a fleet of separate processes reached without a routing proxy).
    /// Used by workers (register, listen, heartbeat, task events) and by result
    /// subscriptions; `None` uses the same address as everything else.
    pub dispatcher_host_port: Option<String>,
    /// Transport security of the gRPC and REST connections.
    pub tls_strategy: TlsStrategy,
    /// PEM CA certificates the engine's certificate is checked against, instead of the
    /// public web roots (`HATCHET_CLIENT_TLS_ROOT_CA_FILE`).
    pub tls_root_ca_file: Option<PathBuf>,
    /// PEM certificate chain the client presents under `mtls`
    /// (`HATCHET_CLIENT_TLS_CERT_FILE`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of [`ClientConfig::tls_cert_file`] (`HATCHET_CLIENT_TLS_KEY_FILE`).
    pub tls_key_file: Option<PathBuf>,
    /// The name the engine's certificate must carry on gRPC connections
    /// (`HATCHET_CLIENT_TLS_SERVER_NAME`); unset: the host of the gRPC address. REST
    /// calls check the host of the token's `server_url`, as the official SDKs do.
    pub tls_server_name: Option<String>,
    /// Prefix for workflow names (normalized to lower case ending in `_`).
    pub namespace: Option<String>,
    /// Overrides the token's `sub` claim as tenant id.
    pub tenant_id: Option<String>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("token", &"<redacted>")
            .field("host_port", &self.host_port)
            .field("dispatcher_host_port", &self.dispatcher_host_port)
            .field("tls_strategy", &self.tls_strategy)
            .field("tls_root_ca_file", &self.tls_root_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("namespace", &self.namespace)
            .field("tenant_id", &self.tenant_id)
            .finish()
    }
}

impl ClientConfig {
    /// Reads `HATCHET_CLIENT_TOKEN` (required), `HATCHET_CLIENT_HOST_PORT`,
    /// `HATCHET_CLIENT_TLS_STRATEGY` (`none`, `tls` or `mtls`; default `tls`),
    /// `HATCHET_CLIENT_TLS_ROOT_CA_FILE`, `HATCHET_CLIENT_TLS_CERT_FILE`,
    /// `HATCHET_CLIENT_TLS_KEY_FILE`, `HATCHET_CLIENT_TLS_SERVER_NAME`,
    /// `HATCHET_CLIENT_NAMESPACE`, `HATCHET_CLIENT_TENANT_ID` and
    /// `ADZE_DISPATCHER_HOST_PORT` (an Adze extension, see
    /// [`ClientConfig::dispatcher_host_port`]) from the process environment.
    pub fn from_env() -> Result<Self, SdkError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`ClientConfig::from_env`], reading variables through `lookup` (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SdkError> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let token = get("HATCHET_CLIENT_TOKEN").ok_or_else(|| {
            SdkError::Config(
                "HATCHET_CLIENT_TOKEN is not set: create an API token for your tenant and \
                 export it"
                    .into(),
            )
        })?;
        let tls_strategy = match get("HATCHET_CLIENT_TLS_STRATEGY") {
            Some(v) => TlsStrategy::parse(&v)?,
            None => TlsStrategy::default(),
        };
        Ok(ClientConfig {
            token: token.trim().to_owned(),
            host_port: get("HATCHET_CLIENT_HOST_PORT"),
            dispatcher_host_port: get("ADZE_DISPATCHER_HOST_PORT"),
            tls_strategy,
            tls_root_ca_file: get("HATCHET_CLIENT_TLS_ROOT_CA_FILE").map(PathBuf::from),
            tls_cert_file: get("HATCHET_CLIENT_TLS_CERT_FILE").map(PathBuf::from),
            tls_key_file: get("HATCHET_CLIENT_TLS_KEY_FILE").map(PathBuf::from),
            tls_server_name: get("HATCHET_CLIENT_TLS_SERVER_NAME"),
            namespace: get("HATCHET_CLIENT_NAMESPACE"),
            tenant_id: get("HATCHET_CLIENT_TENANT_ID"),
        })
    }

    /// Decodes the token, applies the overrides and reads the TLS files.
    pub(crate) fn resolve(&self) -> Result<ResolvedConfig, SdkError> {
        let claims = TokenClaims::decode(&self.token)?;
        let address = self
            .host_port
            .clone()
            .or_else(|| claims.grpc_broadcast_address.clone())
            .ok_or_else(|| {
                SdkError::Config(
                    "no engine address: the token has no grpc_broadcast_address; set \
                     HATCHET_CLIENT_HOST_PORT"
                        .into(),
                )
            })?;
        Ok(ResolvedConfig {
            token: self.token.clone(),
            dispatcher_address: self.dispatcher_host_port.clone(),
            address,
            tenant_id: self.tenant_id.clone().unwrap_or(claims.sub),
            server_url: claims.server_url,
            namespace: normalize_namespace(self.namespace.as_deref()),
            tls: ClientTls::load(self)?,
        })
    }
}

/// The configuration after decoding the token.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedConfig {
    /// The API token, for REST calls.
    pub token: String,
    pub address: String,
    /// The `Dispatcher` service's address when it differs from `address`.
    pub dispatcher_address: Option<String>,
    pub tenant_id: String,
    pub server_url: Option<String>,
    pub namespace: String,
    /// The TLS strategy with its files read.
    pub tls: ClientTls,
}

impl ResolvedConfig {
    /// Prefixes `name` with the namespace unless it already carries it.
    pub fn apply_namespace(&self, name: &str) -> String {
        if self.namespace.is_empty() || name.starts_with(&self.namespace) {
            name.to_owned()
        } else {
            format!("{}{name}", self.namespace)
        }
    }
}

fn normalize_namespace(ns: Option<&str>) -> String {
    match ns.map(str::trim) {
        None | Some("") => String::new(),
        Some(ns) if ns.ends_with('_') => ns.to_lowercase(),
        Some(ns) => format!("{}_", ns.to_lowercase()),
    }
}

/// The claims the SDK reads from the token payload (the signature is not checked here;
/// the engine verifies it).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TokenClaims {
    /// The tenant id.
    pub sub: String,
    /// Base URL of the engine's REST API.
    #[serde(default)]
    pub server_url: Option<String>,
    /// `host:port` of the engine's gRPC endpoint.
    #[serde(default)]
    pub grpc_broadcast_address: Option<String>,
}

impl TokenClaims {
    /// Base64-decodes the JWT payload (the second `.`-separated part).
    pub fn decode(token: &str) -> Result<Self, SdkError> {
        let token = token.trim();
        if !token.starts_with("ey") {
            return Err(SdkError::InvalidToken(
                "it is not a JWT (should start with \"ey\")".into(),
            ));
        }
        let mut parts = token.split('.');
        let payload = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(_), Some(payload), Some(_), None) => payload,
            _ => {
                return Err(SdkError::InvalidToken(
                    "a JWT has three `.`-separated parts".into(),
                ));
            }
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|e| SdkError::InvalidToken(format!("payload is not base64url: {e}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| SdkError::InvalidToken(format!("payload lacks the expected claims: {e}")))
    }
}

#[cfg(test)]
mod tests;
