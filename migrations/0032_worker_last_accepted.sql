-- When a worker was last handed a task (the dashboard's "last task accepted"), kept on
-- the worker: finished tasks are not indexed by worker, so it cannot be read back from
-- `tasks` once the worker holds none. The assignment statement writes it for every
-- worker of its batch (one update per worker per batch, not per task).
ALTER TABLE workers ADD COLUMN last_task_accepted_at timestamptz;

-- What was shown before: the latest of the tasks each worker holds now.
UPDATE workers w SET last_task_accepted_at = h.at
FROM (SELECT tenant_id, worker_id, max(assigned_at) AS at FROM tasks
      WHERE worker_id IS NOT NULL AND status IN ('assigned', 'running')
      GROUP BY tenant_id, worker_id) h
WHERE w.tenant_id = h.tenant_id AND w.id = h.worker_id;
