//! Child processes: the service binaries, the `adze` CLI and the Python scripts, each in
//! its own process group with stdout and stderr in a log file.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// A running child process.
pub struct Proc {
    /// Short name (`ingest`, `py-worker`, …).
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Where its output goes.
    pub log: PathBuf,
    child: Child,
}

/// What to start.
pub struct Spec<'a> {
    pub name: &'a str,
    pub program: &'a Path,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub log_dir: &'a Path,
    /// Pipe stdout to the bench instead of the log (to read a result line).
    pub capture_stdout: bool,
}

impl Proc {
    /// Starts `spec` in a new process group; it is killed if the handle is dropped.
    pub fn spawn(spec: Spec<'_>) -> anyhow::Result<Self> {
        let log = spec.log_dir.join(format!("{}.log", spec.name));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create log file {}", log.display()))?;
        let stdout = if spec.capture_stdout {
            Stdio::piped()
        } else {
            Stdio::from(file.try_clone()?)
        };
        let child = Command::new(spec.program)
            .args(spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(file))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", spec.program.display()))?;
        let pid = child.id().context("the child exited at once")?;
        Ok(Proc {
            name: spec.name.to_owned(),
            pid,
            log,
            child,
        })
    }

    /// `None` while running, else how it ended.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Fails with the log's last lines if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.exited() {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log)
            ),
        }
    }

    /// Waits until `addr` accepts TCP connections, failing early if the process dies.
    pub async fn wait_listening(&mut self, addr: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} is not listening on {addr} after {timeout:?}; log {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The piped stdout (when `capture_stdout`).
    pub fn stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        Ok(self.child.wait().await?)
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(process = %self.name, "did not stop after SIGTERM; killing it");
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A local port nobody listens on right now.
pub fn free_addr() -> anyhow::Result<String> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(listener.local_addr()?.to_string())
}

/// Runs the `adze` CLI to completion and returns its stdout; stderr goes to `log`.
pub async fn run_cli(
    adze: &Path,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<String> {
    let out = Command::new(adze)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", adze.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut previous = std::fs::read_to_string(log).unwrap_or_default();
    previous.push_str(&format!("==== adze {} ====\n{stderr}", args.join(" ")));
    let _ = std::fs::write(log, previous);
    if !out.status.success() {
        bail!(
            "adze {} failed ({}): {}",
            args.first().copied().unwrap_or(""),
            out.status,
            stderr.trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
