-- Crons and scheduled runs: timers the timeout-reaper fires. A due row is claimed
-- `FOR UPDATE SKIP LOCKED` by one reaper, which asks ingest to create its run under an
-- idempotency key naming the cron tick (`cron:<id>:<tick>`) or the schedule
-- (`schedule:<id>`), then advances the cron or records the schedule's run in the same
-- transaction: a tick or a schedule starts one run even with several reapers, and a
-- reaper that dies between ingest's commit and its own is answered with the same run
-- by whichever reaper claims the row next.

-- A cron: `expression` (5 fields, or 6 with seconds first, or @hourly and the like, in
-- UTC) starts a run of the workflow's latest version at each tick, with `input` and
-- `additional_metadata`. `next_tick` is the tick to fire next; a reaper that finds it
-- passed fires it once and moves to the first tick after its clock, so ticks missed
-- while nothing ran fire once on recovery, not once each. `method` is DEFAULT for
-- crons declared with the workflow (replaced with its versions) and API for crons
-- created over REST.
CREATE TABLE cron_triggers (
    tenant_id           uuid NOT NULL,
    id                  uuid NOT NULL,
    workflow_id         uuid NOT NULL,
    name                text,
    expression          text NOT NULL,
    input               jsonb NOT NULL DEFAULT '{}',
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    priority            smallint,
    method              text NOT NULL CHECK (method IN ('DEFAULT', 'API')),
    enabled             boolean NOT NULL DEFAULT true,
    next_tick           timestamptz NOT NULL,
    last_tick           timestamptz,
    last_run_id         uuid,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, workflow_id) REFERENCES workflows(tenant_id, id)
);
-- One API cron per (workflow, name, expression); one declared cron per expression.
CREATE UNIQUE INDEX cron_triggers_api_name
    ON cron_triggers (tenant_id, workflow_id, name, expression) WHERE method = 'API';
CREATE UNIQUE INDEX cron_triggers_declared
    ON cron_triggers (tenant_id, workflow_id, expression) WHERE method = 'DEFAULT';
CREATE INDEX cron_triggers_due ON cron_triggers (next_tick) WHERE enabled;
CREATE INDEX cron_triggers_by_created ON cron_triggers (tenant_id, created_at DESC, id DESC);

-- A run to start at `trigger_at` (one that has passed when created fires at once).
-- `fired_at` is set when it fired, with `run_id`, or with `error` when ingest refused
-- the run for good (its parent task is gone, say). A schedule made from inside a task (ScheduleWorkflow
-- with parent_id) starts a child run of that task.
CREATE TABLE scheduled_runs (
    tenant_id           uuid NOT NULL,
    id                  uuid NOT NULL,
    workflow_id         uuid NOT NULL,
    trigger_at          timestamptz NOT NULL,
    input               jsonb NOT NULL DEFAULT '{}',
    additional_metadata jsonb NOT NULL DEFAULT '{}',
    priority            smallint,
    method              text NOT NULL CHECK (method IN ('DEFAULT', 'API')),
    parent_run_id       uuid,
    parent_task_id      uuid,
    child_key           text,
    run_id              uuid,
    error               text,
    fired_at            timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, workflow_id) REFERENCES workflows(tenant_id, id)
);
CREATE INDEX scheduled_runs_due ON scheduled_runs (trigger_at) WHERE fired_at IS NULL;
CREATE INDEX scheduled_runs_by_trigger ON scheduled_runs (tenant_id, trigger_at DESC, id DESC);
