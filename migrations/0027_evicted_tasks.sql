-- Evicted durable tasks, for the timeout-reaper's look for one whose restoration was
-- lost (what it waited for came, yet it is still evicted).
CREATE INDEX tasks_evicted ON tasks (tenant_id, id) WHERE status = 'evicted';
