-- Child runs: a run spawned by a task (TriggerWorkflow with parent_id). Keyed by the
-- parent task and the child's index or key (an idempotency_keys row `child:<task>:<key>`
-- claimed when it is created), so a retried parent re-attaches to its children; this
-- table records the family, for cancelling a parent's descendants with it.
CREATE TABLE run_parents (
    tenant_id       uuid NOT NULL,
    run_id          uuid NOT NULL,
    parent_run_id   uuid NOT NULL,
    parent_task_id  uuid NOT NULL,
    child_key       text NOT NULL,
    PRIMARY KEY (tenant_id, run_id)
);
CREATE INDEX run_parents_by_task ON run_parents (tenant_id, parent_task_id);
