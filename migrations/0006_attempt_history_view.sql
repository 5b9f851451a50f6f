-- A task's attempts: those that ended without success are rows of task_attempts (the
-- task row is overwritten when it is retried); the attempt that succeeded is described
-- by the task row itself, so the hot path writes no history row for it. Rows written
-- for successes before this migration are read from task_attempts, once.
CREATE VIEW task_attempt_history AS
SELECT tenant_id, task_id, attempt, worker_id, status, error, assigned_at, started_at, finished_at
FROM task_attempts
UNION ALL
SELECT t.tenant_id, t.id, t.attempt, t.worker_id, t.status, t.error, t.assigned_at, t.started_at, t.finished_at
FROM tasks t
WHERE t.status = 'succeeded'
  AND NOT EXISTS (SELECT 1 FROM task_attempts a
                  WHERE a.tenant_id = t.tenant_id AND a.task_id = t.id AND a.attempt = t.attempt);
