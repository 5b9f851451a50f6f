-- Concurrency keys. Each task carries the keys it must hold to run (its workflow's
-- entries, held by the run, and its own, held by the attempt), evaluated at trigger:
-- [{"k": stored key, "v": value, "m": max holders, "s": strategy, "r": run-level}].
-- NULL for the common task with none, which costs admission nothing.
ALTER TABLE tasks ADD COLUMN concurrency jsonb;
-- A queued task whose key was full when admission looked waits off the ready queue,
-- under that key, until the key has room: tasks held back by a busy key never sit in
-- front of runnable ones, and each waiting key is read from its own head.
ALTER TABLE tasks ADD COLUMN key_blocked text;

DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (tenant_id, action_id, not_before, queued_at)
    WHERE status = 'queued' AND key_blocked IS NULL;
CREATE INDEX tasks_key_waiting ON tasks (tenant_id, key_blocked, not_before, queued_at)
    WHERE status = 'queued' AND key_blocked IS NOT NULL;

-- Who holds a key: a run (workflow-level key, from its first admitted task) or a
-- task (task-level key). A row is written when its holder is assigned; whether it
-- still holds is read from the holder's own status (a task on a worker, a run not
-- finished), so a holder that ended by any path frees its place without a write.
-- Rows of ended holders are deleted when their key is next counted.
CREATE TABLE concurrency_holds (
    tenant_id  uuid NOT NULL,
    key        text NOT NULL,
    holder_id  uuid NOT NULL,
    run_id     uuid NOT NULL,
    run_level  boolean NOT NULL,
    PRIMARY KEY (tenant_id, key, holder_id)
);
