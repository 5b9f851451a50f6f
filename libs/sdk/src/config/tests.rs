use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;

fn token(payload: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT"}"#);
    format!("{header}.{}.c2ln", URL_SAFE_NO_PAD.encode(payload))
}

#[test]
fn decodes_claims_without_verifying() {
    let t = token(
        r#"{"sub":"707d0855-80ab-4e1f-a156-f1c4546cbf52","server_url":"http://localhost:8080",
            "grpc_broadcast_address":"localhost:7070","exp":1}"#,
    );
    let claims = TokenClaims::decode(&t).unwrap();
    assert_eq!(claims.sub, "707d0855-80ab-4e1f-a156-f1c4546cbf52");
    assert_eq!(claims.server_url.as_deref(), Some("http://localhost:8080"));
    assert_eq!(
        claims.grpc_broadcast_address.as_deref(),
        Some("localhost:7070")
    );
}

#[test]
fn accepts_padded_payload() {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let payload = base64::engine::general_purpose::URL_SAFE.encode(r#"{"sub":"t1"}"#);
    let claims = TokenClaims::decode(&format!("{header}.{payload}.sig")).unwrap();
    assert_eq!(claims.sub, "t1");
}

#[test]
fn rejects_malformed_tokens() {
    assert!(matches!(
        TokenClaims::decode("abc"),
        Err(SdkError::InvalidToken(_))
    ));
    assert!(matches!(
        TokenClaims::decode("eyJ.only-two"),
        Err(SdkError::InvalidToken(_))
    ));
    assert!(matches!(
        TokenClaims::decode("eyJ.!!!.sig"),
        Err(SdkError::InvalidToken(_))
    ));
    assert!(matches!(
        TokenClaims::decode(&token(r#"{"no_sub":1}"#)),
        Err(SdkError::InvalidToken(_))
    ));
}

#[test]
fn from_lookup_reads_overrides() {
    let t = token(r#"{"sub":"tenant","grpc_broadcast_address":"engine:7070"}"#);
    let env: HashMap<&str, String> = HashMap::from([
        ("HATCHET_CLIENT_TOKEN", t),
        ("HATCHET_CLIENT_HOST_PORT", "127.0.0.1:9999".to_owned()),
        ("HATCHET_CLIENT_TLS_STRATEGY", "NONE".to_owned()),
        ("HATCHET_CLIENT_NAMESPACE", "Staging".to_owned()),
    ]);
    let config = ClientConfig::from_lookup(|k| env.get(k).cloned()).unwrap();
    assert_eq!(config.tls_strategy, TlsStrategy::None);
    let resolved = config.resolve().unwrap();
    assert_eq!(resolved.address, "127.0.0.1:9999");
    assert_eq!(resolved.tenant_id, "tenant");
    assert_eq!(resolved.namespace, "staging_");
    assert_eq!(resolved.apply_namespace("docs"), "staging_docs");
    assert_eq!(resolved.apply_namespace("staging_docs"), "staging_docs");
}

#[test]
fn address_comes_from_token_without_override() {
    let t = token(r#"{"sub":"tenant","grpc_broadcast_address":"engine:7070"}"#);
    let config = ClientConfig {
        token: t,
        ..Default::default()
    };
    let resolved = config.resolve().unwrap();
    assert_eq!(resolved.address, "engine:7070");
    assert_eq!(resolved.apply_namespace("docs"), "docs");
}

#[test]
fn missing_token_and_bad_tls_are_config_errors() {
    assert!(matches!(
        ClientConfig::from_lookup(|_| None),
        Err(SdkError::Config(_))
    ));
    let err = ClientConfig::from_lookup(|k| match k {
        "HATCHET_CLIENT_TOKEN" => Some("eyJ.e30.x".to_owned()),
        "HATCHET_CLIENT_TLS_STRATEGY" => Some("plain".to_owned()),
        _ => None,
    });
    assert!(matches!(err, Err(SdkError::Config(_))));
}

#[test]
fn debug_redacts_token() {
    let config = ClientConfig {
        token: "secret".into(),
        ..Default::default()
    };
    assert!(!format!("{config:?}").contains("secret"));
}

#[test]
fn dispatcher_address_is_optional_and_read_from_env() {
    let t = token(r#"{"sub":"tenant","grpc_broadcast_address":"engine:7070"}"#);
    let config = ClientConfig {
        token: t.clone(),
        ..Default::default()
    };
    assert_eq!(config.resolve().unwrap().dispatcher_address, None);

    let env: HashMap<&str, String> = HashMap::from([
        ("HATCHET_CLIENT_TOKEN", t),
        ("ADZE_DISPATCHER_HOST_PORT", "127.0.0.1:7079".to_owned()),
    ]);
    let config = ClientConfig::from_lookup(|k| env.get(k).cloned()).unwrap();
    assert_eq!(
        config.dispatcher_host_port.as_deref(),
        Some("127.0.0.1:7079")
    );
    let resolved = config.resolve().unwrap();
    assert_eq!(resolved.address, "engine:7070");
    assert_eq!(
        resolved.dispatcher_address.as_deref(),
        Some("127.0.0.1:7079")
    );
}

#[test]
fn tls_files_and_server_name_are_read_from_env() {
    let t = token(r#"{"sub":"tenant","grpc_broadcast_address":"engine:7070"}"#);
    let env: HashMap<&str, String> = HashMap::from([
        ("HATCHET_CLIENT_TOKEN", t),
        ("HATCHET_CLIENT_TLS_STRATEGY", "mtls".to_owned()),
        (
            "HATCHET_CLIENT_TLS_ROOT_CA_FILE",
            "/certs/ca.pem".to_owned(),
        ),
        (
            "HATCHET_CLIENT_TLS_CERT_FILE",
            "/certs/client.pem".to_owned(),
        ),
        (
            "HATCHET_CLIENT_TLS_KEY_FILE",
            "/certs/client.key".to_owned(),
        ),
        (
            "HATCHET_CLIENT_TLS_SERVER_NAME",
            "engine.internal".to_owned(),
        ),
    ]);
    let config = ClientConfig::from_lookup(|k| env.get(k).cloned()).unwrap();
    assert_eq!(config.tls_strategy, TlsStrategy::Mtls);
    assert_eq!(
        config.tls_root_ca_file,
        Some(PathBuf::from("/certs/ca.pem"))
    );
    assert_eq!(
        config.tls_cert_file,
        Some(PathBuf::from("/certs/client.pem"))
    );
    assert_eq!(
        config.tls_key_file,
        Some(PathBuf::from("/certs/client.key"))
    );
    assert_eq!(config.tls_server_name.as_deref(), Some("engine.internal"));
}

#[test]
fn mtls_needs_a_certificate_and_key() {
    let config = ClientConfig {
        token: token(r#"{"sub":"tenant","grpc_broadcast_address":"engine:7070"}"#),
        tls_strategy: TlsStrategy::Mtls,
        ..Default::default()
    };
    let e = config.resolve().unwrap_err();
    assert!(
        e.to_string()
            .contains("HATCHET_CLIENT_TLS_CERT_FILE is not set"),
        "{e}"
    );
}

#[test]
fn an_unreadable_tls_file_is_named() {
    let config = ClientConfig {
        token: token(r#"{"sub":"tenant","grpc_broadcast_address":"engine:7070"}"#),
        tls_strategy: TlsStrategy::Tls,
        tls_root_ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
        ..Default::default()
    };
    let e = config.resolve().unwrap_err();
    assert!(matches!(e, SdkError::TlsFile { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "cannot use HATCHET_CLIENT_TLS_ROOT_CA_FILE /nonexistent/ca.pem"
    );
    // Strategy none reads no file.
    let none = ClientConfig {
        tls_strategy: TlsStrategy::None,
        ..config
    };
    assert!(none.resolve().is_ok());
}
