//! `adze worker dev`: runs the worker command of `adze.yaml` with the profile's
//! connection in its environment, and restarts it when a watched file changes.
//!
//! The worker runs in a process group of its own, so stopping it reaches what it spawned
//! (the Python SDK's action listener, `npm`'s child) and Ctrl-C in the terminal reaches
//! only `adze`, which stops the worker in order: SIGTERM to the group, SIGKILL after the
//! grace period or at a second Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use notify::event::{EventKind, MetadataKind, ModifyKind};
use notify::{RecursiveMode, Watcher as _};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::devfile::{self, WatchPlan, Worker};

/// A burst of saves (an editor writing a file and its backup, a formatter, a `git
/// checkout`) ends once no change came for this long; it restarts the worker once.
const QUIET: Duration = Duration::from_millis(300);
/// A burst that never goes quiet restarts the worker after this long anyway.
const BURST_MAX: Duration = Duration::from_secs(3);

#[derive(clap::Subcommand)]
pub enum WorkerCmd {
    /// Run the worker of adze.yaml with the profile's token and address, and restart it
    /// whenever a watched file changes. Ctrl-C stops it.
    Dev(DevArgs),
}

#[derive(clap::Args)]
pub struct DevArgs {
    /// The adze.yaml to read (default: looked up from the current directory upwards).
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

pub async fn run(cmd: WorkerCmd) -> anyhow::Result<()> {
    match cmd {
        WorkerCmd::Dev(args) => dev(args).await,
    }
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let found = devfile::find(args.file.as_deref(), &std::env::current_dir()?)?;
    let worker = found.worker()?;
    let plan = found.watch()?;
    let target = args.conn.target()?;
    let mut env = target.sdk_env()?;
    if let Some(ns) = &found.file.namespace {
        env.push(("HATCHET_CLIENT_NAMESPACE".into(), ns.clone()));
    }
    let mut stop_signals = StopSignals::new()?;
    let (_watcher, mut changes) = watch(&plan)?;
    say(format_args!(
        "running the worker of {} against {}, the token of {}; watching {} in {}",
        found.path.display(),
        target.address()?,
        target.origin,
        found.file.watch.paths.join(", "),
        plan.root.display(),
    ));
    let mut running = start(&worker, &env);
    loop {
        tokio::select! {
            () = stop_signals.recv() => {
                if let Some(r) = running.take() {
                    r.stop(worker.grace, &mut stop_signals).await;
                }
                say(format_args!("stopped"));
                return Ok(());
            }
            status = exited(&mut running) => {
                running = None;
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| format!("cannot be waited for: {e}"));
                say(format_args!(
                    "the worker exited ({status}); it starts again when a watched file changes"
                ));
            }
            Some(first) = changes.recv() => {
                let more = settle(&mut changes, &first).await;
                let what = match more {
                    0 => shown(&first, &plan.root),
                    n => format!("{} and {n} more", shown(&first, &plan.root)),
                };
                say(format_args!("{what} changed: restarting the worker"));
                if let Some(r) = running.take()
                    && r.stop(worker.grace, &mut stop_signals).await == Stop::Interrupted
                {
                    say(format_args!("stopped"));
                    return Ok(());
                }
                running = start(&worker, &env);
            }
        }
    }
}

/// Status lines go to stderr, apart from the worker's own output. A closed stderr (the
/// pager or `tee` ended first) must not stop `adze` before it stopped the worker.
fn say(message: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "adze: {message}");
}

fn shown(path: &Path, root: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => ".".into(),
        Ok(p) => p.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// A started worker: the leader of its own process group.
struct Running {
    child: tokio::process::Child,
    group: Option<Pid>,
}

#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Done,
    /// Ctrl-C (or SIGTERM) came while it stopped: `adze` should exit too.
    Interrupted,
}

fn start(worker: &Worker, env: &[(String, String)]) -> Option<Running> {
    let mut cmd = tokio::process::Command::new(&worker.program);
    cmd.args(&worker.args)
        .current_dir(&worker.dir)
        .envs(&worker.env)
        .envs(env.iter().map(|(k, v)| (k, v)))
        // A worker reading the terminal from a background group would be stopped.
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    match cmd.spawn() {
        Ok(child) => {
            let group = child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(Pid::from_raw);
            if let Some(pid) = child.id() {
                say(format_args!("worker started (pid {pid})"));
            }
            Some(Running { child, group })
        }
        Err(e) => {
            say(format_args!(
                "cannot start {}: {e}; it starts again when a watched file changes",
                worker.program.display()
            ));
            None
        }
    }
}

impl Running {
    /// SIGTERM to the group; SIGKILL after `grace`, or at once on a second stop signal.
    async fn stop(mut self, grace: Duration, signals: &mut StopSignals) -> Stop {
        self.signal(Signal::TERM);
        let mut outcome = Stop::Done;
        tokio::select! {
            _ = self.child.wait() => {}
            () = tokio::time::sleep(grace) => {
                say(format_args!("the worker did not stop within {grace:?} of SIGTERM: killing it"));
                self.signal(Signal::KILL);
            }
            () = signals.recv() => {
                outcome = Stop::Interrupted;
                self.signal(Signal::KILL);
            }
        }
        let _ = self.child.wait().await;
        self.sweep();
        outcome
    }

    /// Kills what the worker left running in its group once it exited itself.
    fn sweep(&mut self) {
        self.signal(Signal::KILL);
        self.group = None;
    }

    fn signal(&self, signal: Signal) {
        if let Some(group) = self.group {
            // ESRCH: the group is gone already.
            let _ = kill_process_group(group, signal);
        }
    }
}

/// Waits for the running worker to exit; never, when none runs.
async fn exited(running: &mut Option<Running>) -> std::io::Result<ExitStatus> {
    match running {
        Some(r) => {
            let status = r.child.wait().await;
            r.sweep();
            status
        }
        None => std::future::pending().await,
    }
}

/// Takes the rest of a burst of changes that began with `first`; returns how many other
/// paths changed in it.
async fn settle(changes: &mut mpsc::UnboundedReceiver<PathBuf>, first: &Path) -> usize {
    let mut seen = std::collections::BTreeSet::from([first.to_owned()]);
    let deadline = tokio::time::Instant::now() + BURST_MAX;
    loop {
        tokio::select! {
            Some(path) = changes.recv() => { seen.insert(path); }
            () = tokio::time::sleep(QUIET) => break,
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    seen.len().saturating_sub(1)
}

/// Watches the plan's directories; the receiver gets each changed path that counts.
fn watch(
    plan: &WatchPlan,
) -> anyhow::Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<PathBuf>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let filter = plan.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if is_change(&event.kind) => {
                for path in event.paths.into_iter().filter(|p| filter.counts(p)) {
                    let _ = tx.send(path);
                }
            }
            Ok(_) => {}
            Err(e) => say(format_args!("watching files: {e}")),
        })?;
    for dir in &plan.dirs {
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    }
    Ok((watcher, rx))
}

/// Writes, creations, removals and renames; not reads or access times.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Ctrl-C and SIGTERM, both asking `adze` to stop.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
