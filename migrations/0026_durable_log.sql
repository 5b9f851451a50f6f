-- Durable tasks' event logs (adze_core::durable). One log per durable task: the
-- invocation its node counter counts for (each invocation replays from node 1), the
-- active branch, and the last satisfied order given.
CREATE TABLE durable_logs (
    tenant_id      uuid NOT NULL,
    task_id        uuid NOT NULL,
    invocation     integer NOT NULL,
    latest_node    bigint NOT NULL DEFAULT 0,
    branch         bigint NOT NULL DEFAULT 1,
    latest_branch  bigint NOT NULL DEFAULT 1,
    latest_order   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, task_id)
);

-- Branches after the first: nodes from first_node on are the branch's own, those
-- before it are read from parent.
CREATE TABLE durable_branches (
    tenant_id   uuid NOT NULL,
    task_id     uuid NOT NULL,
    branch      bigint NOT NULL,
    parent      bigint NOT NULL,
    first_node  bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, task_id, branch)
);

-- One entry per durable call: what was asked (kind, idempotency key, in words), by
-- which invocation, and how it ended. A run entry names its child run from the start
-- (the id it is created with), so a child that ends at once still finds its entry. A
-- wait entry carries its conditions, the event payloads that met some of them, and
-- when its next sleep ends (the timeout-reaper's deadline).
CREATE TABLE durable_entries (
    tenant_id        uuid NOT NULL,
    task_id          uuid NOT NULL,
    branch           bigint NOT NULL,
    node             bigint NOT NULL,
    kind             text NOT NULL,
    key              text NOT NULL,
    what             text NOT NULL,
    invocation       integer NOT NULL,
    spawn_key        text,
    child_run_id     uuid,
    conditions       jsonb,
    hits             jsonb,
    armed_at         timestamptz NOT NULL DEFAULT now(),
    wake_at          timestamptz,
    label            text,
    satisfied_at     timestamptz,
    satisfied_order  bigint,
    result           bytea,
    is_failure       boolean NOT NULL DEFAULT false,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, task_id, branch, node)
);
-- A child is spawned once per (task, branch, key): a replay re-attaches to it.
CREATE UNIQUE INDEX durable_entries_spawn ON durable_entries (tenant_id, task_id, branch, spawn_key)
    WHERE spawn_key IS NOT NULL;
-- A child run that ends satisfies its entry.
CREATE INDEX durable_entries_child ON durable_entries (tenant_id, child_run_id)
    WHERE child_run_id IS NOT NULL AND satisfied_at IS NULL;
-- The timeout-reaper's deadlines: waits whose next sleep ends.
CREATE INDEX durable_entries_wake ON durable_entries (wake_at)
    WHERE wake_at IS NOT NULL AND satisfied_at IS NULL;

-- The event keys open waits listen for, so that committing an event finds them with
-- one index probe.
CREATE TABLE durable_event_waits (
    tenant_id  uuid NOT NULL,
    event_key  text NOT NULL,
    task_id    uuid NOT NULL,
    branch     bigint NOT NULL,
    node       bigint NOT NULL,
    PRIMARY KEY (tenant_id, event_key, task_id, branch, node)
);

-- A run spawned by a durable task: its end satisfies the task's entry (the
-- scheduler looks only at runs that have one).
ALTER TABLE runs ADD COLUMN durable_parent boolean NOT NULL DEFAULT false;
