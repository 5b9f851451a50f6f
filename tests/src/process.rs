//! Child processes for tests: SDK scripts and service binaries, each in its own
//! process group so a test can kill it like a crash.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A child process in its own process group.
pub struct Proc {
    /// The child.
    pub child: Child,
    name: String,
}

impl Proc {
    /// Spawns `program args…` in `cwd` with extra `env`, stdout piped, stderr to a log file.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        cwd: &Path,
        env: &[(String, String)],
    ) -> Self {
        Self::spawn_with(name, program, args, cwd, env, false)
    }

    /// [`Proc::spawn`] with stdout going to the log file too (a service's own log lines),
    /// so the test can read them back with [`Proc::log`].
    pub fn spawn_logged(
        name: &str,
        program: &Path,
        args: &[&str],
        cwd: &Path,
        env: &[(String, String)],
    ) -> Self {
        Self::spawn_with(name, program, args, cwd, env, true)
    }

    fn spawn_with(
        name: &str,
        program: &Path,
        args: &[&str],
        cwd: &Path,
        env: &[(String, String)],
        stdout_to_log: bool,
    ) -> Self {
        let log = std::env::temp_dir().join(format!("adze-test-{name}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log);
        let stdout = match (&file, stdout_to_log) {
            (Ok(f), true) => f
                .try_clone()
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
            _ => Stdio::piped(),
        };
        let stderr = file.map(Stdio::from).unwrap_or_else(|_| Stdio::null());
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self {
            child,
            name: name.to_string(),
        }
    }

    /// Waits for a stdout line equal to `line`.
    pub async fn wait_line(&mut self, line: &str, timeout: Duration) {
        let out = self.child.stdout.as_mut().expect("stdout piped");
        let mut lines = BufReader::new(out).lines();
        let found = tokio::time::timeout(timeout, async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.trim() == line {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "{} never printed {line:?} (log: {})",
            self.name,
            self.log().display()
        );
    }

    /// Where stderr goes.
    pub fn log(&self) -> PathBuf {
        std::env::temp_dir().join(format!(
            "adze-test-{}-{}.log",
            self.name,
            std::process::id()
        ))
    }

    /// SIGKILLs the whole process group (the process and any children it spawned).
    pub async fn kill_group(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{pid}")])
                .status()
                .await;
        }
        let _ = self.child.wait().await;
    }

    /// SIGTERMs the process group and waits up to `timeout` for the exit.
    pub async fn terminate(&mut self, timeout: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status()
                .await;
        }
        if tokio::time::timeout(timeout, self.child.wait())
            .await
            .is_err()
        {
            self.kill_group().await;
        }
    }
}

/// Runs a conformance script to completion and returns its `ADZE-RESULT` JSON.
/// Panics, with the script's stderr tail, unless it exits 0 with `"ok": true`.
pub async fn run_conformance(
    name: &str,
    program: &Path,
    args: &[&str],
    cwd: &Path,
    env: &[(String, String)],
) -> serde_json::Value {
    let mut p = Proc::spawn(name, program, args, cwd, env);
    let out = tokio::time::timeout(Duration::from_secs(150), async {
        let mut stdout = String::new();
        if let Some(mut s) = p.child.stdout.take() {
            use tokio::io::AsyncReadExt;
            let _ = s.read_to_string(&mut stdout).await;
        }
        let status = p.child.wait().await.ok();
        (stdout, status)
    })
    .await;
    let log = std::fs::read_to_string(p.log()).unwrap_or_default();
    let tail: String = log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let Ok((stdout, status)) = out else {
        p.kill_group().await;
        panic!("{name} timed out; stderr tail:\n{tail}");
    };
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ADZE-RESULT "))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .unwrap_or_else(|| {
            panic!("{name} printed no ADZE-RESULT line (status {status:?}); stderr tail:\n{tail}")
        });
    assert!(
        status.is_some_and(|s| s.success()) && result["ok"] == true,
        "{name} failed: {result:#}\nstderr tail:\n{tail}"
    );
    result
}

/// The Python interpreter with the pinned `hatchet-sdk` (set by scripts/test.sh).
pub fn python() -> PathBuf {
    let p = std::env::var("ADZE_TEST_PYTHON").unwrap_or_else(|_| {
        let local = crate::repo_root().join(".adze/venv/bin/python");
        assert!(
            local.exists(),
            "ADZE_TEST_PYTHON is not set and .adze/venv is missing: run the tests with scripts/test.sh, which installs hatchet-sdk==1.43.1"
        );
        local.display().to_string()
    });
    PathBuf::from(p)
}

/// `tsx` from the conformance package (installed by scripts/test.sh with npm ci).
pub fn tsx() -> (PathBuf, PathBuf) {
    let dir = std::env::var("ADZE_TEST_TS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::repo_root().join("tests/conformance/ts"));
    let tsx = dir.join("node_modules/.bin/tsx");
    assert!(
        tsx.exists(),
        "{} is missing: run the tests with scripts/test.sh, which runs npm ci for @hatchet-dev/typescript-sdk@1.33.2",
        tsx.display()
    );
    (tsx, dir)
}
