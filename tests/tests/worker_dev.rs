//! `adze worker dev` and `adze trigger` with an `adze.yaml`: a Python worker (the pinned
//! official SDK) started with the profile's connection, restarted once per burst of saves
//! of a watched file, the new code answering the next run; named triggers from the file;
//! a bad file named field by field.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adze_tests::process::python;
use adze_tests::{TestEnv, bin, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const CONNECTION_VARS: [&str; 7] = [
    "ADZE_TOKEN",
    "ADZE_HOST_PORT",
    "ADZE_PROFILE",
    "HATCHET_CLIENT_TOKEN",
    "HATCHET_CLIENT_HOST_PORT",
    "HATCHET_CLIENT_TLS_STRATEGY",
    "HATCHET_CLIENT_NAMESPACE",
];

/// The worker: its task answers with `ANSWER` of answer.py, read when the worker starts.
const WORKER: &str = r#"
from pydantic import BaseModel

from hatchet_sdk import Context, Hatchet

from answer import ANSWER

hatchet = Hatchet()


class Greeting(BaseModel):
    name: str = "nobody"


dev_echo = hatchet.workflow(name="dev-echo", input_validator=Greeting)


@dev_echo.task()
def echo(input: Greeting, ctx: Context) -> dict[str, object]:
    return {
        "answer": ANSWER,
        "name": input.name,
        "source": ctx.additional_metadata.get("source"),
    }


if __name__ == "__main__":
    hatchet.worker("dev-worker", slots=2, workflows=[dev_echo]).start()
"#;

fn dev_file(python: &Path) -> String {
    format!(
        r#"version: "1"
workflows:
  - name: dev-echo
    description: answers with answer.py's ANSWER
triggers:
  greet:
    workflow: dev-echo
    description: a greeting from the file
    input: {{ name: from-the-file }}
    metadata: {{ source: adze-yaml }}
worker:
  command: {python}
  args: [worker.py]
  env: {{ PYTHONUNBUFFERED: "1" }}
watch:
  paths: ["**/*.py"]
"#,
        python = python.display()
    )
}

/// `adze` run in `dir` with its profiles under `home`.
fn adze(home: &Path, dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin("adze"));
    for var in CONNECTION_VARS {
        cmd.env_remove(var);
    }
    cmd.env("XDG_CONFIG_HOME", home).current_dir(dir).args(args);
    cmd
}

/// `adze trigger args… --wait --json`: the run's one JSON line.
async fn trigger(home: &Path, dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["trigger"];
    all.extend_from_slice(args);
    all.extend(["--wait", "--json"]);
    let out = tokio::time::timeout(Duration::from_secs(60), adze(home, dir, &all).output())
        .await
        .expect("the run ends within a minute")
        .expect("adze runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "adze {all:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout}");
    serde_json::from_str(&stdout).expect("JSON")
}

/// Everything `adze worker dev` and its worker print, as it comes.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<String>>);

impl Output {
    fn collect(&self, stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
        let all = self.0.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[worker dev] {line}");
                let mut all = all.lock().expect("lock");
                all.push_str(&line);
                all.push('\n');
            }
        });
    }

    fn count(&self, text: &str) -> usize {
        self.0.lock().expect("lock").matches(text).count()
    }

    async fn wait_count(&self, text: &str, n: usize) {
        wait_for(
            &format!("{n} × {text:?} from adze worker dev"),
            Duration::from_secs(60),
            || async move { self.count(text) >= n },
        )
        .await;
    }

    /// The pid in the last "worker started (pid N)" line.
    fn worker_pid(&self) -> u32 {
        let all = self.0.lock().expect("lock");
        let (_, rest) = all
            .rsplit_once("worker started (pid ")
            .expect("a worker started");
        rest.split(')').next().expect("pid").parse().expect("a pid")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_dev_restarts_the_worker_on_a_change_and_runs_the_new_code() {
    let env = TestEnv::start().await;
    let home = tempfile::tempdir().expect("temp dir");
    let project = tempfile::tempdir().expect("temp dir");
    let (h, p) = (home.path(), project.path());
    std::fs::write(p.join("worker.py"), WORKER).expect("write");
    std::fs::write(p.join("answer.py"), "ANSWER = \"one\"\n").expect("write");
    std::fs::write(p.join("adze.yaml"), dev_file(&python())).expect("write");
    let added = adze(
        h,
        p,
        &["profile", "add", "--name", "dev", "--token", &env.token],
    )
    .output()
    .await
    .expect("adze runs");
    assert!(added.status.success(), "{added:?}");

    let mut dev = adze(h, p, &["worker", "dev"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("adze worker dev starts");
    let output = Output::default();
    output.collect(dev.stdout.take().expect("stdout"));
    output.collect(dev.stderr.take().expect("stderr"));
    output.wait_count("adze: worker started", 1).await;
    env.wait_workflow("dev-echo").await;

    // A named trigger of the file: its workflow, input and metadata.
    let run = trigger(h, p, &["greet"]).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["outputs"]["echo"],
        json!({ "answer": "one", "name": "from-the-file", "source": "adze-yaml" })
    );
    let first_worker = output.worker_pid();

    // A burst of saves restarts it once.
    for answer in ["tw", "two", "two"] {
        std::fs::write(p.join("answer.py"), format!("ANSWER = \"{answer}\"\n")).expect("write");
    }
    output
        .wait_count("adze: answer.py changed: restarting the worker", 1)
        .await;
    output.wait_count("adze: worker started", 2).await;
    assert!(
        !Path::new(&format!("/proc/{first_worker}")).exists(),
        "the old worker is gone"
    );

    // The run triggered after the restart runs the new code; --input replaces the file's.
    let run = trigger(h, p, &["greet", "--input", r#"{"name":"flag"}"#]).await;
    assert_eq!(
        run["outputs"]["echo"],
        json!({ "answer": "two", "name": "flag", "source": "adze-yaml" })
    );
    // A workflow by name, from a directory below the file.
    std::fs::create_dir(p.join("sub")).expect("mkdir");
    let run = trigger(
        h,
        &p.join("sub"),
        &["dev-echo", "--input", r#"{"name":"direct"}"#],
    )
    .await;
    assert_eq!(
        run["outputs"]["echo"],
        json!({ "answer": "two", "name": "direct", "source": null })
    );
    assert_eq!(
        output.count("restarting the worker"),
        1,
        "one restart per burst"
    );

    // Ctrl-C stops the worker, then adze.
    let worker = output.worker_pid();
    let pid = dev.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), dev.wait())
        .await
        .expect("adze stops")
        .expect("status");
    assert!(status.success(), "{status}");
    assert!(output.count("adze: stopped") == 1);
    assert!(
        !Path::new(&format!("/proc/{worker}")).exists(),
        "the worker stopped with adze"
    );
    env.stop().await;
}

/// A token with the claims the CLI reads; only an engine would check its signature.
fn offline_token() -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(json!({ "alg": "HS256" })),
        b64(json!({ "sub": "tenant", "grpc_broadcast_address": "127.0.0.1:7077" }))
    )
}

/// A shell worker that exits with 3 when mode.txt says `exit`, and otherwise runs until
/// killed, ignoring SIGTERM.
const SHELL_WORKER: &str = r#"
worker:
  command: sh
  args:
    - -c
    - |
      mode=$(cat mode.txt)
      echo "shell worker: $mode"
      if [ "$mode" = exit ]; then exit 3; fi
      trap '' TERM
      while true; do sleep 0.1; done
  stop_grace_seconds: 1
watch:
  paths: [mode.txt]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_exits_waits_for_a_change_and_one_ignoring_sigterm_is_killed() {
    let home = tempfile::tempdir().expect("temp dir");
    let project = tempfile::tempdir().expect("temp dir");
    let (h, p) = (home.path(), project.path());
    std::fs::write(p.join("adze.yaml"), SHELL_WORKER).expect("write");
    std::fs::write(p.join("mode.txt"), "exit\n").expect("write");
    // The worker does not connect: a token naming any address does.
    let token = offline_token();
    let added = adze(
        h,
        p,
        &["profile", "add", "--name", "dev", "--token", &token],
    )
    .output()
    .await
    .expect("adze runs");
    assert!(added.status.success(), "{added:?}");
    let mut dev = adze(h, p, &["worker", "dev"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("adze worker dev starts");
    let output = Output::default();
    output.collect(dev.stdout.take().expect("stdout"));
    output.collect(dev.stderr.take().expect("stderr"));

    let exited = "adze: the worker exited (exit status: 3); it starts again when a watched \
                  file changes";
    output.wait_count(exited, 1).await;
    std::fs::write(p.join("mode.txt"), "stubborn\n").expect("write");
    output.wait_count("shell worker: stubborn", 1).await;
    let stubborn = output.worker_pid();
    std::fs::write(p.join("mode.txt"), "exit\n").expect("write");
    output
        .wait_count(
            "the worker did not stop within 1s of SIGTERM: killing it",
            1,
        )
        .await;
    output.wait_count(exited, 2).await;
    assert_eq!(
        output.count("adze: worker started"),
        3,
        "started once at first and once per change, not again after exiting"
    );
    assert!(
        !Path::new(&format!("/proc/{stubborn}")).exists(),
        "the worker ignoring SIGTERM was killed"
    );

    let pid = dev.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), dev.wait())
        .await
        .expect("adze stops")
        .expect("status");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_bad_dev_file_is_refused_naming_the_field() {
    let home = tempfile::tempdir().expect("temp dir");
    let project = tempfile::tempdir().expect("temp dir");
    let (h, p) = (home.path(), project.path());
    for (yaml, field, says) in [
        (
            "worker:\n  comand: python\n",
            "worker.comand",
            "unknown field `comand`",
        ),
        (
            "triggers:\n  greet: { workflow: dev-echo, input: [1, 2 }\n",
            "triggers.greet.input",
            "did not find expected ',' or ']' at line 2 column 45",
        ),
        (
            "workflows: [{ name: a }]\ntriggers:\n  greet: { workflow: b }\n",
            "triggers.greet.workflow",
            "\"b\" is not among the file's workflows (a)",
        ),
    ] {
        std::fs::write(p.join("adze.yaml"), yaml).expect("write");
        for args in [&["worker", "dev"][..], &["trigger", "greet"]] {
            let out = adze(h, p, args).output().await.expect("adze runs");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "adze {args:?} accepted {yaml:?}");
            assert!(
                err.contains(&format!("adze.yaml: {field}: ")) && err.contains(says),
                "adze {args:?} with {yaml:?}: {err}"
            );
        }
    }
    // No worker section: `worker dev` says what to add.
    std::fs::write(p.join("adze.yaml"), "triggers: {}\n").expect("write");
    let out = adze(h, p, &["worker", "dev"])
        .output()
        .await
        .expect("adze runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("worker: missing") && err.contains("command:"),
        "{err}"
    );
}

#[tokio::test]
async fn hatchets_command_triggers_run_with_the_profiles_environment() {
    let home = tempfile::tempdir().expect("temp dir");
    let project = tempfile::tempdir().expect("temp dir");
    let (h, p) = (home.path(), project.path());
    // Hatchet's hatchet.yaml form: a list of named shell commands.
    std::fs::write(
        p.join("adze.yaml"),
        "namespace: shop\ntriggers:\n  - name: \"run:simple\"\n    description: the seed's command\n    \
         command: \"printf '%s|%s|%s' \\\"$HATCHET_CLIENT_TOKEN\\\" \\\"$HATCHET_CLIENT_HOST_PORT\\\" \
         \\\"$HATCHET_CLIENT_NAMESPACE\\\" > got.txt\"\n  - name: broken\n    command: \"exit 3\"\n",
    )
    .expect("write");
    let conn = ["--token", "tok-a", "--host-port", "127.0.0.1:7"];
    let run = |name: &'static str| {
        let mut args = vec!["trigger", name];
        args.extend(conn);
        adze(h, p, &args).output()
    };
    let out = run("run:simple").await.expect("adze runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(p.join("got.txt"))
            .expect("the command ran in the file's directory"),
        "tok-a|127.0.0.1:7|shop"
    );
    let out = run("broken").await.expect("adze runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`exit 3` ended with exit status: 3"),
        "{err}"
    );
    let mut listing = vec!["trigger"];
    listing.extend(conn);
    let out = adze(h, p, &listing).output().await.expect("adze runs");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("run:simple\t$ printf") && listed.contains("the seed's command"),
        "{listed}"
    );
}
