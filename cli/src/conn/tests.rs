use std::collections::HashMap;

use super::*;
use crate::profile::{Profile, Profiles, Tls};

fn token(tenant: &str) -> String {
    crate::profile::tests::token(tenant, "127.0.0.1:7077")
}

fn profiles() -> Profiles {
    let p = |tenant: &str, server: Option<&str>| Profile {
        server: server.map(str::to_owned),
        tls_root_ca_file: server.map(|_| "/ca.pem".into()),
        ..Profile::of_token(token(tenant))
    };
    Profiles {
        current: Some("a".into()),
        profiles: [
            ("a".to_owned(), p("tenant-a", Some("a.local:1"))),
            ("b".to_owned(), p("tenant-b", None)),
        ]
        .into(),
    }
}

fn resolve(conn: &Conn, env: &[(&str, &str)]) -> anyhow::Result<Target> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    conn.resolve(|k| env.get(k).cloned(), || Ok(profiles()))
}

fn conn(token: Option<&str>, host_port: Option<&str>, profile: Option<&str>) -> Conn {
    Conn {
        token: token.map(str::to_owned),
        host_port: host_port.map(str::to_owned),
        profile: profile.map(str::to_owned),
    }
}

#[test]
fn flags_then_environment_then_the_named_profile_then_the_current_one() {
    let env_token = token("tenant-env");
    let env = [("ADZE_TOKEN", env_token.as_str()), ("ADZE_PROFILE", "b")];

    let t = resolve(&conn(Some("ey.flag"), None, None), &env).expect("flag");
    assert_eq!(
        (t.token.as_str(), &t.origin),
        ("ey.flag", &Origin::TokenFlag)
    );

    let t = resolve(&conn(None, None, Some("b")), &env).expect("--profile");
    assert_eq!(t.token, token("tenant-b"));
    assert_eq!(t.address().expect("address"), "127.0.0.1:7077");

    let t = resolve(&conn(None, None, None), &env).expect("env token");
    assert_eq!(t.origin, Origin::TokenEnv("ADZE_TOKEN"));

    let t = resolve(&conn(None, None, None), &env[1..]).expect("$ADZE_PROFILE");
    assert_eq!(t.token, token("tenant-b"));

    let t = resolve(&conn(None, None, None), &[]).expect("current");
    assert_eq!(t.token, token("tenant-a"));
    assert_eq!(t.address().expect("address"), "a.local:1");
    assert_eq!(t.origin.to_string(), "profile \"a\" (current)");
}

#[test]
fn host_port_overrides_a_profiles_server_and_goes_with_an_environment_token() {
    let t = resolve(&conn(None, Some("h:2"), Some("a")), &[]).expect("resolved");
    assert_eq!(t.address().expect("address"), "h:2");
    let env_token = token("tenant-env");
    let t = resolve(
        &conn(None, None, None),
        &[
            ("HATCHET_CLIENT_TOKEN", env_token.as_str()),
            ("HATCHET_CLIENT_HOST_PORT", "env:3"),
            ("HATCHET_CLIENT_TLS_STRATEGY", "tls"),
        ],
    )
    .expect("resolved");
    assert_eq!(t.address().expect("address"), "env:3");
    assert_eq!(t.tls.strategy, Tls::Tls);
    // A profile is taken whole: an exported address is not mixed into it.
    let t = resolve(&conn(None, None, Some("b")), &[("ADZE_HOST_PORT", "env:3")]).expect("b");
    assert_eq!(t.address().expect("address"), "127.0.0.1:7077");
}

#[test]
fn a_token_from_a_flag_or_the_environment_needs_no_profiles_file() {
    let c = conn(Some("ey.flag"), None, None);
    c.resolve(|_| None, || anyhow::bail!("unreadable profiles"))
        .expect("the file is not read");
    let err = conn(None, None, None)
        .resolve(|_| None, || anyhow::bail!("unreadable profiles"))
        .expect_err("the file is needed");
    assert!(err.to_string().contains("unreadable profiles"));
}

#[test]
fn no_token_anywhere_and_unknown_profiles_say_what_to_do() {
    let err = conn(None, None, None)
        .resolve(|_| None, || Ok(Profiles::default()))
        .expect_err("no token")
        .to_string();
    assert!(err.contains("adze profile add"), "{err}");
    let err = resolve(&conn(None, None, Some("zz")), &[])
        .expect_err("unknown")
        .to_string();
    assert!(
        err.contains("\"zz\"") && err.contains("there are: a, b"),
        "{err}"
    );
}

#[test]
fn the_worker_environment_names_the_engine() {
    let t = resolve(&conn(None, None, Some("a")), &[]).expect("resolved");
    let env: HashMap<String, String> = t.sdk_env().expect("env").into_iter().collect();
    assert_eq!(env["HATCHET_CLIENT_TOKEN"], token("tenant-a"));
    assert_eq!(env["HATCHET_CLIENT_HOST_PORT"], "a.local:1");
    assert_eq!(env["HATCHET_CLIENT_TLS_STRATEGY"], "none");
    assert_eq!(env["HATCHET_CLIENT_TLS_ROOT_CA_FILE"], "/ca.pem");
    assert!(!env.contains_key("HATCHET_CLIENT_TLS_CERT_FILE"));
}
