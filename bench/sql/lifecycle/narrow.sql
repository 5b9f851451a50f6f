-- The narrow-queue shape: no index of `tasks` names its status (so status changes can be
-- heap-only, with room left on each page), the ready queue and the tasks holding a
-- worker's slots as tables of their own.
DROP INDEX tasks_evicted, tasks_key_waiting, tasks_on_worker, tasks_pending, tasks_ready, tasks_retry_due, tasks_schedule_deadline;
ALTER TABLE tasks SET (fillfactor = 70);
CREATE TABLE task_queue (tenant_id uuid NOT NULL, action_id text NOT NULL, priority smallint NOT NULL,
  not_before timestamptz NOT NULL, queued_at timestamptz NOT NULL, task_id uuid NOT NULL);
CREATE INDEX task_queue_ready ON task_queue (tenant_id, action_id, priority DESC, not_before, queued_at);
CREATE TABLE task_leases (tenant_id uuid NOT NULL, task_id uuid NOT NULL, worker_id uuid NOT NULL, PRIMARY KEY (tenant_id, task_id));
CREATE INDEX task_leases_worker ON task_leases (worker_id);
