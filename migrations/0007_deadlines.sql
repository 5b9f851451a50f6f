-- Deadlines the timeout-reaper sleeps until. A task's timeouts are copied from its
-- workflow version when the run is created, so deadlines are set by the statements that
-- queue and assign it, without a look-up.
ALTER TABLE tasks ADD COLUMN execution_timeout_ms bigint;
ALTER TABLE tasks ADD COLUMN schedule_timeout_ms bigint;

-- Execution deadlines of the attempts on workers, in order. The predicate spells
-- TaskStatus::SLOT_HOLDING (tests/tests/state_machine.rs checks it): a task leaving
-- those statuses leaves the index without its deadline being cleared.
CREATE INDEX tasks_execution_deadline ON tasks (execution_deadline)
    WHERE status IN ('assigned', 'running') AND execution_deadline IS NOT NULL;
-- Schedule deadlines of queued tasks, in order.
CREATE INDEX tasks_schedule_deadline ON tasks (schedule_deadline)
    WHERE status = 'queued' AND schedule_deadline IS NOT NULL;
