//! TLS on the API port with a self-signed set from `adze dev certs`: the pinned Python
//! and TypeScript SDKs over `tls`, the Rust SDK over `mtls` (and refused without a
//! client certificate or with one from another CA), plaintext clients against the TLS
//! port and a TLS client against a plaintext port, and `adze server` refusing to start
//! without a TLS decision.

use std::path::Path;
use std::time::Duration;

use adze_cli::certs::{CertSet, generate};
use adze_runtime::tls::{ServerTls, TlsMode, TlsSettings};
use adze_sdk::{Client, ClientConfig, Context, TaskDef, TaskError, TlsStrategy, Worker, Workflow};
use adze_tests::process::{Proc, python, run_conformance, tsx};
use adze_tests::{TestEnv, bin, fast_configs, free_port, repo_root, wait_listening};
use serde_json::{Value, json};

const ALL_ROLES: [&str; 5] = ["ingest", "scheduler", "dispatcher", "reaper", "ratelimit"];

/// A certificate set in its own directory (removed with it).
fn certs() -> (CertSet, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let set = generate(dir.path(), &[], false).expect("a certificate set");
    (set, dir)
}

fn settings(mode: TlsMode, set: &CertSet) -> TlsSettings {
    TlsSettings {
        mode: Some(mode),
        cert_file: Some(set.server_cert.clone()),
        key_file: Some(set.server_key.clone()),
        client_ca_file: (mode == TlsMode::Mtls).then(|| set.ca_cert.clone()),
        ..TlsSettings::default()
    }
}

/// Every role in process, the API port secured in `mode` with `set`.
async fn secured(mode: TlsMode, set: &CertSet) -> TestEnv {
    let tls = ServerTls::from_settings(&settings(mode, set)).expect("TLS settings");
    TestEnv::start_secured(&ALL_ROLES, fast_configs(), tls).await
}

/// A Rust SDK client of `env`'s default tenant.
fn client(env: &TestEnv, config: ClientConfig) -> Client {
    Client::new(ClientConfig {
        token: env.token.clone(),
        host_port: env.addr.map(|a| a.to_string()),
        ..config
    })
    .expect("client")
}

fn mtls_config(ca: &Path, cert: &Path, key: &Path) -> ClientConfig {
    ClientConfig {
        tls_strategy: TlsStrategy::Mtls,
        tls_root_ca_file: Some(ca.to_path_buf()),
        tls_cert_file: Some(cert.to_path_buf()),
        tls_key_file: Some(key.to_path_buf()),
        ..ClientConfig::default()
    }
}

/// An error with its causes, as a user reads them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// One task doubling its input's `n`.
fn doubler(name: &str) -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new(name);
    wf.add_task(TaskDef::new("double", |i: Value, _c: Context| async move {
        Ok::<_, TaskError>(json!({"n": i["n"].as_i64().unwrap_or(0) * 2}))
    }));
    wf
}

/// What an official SDK script needs to reach `env` over `tls` with the set's CA.
fn sdk_tls_env(env: &TestEnv, set: &CertSet) -> Vec<(String, String)> {
    let ca = set.ca_cert.display().to_string();
    let mut e = env.child_env();
    e.extend([
        ("HATCHET_CLIENT_TLS_STRATEGY".into(), "tls".into()),
        ("HATCHET_CLIENT_TLS_ROOT_CA_FILE".into(), ca.clone()),
        // The TypeScript SDK's REST client (axios) takes no CA of its own.
        ("NODE_EXTRA_CA_CERTS".into(), ca),
    ]);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_runs_a_dag_over_tls_with_a_self_signed_ca() {
    let (set, _dir) = certs();
    let env = secured(TlsMode::Tls, &set).await;
    // dag.py: gRPC for the worker and the runs; REST (PATCH of the worker) at its stop.
    let dir = repo_root().join("tests/conformance/py");
    let env_vars = sdk_tls_env(&env, &set);
    let result = run_conformance("tls-dag.py", &python(), &["dag.py"], &dir, &env_vars).await;
    eprintln!("dag.py over TLS: {}", result["checks"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_runs_a_dag_over_tls_with_a_self_signed_ca() {
    let (set, _dir) = certs();
    let env = secured(TlsMode::Tls, &set).await;
    let (tsx, dir) = tsx();
    let env_vars = sdk_tls_env(&env, &set);
    let result = run_conformance("tls-dag.ts", &tsx, &["dag.ts"], &dir, &env_vars).await;
    eprintln!("dag.ts over TLS: {}", result["checks"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_runs_a_task_and_calls_rest_over_mtls() {
    let (set, _dir) = certs();
    let env = secured(TlsMode::Mtls, &set).await;
    let client = client(
        &env,
        mtls_config(&set.ca_cert, &set.client_cert, &set.client_key),
    );
    let wf = doubler("tls-double");
    let builder = Worker::builder(client.clone()).name("tls-worker").slots(2);
    let stop = env.run_worker(builder, vec![wf.clone()]).await;

    let out: Value = client
        .run(&wf, json!({"n": 21}))
        .await
        .expect("run over mTLS");
    assert_eq!(out["double"], json!({"n": 42}));
    // REST over the same port presents the same client certificate.
    client
        .list_events(&[], 5)
        .await
        .expect("a REST call over mTLS");

    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_without_a_certificate_or_with_one_from_another_ca() {
    let (set, _dir) = certs();
    let (other, _other_dir) = certs();
    let env = secured(TlsMode::Mtls, &set).await;
    let workflow = doubler("tls-refused");

    let no_certificate = client(
        &env,
        ClientConfig {
            tls_strategy: TlsStrategy::Tls,
            tls_root_ca_file: Some(set.ca_cert.clone()),
            ..ClientConfig::default()
        },
    );
    let e = no_certificate
        .run_no_wait(&workflow, json!({}))
        .await
        .expect_err("a client without a certificate is refused");
    // Under TLS 1.3 the client sends its call before it reads the server's verdict:
    // it reports either the alert ("received fatal alert: CertificateRequired") or the
    // connection closing under the call. The server's log names the reason (see
    // `adze_server_serves_mtls_from_environment_settings`).
    eprintln!("without a client certificate: {}", chain(&e));

    // Trusts the server, presents a certificate the server's CA did not sign.
    let foreign = client(
        &env,
        mtls_config(&set.ca_cert, &other.client_cert, &other.client_key),
    );
    let e = foreign
        .run_no_wait(&workflow, json!({}))
        .await
        .expect_err("a client certificate from another CA is refused");
    eprintln!("with another CA's certificate: {}", chain(&e));

    // A client that does not trust the server's CA refuses the server in turn.
    let untrusting = client(
        &env,
        mtls_config(&other.ca_cert, &set.client_cert, &set.client_key),
    );
    let e = untrusting
        .run_no_wait(&workflow, json!({}))
        .await
        .expect_err("the server's certificate is not trusted");
    let text = chain(&e);
    eprintln!("not trusting the server: {text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_clients_against_the_tls_port_are_told_to_use_tls() {
    let (set, _dir) = certs();
    let env = secured(TlsMode::Tls, &set).await;
    let addr = env.addr.expect("the API address");
    const TOLD: &str = "this port requires TLS";

    // gRPC over h2c (the Rust SDK with strategy none): a GOAWAY saying why.
    let plaintext = client(
        &env,
        ClientConfig {
            tls_strategy: TlsStrategy::None,
            ..ClientConfig::default()
        },
    );
    let e = plaintext
        .run_no_wait(&doubler("tls-plaintext"), json!({}))
        .await
        .expect_err("h2c against the TLS port fails");
    assert_eq!(e.status().map(|s| s.code()), Some(tonic::Code::Unavailable));
    let text = chain(&e);
    eprintln!("Rust SDK over h2c: {text}");
    assert!(text.contains(TOLD), "{text}");

    // The Python SDK's gRPC library (grpcio) over an insecure channel.
    let script = r#"
import sys, grpc
channel = grpc.insecure_channel(sys.argv[1])
try:
    channel.unary_unary("/Dispatcher/GetVersion")(b"", timeout=10)
    print("no error")
except grpc.RpcError as e:
    print(f"{e.code()}: {e.details()}")
"#;
    let out = tokio::process::Command::new(python())
        .args(["-c", script, &addr.to_string()])
        .output()
        .await
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("grpcio over h2c: {text}");
    assert!(text.contains(TOLD), "{text}");

    // REST over plain HTTP/1.1: a 400 saying why.
    let answer = reqwest::get(format!("http://{addr}/api/v1/stable/tenants"))
        .await
        .expect("an HTTP/1.1 answer");
    assert_eq!(answer.status(), reqwest::StatusCode::BAD_REQUEST);
    let body = answer.text().await.expect("body");
    eprintln!("HTTP/1.1: {body}");
    assert!(body.contains(TOLD), "{body}");

    // The port still serves TLS clients after all that.
    let tls = client(
        &env,
        ClientConfig {
            tls_strategy: TlsStrategy::Tls,
            tls_root_ca_file: Some(set.ca_cert.clone()),
            ..ClientConfig::default()
        },
    );
    tls.list_events(&[], 1).await.expect("REST over TLS");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_holds_up_no_one_and_is_cut_off_at_the_handshake_deadline() {
    use tokio::io::AsyncReadExt;
    let (set, _dir) = certs();
    let tls = ServerTls::from_settings(&TlsSettings {
        handshake_timeout_ms: 2_000,
        ..settings(TlsMode::Tls, &set)
    })
    .expect("TLS settings");
    let env = TestEnv::start_secured(&ALL_ROLES, fast_configs(), tls).await;
    let addr = env.addr.expect("the API address");
    // Connections that never send a byte, opened before the real client.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let client = client(
        &env,
        ClientConfig {
            tls_strategy: TlsStrategy::Tls,
            tls_root_ca_file: Some(set.ca_cert.clone()),
            ..ClientConfig::default()
        },
    );
    // Served at once, not after the silent ones' deadlines (2 s each, were they taken
    // one after another).
    tokio::time::timeout(Duration::from_millis(1_500), client.list_events(&[], 1))
        .await
        .expect("the TLS client is served while the silent ones wait")
        .expect("REST over TLS");
    for mut s in silent {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the server closes a silent connection after the handshake deadline");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_against_a_plaintext_port_fails_saying_so() {
    let (set, _dir) = certs();
    let env = TestEnv::start().await;
    let tls = client(
        &env,
        ClientConfig {
            tls_strategy: TlsStrategy::Tls,
            tls_root_ca_file: Some(set.ca_cert.clone()),
            ..ClientConfig::default()
        },
    );
    let e = tls
        .run_no_wait(&doubler("tls-against-plaintext"), json!({}))
        .await
        .expect_err("TLS against a plaintext port fails");
    let text = chain(&e);
    eprintln!("TLS client against the plaintext port: {text}");
    // The plaintext server answers the ClientHello with an HTTP/1.1 400, which is no
    // TLS record: rustls reports "received corrupt message of type InvalidContentType".
    assert!(text.contains("InvalidContentType"), "{text}");
    env.stop().await;
}

/// `adze server` on a free port with `env`'s settings plus `extra`, the TLS variables
/// of the calling environment removed.
async fn server_output(env: &TestEnv, extra: &[(&str, String)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(bin("adze"));
    cmd.args(["server", "--listen", "127.0.0.1:0"])
        .current_dir(repo_root())
        .envs(env.child_env())
        .env_remove("ADZE_SERVER__TLS__MODE")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())));
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("adze server exits")
        .expect("adze server runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adze_server_needs_an_explicit_tls_decision_and_readable_files() {
    let env = TestEnv::start_roles(&[]).await;

    let out = server_output(&env, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without a TLS decision");
    assert!(stderr.contains("ADZE_SERVER__TLS__MODE=none"), "{stderr}");
    assert!(stderr.contains("adze dev certs"), "{stderr}");

    let missing = "/nonexistent/adze/server.pem";
    let out = server_output(
        &env,
        &[
            ("ADZE_SERVER__TLS__CERT_FILE", missing.into()),
            (
                "ADZE_SERVER__TLS__KEY_FILE",
                "/nonexistent/adze/server.key".into(),
            ),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a missing certificate");
    assert!(
        stderr.contains(&format!("cannot read the TLS certificate file {missing}")),
        "{stderr}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adze_server_serves_mtls_from_environment_settings() {
    // `adze dev certs` as a user runs it.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = tokio::process::Command::new(bin("adze"))
        .args(["dev", "certs", "--dir"])
        .arg(dir.path())
        .output()
        .await
        .expect("adze dev certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let file = |name: &str| dir.path().canonicalize().expect("dir").join(name);
    assert!(
        printed.contains(&format!(
            "ADZE_SERVER__TLS__CERT_FILE={}",
            file("server.pem").display()
        )),
        "{printed}"
    );
    assert!(
        printed.contains("HATCHET_CLIENT_TLS_ROOT_CA_FILE="),
        "{printed}"
    );
    #[cfg(unix)]
    for key in ["ca.key", "server.key", "client.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file(key))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key} is readable by its owner only");
    }
    let again = tokio::process::Command::new(bin("adze"))
        .args(["dev", "certs", "--dir"])
        .arg(dir.path())
        .output()
        .await
        .expect("adze dev certs again");
    assert!(!again.status.success(), "a second run replaced the set");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let env = TestEnv::start_roles(&[]).await;
    let port = free_port();
    let mut e = env.child_env();
    e.extend([
        ("ADZE_SERVER__LISTEN".into(), format!("127.0.0.1:{port}")),
        ("ADZE_LOG_FORMAT".into(), "json".into()),
        ("ADZE_SERVER__TLS__MODE".into(), "mtls".into()),
        (
            "ADZE_SERVER__TLS__CERT_FILE".into(),
            file("server.pem").display().to_string(),
        ),
        (
            "ADZE_SERVER__TLS__KEY_FILE".into(),
            file("server.key").display().to_string(),
        ),
        (
            "ADZE_SERVER__TLS__CLIENT_CA_FILE".into(),
            file("ca.pem").display().to_string(),
        ),
    ]);
    let mut server = Proc::spawn_logged("tls-server", &bin("adze"), &["server"], &repo_root(), &e);
    wait_listening(port).await;

    let client = Client::new(ClientConfig {
        token: env.token.clone(),
        host_port: Some(format!("127.0.0.1:{port}")),
        ..mtls_config(&file("ca.pem"), &file("client.pem"), &file("client.key"))
    })
    .expect("client");
    let wf = doubler("tls-process");
    let builder = Worker::builder(client.clone())
        .name("tls-process-worker")
        .slots(1);
    let stop = env.run_worker(builder, vec![wf.clone()]).await;
    let out: Value = client
        .run(&wf, json!({"n": 4}))
        .await
        .expect("run over mTLS");
    assert_eq!(out["double"], json!({"n": 8}));

    // Refused clients; the server's log says why each was.
    let other = tempfile::tempdir().expect("a temporary directory");
    let other = generate(other.path(), &[], false).expect("another set");
    let refused = [
        (
            "plaintext",
            ClientConfig {
                tls_strategy: TlsStrategy::None,
                ..ClientConfig::default()
            },
        ),
        (
            "without a certificate",
            ClientConfig {
                tls_strategy: TlsStrategy::Tls,
                tls_root_ca_file: Some(file("ca.pem")),
                ..ClientConfig::default()
            },
        ),
        (
            "another CA's certificate",
            mtls_config(&file("ca.pem"), &other.client_cert, &other.client_key),
        ),
    ];
    for (what, config) in refused {
        let client = Client::new(ClientConfig {
            token: env.token.clone(),
            host_port: Some(format!("127.0.0.1:{port}")),
            ..config
        })
        .expect("client");
        let e = client
            .run_no_wait(&wf, json!({}))
            .await
            .expect_err("refused");
        eprintln!("{what}: {}", chain(&e));
    }
    stop.cancel();
    server.terminate(Duration::from_secs(10)).await;
    let log = std::fs::read_to_string(server.log()).unwrap_or_default();
    for expected in [
        r#""tls":"mtls""#,
        "a plaintext client connected to the TLS port",
        "TLS handshake failed",
        "peer sent no certificates",
        "invalid peer certificate: UnknownIssuer",
    ] {
        assert!(log.contains(expected), "no {expected:?} in the log:\n{log}");
    }
    env.stop().await;
}
