//! The gRPC channel: plaintext h2c (TLS strategy `none`), bearer-token auth on every call,
//! HTTP/2 keepalive pings like the official SDKs.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::SdkError;
use crate::config::{ResolvedConfig, TlsStrategy};

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
    match config.tls_strategy {
        TlsStrategy::None => {}
        TlsStrategy::Tls | TlsStrategy::Mtls => {
            return Err(SdkError::Config(
                "TLS is not supported by this SDK yet; for a local engine set \
                 HATCHET_CLIENT_TLS_STRATEGY=none"
                    .into(),
            ));
        }
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(SdkError::Config(
            "the client must be created inside a Tokio runtime".into(),
        ));
    }
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|source| SdkError::Connect {
            address: address.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}
