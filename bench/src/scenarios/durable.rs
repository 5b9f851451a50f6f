//! `durable`: durable tasks, in two parts.
//!
//! **Orchestrators**: `--durable-orchestrators` runs of a one-durable-task workflow are
//! triggered together; each spawns `--durable-children` child runs in one call, waits
//! for all of them and sleeps `--durable-sleep-ms` durably (two durable calls, one log
//! entry per child and one for the sleep). Measured from the first trigger to the last
//! orchestrator's finished notice: orchestrators/s, children/s, trigger → orchestrator
//! done, and the durable log's writes per durable call (rows of `durable_logs` and
//! `durable_entries` written).
//!
//! **Replay**: `--durable-replay-tasks` runs of a durable task that makes
//! `--durable-replay-memos` memo calls side by side, then sleeps 5 s; their worker
//! evicts them at once, and the engine runs each again when its sleep is over. The
//! first invocation writes the log: Postgres transactions, WAL flushes and rows per
//! memo call, across every task (the dispatcher's log writer commits the calls that
//! queue while it writes in one transaction). The second reads it back: the replay
//! time of the whole log, from the invocation's start to its last memo answered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adze_sdk::EvictionPolicy;

use crate::load;
use crate::probe::{Probe, Resources};
use crate::report::{Report, fmt, resource_summary};
use crate::scenarios::family::{self, gaps};
use crate::scenarios::phase::until_registered;
use crate::scenarios::{Ctx, wait_done};
use crate::stats::{Dist, round3};
use crate::workers::{self, Family, ReplayTimes, Workers};

/// Replay tasks per bulk trigger call.
const BULK_BATCH: usize = 500;
/// How long the wait for the runs may go without a single one finishing.
const STALL: Duration = Duration::from_secs(30);
/// The replay tasks' sleep, long enough that the write window's closing snapshot is
/// taken before any of them runs again.
const REPLAY_SLEEP: Duration = Duration::from_secs(5);
/// The durable log's tables.
const LOG_TABLES: [&str; 2] = ["durable_logs", "durable_entries"];

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut report = orchestrators(ctx).await?;
    let replay = replay(ctx).await?;
    report.summary = format!("{}; {}", report.summary, replay.summary);
    for (k, v) in replay.figures {
        report.extra.insert(k, v);
    }
    Ok(report)
}

async fn orchestrators(ctx: &Ctx) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    let family = Family {
        parents: scale.durable_orchestrators,
        per_parent: scale.durable_children,
        release_slot: false,
    };
    let sleep = Duration::from_millis(scale.durable_sleep_ms);
    let parent = workers::durable_orchestrator(&ctx.hub, family, sleep);
    let child = workers::single(workers::DURABLE_CHILD, &ctx.hub, ctx.task_sleep());
    // A durable slot for every orchestrator: none is evicted, each waits in place.
    let workers = Workers::start_durable(
        &ctx.target,
        "durable",
        &[parent, child],
        scale.workers,
        (scale.slots, family.parents.max(1)),
        Some(EvictionPolicy::disabled()),
    )?;
    let what = format!(
        "durable: {} orchestrators × {} children, then a {} ms sleep; {} worker(s) × {} slots",
        family.parents,
        family.per_parent,
        sleep.as_millis(),
        scale.workers,
        scale.slots
    );
    let m = family::measure(ctx, workers, workers::DURABLE_ORCHESTRATOR, family, what).await?;
    let (rec, res) = (&m.rec, &m.res);
    let (parents, per_parent) = (family.parents, family.per_parent);
    let (parents_done, parents_ok, children_done) = (m.parents_done, m.parents_ok, m.children_done);
    let all_completed = m.all_completed(family);
    let per_s = |n: usize| m.per_s(n);
    let parent_done = Dist::of(gaps(m.parent_seqs.clone(), |s| {
        (rec.sent_at(s), rec.done_at(s))
    }));
    let child_start = Dist::of(gaps(m.child_seqs.clone(), |s| {
        (rec.sent_at(s), rec.started_at(s, 0))
    }));
    // Two durable calls per orchestrator: the spawn of its children, the sleep.
    let calls = parents_ok as u64 * 2;
    let log_rows = log_rows_written(res);

    let mut report = Report {
        scenario: "durable".into(),
        tasks_per_s: per_s(parents_done + children_done),
        runs_per_s: per_s(parents_done),
        ..Default::default()
    };
    report.set_start(&child_start);
    report.set_result(&parent_done);
    report.set_resources(res, parents_done as u64);
    report.put("orchestrators", parents);
    report.put("children_per_orchestrator", per_parent);
    report.put("sleep_ms", sleep.as_millis() as u64);
    report.put("orchestrators_triggered", m.accepted);
    report.put("orchestrators_completed", parents_done);
    report.put("orchestrators_succeeded", parents_ok);
    report.put("children_completed", children_done);
    report.put("all_completed", all_completed);
    report.put("finished_in_time", m.finished);
    report.put("first_error", rec.first_error());
    report.put("orchestrators_per_s", per_s(parents_done));
    report.put("children_per_s", per_s(children_done));
    report.put("trigger_to_orchestrator_done", parent_done);
    report.put("spawn_to_child_start", child_start);
    report.put("durable_calls", calls);
    report.put(
        "log_rows_written_per_call",
        Resources::per_task(log_rows.map(|r| r as f64), calls),
    );
    report.summary = format!(
        "durable: {parents} orchestrators × {per_parent} children + {} ms sleep: {} orchestrators/s ({} children/s); completed {parents_done}/{parents} ({parents_ok} succeeded), children {children_done}{}; trigger → orchestrator done p50/p99 {}; spawn → child start p50/p99 {}; log rows written per durable call {}; {} (per-task figures are per orchestrator)",
        sleep.as_millis(),
        fmt(per_s(parents_done)),
        fmt(per_s(children_done)),
        if all_completed { "" } else { " [INCOMPLETE]" },
        parent_done.short(),
        child_start.short(),
        fmt(Resources::per_task(log_rows.map(|r| r as f64), calls)),
        resource_summary(&report)
    );
    Ok(report)
}

/// The replay part's figures and summary.
struct Replayed {
    figures: Vec<(String, serde_json::Value)>,
    summary: String,
}

async fn replay(ctx: &Ctx) -> anyhow::Result<Replayed> {
    let scale = &ctx.scale;
    let (tasks, memos) = (scale.durable_replay_tasks, scale.durable_replay_memos);
    let times: workers::ReplayLog = Arc::new(Mutex::new(vec![ReplayTimes::default(); tasks]));
    let wf = workers::durable_replay(memos, REPLAY_SLEEP, times.clone());
    // Evicted as soon as they wait: the sleep is spent off the worker.
    let evict_at_once = EvictionPolicy {
        ttl: Some(Duration::ZERO),
        allow_capacity_eviction: false,
        min_wait_for_capacity: Duration::ZERO,
        check_every: Duration::from_millis(100),
    };
    let mut workers = Workers::start_durable(
        &ctx.target,
        "durable-replay",
        &[wf],
        1,
        (scale.slots, tasks.max(1)),
        Some(evict_at_once),
    )?;
    let read = |f: &dyn Fn(&ReplayTimes) -> bool| {
        times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|t| f(t))
            .count()
    };
    let outcome = async {
        // Nothing to warm up with (a run of it is the measurement): wait until the
        // worker has registered it instead.
        until_registered(ctx, workers::DURABLE_REPLAY).await?;
        eprintln!("[bench] durable replay: {tasks} tasks × {memos} memo calls, evicted, replayed");
        let rec = ctx.hub.begin(tasks, 1);
        let written = Probe::start(ctx).await;
        let accepted = load::bulk(
            &ctx.clients,
            &ctx.hub,
            &rec,
            workers::DURABLE_REPLAY,
            tasks,
            BULK_BATCH,
            1,
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(120 + memos as u64 / 10);
        while read(&|t| t.write_end > 0) < accepted as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let write_res = written.finish(ctx).await;
        let replayed = Probe::start(ctx).await;
        let finished = wait_done(&rec, accepted, Duration::from_secs(300), STALL).await;
        let replay_res = replayed.finish(ctx).await;
        ctx.hub.end(rec.phase);
        workers.ensure_running()?;
        anyhow::Ok((accepted, finished, write_res, replay_res, rec))
    }
    .await;
    workers.stop().await;
    let (accepted, finished, write_res, replay_res, rec) = outcome?;
    let all = times
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let write = Dist::of(
        all.iter()
            .filter(|t| t.write_end > t.write_start && t.write_start > 0)
            .map(|t| t.write_end - t.write_start)
            .collect(),
    );
    let replay = Dist::of(
        all.iter()
            .filter(|t| t.replay_end > t.replay_start && t.replay_start > 0)
            .map(|t| t.replay_end - t.replay_start)
            .collect(),
    );
    let replayed = all.iter().filter(|t| t.replay_end > 0).count();
    let calls = (accepted as usize * memos) as u64;
    let per_call = |x: Option<i64>| Resources::per_task(x.map(|x| x as f64), calls);
    let write_tx = per_call(write_res.pg_tx);
    let write_wal = per_call(write_res.pg_wal_syncs);
    let write_rows = per_call(log_rows_written(&write_res));
    let replay_tx = per_call(replay_res.pg_tx);
    let us_per_call = |d: &Dist| d.p50_ms.map(|ms| round3(ms * 1000.0 / memos.max(1) as f64));
    let figures = vec![
        ("replay_tasks".into(), serde_json::json!(tasks)),
        ("replay_memos_per_task".into(), serde_json::json!(memos)),
        ("replay_tasks_replayed".into(), serde_json::json!(replayed)),
        (
            "replay_finished".into(),
            serde_json::json!(finished && replayed == tasks),
        ),
        (
            "replay_first_error".into(),
            serde_json::json!(rec.first_error()),
        ),
        ("memo_write_time".into(), serde_json::json!(write)),
        (
            "memo_write_us_per_call_p50".into(),
            serde_json::json!(us_per_call(&write)),
        ),
        ("replay_time".into(), serde_json::json!(replay)),
        (
            "replay_us_per_call_p50".into(),
            serde_json::json!(us_per_call(&replay)),
        ),
        ("memo_pg_tx_per_call".into(), serde_json::json!(write_tx)),
        (
            "memo_wal_syncs_per_call".into(),
            serde_json::json!(write_wal),
        ),
        (
            "memo_log_rows_per_call".into(),
            serde_json::json!(write_rows),
        ),
        ("replay_pg_tx_per_call".into(), serde_json::json!(replay_tx)),
    ];
    let summary = format!(
        "replay: {tasks} tasks × {memos} memos (replayed {replayed}{}): writing p50 {} ms ({} µs/call), Postgres tx/WAL flushes/log rows per memo call {}/{}/{}; replaying the {memos}-entry log p50/max {}/{} ms ({} µs/call), tx per replayed call {}",
        if finished && replayed == tasks {
            ""
        } else {
            " [INCOMPLETE]"
        },
        fmt(write.p50_ms),
        fmt(us_per_call(&write)),
        fmt(write_tx),
        fmt(write_wal),
        fmt(write_rows),
        fmt(replay.p50_ms),
        fmt(replay.max_ms),
        fmt(us_per_call(&replay)),
        fmt(replay_tx),
    );
    Ok(Replayed { figures, summary })
}

/// Rows of the durable log's tables written in a window.
fn log_rows_written(res: &Resources) -> Option<i64> {
    let rows: i64 = LOG_TABLES
        .iter()
        .filter_map(|t| res.pg_tables.get(*t))
        .map(|s| s.rows_inserted + s.rows_updated + s.rows_deleted)
        .sum();
    (!res.pg_tables.is_empty()).then_some(rows)
}
