//! `children`: parents that each spawn child runs from inside their task and wait for
//! them (a fan-out of child workflows, not of DAG tasks). `--children-parents` runs of a
//! one-task parent workflow are triggered together in one bulk call; each parent's task
//! spawns `--children-per-parent` runs of a one-task no-op child workflow at once
//! (`Context::spawn_child`, which the SDK coalesces into bulk triggers), waits for all
//! their results and returns.
//!
//! Measured from the first trigger to the last parent's finished notice: children/s and
//! parents/s over that window, spawn → child start and → child finished, trigger →
//! parent finished, and how long a parent takes to learn that its last child is done.
//! The per-task resource figures (`cpu_us_per_task`, `pg_tx_per_task`, …) are per
//! child, the parents' own work counted in. Every parent and every child must finish:
//! the report counts them, and reads their stored statuses when it can.

use serde_json::json;

use crate::recorder::Recorder;
use crate::report::{Report, fmt, resource_summary};
use crate::scenarios::Ctx;
use crate::scenarios::family::{self, gaps};
use crate::stats::{Dist, StartHops, round3};
use crate::workers::{self, Family, Workers};

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    let family = Family {
        parents: scale.children_parents,
        per_parent: scale.children_per_parent,
        release_slot: scale.children_release_slot,
    };
    // A parent holds its slot while it waits, unless it gives it back: room for every
    // parent on any one worker, and `--slots` more for the children.
    let slots = if family.release_slot {
        scale.slots
    } else {
        scale.slots + family.parents
    };
    let parent = workers::children_parent(&ctx.hub, family);
    let child = workers::single(workers::CHILDREN_CHILD, &ctx.hub, ctx.task_sleep());
    let workers = Workers::start(
        &ctx.target,
        "children",
        &[parent, child],
        scale.workers,
        slots,
    )?;
    let what = format!(
        "children: {} parents × {} children, {} worker(s) × {slots} slots{}",
        family.parents,
        family.per_parent,
        scale.workers,
        if family.release_slot {
            ", parents release their slots"
        } else {
            ""
        }
    );
    let m = family::measure(ctx, workers, workers::CHILDREN_PARENT, family, what).await?;
    let (rec, accepted, finished, res) = (&m.rec, m.accepted, m.finished, &m.res);
    let (parents, per_parent) = (family.parents, family.per_parent);
    let children = parents * per_parent;
    let (parent_seqs, child_seqs) = (m.parent_seqs.clone(), m.child_seqs.clone());
    let (parents_done, parents_ok, children_done) = (m.parents_done, m.parents_ok, m.children_done);
    let children_spawned = child_seqs.clone().filter(|&s| rec.acked_at(s) > 0).count();
    let children_started = child_seqs
        .clone()
        .filter(|&s| rec.started_at(s, 0) > 0)
        .count();
    let all_completed = m.all_completed(family);
    let window_s = m.window_s;
    let per_s = |n: usize| m.per_s(n);
    let t0 = m.t0;

    let child_start = Dist::of(gaps(child_seqs.clone(), |s| {
        (rec.sent_at(s), rec.started_at(s, 0))
    }));
    let child_result = Dist::of(gaps(child_seqs.clone(), |s| {
        (rec.sent_at(s), rec.done_at(s))
    }));
    let spawn_call = Dist::of(gaps(child_seqs.clone(), |s| {
        (rec.sent_at(s), rec.acked_at(s))
    }));
    let parent_start = Dist::of(gaps(parent_seqs.clone(), |s| {
        (rec.sent_at(s), rec.started_at(s, 0))
    }));
    let parent_done = Dist::of(gaps(parent_seqs.clone(), |s| {
        (rec.sent_at(s), rec.done_at(s))
    }));
    // Per parent: its start → its last child's spawn answered, and its last child's
    // handler returning → its own handler returning (the child's report, the run's
    // finish and the parent's result subscription).
    let last_of = |p: usize, at: &dyn Fn(usize) -> u64| {
        let first = family.child_seq(p as u32, 0) as usize;
        let all: Vec<u64> = (first..first + per_parent).map(at).collect();
        if all.contains(&0) {
            0
        } else {
            all.into_iter().max().unwrap_or(0)
        }
    };
    let parent_spawn_all = Dist::of(gaps(parent_seqs.clone(), |p| {
        (rec.started_at(p, 0), last_of(p, &|s| rec.acked_at(s)))
    }));
    let parent_wakeup = Dist::of(gaps(parent_seqs.clone(), |p| {
        (last_of(p, &|s| rec.ended_at(s, 0)), rec.ended_at(p, 0))
    }));
    let (sent_per_s, done_per_s) = crate::stats::timeline(rec, family.capacity(), t0);
    let (statuses, hops) = stored(ctx, rec, parents).await;

    let mut report = Report {
        scenario: "children".into(),
        tasks_per_s: per_s(parents_done + children_done),
        runs_per_s: per_s(parents_done + children_done),
        ..Default::default()
    };
    report.set_start(&child_start);
    report.set_result(&child_result);
    report.set_resources(res, children_done as u64);
    report.put("parents", parents);
    report.put("children_per_parent", per_parent);
    report.put("worker_slots", slots);
    report.put("parents_release_slot", family.release_slot);
    report.put("parents_triggered", accepted);
    report.put("parents_completed", parents_done);
    report.put("parents_succeeded", parents_ok);
    report.put("children_spawned", children_spawned);
    report.put("children_started", children_started);
    report.put("children_completed", children_done);
    report.put("all_completed", all_completed);
    report.put("finished_in_time", finished);
    report.put("first_error", rec.first_error());
    report.put("time_to_all_done_ms", window_s.map(|s| round3(s * 1000.0)));
    report.put("children_per_s", per_s(children_done));
    report.put("parents_per_s", per_s(parents_done));
    report.put("child_start", child_start);
    report.put("child_result", child_result);
    report.put("spawn_call", spawn_call);
    report.put("parent_start", parent_start);
    report.put("parent_done", parent_done);
    report.put("parent_spawn_all", parent_spawn_all);
    report.put("parent_wakeup", parent_wakeup);
    report.put("sent_per_s", sent_per_s);
    report.put("done_per_s", done_per_s);
    report.put("run_statuses", statuses);
    report.put("start_hops", hops);
    report.put("cpu_us_per_child", report.cpu_us_per_task.clone());
    report.summary = format!(
        "children: {parents} parents × {per_parent} children: all done in {} s ({} children/s, {} parents/s); completed {parents_done}/{parents} parents ({parents_ok} succeeded), {children_done}/{children} children{}; spawn → child start p50/p99 {}; spawn call p50/p99 {}; trigger → parent done p50/max {}/{} ms; last child → parent returns p50/p99 {}; {} (per-task figures are per child)",
        fmt(window_s.map(round3)),
        fmt(per_s(children_done)),
        fmt(per_s(parents_done)),
        if all_completed { "" } else { " [INCOMPLETE]" },
        child_start.short(),
        spawn_call.short(),
        fmt(parent_done.p50_ms),
        fmt(parent_done.max_ms),
        parent_wakeup.short(),
        resource_summary(&report)
    );
    Ok(report)
}

/// From the bench database, when there is one: the phase's runs by workflow and stored
/// status, and where trigger → start went for the parents and for the children
/// (see [`StartHops`]; for a child the first hop starts at its `spawn_child` call).
async fn stored(
    ctx: &Ctx,
    rec: &Recorder,
    parents: usize,
) -> (serde_json::Value, serde_json::Value) {
    let Some((url, _, _)) = &ctx.target.database else {
        return (serde_json::Value::Null, serde_json::Value::Null);
    };
    let statuses = async {
        let pool = sqlx::PgPool::connect(url).await?;
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            r#"SELECT workflow_name, status, count(*) FROM runs
                WHERE input->>'phase' = $1 GROUP BY 1, 2 ORDER BY 1, 2"#,
        )
        .bind(rec.phase.to_string())
        .fetch_all(&pool)
        .await?;
        pool.close().await;
        anyhow::Ok(rows)
    }
    .await;
    let statuses = match statuses {
        Ok(rows) => json!(rows
            .into_iter()
            .map(|(workflow, status, runs)| json!({"workflow": workflow, "status": status, "runs": runs}))
            .collect::<Vec<_>>()),
        Err(e) => {
            eprintln!("[bench]   cannot read the runs' stored statuses: {e:#}");
            serde_json::Value::Null
        }
    };
    let hops = match &ctx.pg {
        Some(pg) => match pg.first_task_stamps(rec.phase).await {
            Ok(stamps) => {
                let (of_parents, of_children): (Vec<_>, Vec<_>) = stamps
                    .into_iter()
                    .partition(|(seq, _, _)| (*seq as usize) < parents);
                let (p, c) = (
                    StartHops::compute(rec, &of_parents),
                    StartHops::compute(rec, &of_children),
                );
                eprintln!(
                    "[bench]   child start p50/p99 by hop: to ingest commit {}, to assignment {}, to handler {}",
                    c.to_ingest_commit.short(),
                    c.to_assignment.short(),
                    c.to_handler.short()
                );
                json!({"parents": p, "children": c})
            }
            Err(e) => {
                eprintln!("[bench]   cannot read the stored timestamps: {e}");
                serde_json::Value::Null
            }
        },
        None => serde_json::Value::Null,
    };
    (statuses, hops)
}
