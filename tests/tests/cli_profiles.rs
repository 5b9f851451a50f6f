//! `adze profile`: tokens saved on the user's machine, private to them, and `--profile`
//! (or `adze profile use`) choosing the engine and the token of client commands.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use adze_tests::{TestEnv, bin, free_port};
use serde_json::Value;

/// Variables that would choose a token before any profile does.
const CONNECTION_VARS: [&str; 7] = [
    "ADZE_TOKEN",
    "ADZE_HOST_PORT",
    "ADZE_PROFILE",
    "HATCHET_CLIENT_TOKEN",
    "HATCHET_CLIENT_HOST_PORT",
    "HATCHET_CLIENT_TLS_STRATEGY",
    "HATCHET_CLIENT_NAMESPACE",
];

/// `adze args…` with its configuration under `config_home`, and `env` added.
async fn adze(config_home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(bin("adze"));
    for var in CONNECTION_VARS {
        cmd.env_remove(var);
    }
    // Run from the temporary directory: no adze.yaml above it names triggers.
    cmd.env("XDG_CONFIG_HOME", config_home)
        .current_dir(config_home)
        .envs(env.iter().copied())
        .args(args);
    cmd.output().await.expect("adze runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `adze args…`, which must succeed.
async fn ok(config_home: &Path, args: &[&str]) -> String {
    let out = adze(config_home, &[], args).await;
    assert!(
        out.status.success(),
        "adze {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

fn profiles_file(config_home: &Path) -> PathBuf {
    config_home.join("adze/profiles.toml")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

/// A token with the claims the CLI reads; only an engine would check its signature.
fn offline_token(tenant: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(serde_json::json!({ "alg": "HS256" })),
        b64(serde_json::json!({
            "sub": tenant,
            "grpc_broadcast_address": "127.0.0.1:7077",
            "exp": 4_102_444_800i64,
        }))
    )
}

#[tokio::test]
async fn the_profiles_file_is_private_and_refused_once_others_can_read_it() {
    let home = tempfile::tempdir().expect("temp dir");
    let token = offline_token("tenant-a");
    ok(
        home.path(),
        &["profile", "add", "--name", "a", "--token", &token],
    )
    .await;
    let file = profiles_file(home.path());
    assert_eq!(mode(&file), 0o600, "the file is created private");
    assert_eq!(mode(file.parent().expect("dir")), 0o700);
    assert!(ok(home.path(), &["profile", "list"]).await.contains("* a"));

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let before = std::fs::read(&file).expect("read");
    let fix = format!("run `chmod 600 {}`", file.display());
    for args in [
        &["profile", "list"][..],
        &["profile", "add", "--name", "b", "--token", &token],
        &["events", "list"],
    ] {
        let out = adze(home.path(), &[], args).await;
        assert!(!out.status.success(), "adze {args:?} accepted a 0644 file");
        assert!(
            stderr(&out).contains("mode 0644") && stderr(&out).contains(&fix),
            "adze {args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        std::fs::read(&file).expect("read"),
        before,
        "nothing was written"
    );

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    ok(home.path(), &["profile", "list"]).await;
}

#[tokio::test]
async fn use_switches_the_current_profile_and_show_masks_the_token() {
    let home = tempfile::tempdir().expect("temp dir");
    let (a, b) = (offline_token("tenant-a"), offline_token("tenant-b"));
    ok(
        home.path(),
        &["profile", "add", "--name", "a", "--token", &a],
    )
    .await;
    ok(
        home.path(),
        &[
            "profile",
            "add",
            "--name",
            "b",
            "--token",
            &b,
            "--server",
            "b.example:7077",
        ],
    )
    .await;
    let shown = ok(home.path(), &["profile", "show"]).await;
    assert!(shown.contains("profile  a (current)"), "{shown}");

    ok(home.path(), &["profile", "use", "b"]).await;
    let list = ok(home.path(), &["profile", "list"]).await;
    assert!(list.contains("* b") && list.contains("  a "), "{list}");
    let shown = ok(home.path(), &["profile", "show"]).await;
    for expected in [
        "profile  b (current)",
        "server   b.example:7077",
        "tenant   tenant-b",
        "expires  2100-01-01T00:00:00Z",
    ] {
        assert!(shown.contains(expected), "{expected:?} in {shown}");
    }
    assert!(!shown.contains(&b), "the token is masked: {shown}");
    let revealed = ok(home.path(), &["profile", "show", "--reveal"]).await;
    assert!(revealed.contains(&b));

    ok(home.path(), &["profile", "remove", "b"]).await;
    let out = adze(home.path(), &[], &["profile", "use", "b"]).await;
    assert!(stderr(&out).contains("no profile named \"b\" (there are: a)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_chooses_the_engine_and_the_token() {
    let env = TestEnv::start().await;
    let addr = env.addr.expect("api").to_string();
    let (_, token_b) = env.tenant("tenant-b").await;
    let home = tempfile::tempdir().expect("temp dir");
    let h = home.path();
    ok(h, &["profile", "add", "--name", "a", "--token", &env.token]).await;
    ok(
        h,
        &[
            "profile", "add", "--name", "b", "--token", &token_b, "--server", &addr,
        ],
    )
    .await;
    ok(h, &["events", "push", "key-a", "--profile", "a"]).await;
    ok(h, &["events", "push", "key-b", "--profile", "b"]).await;

    let keys = |listed: String| -> Vec<String> {
        let events: Vec<Value> = serde_json::from_str(&listed).expect("a JSON list");
        events
            .iter()
            .map(|e| e["key"].as_str().expect("key").to_owned())
            .collect()
    };
    assert_eq!(
        keys(ok(h, &["events", "list", "--profile", "a"]).await),
        ["key-a"]
    );
    assert_eq!(
        keys(ok(h, &["events", "list", "--profile", "b"]).await),
        ["key-b"]
    );
    // Without --profile: the current one (the first added), then the one `use` chose.
    assert_eq!(keys(ok(h, &["events", "list"]).await), ["key-a"]);
    ok(h, &["profile", "use", "b"]).await;
    assert_eq!(keys(ok(h, &["events", "list"]).await), ["key-b"]);
    // $ADZE_PROFILE names one too; a token in the environment comes before it.
    let out = adze(h, &[("ADZE_PROFILE", "a")], &["events", "list"]).await;
    assert_eq!(keys(stdout(&out)), ["key-a"]);
    let out = adze(
        h,
        &[("ADZE_PROFILE", "a"), ("ADZE_TOKEN", &token_b)],
        &["events", "list"],
    )
    .await;
    assert_eq!(keys(stdout(&out)), ["key-b"]);

    // A profile's server is where its commands go: one with nothing listening fails,
    // naming the address and the profile.
    let closed = format!("127.0.0.1:{}", free_port());
    ok(
        h,
        &[
            "profile", "add", "--name", "down", "--token", &env.token, "--server", &closed,
        ],
    )
    .await;
    let out = adze(h, &[], &["trigger", "any-workflow", "--profile", "down"]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&closed) && err.contains("profile \"down\" (--profile)"),
        "{err}"
    );
    env.stop().await;
}
