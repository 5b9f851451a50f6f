//! Statement texts with the state machine's words spliced in from `adze_core`, so no
//! status, status set or wait reason is spelled twice. They are spliced as literals,
//! not bound as parameters: a predicate like `status = 'queued'` must stay a literal
//! for Postgres to use the partial indexes built on it under generic plans (a bound
//! `status = $1` cannot prove an index's predicate). The partial indexes of
//! `migrations/` spell the same words; `tests/tests/state_machine.rs` checks that
//! they agree with core.
//!
//! Placeholders: `{<task status>}` (`{queued}`, …), `{slot_holding}` (a list for
//! `IN (…)`), `{run_open}`, `{worker_<worker status>}` (`{worker_active}`, …),
//! `{worker_present}`, `{wait_slot}` / `{wait_no_worker}` / `{wait_parents}` (wait
//! reasons), `{candidate}` (the select list of a queued task `t` as
//! `admission::candidate` reads it), `{task_wait_reason}` (why task `t` waits, as
//! people read it) and `{count_run_changes}` (a CTE adding the statement's
//! `run_changes` to the runs list's counts, see [`crate::run_counts`]) and
//! `{run_status}` (the status of run `r`, derived from its tasks while it is open).

use std::sync::OnceLock;

use adze_core::{RunStatus, TaskStatus, WaitReason, WorkerStatus};

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn list<T>(items: &[T], word: impl Fn(&T) -> &str) -> String {
    items
        .iter()
        .map(|i| quoted(word(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What admission reads of a queued task `t`: its sticky run's worker only when it is
/// sticky (a scalar subquery in a `CASE` runs only when its branch is taken),
/// whether it has conditions to settle (the conditions stage reads them), and whether
/// it takes a durable slot.
const CANDIDATE: &str = "t.tenant_id, t.id, t.action_id, t.not_before, t.queued_at, t.priority, \
     t.run_id, t.concurrency, t.rate_limits, t.desired_labels, t.sticky, \
     t.conditions IS NOT NULL AS gated, t.durable, \
     CASE WHEN t.sticky IS NOT NULL THEN \
       (SELECT r.sticky_worker FROM runs r WHERE r.tenant_id = t.tenant_id AND r.id = t.run_id) \
     END AS sticky_worker";

/// Why task `t` waits, in words: its stored reason, except that a task waiting for a
/// slot of an action no present worker serves says so.
const TASK_WAIT_REASON: &str = "CASE WHEN t.status = {queued} AND t.wait_reason = {wait_slot} \
       AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.tenant_id = t.tenant_id \
                       AND w.status IN ({worker_present}) AND t.action_id = ANY(w.actions)) \
     THEN {wait_no_worker} ELSE t.wait_reason END";

/// Replaces every placeholder in `template` with its literal.
pub(crate) fn render(template: &str) -> String {
    // Spliced first: they hold placeholders of their own.
    let mut out = template
        .replace("{task_wait_reason}", TASK_WAIT_REASON)
        .replace("{count_run_changes}", crate::run_counts::COUNT_CHANGES)
        .replace("{run_status}", crate::run_queries::RUN_STATUS);
    for s in TaskStatus::ALL {
        out = out.replace(&format!("{{{}}}", s.as_str()), &quoted(s.as_str()));
    }
    for s in WorkerStatus::ALL {
        out = out.replace(&format!("{{worker_{}}}", s.as_str()), &quoted(s.as_str()));
    }
    let fixed = |r: WaitReason| quoted(r.fixed_text().unwrap_or_default());
    for (token, text) in [
        (
            "{slot_holding}",
            list(&TaskStatus::SLOT_HOLDING, |s| s.as_str()),
        ),
        ("{run_open}", list(&RunStatus::OPEN, |s| s.as_str())),
        (
            "{worker_present}",
            list(&WorkerStatus::PRESENT, |s| s.as_str()),
        ),
        ("{wait_slot}", fixed(WaitReason::Slot)),
        ("{wait_no_worker}", fixed(WaitReason::NoWorker)),
        ("{wait_parents}", fixed(WaitReason::Parents)),
        ("{candidate}", CANDIDATE.to_string()),
    ] {
        out = out.replace(token, &text);
    }
    out
}

/// A statement rendered once, on first use.
pub(crate) struct Sql {
    template: &'static str,
    rendered: OnceLock<String>,
}

impl Sql {
    pub(crate) const fn new(template: &'static str) -> Self {
        Self {
            template,
            rendered: OnceLock::new(),
        }
    }

    /// The statement's text.
    pub(crate) fn text(&self) -> &str {
        self.rendered.get_or_init(|| render(self.template))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_come_from_core_and_other_braces_stay() {
        let r = render(
            "status = {queued} AND s IN ({slot_holding}) AND r IN ({run_open}) \
             AND w = {wait_slot} AND j = '{}'::jsonb AND {fence}",
        );
        assert_eq!(
            r,
            "status = 'queued' AND s IN ('assigned', 'running') AND r IN ('queued', 'running') \
             AND w = 'waiting for a worker slot' AND j = '{}'::jsonb AND {fence}"
        );
    }
}
