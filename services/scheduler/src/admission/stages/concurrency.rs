//! Concurrency keys: a task goes on only while each key it carries has fewer live
//! holders than it allows (a run holds its workflow's keys until it ends, an attempt
//! its task's keys while it is on a worker). Over the limit, the key's strategy says
//! what happens: the task waits under the key, off the ready queue, and is read from
//! the key's own queue once the key has room (so a busy key never sits in front of
//! others, and waiting keys are served in turn); or tasks and runs are cancelled
//! (CANCEL_IN_PROGRESS keeps the newest, CANCEL_NEWEST the oldest, the
//! CANCEL_QUEUED_EXCEPT_* strategies one waiting task). Holders are counted from
//! Postgres in each pass (one statement for the pass's keys) plus what the pass
//! itself admitted, so limits hold across restarts and lease changes; tasks with no
//! key cost nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use adze_core::{ConcurrencyKey, ConcurrencyStrategy, WaitReason};
use adze_store::admission::Candidate;
use adze_store::concurrency::Holder;
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::admission::stage::{CancelOrder, Stage, Verdict};

/// How often the keys tasks wait under are read again from Postgres while some wait.
const RELOAD_WAITING: Duration = Duration::from_secs(1);
/// A cancellation asked for is not asked again for this long.
const CANCEL_AGAIN_AFTER: Duration = Duration::from_secs(5);
/// Most tasks read from one waiting key in a pass.
const MAX_HEADS_PER_KEY: i64 = 256;

type KeyId = (Uuid, String);

#[derive(Debug, Default)]
struct State {
    /// Keys tasks wait under, with their `max_runs` (as the tasks carrying them say).
    waiting: HashMap<KeyId, i32>,
    waiting_loaded: Option<Instant>,
    /// Live holders counted this pass, with what the pass admitted: key → (holder,
    /// its run).
    holders: HashMap<KeyId, Vec<(Uuid, Uuid)>>,
    /// Cancellations asked for lately.
    requested: HashMap<Uuid, Instant>,
}

/// The concurrency stage.
#[derive(Debug, Default)]
pub struct Concurrency {
    state: Mutex<State>,
}

impl Concurrency {
    /// A stage that knows of no waiting key yet (it reads them on its first pass).
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What holds `k` for a candidate, and what a strategy cancels in its place: its run
/// for a workflow entry, the task itself for a task entry.
fn holder_of(c: &Candidate, k: &ConcurrencyKey, run_id: Uuid) -> Uuid {
    if k.run_level { run_id } else { c.id }
}

fn reason(k: &ConcurrencyKey, held: usize) -> WaitReason {
    WaitReason::ConcurrencyKey {
        value: k.value.clone(),
        held: held as i64,
        max: k.max_runs,
    }
}

fn cancel_reason(k: &ConcurrencyKey) -> String {
    let what = match k.strategy {
        ConcurrencyStrategy::CancelInProgress => "a newer run took its place",
        ConcurrencyStrategy::CancelNewest | ConcurrencyStrategy::DropNewest => {
            "the key was at its limit when it arrived"
        }
        ConcurrencyStrategy::CancelQueuedExceptNewest => "a newer run waits in its place",
        ConcurrencyStrategy::CancelQueuedExceptOldest => "an older run already waits",
        ConcurrencyStrategy::GroupRoundRobin | ConcurrencyStrategy::QueueNewest => "",
    };
    format!(
        "cancelled by concurrency key {:?} (at most {}, {}): {what}",
        k.value, k.max_runs, k.strategy
    )
}

/// One task competing for a key: a candidate of this pass or one waiting under it.
#[derive(Debug, Clone, Copy)]
struct Contender {
    run_id: Uuid,
    target: Uuid,
}

/// Which targets the strategies of the pass's keys cancel: computed per key from its
/// holders, the candidates carrying it and the tasks waiting under it.
fn plan_cancels(
    key: &ConcurrencyKey,
    holders: &[(Uuid, Uuid)],
    candidates: &[Contender],
    waiting: &[Contender],
) -> Vec<Uuid> {
    let max = key.max_runs.max(1) as usize;
    let room = max.saturating_sub(holders.len());
    let mut queue: Vec<Contender> = waiting.iter().chain(candidates).copied().collect();
    queue.sort_by_key(|c| c.run_id);
    queue.dedup_by_key(|c| c.target);
    match key.strategy {
        ConcurrencyStrategy::GroupRoundRobin | ConcurrencyStrategy::QueueNewest => Vec::new(),
        ConcurrencyStrategy::CancelInProgress => {
            // The newest `max` of everything holding or wanting the key stay.
            let mut all: Vec<Contender> = holders
                .iter()
                .map(|&(holder, run_id)| Contender {
                    run_id,
                    target: holder,
                })
                .chain(queue)
                .collect();
            all.sort_by_key(|c| std::cmp::Reverse(c.run_id));
            all.iter().skip(max).map(|c| c.target).collect()
        }
        ConcurrencyStrategy::CancelNewest | ConcurrencyStrategy::DropNewest => {
            queue.iter().skip(room).map(|c| c.target).collect()
        }
        ConcurrencyStrategy::CancelQueuedExceptNewest => {
            let rest = queue.get(room..).unwrap_or_default();
            let keep = rest.len().saturating_sub(1);
            rest[..keep].iter().map(|c| c.target).collect()
        }
        ConcurrencyStrategy::CancelQueuedExceptOldest => {
            let rest = queue.get(room..).unwrap_or_default();
            rest.iter().skip(1).map(|c| c.target).collect()
        }
    }
}

impl Stage for Concurrency {
    fn name(&self) -> &'static str {
        "concurrency"
    }

    fn begin(&self) {
        self.state().holders.clear();
    }

    fn has_waiting(&self) -> bool {
        !self.state().waiting.is_empty()
    }

    fn waiting<'a>(
        &'a self,
        conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<Vec<Candidate>, adze_store::Error>> {
        Box::pin(async move {
            let reload = {
                let s = self.state();
                match s.waiting_loaded {
                    None => true,
                    Some(at) => !s.waiting.is_empty() && at.elapsed() >= RELOAD_WAITING,
                }
            };
            if reload {
                let keys = adze_store::concurrency::waiting_keys(conn).await?;
                let mut s = self.state();
                s.waiting.clear();
                for w in keys {
                    let limit = w
                        .head
                        .keys
                        .as_ref()
                        .and_then(|t| t.keys.iter().find(|k| k.key == w.key))
                        .map(|k| k.max_runs);
                    if let Some(limit) = limit {
                        s.waiting.insert((w.tenant_id, w.key), limit);
                    }
                }
                s.waiting_loaded = Some(Instant::now());
            }
            let keys: Vec<KeyId> = self.state().waiting.keys().cloned().collect();
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let live = adze_store::concurrency::holders(conn, &keys).await?;
            let asks: Vec<(Uuid, String, i64)> = {
                let mut s = self.state();
                record(&mut s, &keys, live);
                keys.iter()
                    .filter_map(|k| {
                        let max_runs = *s.waiting.get(k)?;
                        let held = s.holders.get(k).map_or(0, Vec::len) as i64;
                        let room = (i64::from(max_runs) - held).min(MAX_HEADS_PER_KEY);
                        // A key that may cancel waiting tasks sees its whole queue in
                        // `admit`; one with no room has nothing to offer.
                        (room > 0).then(|| (k.0, k.1.clone(), room))
                    })
                    .collect()
            };
            adze_store::concurrency::waiting_heads(conn, &asks).await
        })
    }

    fn admit<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        candidates: Vec<Candidate>,
    ) -> BoxFuture<'a, Result<Verdict, adze_store::Error>> {
        Box::pin(async move {
            if candidates
                .iter()
                .all(|c| c.keys.as_ref().is_none_or(|t| t.keys.is_empty()))
            {
                return Ok(Verdict {
                    admitted: candidates,
                    ..Verdict::default()
                });
            }
            // Every key of the candidates, with the entry that carries it.
            let mut keys: HashMap<KeyId, ConcurrencyKey> = HashMap::new();
            for c in &candidates {
                for k in c.keys.iter().flat_map(|t| &t.keys) {
                    keys.entry((c.tenant_id, k.key.clone()))
                        .or_insert_with(|| k.clone());
                }
            }
            let unknown: Vec<KeyId> = {
                let s = self.state();
                keys.keys()
                    .filter(|k| !s.holders.contains_key(*k))
                    .cloned()
                    .collect()
            };
            let live = adze_store::concurrency::holders(conn, &unknown).await?;
            record(&mut self.state(), &unknown, live);
            // The strategies that cancel waiting tasks see every one of them.
            let see_all: Vec<KeyId> = keys
                .iter()
                .filter(|(_, k)| {
                    matches!(
                        k.strategy,
                        ConcurrencyStrategy::CancelInProgress
                            | ConcurrencyStrategy::CancelQueuedExceptNewest
                            | ConcurrencyStrategy::CancelQueuedExceptOldest
                    )
                })
                .map(|(id, _)| id.clone())
                .collect();
            let listed: HashSet<Uuid> = candidates.iter().map(|c| c.id).collect();
            let mut waiting: HashMap<KeyId, Vec<Contender>> = HashMap::new();
            for w in adze_store::concurrency::waiting_on(conn, &see_all).await? {
                if listed.contains(&w.id) {
                    continue;
                }
                let Some(t) = &w.keys else { continue };
                for k in &t.keys {
                    let id = (w.tenant_id, k.key.clone());
                    if see_all.contains(&id) {
                        waiting.entry(id).or_default().push(Contender {
                            run_id: t.run_id,
                            target: holder_of(&w, k, t.run_id),
                        });
                    }
                }
            }
            Ok(self.decide(candidates, &keys, &waiting))
        })
    }
}

/// Records the live holders read for `keys` (none read means none hold).
fn record(s: &mut State, keys: &[KeyId], live: Vec<Holder>) {
    for k in keys {
        s.holders.entry(k.clone()).or_default().clear();
    }
    for h in live {
        s.holders
            .entry((h.tenant_id, h.key))
            .or_default()
            .push((h.holder_id, h.run_id));
    }
}

impl Concurrency {
    fn decide(
        &self,
        candidates: Vec<Candidate>,
        keys: &HashMap<KeyId, ConcurrencyKey>,
        waiting: &HashMap<KeyId, Vec<Contender>>,
    ) -> Verdict {
        let mut s = self.state();
        let state = &mut *s;
        // Cancellations, per key.
        let mut contenders: HashMap<&KeyId, Vec<Contender>> = HashMap::new();
        for c in &candidates {
            let Some(t) = &c.keys else { continue };
            for k in &t.keys {
                let id = (c.tenant_id, k.key.clone());
                let (id, _) = keys.get_key_value(&id).expect("every key was collected");
                let holders = state.holders.get(id).map(Vec::as_slice).unwrap_or_default();
                if k.run_level && holders.iter().any(|&(h, _)| h == t.run_id) {
                    continue; // its run holds the key already
                }
                contenders.entry(id).or_default().push(Contender {
                    run_id: t.run_id,
                    target: holder_of(c, k, t.run_id),
                });
            }
        }
        let mut cancelled: HashMap<Uuid, (Uuid, String)> = HashMap::new();
        for (id, mine) in &contenders {
            let key = &keys[*id];
            let holders = state
                .holders
                .get(*id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let queued = waiting.get(*id).map(Vec::as_slice).unwrap_or_default();
            for target in plan_cancels(key, holders, mine, queued) {
                cancelled
                    .entry(target)
                    .or_insert_with(|| (id.0, cancel_reason(key)));
            }
        }
        let mut verdict = Verdict::default();
        for c in candidates {
            let Some(t) = c.keys.clone().filter(|t| !t.keys.is_empty()) else {
                verdict.admitted.push(c);
                continue;
            };
            let doomed = t
                .keys
                .iter()
                .find(|k| cancelled.contains_key(&holder_of(&c, k, t.run_id)));
            let mut full = None;
            let mut takes = Vec::new();
            for k in &t.keys {
                let id = (c.tenant_id, k.key.clone());
                let holders = state.holders.entry(id).or_default();
                let holder = holder_of(&c, k, t.run_id);
                if holders.iter().any(|&(h, _)| h == holder) {
                    continue;
                }
                if holders.len() >= k.max_runs.max(1) as usize {
                    full.get_or_insert((k, holders.len()));
                } else {
                    takes.push((k.key.clone(), holder));
                }
            }
            match (doomed, full) {
                (Some(k), _) => {
                    let held = state
                        .holders
                        .get(&(c.tenant_id, k.key.clone()))
                        .map_or(0, Vec::len);
                    verdict.deferred.push((c, reason(k, held)));
                }
                (None, Some((k, held))) => {
                    if k.strategy.queues() {
                        verdict.waits_under.insert(c.id, k.key.clone());
                        state
                            .waiting
                            .entry((c.tenant_id, k.key.clone()))
                            .or_insert(k.max_runs);
                    }
                    verdict.deferred.push((c, reason(k, held)));
                }
                (None, None) => {
                    for (key, holder) in takes {
                        state
                            .holders
                            .entry((c.tenant_id, key))
                            .or_default()
                            .push((holder, t.run_id));
                    }
                    verdict.admitted.push(c);
                }
            }
        }
        // Ask for each cancellation once in a while, not at every pass until it lands.
        let now = Instant::now();
        state
            .requested
            .retain(|_, at| now.duration_since(*at) < CANCEL_AGAIN_AFTER);
        let mut orders: HashMap<(Uuid, String), Vec<Uuid>> = HashMap::new();
        for (target, (tenant_id, why)) in cancelled {
            if let std::collections::hash_map::Entry::Vacant(e) = state.requested.entry(target) {
                e.insert(now);
                orders.entry((tenant_id, why)).or_default().push(target);
            }
        }
        verdict.cancels = orders
            .into_iter()
            .map(|((tenant_id, reason), ids)| CancelOrder {
                ending: crate::admission::Ending::Cancel(
                    adze_bus::messages::CancelCause::Concurrency,
                ),
                tenant_id,
                ids,
                reason,
            })
            .collect();
        verdict
    }
}

#[cfg(test)]
mod tests;
