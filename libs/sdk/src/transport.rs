//! The connections to the engine: the gRPC channel (TLS or, under strategy `none`,
//! plaintext h2c; bearer-token auth on every call; HTTP/2 keepalive pings like the
//! official SDKs) and the REST client, both secured from the same TLS files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::SdkError;
use crate::config::{ClientConfig, ResolvedConfig, TlsStrategy};

/// A channel that adds `authorization: Bearer <token>` to every request.
pub(crate) type AuthChannel = InterceptedService<Channel, AuthInterceptor>;

/// Adds the bearer token to each call's metadata.
#[derive(Clone)]
pub(crate) struct AuthInterceptor {
    header: MetadataValue<Ascii>,
}

impl AuthInterceptor {
    pub(crate) fn new(token: &str) -> Result<Self, SdkError> {
        let header = format!("Bearer {}", token.trim()).parse().map_err(|_| {
            SdkError::InvalidToken("it contains characters not allowed in a header".into())
        })?;
        Ok(AuthInterceptor { header })
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(req)
    }
}

/// Builds a lazily connecting channel to `address`; the first RPC opens the connection.
///
/// Must run inside a Tokio runtime (the channel spawns its connection driver).
pub(crate) fn channel(config: &ResolvedConfig, address: &str) -> Result<Channel, SdkError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(SdkError::Config(
            "the client must be created inside a Tokio runtime".into(),
        ));
    }
    let failed = |source| SdkError::Connect {
        address: address.to_owned(),
        source,
    };
    let tls = config.tls.grpc();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(failed)?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(failed)?;
    }
    Ok(endpoint.connect_lazy())
}

/// How long a connection (and its TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS strategy with its files read and checked, once, when the client is made.
#[derive(Clone)]
pub(crate) struct ClientTls {
    strategy: TlsStrategy,
    /// PEM CA certificates replacing the public web roots.
    root_ca: Option<Vec<u8>>,
    /// PEM certificate chain and private key (`mtls`).
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("strategy", &self.strategy)
            .field("root_ca", &self.root_ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Reads the files the strategy uses; `none` reads nothing.
    pub(crate) fn load(config: &ClientConfig) -> Result<Self, SdkError> {
        let strategy = config.tls_strategy;
        let mut tls = ClientTls {
            strategy,
            root_ca: None,
            identity: None,
            server_name: config.tls_server_name.clone(),
        };
        if strategy == TlsStrategy::None {
            return Ok(tls);
        }
        if let Some(path) = &config.tls_root_ca_file {
            tls.root_ca = Some(read_certificates(ROOT_CA, path)?);
        }
        if strategy == TlsStrategy::Mtls {
            let required = |file: &Option<PathBuf>, setting: &str| {
                file.clone().ok_or_else(|| {
                    SdkError::Config(format!(
                        "HATCHET_CLIENT_TLS_STRATEGY is mtls but {setting} is not set: give \
                         the client certificate and its key"
                    ))
                })
            };
            let cert = required(&config.tls_cert_file, CERT)?;
            let key = required(&config.tls_key_file, KEY)?;
            tls.identity = Some((read_certificates(CERT, &cert)?, read_key(&key)?));
        }
        Ok(tls)
    }

    /// The gRPC channel's TLS, `None` for plaintext.
    fn grpc(&self) -> Option<ClientTlsConfig> {
        if self.strategy == TlsStrategy::None {
            return None;
        }
        let mut tls = ClientTlsConfig::new().timeout(CONNECT_TIMEOUT);
        tls = match &self.root_ca {
            Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
            None => tls.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name);
        }
        Some(tls)
    }

    /// The client of the REST calls, with the same roots and client certificate.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, SdkError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .use_rustls_tls();
        if self.strategy != TlsStrategy::None {
            if let Some(pem) = &self.root_ca {
                let roots = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| SdkError::Config(format!("{ROOT_CA}: {e}")))?;
                builder = builder.tls_built_in_root_certs(false);
                for root in roots {
                    builder = builder.add_root_certificate(root);
                }
            }
            if let Some((cert, key)) = &self.identity {
                let mut pem = cert.clone();
                pem.push(b'\n');
                pem.extend_from_slice(key);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| SdkError::Config(format!("{CERT} and {KEY}: {e}")))?;
                builder = builder.identity(identity);
            }
        }
        builder
            .build()
            .map_err(|e| SdkError::Config(format!("cannot build the REST client: {e}")))
    }
}

const ROOT_CA: &str = "HATCHET_CLIENT_TLS_ROOT_CA_FILE";
const CERT: &str = "HATCHET_CLIENT_TLS_CERT_FILE";
const KEY: &str = "HATCHET_CLIENT_TLS_KEY_FILE";

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, SdkError> {
    std::fs::read(path).map_err(|e| tls_file(setting, path, e))
}

fn tls_file(
    setting: &'static str,
    path: &Path,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> SdkError {
    SdkError::TlsFile {
        setting,
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// A PEM file holding at least one certificate.
fn read_certificates(setting: &'static str, path: &Path) -> Result<Vec<u8>, SdkError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_file(setting, path, e))?;
    if certs.is_empty() {
        return Err(tls_file(
            setting,
            path,
            "it holds no PEM certificate (BEGIN CERTIFICATE)",
        ));
    }
    Ok(pem)
}

/// A PEM file holding a private key.
fn read_key(path: &Path) -> Result<Vec<u8>, SdkError> {
    let pem = read(KEY, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| tls_file(KEY, path, e))?;
    Ok(pem)
}
