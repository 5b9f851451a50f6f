use std::os::unix::fs::PermissionsExt as _;

use super::cmd::Summary;
use super::*;

/// A token with the claims the CLI reads (the signature is only checked by the engine).
pub(crate) fn token(tenant: &str, address: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let header = b64(serde_json::json!({ "alg": "HS256", "typ": "JWT" }));
    let payload = b64(serde_json::json!({
        "sub": tenant,
        "grpc_broadcast_address": address,
        "server_url": format!("http://{address}"),
        "exp": 4_102_444_800i64, // 2100-01-01
    }));
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

/// A fresh directory under the system's temporary directory.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adze-profile-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn profile(tenant: &str) -> Profile {
    Profile::of_token(token(tenant, "127.0.0.1:7077"))
}

#[test]
fn the_file_is_created_private_and_read_back() {
    let dir = temp_dir();
    let store = Store::at(dir.join("adze/profiles.toml"));
    assert!(add(&store, "local", profile("t1"), false).expect("add"));
    assert!(!add(&store, "other", profile("t2"), false).expect("add"));
    let mode = std::fs::metadata(store.path())
        .expect("file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(dir.join("adze"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let read = store.load().expect("load");
    assert_eq!(read.current.as_deref(), Some("local"));
    assert_eq!(read.get("other").expect("other").token, profile("t2").token);
    assert!(matches!(
        add(&store, "local", profile("t3"), false),
        Err(Error::Exists(_))
    ));
    add(&store, "local", profile("t3"), true).expect("replaced with --force");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_file_others_can_read_is_refused_with_the_fix() {
    let dir = temp_dir();
    let store = Store::at(dir.join("profiles.toml"));
    add(&store, "local", profile("t1"), false).expect("add");
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = store
        .load()
        .expect_err("a 0644 file is refused")
        .to_string();
    assert!(
        err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
    let err = add(&store, "more", profile("t2"), false).expect_err("and not written");
    assert!(matches!(err, Error::TooOpen { mode: 0o644, .. }), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_file_is_under_xdg_config_home_else_home() {
    let xdg = Store::locate(|k| match k {
        "XDG_CONFIG_HOME" => Some("/x".into()),
        "HOME" => Some("/h".into()),
        _ => None,
    })
    .expect("located");
    assert_eq!(xdg.path(), Path::new("/x/adze/profiles.toml"));
    let home = Store::locate(|k| (k == "HOME").then(|| "/h".into())).expect("located");
    assert_eq!(home.path(), Path::new("/h/.config/adze/profiles.toml"));
    assert!(matches!(Store::locate(|_| None), Err(Error::NoConfigDir)));
}

#[test]
fn bad_names_tokens_and_servers_are_refused() {
    let dir = temp_dir();
    let store = Store::at(dir.join("profiles.toml"));
    let bad_token = Profile {
        token: "not-a-jwt".into(),
        ..profile("t")
    };
    let with_server = |s: &str| Profile {
        server: Some(s.into()),
        ..profile("t")
    };
    let mtls = Profile {
        tls_strategy: Some(Tls::Mtls),
        ..profile("t")
    };
    let no_ca = Profile {
        tls_root_ca_file: Some(dir.join("missing.pem")),
        ..profile("t")
    };
    for (name, p, expected) in [
        ("has space", profile("t"), "profile name"),
        ("ok", mtls, "needs --tls-cert-file"),
        ("ok", no_ca, "missing.pem: no such file"),
        ("ok", bad_token, "--token"),
        ("ok", with_server("http://h:1"), "without a scheme"),
        ("ok", with_server("h"), "host:port"),
    ] {
        let err = add(&store, name, p, false)
            .expect_err("refused")
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
    assert!(!store.path().exists(), "nothing was written");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_masked_token_keeps_only_its_ends() {
    let t = token("tenant-id", "127.0.0.1:7077");
    let masked = mask(&t);
    assert_eq!(masked.chars().count(), 11);
    assert!(t.starts_with(masked.split('…').next().expect("head")));
    assert!(t.ends_with(masked.split('…').nth(1).expect("tail")));
    assert_eq!(mask("short"), "…");
}

#[test]
fn show_reads_the_tenant_server_and_expiry_from_the_token() {
    let s = Summary::of(&profile("tenant-1"));
    assert_eq!(s.tenant, "tenant-1");
    assert_eq!(s.server, "127.0.0.1:7077 (from the token)");
    assert_eq!(s.expires, "2100-01-01T00:00:00Z");
}
