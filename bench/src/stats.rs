//! Latency distributions and the per-phase figures computed from a [`Recorder`].

use serde::Serialize;

use crate::recorder::Recorder;

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Dist {
    /// Samples.
    pub n: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Dist {
    /// Nearest-rank percentiles of `samples` (nanoseconds).
    pub fn of(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Dist::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let pick = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            Some(round3(samples[rank - 1] as f64 / 1e6))
        };
        Dist {
            n,
            p50_ms: pick(0.50),
            p95_ms: pick(0.95),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
        }
    }

    /// `p50/p99 ms` for summary lines.
    pub fn short(&self) -> String {
        match (self.p50_ms, self.p99_ms) {
            (Some(a), Some(b)) => format!("{a:.1}/{b:.1} ms"),
            _ => "n/a".to_owned(),
        }
    }
}

/// Rounds to three decimals (JSON readability).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Differences `later - earlier` for every sequence where both are known.
fn gaps(n: usize, mut pair: impl FnMut(usize) -> (u64, u64)) -> Vec<u64> {
    (0..n)
        .filter_map(|seq| {
            let (earlier, later) = pair(seq);
            (earlier > 0 && later >= earlier).then(|| later - earlier)
        })
        .collect()
}

/// Figures of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    pub sent: usize,
    pub errors: u64,
    pub completed: u64,
    /// Completed runs whose notice arrived inside the sending window, per second.
    pub runs_per_s_window: f64,
    /// Completed / (last completion − first send): the "first enqueue to last completion"
    /// figure other job systems report.
    pub runs_per_s_e2e: f64,
    /// Completions in the window / sends in the window.
    pub keep_up_ratio: f64,
    /// The same over the second half of the window (a growing backlog shows here).
    pub keep_up_ratio_second_half: f64,
    /// Trigger RPC: send → response.
    pub ack: Dist,
    /// Trigger → first step's handler start.
    pub start: Dist,
    /// Trigger → finished notice.
    pub result: Dist,
}

impl PhaseStats {
    /// Computes the figures for sequence numbers `0..n` sent in `[t0, t1]` (ns).
    pub fn compute(rec: &Recorder, n: usize, t0: u64, t1: u64) -> Self {
        let n = n.min(rec.capacity());
        let mid = t0 + (t1.saturating_sub(t0)) / 2;
        let (mut sent, mut done_window, mut sent_half, mut done_half) = (0usize, 0u64, 0u64, 0u64);
        let (mut first_sent, mut last_done) = (u64::MAX, 0u64);
        for seq in 0..n {
            let s = rec.sent_at(seq);
            if s > 0 {
                sent += 1;
                first_sent = first_sent.min(s);
                if s >= mid {
                    sent_half += 1;
                }
            }
            let d = rec.done_at(seq);
            if d > 0 {
                last_done = last_done.max(d);
                if d >= t0 && d <= t1 {
                    done_window += 1;
                }
                if d >= mid && d <= t1 {
                    done_half += 1;
                }
            }
        }
        let window_s = (t1.saturating_sub(t0)) as f64 / 1e9;
        let completed = rec.completed();
        let e2e_s = last_done.saturating_sub(first_sent) as f64 / 1e9;
        let ratio = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                round3(a as f64 / b as f64)
            }
        };
        PhaseStats {
            sent,
            errors: rec.errors(),
            completed,
            runs_per_s_window: if window_s > 0.0 {
                (done_window as f64 / window_s).round()
            } else {
                0.0
            },
            runs_per_s_e2e: if e2e_s > 0.0 {
                (completed as f64 / e2e_s).round()
            } else {
                0.0
            },
            keep_up_ratio: ratio(done_window, sent as u64),
            keep_up_ratio_second_half: ratio(done_half, sent_half),
            ack: Dist::of(gaps(n, |i| (rec.sent_at(i), rec.acked_at(i)))),
            start: Dist::of(gaps(n, |i| (rec.sent_at(i), rec.started_at(i, 0)))),
            result: Dist::of(gaps(n, |i| (rec.sent_at(i), rec.done_at(i)))),
        }
    }

    /// Did completions keep up with the offered rate (≥ 95 % overall and in the second
    /// half, under 1 % failed triggers)?
    pub fn kept_up(&self) -> bool {
        self.keep_up_ratio >= 0.95
            && self.keep_up_ratio_second_half >= 0.95
            && (self.errors as f64) < 0.01 * self.sent.max(1) as f64
    }
}

/// Where trigger → start went, hop by hop, for the runs whose stored timestamps are known
/// (see [`crate::pgstats::PgStats::first_task_stamps`]).
#[derive(Debug, Clone, Serialize)]
pub struct StartHops {
    /// Trigger sent → ingest's transaction starts: the client, its coalescing, the gRPC
    /// call and ingest's queue for its next group commit.
    pub to_ingest_commit: Dist,
    /// Ingest's transaction starts → the assignment starts: ingest's insert and commit,
    /// the JetStream hop to the scheduler and the batches ahead of it there.
    pub to_assignment: Dist,
    /// The assignment starts → the handler starts: the assignment statement and its
    /// commit, NATS to the dispatcher, the worker's stream and the SDK.
    pub to_handler: Dist,
    /// The same, split at every stage the services' spans mark (`--otlp-sink`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legs: Option<StartLegs>,
}

/// Trigger → start split at each process boundary, from the stored timestamps and the
/// services' spans ([`crate::otlp::RunStamps`]), for the runs that have both.
#[derive(Debug, Clone, Serialize)]
pub struct StartLegs {
    /// Trigger sent → ingest's `trigger` span starts (the client and the gRPC call).
    pub to_ingest: Dist,
    /// → ingest's transaction starts (the wait for its next group commit).
    pub ingest_wait: Dist,
    /// → ingest's commit returned (the insert, the commit and its WAL flush).
    pub commit: Dist,
    /// → the assignment statement starts (JetStream to the scheduler, its batch).
    pub to_scheduler: Dist,
    /// → the announcer took the assignment (the statement, its commit, the hand-off).
    pub assignment: Dist,
    /// → the dispatcher took it off NATS.
    pub to_dispatcher: Dist,
    /// → handed to the worker's stream.
    pub dispatcher: Dist,
    /// → the handler starts (gRPC to the worker, the SDK).
    pub to_handler: Dist,
}

impl StartLegs {
    /// `stamps` as for [`StartHops::compute`], `runs` (seq, run id), `spans` by run id.
    pub fn compute(
        rec: &Recorder,
        stamps: &[(u32, u64, u64)],
        runs: &[(u32, String)],
        spans: &std::collections::HashMap<String, crate::otlp::RunStamps>,
    ) -> Self {
        let n = rec.capacity();
        // Per run, its nine stamps in the order of the path (leg k is k → k + 1).
        let mut at = vec![[0u64; 9]; n];
        for &(seq, created, assigned) in stamps {
            if let Some(a) = at.get_mut(seq as usize) {
                a[2] = created;
                a[4] = assigned;
            }
        }
        for (seq, run) in runs {
            if let (Some(a), Some(s)) = (at.get_mut(*seq as usize), spans.get(run)) {
                a[1] = s.received;
                a[3] = s.committed;
                a[5] = s.announced;
                a[6] = s.dispatched;
                a[7] = s.handed;
            }
        }
        for (i, a) in at.iter_mut().enumerate() {
            a[0] = rec.sent_at(i);
            a[8] = rec.started_at(i, 0);
        }
        // Only the runs with every stamp, so that the legs add up.
        let whole: Vec<usize> = (0..n).filter(|&i| at[i].iter().all(|&t| t > 0)).collect();
        let leg = |k: usize| {
            Dist::of(
                whole
                    .iter()
                    .map(|&i| at[i][k + 1].saturating_sub(at[i][k]))
                    .collect(),
            )
        };
        StartLegs {
            to_ingest: leg(0),
            ingest_wait: leg(1),
            commit: leg(2),
            to_scheduler: leg(3),
            assignment: leg(4),
            to_dispatcher: leg(5),
            dispatcher: leg(6),
            to_handler: leg(7),
        }
    }

    /// One line of p50s, in order.
    pub fn short(&self) -> String {
        let p = |d: &Dist| d.p50_ms.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
        format!(
            "to ingest {}, ingest wait {}, commit {}, to scheduler {}, assignment {}, to dispatcher {}, dispatcher {}, to handler {} ms (n {})",
            p(&self.to_ingest),
            p(&self.ingest_wait),
            p(&self.commit),
            p(&self.to_scheduler),
            p(&self.assignment),
            p(&self.to_dispatcher),
            p(&self.dispatcher),
            p(&self.to_handler),
            self.to_ingest.n
        )
    }
}

impl StartHops {
    /// `stamps` are (seq, created, assigned) in Unix ns.
    pub fn compute(rec: &Recorder, stamps: &[(u32, u64, u64)]) -> Self {
        let n = rec.capacity();
        let mut at = vec![(0u64, 0u64); n];
        for &(seq, created, assigned) in stamps {
            if let Some(slot) = at.get_mut(seq as usize) {
                *slot = (created, assigned);
            }
        }
        StartHops {
            to_ingest_commit: Dist::of(gaps(n, |i| (rec.sent_at(i), at[i].0))),
            to_assignment: Dist::of(gaps(n, |i| at[i])),
            to_handler: Dist::of(gaps(n, |i| (at[i].1, rec.started_at(i, 0)))),
            legs: None,
        }
    }
}

/// Sends and finished runs per second since `t0`, until the last finish.
pub fn timeline(rec: &Recorder, n: usize, t0: u64) -> (Vec<u32>, Vec<u32>) {
    let n = n.min(rec.capacity());
    let bucket = |t: u64| (t.saturating_sub(t0) / 1_000_000_000) as usize;
    let (mut sent, mut done) = (Vec::new(), Vec::new());
    let add = |v: &mut Vec<u32>, t: u64| {
        if t > 0 {
            let i = bucket(t);
            if v.len() <= i {
                v.resize(i + 1, 0);
            }
            v[i] += 1;
        }
    };
    for seq in 0..n {
        add(&mut sent, rec.sent_at(seq));
        add(&mut done, rec.done_at(seq));
    }
    (sent, done)
}

/// Between the end of step `k` and the start of step `k + 1`, for every pair of steps.
pub fn step_overheads(rec: &Recorder, n: usize) -> Vec<Dist> {
    let n = n.min(rec.capacity());
    (0..rec.steps.saturating_sub(1))
        .map(|k| Dist::of(gaps(n, |i| (rec.ended_at(i, k), rec.started_at(i, k + 1)))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d = Dist::of((1..=100).map(|ms| ms * 1_000_000).collect());
        assert_eq!(d.n, 100);
        assert_eq!(d.p50_ms, Some(50.0));
        assert_eq!(d.p99_ms, Some(99.0));
        assert_eq!(d.max_ms, Some(100.0));
        assert_eq!(Dist::of(Vec::new()).p50_ms, None);
    }

    #[test]
    fn start_hops_join_stored_stamps_to_the_recorded_ones_by_seq() {
        let hub = crate::recorder::Hub::default();
        let rec = hub.begin(3, 1);
        let ms = 1_000_000;
        // seq 0: sent at 0, ingest at 1, assigned at 4, handler at 10 (ms).
        // seq 1: the same shifted by 100 ms, plus 1 ms more to the handler.
        // seq 2: sent and started, but no stored row: left out of every hop.
        for (seq, base) in [(0u32, 1_000u64), (1, 1_100)] {
            rec.sent(seq, base * ms);
            rec.started(seq, 0, (base + 10 + u64::from(seq)) * ms);
        }
        rec.sent(2, 2_000 * ms);
        rec.started(2, 0, 2_003 * ms);
        let stamps = [(1, 1_101 * ms, 1_104 * ms), (0, 1_001 * ms, 1_004 * ms)];
        let hops = StartHops::compute(&rec, &stamps);
        assert_eq!(hops.to_ingest_commit.n, 2);
        assert_eq!(hops.to_ingest_commit.max_ms, Some(1.0));
        assert_eq!(hops.to_assignment.p50_ms, Some(3.0));
        assert_eq!(hops.to_handler.p50_ms, Some(6.0));
        assert_eq!(hops.to_handler.max_ms, Some(7.0));
    }

    #[test]
    fn start_legs_join_spans_by_run_and_leave_out_runs_without_every_stamp() {
        let hub = crate::recorder::Hub::default();
        let rec = hub.begin(2, 1);
        let ms = 1_000_000;
        // seq 0: one stage a millisecond, from 1,000 ms to the handler at 1,008 ms.
        rec.sent(0, 1_000 * ms);
        rec.started(0, 0, 1_008 * ms);
        // seq 1: no span stamps, so no legs.
        rec.sent(1, 2_000 * ms);
        rec.started(1, 0, 2_008 * ms);
        let stamps = [(0, 1_002 * ms, 1_004 * ms), (1, 2_002 * ms, 2_004 * ms)];
        let runs = [(0, "a".to_owned()), (1, "b".to_owned())];
        let spans = std::collections::HashMap::from([(
            "a".to_owned(),
            crate::otlp::RunStamps {
                received: 1_001 * ms,
                committed: 1_003 * ms,
                announced: 1_005 * ms,
                dispatched: 1_006 * ms,
                handed: 1_007 * ms,
            },
        )]);
        let legs = StartLegs::compute(&rec, &stamps, &runs, &spans);
        assert_eq!(legs.to_ingest.n, 1);
        for d in [
            &legs.to_ingest,
            &legs.ingest_wait,
            &legs.commit,
            &legs.to_scheduler,
            &legs.assignment,
            &legs.to_dispatcher,
            &legs.dispatcher,
            &legs.to_handler,
        ] {
            assert_eq!(d.p50_ms, Some(1.0));
        }
    }
}
