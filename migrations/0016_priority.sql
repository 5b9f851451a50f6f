-- Priority (1 to 3, higher first): a run's tasks are served before those of lower
-- priority in their queue, oldest first within a priority. Adding a column with a
-- constant default rewrites nothing; the queue indexes are rebuilt with it first.
ALTER TABLE tasks ADD COLUMN priority smallint NOT NULL DEFAULT 1;

DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (tenant_id, action_id, priority DESC, not_before, queued_at)
    WHERE status = 'queued' AND key_blocked IS NULL;
DROP INDEX tasks_key_waiting;
CREATE INDEX tasks_key_waiting ON tasks (tenant_id, key_blocked, priority DESC, not_before, queued_at)
    WHERE status = 'queued' AND key_blocked IS NOT NULL;
