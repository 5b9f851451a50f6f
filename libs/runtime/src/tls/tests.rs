use std::path::{Path, PathBuf};

use super::*;
use crate::Loaded;

/// A directory of PEM files for one test: `ca.pem`, `server.pem` and `server.key`
/// (signed by the CA, for localhost) and `other.key` (matching nothing).
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("adze-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        for (name, pem) in [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", leaf.pem()),
            ("server.key", key.serialize_pem()),
            ("other.key", other.serialize_pem()),
            ("empty.pem", String::new()),
        ] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        Some(self.dir.join(name))
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn settings(mode: Option<TlsMode>) -> TlsSettings {
    TlsSettings {
        mode,
        ..TlsSettings::default()
    }
}

fn error(settings: &TlsSettings) -> String {
    match ServerTls::from_settings(settings) {
        Ok(tls) => panic!("expected an error, got {tls:?}"),
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

#[test]
fn nothing_configured_refuses_and_says_how_to_choose() {
    let text = error(&settings(None));
    assert!(text.contains("ADZE_SERVER__TLS__MODE=none"), "{text}");
    assert!(text.contains("adze dev certs"), "{text}");
}

#[test]
fn explicit_none_is_plaintext() {
    let tls = ServerTls::from_settings(&settings(Some(TlsMode::None))).unwrap();
    assert_eq!(tls.mode(), TlsMode::None);
    assert_eq!(tls.scheme(), "http");
}

#[test]
fn a_certificate_and_key_imply_tls_and_a_client_ca_implies_mtls() {
    let files = Files::new("implied");
    let mut s = TlsSettings {
        cert_file: files.path("server.pem"),
        key_file: files.path("server.key"),
        ..TlsSettings::default()
    };
    let tls = ServerTls::from_settings(&s).unwrap();
    assert_eq!((tls.mode(), tls.scheme()), (TlsMode::Tls, "https"));
    s.client_ca_file = files.path("ca.pem");
    assert_eq!(ServerTls::from_settings(&s).unwrap().mode(), TlsMode::Mtls);
}

#[test]
fn settings_the_mode_ignores_are_refused() {
    let files = Files::new("contradiction");
    let none_with_cert = TlsSettings {
        cert_file: files.path("server.pem"),
        ..settings(Some(TlsMode::None))
    };
    let text = error(&none_with_cert);
    assert!(text.contains("cert_file is set"), "{text}");
    let tls_with_ca = TlsSettings {
        cert_file: files.path("server.pem"),
        key_file: files.path("server.key"),
        client_ca_file: files.path("ca.pem"),
        ..settings(Some(TlsMode::Tls))
    };
    let text = error(&tls_with_ca);
    assert!(
        text.contains("client_ca_file is set") && text.contains("\"mtls\""),
        "{text}"
    );
}

#[test]
fn a_missing_setting_is_named() {
    let files = Files::new("missing");
    let key_only = TlsSettings {
        key_file: files.path("server.key"),
        ..TlsSettings::default()
    };
    let text = error(&key_only);
    assert!(
        text.contains("server.tls.cert_file (ADZE_SERVER__TLS__CERT_FILE)"),
        "{text}"
    );
    let mtls = TlsSettings {
        cert_file: files.path("server.pem"),
        key_file: files.path("server.key"),
        ..settings(Some(TlsMode::Mtls))
    };
    assert!(error(&mtls).contains("client_ca_file"));
}

#[test]
fn unreadable_or_wrong_files_are_named() {
    let files = Files::new("files");
    let with = |cert: &str, key: &str| TlsSettings {
        cert_file: files.path(cert),
        key_file: files.path(key),
        ..settings(Some(TlsMode::Tls))
    };
    let missing = files.dir.join("nope.pem");
    let text = error(&with("nope.pem", "server.key"));
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(
        text.contains("cannot read the TLS certificate file"),
        "{text}"
    );

    let text = error(&with("empty.pem", "server.key"));
    assert!(text.contains("holds no PEM certificate"), "{text}");

    let text = error(&with("server.pem", "server.pem"));
    assert!(text.contains("holds no PEM private key"), "{text}");

    let text = error(&with("server.pem", "other.key"));
    assert!(
        text.contains("cannot use the TLS certificate and key"),
        "{text}"
    );
}

#[test]
fn the_mode_is_read_from_configuration() {
    let mode = |value: &str| {
        let loaded = Loaded::load(None, &[("server.tls.mode", value.to_string())]).unwrap();
        loaded.common.server.tls.mode
    };
    assert_eq!(mode("none"), Some(TlsMode::None));
    assert_eq!(mode("mtls"), Some(TlsMode::Mtls));
    let bad = Loaded::load(None, &[("server.tls.mode", "ssl".to_string())]).unwrap_err();
    assert!(bad.to_string().contains("ssl"), "{bad}");
}

#[test]
fn the_default_rest_url_follows_the_tls_settings() {
    let mut server = crate::Server::default();
    assert_eq!(server.rest_url(), "http://127.0.0.1:7077");
    server.tls.cert_file = Some(Path::new("server.pem").to_path_buf());
    assert_eq!(server.rest_url(), "https://127.0.0.1:7077");
    server.public_url = "https://adze.example.com".into();
    assert_eq!(server.rest_url(), "https://adze.example.com");
}
