//! In-process workers on the Rust SDK: the bench workflows, whose handlers record when
//! they start and end (by the `phase` and `seq` carried in the run input).

use std::sync::Arc;
use std::time::Duration;

use adze_sdk::{
    ChildSpec, Client, ClientConfig, Context, DurableContext, DurableTaskDef, EvictionPolicy,
    RunHandle, SdkError, TaskDef, TaskError, TlsStrategy, TriggerOptions, Worker, Workflow,
};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fleet::Target;
use crate::recorder::{Hub, now_ns};

/// The input of every bench run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SeqInput {
    pub phase: u32,
    pub seq: u32,
}

/// Workflow names.
pub const NOOP: &str = "bench-noop";
pub const PROBE: &str = "bench-probe";
pub const DAG3: &str = "bench-dag3";
pub const KEYED: &str = "bench-keyed";
pub const LIMITED: &str = "bench-limited";
pub const STICKY: &str = "bench-sticky";
pub const FANOUT: &str = "bench-fanout";
pub const TIMEOUTS: &str = "bench-timeouts";
/// The workflow the `events` scenario's events start, and its event key.
pub const EVENTS: &str = "bench-events";
pub const EVENT_KEY: &str = "bench:event";
/// The `children` scenario's parent workflow, and the workflow of its children.
pub const CHILDREN_PARENT: &str = "bench-children-parent";
pub const CHILDREN_CHILD: &str = "bench-children-child";
/// The `durable` scenario's orchestrator, the workflow of its children, and its replay
/// workflow.
pub const DURABLE_ORCHESTRATOR: &str = "bench-durable-orchestrator";
pub const DURABLE_CHILD: &str = "bench-durable-child";
pub const DURABLE_REPLAY: &str = "bench-durable-replay";
/// The action of the `timeouts` scenario's task.
pub const TIMEOUTS_ACTION: &str = "bench-timeouts:maybe";

/// A client of the target: `grpc` for client calls, `dispatcher` for worker calls.
pub fn client(target: &Target) -> anyhow::Result<Client> {
    Ok(Client::new(ClientConfig {
        token: target.token.clone(),
        host_port: Some(target.grpc.clone()),
        dispatcher_host_port: Some(target.dispatcher.clone()),
        tls_strategy: if target.tls_ca.is_some() {
            TlsStrategy::Tls
        } else {
            TlsStrategy::None
        },
        tls_root_ca_file: target.tls_ca.clone(),
        ..Default::default()
    })?)
}

/// A handler body that records step `step` of `input`'s run, optionally sleeping.
fn recording_task(
    name: String,
    step: usize,
    hub: Arc<Hub>,
    sleep: Duration,
) -> TaskDef<SeqInput, ()> {
    handler(name, step, hub, sleep, false)
}

/// [`recording_task`]; with `bind_run` the first start of a `seq` also binds its run id
/// to it, for runs whose trigger answered no run id (events), so that their finished
/// notices count.
fn handler(
    name: String,
    step: usize,
    hub: Arc<Hub>,
    sleep: Duration,
    bind_run: bool,
) -> TaskDef<SeqInput, ()> {
    TaskDef::new(name, move |input: SeqInput, ctx: Context| {
        let recorder = hub.recorder(input.phase);
        if let Some(r) = &recorder
            && r.started(input.seq, step, now_ns())
            && bind_run
        {
            hub.bind(r, input.seq, ctx.workflow_run_id());
        }
        async move {
            if !sleep.is_zero() {
                tokio::time::sleep(sleep).await;
            }
            if let Some(r) = recorder {
                r.ended(input.seq, step, now_ns());
            }
            Ok::<(), TaskError>(())
        }
    })
}

/// One task (`noop` or the backlog's `probe`).
pub fn single(name: &str, hub: &Arc<Hub>, sleep: Duration) -> Workflow<SeqInput> {
    Workflow::new(name).task(recording_task("run".into(), 0, hub.clone(), sleep))
}

/// One task, started by events with key `key` (their payload is its input).
pub fn on_event(name: &str, key: &str, hub: &Arc<Hub>, sleep: Duration) -> Workflow<SeqInput> {
    Workflow::new(name)
        .on_event(key)
        .task(handler("run".into(), 0, hub.clone(), sleep, true))
}

/// One task taking units of `limit`.
pub fn single_with(
    name: &str,
    hub: &Arc<Hub>,
    sleep: Duration,
    limit: adze_sdk::RateLimit,
) -> Workflow<SeqInput> {
    Workflow::new(name).task(recording_task("run".into(), 0, hub.clone(), sleep).rate_limit(limit))
}

/// `s1 → s2 → s3`, named `name`.
pub fn dag3(name: &str, hub: &Arc<Hub>, sleep: Duration) -> Workflow<SeqInput> {
    let mut wf = Workflow::new(name);
    let s1 = wf.add_task(recording_task("s1".into(), 0, hub.clone(), sleep));
    let s2 = wf.add_task(recording_task("s2".into(), 1, hub.clone(), sleep).parent(&s1));
    wf.add_task(recording_task("s3".into(), 2, hub.clone(), sleep).parent(&s2));
    wf
}

/// `root` → `c0 … c{width-1}` in parallel; step 0 is the root, step i+1 child i.
pub fn fanout(hub: &Arc<Hub>, width: usize) -> Workflow<SeqInput> {
    let mut wf = Workflow::new(FANOUT);
    let root = wf.add_task(recording_task(
        "root".into(),
        0,
        hub.clone(),
        Duration::ZERO,
    ));
    for i in 0..width {
        wf.add_task(
            recording_task(format!("c{i}"), i + 1, hub.clone(), Duration::ZERO).parent(&root),
        );
    }
    wf
}

/// `maybe`, with a 1 s execution timeout and no retries: runs with an odd `seq` hang
/// for a minute (the engine stops them at the timeout), the others return at once.
pub fn timeouts(hub: &Arc<Hub>) -> Workflow<SeqInput> {
    let hub = hub.clone();
    let task = TaskDef::new("maybe", move |input: SeqInput, ctx: Context| {
        let recorder = hub.recorder(input.phase);
        if let Some(r) = &recorder {
            r.started(input.seq, 0, now_ns());
        }
        async move {
            if input.seq % 2 == 1 {
                ctx.cancellation_token().cancelled().await;
                return Err(TaskError::retryable("stopped by the engine"));
            }
            if let Some(r) = recorder {
                r.ended(input.seq, 0, now_ns());
            }
            Ok::<(), TaskError>(())
        }
    })
    .execution_timeout(Duration::from_secs(1));
    Workflow::new(TIMEOUTS).task(task)
}

/// The shape of the `children` scenario: how many parents, how many children each, and
/// whether a parent gives its slot back while it waits.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub parents: usize,
    pub per_parent: usize,
    pub release_slot: bool,
}

impl Family {
    /// The sequence number of child `i` of parent `parent` in the phase's recorder: the
    /// parents are `0 … parents-1`, their children follow, parent by parent.
    pub fn child_seq(&self, parent: u32, i: usize) -> u32 {
        u32::try_from(self.parents + parent as usize * self.per_parent + i).unwrap_or(u32::MAX)
    }

    /// Sequence numbers a phase needs: every parent and every child.
    pub fn capacity(&self) -> usize {
        self.parents * (1 + self.per_parent)
    }
}

/// The parent of `children`: one task, `spawn`, that spawns `per_parent` child runs of
/// [`CHILDREN_CHILD`] at once (each its own `spawn_child` call; the SDK coalesces
/// concurrent ones into bulk triggers), records when each was asked for and answered
/// and binds its run id, then waits for every child's result at once, through its
/// worker's own client as a handler does. With `release_slot` it first gives its worker
/// slot back. It fails if a spawn or a child fails.
pub fn children_parent(hub: &Arc<Hub>, family: Family) -> Workflow<SeqInput> {
    let hub = hub.clone();
    let task = TaskDef::new("spawn", move |input: SeqInput, ctx: Context| {
        let hub = hub.clone();
        async move {
            let recorder = hub.recorder(input.phase);
            if let Some(r) = &recorder {
                r.started(input.seq, 0, now_ns());
            }
            if family.release_slot {
                ctx.release_slot()
                    .await
                    .map_err(|e| TaskError::retryable(format!("release slot: {e}")))?;
            }
            let spawns = (0..family.per_parent).map(|i| {
                let seq = family.child_seq(input.seq, i);
                let (ctx, hub, recorder) = (&ctx, &hub, &recorder);
                async move {
                    if let Some(r) = recorder {
                        r.sent(seq, now_ns());
                    }
                    let child = SeqInput {
                        phase: input.phase,
                        seq,
                    };
                    let handle = ctx
                        .spawn_child(CHILDREN_CHILD, child, None, TriggerOptions::default())
                        .await?;
                    if let Some(r) = recorder {
                        r.acked(seq, now_ns());
                        hub.bind(r, seq, handle.run_id());
                    }
                    Ok::<RunHandle, SdkError>(handle)
                }
            });
            let handles = join_all(spawns)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TaskError::non_retryable(format!("spawn a child: {e}")))?;
            let results = join_all(handles.iter().map(RunHandle::outputs)).await;
            let failed: Vec<SdkError> = results.into_iter().filter_map(Result::err).collect();
            if let Some(first) = failed.first() {
                return Err(TaskError::non_retryable(format!(
                    "{} of {} children failed; the first: {first}",
                    failed.len(),
                    handles.len()
                )));
            }
            if let Some(r) = &recorder {
                r.ended(input.seq, 0, now_ns());
            }
            Ok::<(), TaskError>(())
        }
    })
    // Longer than the default minute: a parent waits for all its children.
    .execution_timeout(Duration::from_secs(900));
    Workflow::new(CHILDREN_PARENT).task(task)
}

/// The `durable` scenario's orchestrator: one durable task that spawns `per_parent`
/// runs of [`DURABLE_CHILD`] in one call (recording, like [`children_parent`], when each
/// was asked for and answered), waits for all of them without a call, sleeps `sleep`
/// durably, and returns: two durable calls, `per_parent + 1` log entries.
pub fn durable_orchestrator(hub: &Arc<Hub>, family: Family, sleep: Duration) -> Workflow<SeqInput> {
    let hub = hub.clone();
    let task = DurableTaskDef::new(
        "orchestrate",
        move |input: SeqInput, ctx: DurableContext| {
            let hub = hub.clone();
            async move {
                let recorder = hub.recorder(input.phase);
                if let Some(r) = &recorder {
                    r.started(input.seq, 0, now_ns());
                }
                let seqs: Vec<u32> = (0..family.per_parent)
                    .map(|i| family.child_seq(input.seq, i))
                    .collect();
                if let Some(r) = &recorder {
                    seqs.iter().for_each(|&seq| r.sent(seq, now_ns()));
                }
                let children = ctx
                    .spawn_many(seqs.iter().map(|&seq| {
                        let child = SeqInput {
                            phase: input.phase,
                            seq,
                        };
                        ChildSpec::new(DURABLE_CHILD, child)
                    }))
                    .await?;
                if let Some(r) = &recorder {
                    for (&seq, child) in seqs.iter().zip(&children) {
                        r.acked(seq, now_ns());
                        hub.bind(r, seq, child.run_id());
                    }
                }
                for child in children {
                    child.result::<serde_json::Value>().await?;
                }
                ctx.sleep(sleep).await?;
                if let Some(r) = &recorder {
                    r.ended(input.seq, 0, now_ns());
                }
                Ok::<(), TaskError>(())
            }
        },
    )
    .execution_timeout(Duration::from_secs(900));
    Workflow::new(DURABLE_ORCHESTRATOR).durable_task(task)
}

/// When one run of the replay workflow went through its memo calls: the first
/// invocation writing them, and the next one reading them back.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayTimes {
    pub write_start: u64,
    pub write_end: u64,
    pub replay_start: u64,
    pub replay_end: u64,
    /// The last invocation seen.
    pub invocation: i32,
}

/// Per run of the replay workflow (by `seq`).
pub type ReplayLog = Arc<std::sync::Mutex<Vec<ReplayTimes>>>;

/// The `durable` scenario's replay workflow: one durable task that makes `memos` memo
/// calls, then sleeps `sleep` (its worker evicts it meanwhile); the engine runs it
/// again when the sleep is over and the new invocation reads the `memos` calls back
/// from the log before it returns. `times` gets when each invocation began and ended
/// its memo calls.
pub fn durable_replay(memos: usize, sleep: Duration, times: ReplayLog) -> Workflow<SeqInput> {
    let task = DurableTaskDef::new("replay", move |input: SeqInput, ctx: DurableContext| {
        let times = times.clone();
        async move {
            let first = ctx.invocation_count() == 1;
            let mark = |f: &dyn Fn(&mut ReplayTimes)| {
                let mut all = times
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(t) = all.get_mut(input.seq as usize) {
                    t.invocation = ctx.invocation_count();
                    f(t);
                }
            };
            let start = now_ns();
            mark(&|t| {
                if first {
                    t.write_start = start
                } else {
                    t.replay_start = start
                }
            });
            for i in 0..memos {
                let n: usize = ctx
                    .memo(&["n", &i.to_string()], || async { Ok::<_, TaskError>(i) })
                    .await?;
                if n != i {
                    return Err(TaskError::non_retryable(format!("memo {i} read back {n}")));
                }
            }
            let end = now_ns();
            mark(&|t| {
                if first {
                    t.write_end = end
                } else {
                    t.replay_end = end
                }
            });
            ctx.sleep(sleep).await?;
            Ok::<(), TaskError>(())
        }
    })
    .execution_timeout(Duration::from_secs(900));
    Workflow::new(DURABLE_REPLAY).durable_task(task)
}

/// Running worker instances.
pub struct Workers {
    stop: CancellationToken,
    tasks: JoinSet<Result<(), adze_sdk::SdkError>>,
}

impl Workers {
    /// Starts `count` workers (each its own client connection) serving `workflows`.
    pub fn start(
        target: &Target,
        name: &str,
        workflows: &[Workflow<SeqInput>],
        count: usize,
        slots: usize,
    ) -> anyhow::Result<Self> {
        // The SDK's default durable slots.
        Self::start_durable(target, name, workflows, count, (slots, 1_000), None)
    }

    /// [`start`](Self::start), with `(slots, durable slots)` and an eviction policy
    /// (default: the SDK's).
    pub fn start_durable(
        target: &Target,
        name: &str,
        workflows: &[Workflow<SeqInput>],
        count: usize,
        (slots, durable_slots): (usize, usize),
        eviction: Option<EvictionPolicy>,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for i in 0..count {
            let mut builder = Worker::builder(client(target)?)
                .name(format!("{name}-{i}"))
                .slots(slots)
                .durable_slots(durable_slots)
                .shutdown_timeout(Duration::from_secs(5));
            if let Some(policy) = &eviction {
                builder = builder.eviction(policy.clone());
            }
            for wf in workflows {
                builder = builder.workflow(wf.clone());
            }
            let worker = builder.build()?;
            let stop = stop.clone();
            tasks.spawn(async move { worker.run(async move { stop.cancelled().await }).await });
        }
        Ok(Workers { stop, tasks })
    }

    /// Fails if a worker has stopped on its own (it could not register, say).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.tasks.try_join_next() {
            None => Ok(()),
            Some(Ok(Ok(()))) => anyhow::bail!("a worker stopped unexpectedly"),
            Some(Ok(Err(e))) => anyhow::bail!("a worker failed: {e}"),
            Some(Err(e)) => anyhow::bail!("a worker panicked: {e}"),
        }
    }

    /// Graceful shutdown: unsubscribe and let in-flight tasks finish (5 s at most).
    pub async fn stop(mut self) {
        self.stop.cancel();
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "worker ended with an error");
            }
        }
    }
}
