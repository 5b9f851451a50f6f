//! Per-sequence timestamps of one measured phase, and the hub that routes worker starts
//! and finished-run notices to the phase they belong to.
//!
//! Every timestamp is wall-clock nanoseconds since the Unix epoch, so the Python scripts of
//! the `wire` scenario (another process) can be merged with the same arithmetic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds since the Unix epoch (0 before 1970, never in practice).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Timestamps of one phase: per sequence number when it was sent, acknowledged,
/// started and ended (per step) and finished. 0 means "not observed".
pub struct Recorder {
    /// Phase id carried in every task input of this phase.
    pub phase: u32,
    /// Tasks per run that record a start (1 for single-task workflows).
    pub steps: usize,
    sent: Box<[AtomicU64]>,
    acked: Box<[AtomicU64]>,
    started: Box<[AtomicU64]>,
    ended: Box<[AtomicU64]>,
    done: Box<[AtomicU64]>,
    completed: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

fn zeros(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn set_once(slot: Option<&AtomicU64>, ns: u64) -> bool {
    slot.is_some_and(|s| {
        s.compare_exchange(0, ns, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    })
}

impl Recorder {
    fn new(phase: u32, capacity: usize, steps: usize) -> Self {
        let steps = steps.max(1);
        Recorder {
            phase,
            steps,
            sent: zeros(capacity),
            acked: zeros(capacity),
            started: zeros(capacity * steps),
            ended: zeros(capacity * steps),
            done: zeros(capacity),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// How many sequence numbers fit.
    pub fn capacity(&self) -> usize {
        self.sent.len()
    }

    /// The trigger for `seq` is being sent now.
    pub fn sent(&self, seq: u32, ns: u64) {
        set_once(self.sent.get(seq as usize), ns);
    }

    /// The engine acknowledged the trigger for `seq`.
    pub fn acked(&self, seq: u32, ns: u64) {
        set_once(self.acked.get(seq as usize), ns);
    }

    /// A handler of run `seq` started step `step`; false if a start was recorded
    /// already (a retry, or a second run of the same input).
    pub fn started(&self, seq: u32, step: usize, ns: u64) -> bool {
        set_once(self.started.get(seq as usize * self.steps + step), ns)
    }

    /// A handler of run `seq` returned from step `step`.
    pub fn ended(&self, seq: u32, step: usize, ns: u64) {
        set_once(self.ended.get(seq as usize * self.steps + step), ns);
    }

    fn finished(&self, seq: u32, ns: u64) {
        if set_once(self.done.get(seq as usize), ns) {
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A trigger failed.
    pub fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert(message);
    }

    /// Runs whose finished notice arrived.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Failed triggers.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The first trigger error, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn read(slots: &[AtomicU64], i: usize) -> u64 {
        slots.get(i).map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// Send time of `seq` (0 if never sent).
    pub fn sent_at(&self, seq: usize) -> u64 {
        Self::read(&self.sent, seq)
    }

    /// Acknowledgement time of `seq`.
    pub fn acked_at(&self, seq: usize) -> u64 {
        Self::read(&self.acked, seq)
    }

    /// Start time of step `step` of `seq`.
    pub fn started_at(&self, seq: usize, step: usize) -> u64 {
        Self::read(&self.started, seq * self.steps + step)
    }

    /// End time of step `step` of `seq`.
    pub fn ended_at(&self, seq: usize, step: usize) -> u64 {
        Self::read(&self.ended, seq * self.steps + step)
    }

    /// Finish time of `seq`.
    pub fn done_at(&self, seq: usize) -> u64 {
        Self::read(&self.done, seq)
    }
}

#[derive(Default)]
struct RunIndex {
    /// run id → (phase, seq), from trigger responses.
    by_run: HashMap<u128, (u32, u32)>,
    /// Finished notices of runs not bound yet (the notice can beat the trigger response,
    /// and the `wire` scenario learns run ids only after its client exits).
    early: HashMap<u128, u64>,
}

/// Routes events to the recorder of their phase.
#[derive(Default)]
pub struct Hub {
    phases: RwLock<HashMap<u32, Arc<Recorder>>>,
    runs: Mutex<RunIndex>,
    next_phase: AtomicU32,
}

impl Hub {
    /// Opens a phase with room for `capacity` sequence numbers of `steps` steps each.
    pub fn begin(&self, capacity: usize, steps: usize) -> Arc<Recorder> {
        let phase = self.next_phase.fetch_add(1, Ordering::Relaxed) + 1;
        let recorder = Arc::new(Recorder::new(phase, capacity, steps));
        let mut phases = self.phases.write().unwrap_or_else(PoisonError::into_inner);
        phases.insert(phase, recorder.clone());
        recorder
    }

    /// Closes a phase: later events of it are ignored (its unfinished runs still count
    /// as [`Hub::outstanding`] until their notices arrive).
    pub fn end(&self, phase: u32) {
        let mut phases = self.phases.write().unwrap_or_else(PoisonError::into_inner);
        phases.remove(&phase);
        drop(phases);
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let horizon = now_ns().saturating_sub(600_000_000_000);
        runs.early.retain(|_, at| *at > horizon);
    }

    /// Runs the bench triggered whose finished notice has not arrived, in any phase.
    pub fn outstanding(&self) -> usize {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_run
            .len()
    }

    /// The recorder of an open phase.
    pub fn recorder(&self, phase: u32) -> Option<Arc<Recorder>> {
        let phases = self.phases.read().unwrap_or_else(PoisonError::into_inner);
        phases.get(&phase).cloned()
    }

    /// Associates a run id (from the trigger response, or for runs an event started,
    /// from the handler's context when it starts) with its sequence number.
    pub fn bind(&self, recorder: &Recorder, seq: u32, run_id: &str) {
        let Ok(id) = uuid::Uuid::parse_str(run_id) else {
            recorder.error(format!(
                "the engine answered a run id that is no UUID: {run_id:?}"
            ));
            return;
        };
        let early = {
            let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
            match runs.early.remove(&id.as_u128()) {
                Some(at) => Some(at),
                None => {
                    runs.by_run.insert(id.as_u128(), (recorder.phase, seq));
                    None
                }
            }
        };
        if let Some(at) = early {
            recorder.finished(seq, at);
        }
    }

    /// A finished-run notice arrived at `ns`.
    pub fn finished(&self, run_id: u128, ns: u64) {
        let target = {
            let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
            match runs.by_run.remove(&run_id) {
                Some(target) => Some(target),
                None => {
                    runs.early.insert(run_id, ns);
                    None
                }
            }
        };
        if let Some((phase, seq)) = target
            && let Some(recorder) = self.recorder(phase)
        {
            recorder.finished(seq, ns);
        }
    }
}
