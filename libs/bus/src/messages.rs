//! Message bodies carried in [`crate::Envelope`]s.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Events the scheduler consumes from JetStream (durable, at-least-once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SchedulerEvent {
    /// New runs were committed; their root tasks are queued.
    RunsCreated {
        /// Runs.
        run_ids: Vec<Uuid>,
        /// The tasks these runs queued ready to start, in queue order. With them a
        /// scheduler that knows the queue was otherwise empty assigns them without
        /// reading the queue. `None` when the sender did not list them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ready: Option<Vec<QueuedTask>>,
    },
    /// A worker started an attempt.
    TaskStarted {
        /// Task.
        task_id: Uuid,
        /// Attempt.
        attempt: i32,
    },
    /// A worker finished an attempt with an output.
    TaskCompleted {
        /// Task.
        task_id: Uuid,
        /// Attempt.
        attempt: i32,
        /// Output JSON.
        output: Value,
    },
    /// A worker failed an attempt.
    TaskFailed {
        /// Task.
        task_id: Uuid,
        /// Attempt.
        attempt: i32,
        /// Error text, verbatim.
        error: String,
        /// Do not retry.
        non_retryable: bool,
        /// Explicit retry delay.
        retry_after_ms: Option<i64>,
    },
    /// A worker is gone; retry its tasks elsewhere.
    WorkerLost {
        /// Worker.
        worker_id: Uuid,
    },
    /// An assignment was never started by its worker; retry it elsewhere.
    AssignmentExpired {
        /// Task.
        task_id: Uuid,
        /// Attempt that was assigned.
        attempt: i32,
    },
    /// A worker opened its action stream: it may take work now.
    WorkerReady {
        /// Worker.
        worker_id: Uuid,
    },
    /// A worker stopped taking new work (its stream closed, it unsubscribed, or it
    /// was paused); what it holds is not lost yet.
    WorkerUnavailable {
        /// Worker.
        worker_id: Uuid,
    },
    /// Something may be admissible (retry due, repair): run admission.
    Wake,
    /// An attempt ran past its execution deadline (the reaper).
    TaskTimedOut {
        /// Task.
        task_id: Uuid,
        /// The attempt that timed out.
        attempt: i32,
        /// Its execution timeout, in milliseconds.
        timeout_ms: i64,
    },
    /// A queued task was not started by its schedule deadline (the reaper).
    ScheduleExpired {
        /// Task.
        task_id: Uuid,
        /// The attempt it was queued for.
        attempt: i32,
        /// Its schedule timeout, in milliseconds.
        timeout_ms: i64,
    },
    /// Replay these finished tasks (run ids: a run's failed and cancelled tasks) and
    /// everything downstream of them (ingest, for a user's request).
    ReplayTasks {
        /// Task or run ids.
        ids: Vec<Uuid>,
    },
    /// A task gave its worker slot back while it keeps running (`ReleaseSlot`).
    SlotReleased {
        /// Task.
        task_id: Uuid,
    },
    /// Cancel these tasks of the tenant (ingest, for a user's request): those not
    /// finished end `cancelled`, and workers running them are told to stop.
    CancelTasks {
        /// Tasks.
        task_ids: Vec<Uuid>,
        /// Why, for the tasks' error text.
        reason: String,
        /// Who decided it (a metric label; absent from older senders: a user).
        #[serde(default)]
        cause: CancelCause,
    },
    /// Skip these queued tasks of the tenant (the scheduler's conditions stage): they
    /// succeed without running, with the output `{"skipped": true}`.
    SkipTasks {
        /// Tasks.
        task_ids: Vec<Uuid>,
        /// Why, for the log.
        reason: String,
    },
    /// A durable task's worker evicted an attempt while it waits (`evict_invocation`):
    /// the task gives its slot back and waits off any worker.
    TaskEvicted {
        /// Task.
        task_id: Uuid,
        /// The attempt evicted.
        attempt: i32,
        /// The worker's reason.
        reason: String,
    },
    /// Queue these evicted durable tasks of the tenant again (what they wait for has
    /// come, or someone restored them); each runs as its next attempt.
    RestoreTasks {
        /// Tasks.
        task_ids: Vec<Uuid>,
    },
    /// Several worker reports of one tenant, in the order they arrived (a dispatcher
    /// publishes what its workers sent in the meantime as one message).
    Reports {
        /// The reports (never nested `Reports`).
        events: Vec<SchedulerEvent>,
    },
}

impl SchedulerEvent {
    /// Its kind, as its `type` tag says it (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RunsCreated { .. } => "runs_created",
            Self::TaskStarted { .. } => "task_started",
            Self::TaskCompleted { .. } => "task_completed",
            Self::TaskFailed { .. } => "task_failed",
            Self::WorkerLost { .. } => "worker_lost",
            Self::AssignmentExpired { .. } => "assignment_expired",
            Self::WorkerReady { .. } => "worker_ready",
            Self::WorkerUnavailable { .. } => "worker_unavailable",
            Self::Wake => "wake",
            Self::TaskTimedOut { .. } => "task_timed_out",
            Self::ScheduleExpired { .. } => "schedule_expired",
            Self::ReplayTasks { .. } => "replay_tasks",
            Self::SlotReleased { .. } => "slot_released",
            Self::CancelTasks { .. } => "cancel_tasks",
            Self::SkipTasks { .. } => "skip_tasks",
            Self::TaskEvicted { .. } => "task_evicted",
            Self::RestoreTasks { .. } => "restore_tasks",
            Self::Reports { .. } => "reports",
        }
    }
}

/// Who cancelled tasks ([`SchedulerEvent::CancelTasks`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelCause {
    /// A request to cancel them or their runs (REST, gRPC, the CLI, a task's own
    /// `ctx.cancel()`); the runs their tasks spawned go with them.
    #[default]
    User,
    /// A concurrency strategy (CANCEL_IN_PROGRESS, CANCEL_NEWEST).
    Concurrency,
    /// A task's `cancel_if` condition.
    Condition,
}

impl CancelCause {
    /// Its name, as a metric label and a span attribute read it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Concurrency => "concurrency",
            Self::Condition => "condition",
        }
    }
}

/// A task queued ready to start (see [`SchedulerEvent::RunsCreated`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedTask {
    /// Task.
    pub task_id: Uuid,
    /// Its action.
    pub action_id: String,
    /// The concurrency keys it must hold, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<adze_core::TaskKeys>,
}

/// What a dispatcher should do with an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Start the task.
    Start,
    /// Cancel the running task.
    Cancel,
}

/// An action for one worker, published on its core subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionMessage {
    /// Worker.
    pub worker_id: Uuid,
    /// Start or cancel.
    pub kind: ActionKind,
    /// Task.
    pub task_id: Uuid,
    /// Run.
    pub run_id: Uuid,
    /// Attempt (`retry_count`).
    pub attempt: i32,
    /// Action id.
    pub action_id: String,
    /// Task name.
    pub readable_id: String,
    /// Workflow name.
    pub workflow_name: String,
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Workflow version id.
    pub workflow_version_id: Uuid,
    /// Action payload JSON.
    pub payload: Value,
    /// A durable task: its `durable_task_invocation_count` is `attempt + 1`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub durable: bool,
    /// Run metadata.
    pub additional_metadata: Option<Value>,
    /// W3C trace context of the run (actions travel in batches, so per action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// When the task was queued for this attempt (a start's; for the metrics of how
    /// long it waited to start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The actions a scheduler batch decided for one worker, in order: one core message
/// per worker per batch instead of one per task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionBatch {
    /// The actions (all for the same worker).
    pub actions: Vec<ActionMessage>,
}

/// A new execution or schedule deadline, earlier than any the sender announced
/// before that has not passed yet (core NATS, to the reapers; a reaper also re-reads
/// the earliest deadline from Postgres after every claim and at least every few
/// seconds, so a lost notice only delays a timeout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadlineSet {
    /// When it falls due.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A run reached a final status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinished {
    /// Run.
    pub run_id: Uuid,
    /// Final status.
    pub status: String,
}

/// A chunk a task streamed, stored (core NATS, on [`crate::Subjects::run_stream`];
/// subscribers read what they missed from Postgres, by `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamChunk {
    /// Its place in the run's stream.
    pub id: i64,
    /// The task that put it.
    pub task_id: Uuid,
    /// The index the SDK gave it.
    pub event_index: Option<i64>,
    /// The chunk (UTF-8; other bytes replaced).
    pub payload: String,
}

/// Runs of one tenant that a scheduler batch finished (core NATS notice, one per
/// tenant per batch; waiters re-check Postgres, so a lost notice only delays them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunsFinished {
    /// The runs.
    pub runs: Vec<RunFinished>,
}

/// One task asking the `ratelimit` service for everything it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcquireItem {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Task.
    pub task_id: Uuid,
    /// What it takes from each key: all of it or nothing.
    pub needs: Vec<adze_core::RateLimitNeed>,
}

/// A batch of tasks asking for their rate-limit units, in queue order: earlier items
/// are served first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcquireRequest {
    /// The tasks.
    pub items: Vec<AcquireItem>,
}

/// What the `ratelimit` service decided for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Grant {
    /// Every unit was taken, in the windows current at `at_ms` (Unix ms).
    Granted {
        /// When.
        at_ms: i64,
    },
    /// Not now: `key` has too few units (or is paused) until `until_ms` (Unix ms).
    Wait {
        /// The key that is short.
        key: String,
        /// When it may have enough.
        until_ms: i64,
        /// Why, in words (paused, not defined, more units than the limit...).
        reason: String,
    },
    /// The service cannot decide (Redis or Postgres is not answering).
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// The answer to an [`AcquireRequest`]: one grant per item, in its order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcquireReply {
    /// Per item.
    pub grants: Vec<Grant>,
}

/// Units granted to a task that was not assigned after all, to give back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundItem {
    /// Tenant.
    pub tenant_id: Uuid,
    /// What was granted.
    pub needs: Vec<adze_core::RateLimitNeed>,
    /// When it was granted (units go back only while that window lasts).
    pub at_ms: i64,
}

/// Units to give back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The grants to undo.
    pub items: Vec<RefundItem>,
}

/// A read of some of a tenant's buckets, for people (the REST rate-limit list): nothing
/// is taken or given back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeekRequest {
    /// Tenant.
    pub tenant_id: Uuid,
    /// The keys to read.
    pub keys: Vec<String>,
}

/// What a bucket's current window has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketUse {
    /// Units taken in the window that started at `window_start_ms`.
    pub used: i64,
    /// When that window started (Unix ms); it is over once its length has passed, and
    /// the bucket is full again.
    pub window_start_ms: i64,
}

/// The answer to a [`PeekRequest`]: per key, in its order, the use of its bucket, or
/// `None` for a key with no bucket (never taken from, or its window long over: full).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeekReply {
    /// Per key (empty when `unavailable`).
    pub buckets: Vec<Option<BucketUse>>,
    /// Why the buckets could not be read (Redis not answering), if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// A timer asking ingest for its run (the reaper, for a due cron tick or schedule):
/// ingest creates it under `key`, an idempotency key of the workflow, so asking again
/// for the same tick or schedule answers the run it already started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FireRequest {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Workflow name (its latest version runs).
    pub workflow: String,
    /// Input.
    pub input: Value,
    /// Additional metadata.
    pub additional_metadata: Value,
    /// Priority.
    pub priority: Option<i16>,
    /// The idempotency key (`cron:<id>:<tick>` or `schedule:<id>`).
    pub key: String,
    /// What started it, for its tasks' action payloads.
    pub triggers: Value,
    /// The task whose child it is: its run, itself, and its key among its children.
    pub parent: Option<(Uuid, Uuid, String)>,
    /// How long `key` is held, in milliseconds.
    pub key_ttl_ms: i64,
    /// The id to create the run with (a durable task's log names its child before the
    /// child exists); a new one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
}

/// Something satisfied an entry of a durable task's log while the task runs on the
/// worker whose subject this is published on: its dispatcher hands the task what it
/// may be handed now (read from Postgres; a lost notice is made up for by the
/// worker's next status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurableNotice {
    /// The durable task.
    pub task_id: Uuid,
}

/// What ingest did with a [`FireRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FireReply {
    /// The run (new, or the one the key already named).
    Run {
        /// Run.
        run_id: Uuid,
    },
    /// Refused for good (no such workflow, parent gone): firing again gives the same.
    Refused {
        /// Why.
        reason: String,
    },
    /// Not now (Postgres is not answering): fire again later.
    Unavailable {
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_notice_without_its_task_list_still_decodes() {
        let id = Uuid::now_v7();
        let old = format!(r#"{{"type":"runs_created","run_ids":["{id}"]}}"#);
        let event: SchedulerEvent = serde_json::from_str(&old).unwrap();
        assert_eq!(
            event,
            SchedulerEvent::RunsCreated {
                run_ids: vec![id],
                ready: None
            }
        );
        // An empty list is a list (no task ready), distinct from no list.
        let listed = SchedulerEvent::RunsCreated {
            run_ids: vec![id],
            ready: Some(Vec::new()),
        };
        let text = serde_json::to_string(&listed).unwrap();
        assert_eq!(
            serde_json::from_str::<SchedulerEvent>(&text).unwrap(),
            listed
        );
    }

    #[test]
    fn a_kind_is_the_events_type_tag() {
        let id = Uuid::now_v7();
        for event in [
            SchedulerEvent::Wake,
            SchedulerEvent::RunsCreated {
                run_ids: vec![id],
                ready: None,
            },
            SchedulerEvent::WorkerReady { worker_id: id },
            SchedulerEvent::Reports { events: Vec::new() },
        ] {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["type"], event.kind());
        }
    }
}
