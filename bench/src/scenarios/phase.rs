//! A measured open-loop phase (offer a rate, wait for the runs, collect the figures), and
//! the warmup that proves the fleet works before anything is measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use crate::load::{self, LoadOutcome};
use crate::probe::{Probe, Resources};
use crate::recorder::Recorder;
use crate::scenarios::Ctx;
use crate::stats::{PhaseStats, StartHops, StartLegs};
use crate::workers;

/// How long a phase's drain may go without a completion before it is given up.
pub const STALL: Duration = Duration::from_secs(10);

/// One measured open-loop phase.
pub struct Phase {
    pub offered: f64,
    pub rec: Arc<Recorder>,
    pub load: LoadOutcome,
    pub stats: PhaseStats,
    pub res: Resources,
    pub drained: bool,
    /// Trigger → start split at the stored timestamps (null without database access).
    pub hops: Option<StartHops>,
}

impl Phase {
    /// Reads the stored timestamps of the phase's runs and splits trigger → start into
    /// hops ([`StartHops`]). It reads the bench database's `runs` whole, so it is done
    /// between phases, never while another measurement runs (the backlog's drain).
    pub async fn with_hops(mut self, ctx: &Ctx) -> Self {
        let Some(pg) = &ctx.pg else {
            return self;
        };
        match pg.first_task_stamps(self.rec.phase).await {
            Ok(stamps) => {
                let mut h = StartHops::compute(&self.rec, &stamps);
                eprintln!(
                    "[bench]   start p50/p99 by hop: to ingest commit {}, to assignment {}, to handler {}",
                    h.to_ingest_commit.short(),
                    h.to_assignment.short(),
                    h.to_handler.short()
                );
                if let Some(spans) = &ctx.spans {
                    // The services export every half second (see the fleet).
                    tokio::time::sleep(Duration::from_millis(1_500)).await;
                    match pg.phase_runs(self.rec.phase).await {
                        Ok(runs) => {
                            let legs = StartLegs::compute(&self.rec, &stamps, &runs, &spans.get());
                            eprintln!("[bench]   start p50 by leg: {}", legs.short());
                            h.legs = Some(legs);
                        }
                        Err(e) => eprintln!("[bench]   cannot read the phase's runs: {e}"),
                    }
                }
                self.hops = Some(h);
            }
            Err(e) => eprintln!("[bench]   cannot read the stored timestamps: {e}"),
        }
        self
    }

    /// The phase as a JSON object for a scenario's `steps`.
    pub fn summary(&self, steps: u64) -> Value {
        let (sent_per_s, done_per_s) =
            crate::stats::timeline(&self.rec, self.load.sent as usize, self.load.t0);
        json!({
            "sent_per_s": sent_per_s,
            "done_per_s": done_per_s,
            "offered_per_s": self.offered,
            "tasks_per_s": self.stats.runs_per_s_window * steps as f64,
            "kept_up": self.stats.kept_up(),
            "drained": self.drained,
            "stats": self.stats,
            "generator": self.load,
            "first_error": self.rec.first_error(),
            "step_overheads": crate::stats::step_overheads(&self.rec, self.load.sent as usize),
            "start_hops": self.hops,
            "resources": self.res,
            "pg_tx_per_task": self.res.pg_tx_per_task(self.stats.completed * steps),
            "nats_msgs_per_task": self.res.nats_per_task(self.stats.completed * steps),
        })
    }
}

/// Offers `rate`/s of `workflow` for `secs`, then waits for the runs to finish.
pub async fn open_loop_phase(
    ctx: &Ctx,
    workflow: &str,
    rate: u32,
    secs: u64,
    steps: usize,
) -> Phase {
    let sender = load::Triggers {
        clients: ctx.clients.clone(),
        workflow: workflow.to_owned(),
    };
    open_loop_phase_with(ctx, &sender, workflow, rate, secs, steps).await
}

/// Offers `rate`/s through `sender` for `secs`, then waits for the runs to finish;
/// `label` names the phase in the progress lines.
pub async fn open_loop_phase_with(
    ctx: &Ctx,
    sender: &dyn load::Sender,
    label: &str,
    rate: u32,
    secs: u64,
    steps: usize,
) -> Phase {
    let offered = f64::from(rate.max(1));
    let rec = ctx.hub.begin((offered * secs as f64) as usize + 1, steps);
    let probe = Probe::start(ctx).await;
    let pace = load::Pace {
        rate: offered,
        duration: Duration::from_secs(secs),
        max_in_flight: ctx.scale.max_in_flight,
    };
    let load = load::open_loop_with(sender, &ctx.hub, &rec, pace).await;
    let expected = u64::from(load.sent).saturating_sub(rec.errors());
    // Long enough for a backlog left by an overloaded step to clear before the next one.
    let drained = wait_done(
        &rec,
        expected,
        Duration::from_secs((2 * secs).max(30)),
        STALL,
    )
    .await;
    let res = probe.finish(ctx).await;
    let stats = PhaseStats::compute(&rec, load.sent as usize, load.t0, load.t1);
    ctx.hub.end(rec.phase);
    eprintln!(
        "[bench]   {label} offered {rate}/s for {secs}s: {} completed/s in window (keep-up {:.2}), start {}, result {}{}",
        stats.runs_per_s_window,
        stats.keep_up_ratio,
        stats.start.short(),
        stats.result.short(),
        if drained { "" } else { " [not drained]" }
    );

    Phase {
        offered,
        rec,
        load,
        stats,
        res,
        drained,
        hops: None,
    }
}

/// Waits until `rec` has `expected` completions; gives up after `timeout`, or after
/// `stall` without a single new completion.
pub async fn wait_done(rec: &Recorder, expected: u64, timeout: Duration, stall: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let (mut last, mut last_change) = (rec.completed(), Instant::now());
    while rec.completed() < expected {
        let now = Instant::now();
        if now > deadline || now.duration_since(last_change) > stall {
            return false;
        }
        if rec.completed() != last {
            (last, last_change) = (rec.completed(), now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Waits until every run the bench triggered so far has finished (the engine works
/// off what an overloaded phase left queued), for at most `timeout` or 30 s without
/// progress. Returns whether it got there and how long it took (s).
pub async fn settle(ctx: &Ctx, timeout: Duration) -> (bool, f64) {
    let started = Instant::now();
    let (mut last, mut last_change) = (ctx.hub.outstanding(), Instant::now());
    while last > 0 && started.elapsed() < timeout && last_change.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = ctx.hub.outstanding();
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
    }
    if last > 0 {
        eprintln!("[bench]   {last} runs of earlier phases still unfinished; going on");
    } else if started.elapsed() > Duration::from_secs(1) {
        eprintln!(
            "[bench]   waited {:.0}s for earlier phases' runs to finish",
            started.elapsed().as_secs_f64()
        );
    }
    (
        last == 0,
        crate::stats::round3(started.elapsed().as_secs_f64()),
    )
}

/// Waits until a worker has registered `workflow` (read from the fleet's database), for
/// a scenario that cannot warm up with a run of it; at most a minute. Without the
/// database (a fleet named by `--grpc`) it returns at once.
pub async fn until_registered(ctx: &Ctx, workflow: &str) -> anyhow::Result<()> {
    let Some(pg) = &ctx.pg else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pg.workflow_registered(workflow).await? {
        if Instant::now() > deadline {
            bail!("no worker registered {workflow} within a minute");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Triggers `n` runs of `workflow` (retrying while the worker registers it) and waits for
/// them: proof that the fleet and the workers work before anything is measured.
pub async fn warmup(ctx: &Ctx, workflow: &str, n: u32, steps: usize) -> anyhow::Result<()> {
    let rec = ctx.hub.begin(n as usize, steps);
    let deadline = Instant::now() + Duration::from_secs(60);
    for seq in 0..n {
        let input = workers::SeqInput {
            phase: rec.phase,
            seq,
        };
        loop {
            match ctx.clients[0].run_no_wait(workflow, input).await {
                Ok(handle) => {
                    ctx.hub.bind(&rec, seq, handle.run_id());
                    break;
                }
                Err(e) if Instant::now() > deadline => {
                    bail!("warmup trigger of {workflow} keeps failing: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    let ok = wait_done(
        &rec,
        u64::from(n),
        Duration::from_secs(60),
        Duration::from_secs(30),
    )
    .await;
    ctx.hub.end(rec.phase);
    if !ok {
        bail!(
            "only {}/{n} warmup runs of {workflow} finished; see the service logs in {}",
            rec.completed(),
            ctx.log_dir.display()
        );
    }
    Ok(())
}
