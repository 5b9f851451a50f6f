//! TLS on the API ports: the `[server.tls]` settings, the rustls configuration made from
//! them, and the listener that performs handshakes ([`accept`]).
//!
//! Plaintext is never a silent default. With no `mode`, a certificate and key make the
//! port TLS (mTLS when a client CA is also given); with none of them the process refuses
//! to start and says how to choose. `mode = "none"` serves plaintext (h2c and HTTP/1.1).
//! The operators' ports of the scheduler, reaper and ratelimit service (`/healthz`,
//! `/readyz`, `/metrics`) stay plaintext.

pub(crate) mod accept;
mod refuse;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// How an API port is secured (`server.tls.mode`, `ADZE_SERVER__TLS__MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plaintext HTTP/2 (h2c) and HTTP/1.1.
    None,
    /// TLS with the server's certificate.
    Tls,
    /// TLS, and every client presents a certificate signed by `client_ca_file`.
    Mtls,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::None => "none",
            TlsMode::Tls => "tls",
            TlsMode::Mtls => "mtls",
        })
    }
}

/// `[server.tls]`: how ingest's and the dispatcher's ports are secured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsSettings {
    /// `none`, `tls` or `mtls`. Unset: `tls` (or `mtls` with `client_ca_file`) when a
    /// certificate is given, else an error at startup.
    pub mode: Option<TlsMode>,
    /// PEM certificate chain of the server, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the server (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates (`mtls`).
    pub client_ca_file: Option<PathBuf>,
    /// How long a client may take to complete its handshake.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            mode: None,
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl TlsSettings {
    /// The mode these settings come to: the explicit one, else what the files imply
    /// (`None` when nothing decides it).
    pub fn effective_mode(&self) -> Option<TlsMode> {
        if self.mode.is_some() {
            return self.mode;
        }
        if self.client_ca_file.is_some() {
            Some(TlsMode::Mtls)
        } else if self.cert_file.is_some() || self.key_file.is_some() {
            Some(TlsMode::Tls)
        } else {
            None
        }
    }
}

/// Why the TLS settings cannot be used. Each says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Neither a mode nor a certificate was configured.
    #[error(
        "no TLS configuration for the API port: give a certificate and key \
         (server.tls.cert_file and key_file, or ADZE_SERVER__TLS__CERT_FILE and \
         ADZE_SERVER__TLS__KEY_FILE; `adze dev certs` makes a local set), or serve \
         plaintext explicitly with server.tls.mode = \"none\" (ADZE_SERVER__TLS__MODE=none)"
    )]
    Unconfigured,
    /// A setting the mode needs is missing.
    #[error(
        "TLS mode \"{mode}\" needs server.tls.{setting} (ADZE_SERVER__TLS__{})",
        .setting.to_uppercase()
    )]
    Missing {
        /// The mode in force.
        mode: TlsMode,
        /// The missing setting.
        setting: &'static str,
    },
    /// A setting the mode would ignore is set: plaintext (or TLS without client
    /// certificates) was not what the rest of the configuration asks for.
    #[error(
        "server.tls.mode is \"{mode}\" but server.tls.{setting} is set: remove it or set \
         the mode to \"{wanted}\""
    )]
    Contradiction {
        /// The mode in force.
        mode: TlsMode,
        /// The setting that contradicts it.
        setting: &'static str,
        /// The mode the setting belongs to.
        wanted: TlsMode,
    },
    /// A file could not be read.
    #[error("cannot read the TLS {what} file {}", path.display())]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("the TLS {what} file {} {problem}", path.display())]
    Content {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the certificate, the key or the client CA.
    #[error("cannot use the TLS {what} ({})", path.display())]
    Rejected {
        /// What was refused.
        what: &'static str,
        /// The file it came from.
        path: PathBuf,
        /// rustls's reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A port's security, resolved from [`TlsSettings`]: plaintext, or a rustls server
/// configuration. The default is plaintext (services composed in process, as tests
/// do); processes started from configuration use [`ServerTls::from_settings`].
#[derive(Clone, Default)]
pub struct ServerTls {
    secured: Option<Arc<Secured>>,
}

/// What a TLS port needs to accept connections.
pub(crate) struct Secured {
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) mode: TlsMode,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerTls({})", self.mode())
    }
}

impl ServerTls {
    /// Plaintext HTTP/2 (h2c) and HTTP/1.1.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// Resolves the settings, reading the certificate, key and client CA files.
    pub fn from_settings(settings: &TlsSettings) -> Result<Self, TlsError> {
        let mode = settings.effective_mode().ok_or(TlsError::Unconfigured)?;
        let contradiction = |setting, wanted| TlsError::Contradiction {
            mode,
            setting,
            wanted,
        };
        if mode == TlsMode::None {
            let files = [
                ("cert_file", &settings.cert_file, TlsMode::Tls),
                ("key_file", &settings.key_file, TlsMode::Tls),
                ("client_ca_file", &settings.client_ca_file, TlsMode::Mtls),
            ];
            if let Some((setting, _, wanted)) = files.iter().find(|(_, file, _)| file.is_some()) {
                return Err(contradiction(setting, *wanted));
            }
            return Ok(Self::plaintext());
        }
        if mode == TlsMode::Tls && settings.client_ca_file.is_some() {
            return Err(contradiction("client_ca_file", TlsMode::Mtls));
        }
        let required = |value: &Option<PathBuf>, setting| {
            value.clone().ok_or(TlsError::Missing { mode, setting })
        };
        let cert_file = required(&settings.cert_file, "cert_file")?;
        let key_file = required(&settings.key_file, "key_file")?;
        let client_ca = match mode {
            TlsMode::Mtls => Some(required(&settings.client_ca_file, "client_ca_file")?),
            _ => None,
        };
        let config = server_config(&cert_file, &key_file, client_ca.as_deref())?;
        Ok(Self {
            secured: Some(Arc::new(Secured {
                config: Arc::new(config),
                handshake_timeout: Duration::from_millis(settings.handshake_timeout_ms.max(1)),
                mode,
            })),
        })
    }

    /// The mode in force.
    pub fn mode(&self) -> TlsMode {
        self.secured.as_ref().map_or(TlsMode::None, |s| s.mode)
    }

    /// `https` when the port speaks TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.secured.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub(crate) fn secured(&self) -> Option<&Arc<Secured>> {
        self.secured.as_ref()
    }
}

/// The crypto every TLS port uses (one provider, whatever else the build links).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server configuration offering HTTP/2 and HTTP/1.1 over ALPN, requiring a
/// client certificate signed by `client_ca` when one is given.
fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates(cert_file, "certificate")?;
    let key = private_key(key_file)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected {
            what: "protocol versions",
            path: cert_file.to_path_buf(),
            source: Box::new(e),
        })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path, "client CA")? {
                roots.add(cert).map_err(|e| TlsError::Rejected {
                    what: "client CA certificate",
                    path: path.to_path_buf(),
                    source: Box::new(e),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rejected {
                    what: "client CA",
                    path: path.to_path_buf(),
                    source: Box::new(e),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rejected {
            what: "certificate and key",
            path: cert_file.to_path_buf(),
            source: Box::new(e),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file; at least one.
fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let content = |problem: String| TlsError::Content {
        what,
        path: path.to_path_buf(),
        problem,
    };
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(content(
            "holds no PEM certificate (BEGIN CERTIFICATE)".into(),
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "private key";
    let pem = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Content {
        what,
        path: path.to_path_buf(),
        problem: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                    .into()
            }
            other => format!("is not a valid PEM private key: {other}"),
        },
    })
}

#[cfg(test)]
mod tests;
