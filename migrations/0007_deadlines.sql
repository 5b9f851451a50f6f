-- Deadlines the timeout-reaper sleeps until. A task's timeouts are copied from its
-- workflow version when the run is created, so deadlines are set by the statements that
-- queue and assign it, without a look-up.
ALTER TABLE tasks ADD COLUMN execution_timeout_ms bigint;
ALTER TABLE tasks ADD COLUMN schedule_timeout_ms bigint;

-- Execution deadlines need no index of their own: the attempts on workers are the
-- in-flight index's rows (`tasks_on_worker`, bounded by the fleet's slots), which the
-- reaper reads when it wakes. An index on the deadline cost every assignment one more
-- index insert (Postgres CPU per task +8 % at 200 triggers/s, bench/RESULTS.md).
-- Schedule deadlines of queued tasks, in order: the queue is unbounded.
CREATE INDEX tasks_schedule_deadline ON tasks (schedule_deadline)
    WHERE status = 'queued' AND schedule_deadline IS NOT NULL;
