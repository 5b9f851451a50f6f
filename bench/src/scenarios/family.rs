//! What `children` and `durable` share: a family of parents triggered together, each
//! spawning its children and waiting for them, measured from the first trigger to the
//! last parent's finished notice.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crate::load;
use crate::probe::{Probe, Resources};
use crate::recorder::Recorder;
use crate::scenarios::{Ctx, wait_done, warmup};
use crate::stats::round3;
use crate::workers::{Family, Workers};

/// Parents per bulk trigger call.
const BULK_BATCH: usize = 500;
/// How long the wait for the runs may go without a single one finishing.
const STALL: Duration = Duration::from_secs(30);

/// A measured family.
pub struct Measured {
    pub rec: Arc<Recorder>,
    /// Parents the trigger accepted.
    pub accepted: u64,
    /// Every parent and child finished before the timeout.
    pub finished: bool,
    pub res: Resources,
    /// Parents finished, parents whose handler returned, children finished.
    pub parents_done: usize,
    pub parents_ok: usize,
    pub children_done: usize,
    /// The first trigger (ns; 0 when none was sent).
    pub t0: u64,
    /// First trigger → last parent's finished notice, seconds.
    pub window_s: Option<f64>,
    /// The recorder's sequence numbers of the parents and of the children.
    pub parent_seqs: Range<usize>,
    pub child_seqs: Range<usize>,
}

impl Measured {
    /// `n` per second over the window.
    pub fn per_s(&self, n: usize) -> Option<f64> {
        self.window_s.map(|s| round3(n as f64 / s))
    }

    /// Every parent and child finished, and every parent's handler returned.
    pub fn all_completed(&self, family: Family) -> bool {
        self.parents_done == family.parents
            && self.parents_ok == family.parents
            && self.children_done == family.parents * family.per_parent
    }
}

/// Runs one family of `workflow` on `workers` (stopped at the end) after one warm-up
/// family, announcing it with `what`.
pub async fn measure(
    ctx: &Ctx,
    mut workers: Workers,
    workflow: &str,
    family: Family,
    what: String,
) -> anyhow::Result<Measured> {
    let outcome = async {
        // One whole family (a parent and its children) proves spawning and waiting work.
        warmup(ctx, workflow, 1, 1).await?;
        eprintln!("[bench] {what}");
        let rec = ctx.hub.begin(family.capacity(), 1);
        let probe = Probe::start(ctx).await;
        let accepted = load::bulk(
            &ctx.clients,
            &ctx.hub,
            &rec,
            workflow,
            family.parents,
            BULK_BATCH,
            1,
        )
        .await;
        let expected = accepted * (1 + family.per_parent as u64);
        let timeout = Duration::from_secs(60 + family.capacity() as u64 / 10);
        let finished = wait_done(&rec, expected, timeout, STALL).await;
        let res = probe.finish(ctx).await;
        ctx.hub.end(rec.phase);
        workers.ensure_running()?;
        anyhow::Ok((rec, accepted, finished, res))
    }
    .await;
    workers.stop().await;
    let (rec, accepted, finished, res) = outcome?;
    let parent_seqs = 0..family.parents;
    let child_seqs = family.parents..family.capacity();
    let count = |seqs: Range<usize>, at: &dyn Fn(usize) -> u64| seqs.filter(|&s| at(s) > 0).count();
    let t0 = parent_seqs
        .clone()
        .map(|s| rec.sent_at(s))
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0);
    let t1 = parent_seqs
        .clone()
        .map(|s| rec.done_at(s))
        .max()
        .unwrap_or(0);
    Ok(Measured {
        parents_done: count(parent_seqs.clone(), &|s| rec.done_at(s)),
        parents_ok: count(parent_seqs.clone(), &|s| rec.ended_at(s, 0)),
        children_done: count(child_seqs.clone(), &|s| rec.done_at(s)),
        window_s: (t1 > t0 && t0 > 0).then(|| t1.saturating_sub(t0) as f64 / 1e9),
        t0,
        parent_seqs,
        child_seqs,
        rec,
        accepted,
        finished,
        res,
    })
}

/// Differences `later - earlier` over `seqs`, where both are known and in order.
pub fn gaps(seqs: Range<usize>, mut pair: impl FnMut(usize) -> (u64, u64)) -> Vec<u64> {
    seqs.filter_map(|s| {
        let (earlier, later) = pair(s);
        (earlier > 0 && later >= earlier).then(|| later - earlier)
    })
    .collect()
}
