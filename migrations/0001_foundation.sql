-- Adze foundation schema. Every row carries tenant_id, and tenant_id leads every
-- index that serves a tenant query.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API tokens are signed JWTs; this table is the revocation list and audit trail.
CREATE TABLE api_tokens (
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    id          uuid NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE workflows (
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    id          uuid NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE workflow_versions (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    workflow_id  uuid NOT NULL,
    version      integer NOT NULL,
    definition   jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, workflow_id, version),
    FOREIGN KEY (tenant_id, workflow_id) REFERENCES workflows(tenant_id, id)
);

CREATE TABLE workflow_tasks (
    tenant_id            uuid NOT NULL,
    workflow_version_id  uuid NOT NULL,
    readable_id          text NOT NULL,
    position             integer NOT NULL,
    action_id            text NOT NULL,
    parents              text[] NOT NULL DEFAULT '{}',
    ancestors            text[] NOT NULL DEFAULT '{}',
    max_retries          integer NOT NULL DEFAULT 0,
    backoff_factor       double precision,
    backoff_max_seconds  integer,
    execution_timeout_ms bigint,
    schedule_timeout_ms  bigint,
    PRIMARY KEY (tenant_id, workflow_version_id, readable_id),
    FOREIGN KEY (tenant_id, workflow_version_id) REFERENCES workflow_versions(tenant_id, id)
);

CREATE TABLE workers (
    tenant_id          uuid NOT NULL REFERENCES tenants(id),
    id                 uuid NOT NULL,
    name               text NOT NULL,
    actions            text[] NOT NULL,
    slots              integer NOT NULL,
    status             text NOT NULL DEFAULT 'active',  -- active | paused | inactive
    dispatcher_id      text NOT NULL,
    sdk                text,
    registered_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX workers_active ON workers (last_heartbeat_at) WHERE status <> 'inactive';

CREATE TABLE runs (
    tenant_id            uuid NOT NULL REFERENCES tenants(id),
    id                   uuid NOT NULL,
    workflow_id          uuid NOT NULL,
    workflow_version_id  uuid NOT NULL,
    workflow_name        text NOT NULL,
    status               text NOT NULL DEFAULT 'queued',
    input                jsonb NOT NULL,
    additional_metadata  jsonb,
    created_at           timestamptz NOT NULL DEFAULT now(),
    finished_at          timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX runs_by_created ON runs (tenant_id, created_at DESC);

CREATE TABLE tasks (
    tenant_id           uuid NOT NULL,
    id                  uuid NOT NULL,
    run_id              uuid NOT NULL,
    readable_id         text NOT NULL,
    action_id           text NOT NULL,
    status              text NOT NULL,
    -- Fencing: every dispatch of the task gets a new attempt; stale reports are dropped.
    attempt             integer NOT NULL DEFAULT 0,
    failures            integer NOT NULL DEFAULT 0,
    max_retries         integer NOT NULL DEFAULT 0,
    backoff_factor      double precision,
    backoff_max_seconds integer,
    parents             text[] NOT NULL DEFAULT '{}',
    ancestors           text[] NOT NULL DEFAULT '{}',
    pending_parents     integer NOT NULL DEFAULT 0,
    output              jsonb,
    error               text,
    -- Why a queued task is not running yet, for humans.
    wait_reason         text,
    not_before          timestamptz NOT NULL DEFAULT now(),
    worker_id           uuid,
    queued_at           timestamptz NOT NULL DEFAULT now(),
    assigned_at         timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz,
    schedule_deadline   timestamptz,
    execution_deadline  timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, run_id, readable_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs(tenant_id, id)
);
-- Admission scans the queue in order across the tenants of a partition.
CREATE INDEX tasks_queue ON tasks (not_before, queued_at) WHERE status = 'queued';
-- Slot accounting and lost-worker repair.
CREATE INDEX tasks_on_worker ON tasks (worker_id) WHERE status IN ('assigned', 'running');
-- Children release: pending tasks of a run.
CREATE INDEX tasks_pending ON tasks (tenant_id, run_id) WHERE status = 'pending';

CREATE TABLE task_attempts (
    tenant_id    uuid NOT NULL,
    task_id      uuid NOT NULL,
    attempt      integer NOT NULL,
    worker_id    uuid,
    status       text NOT NULL,
    error        text,
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    PRIMARY KEY (tenant_id, task_id, attempt)
);

CREATE TABLE task_logs (
    tenant_id   uuid NOT NULL,
    task_id     uuid NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    attempt     integer,
    level       text,
    message     text NOT NULL,
    metadata    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, task_id, id)
);

-- Scheduler partitions are held by lease; one scheduler applies transitions for a
-- partition at a time.
CREATE TABLE scheduler_leases (
    partition   integer PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL
);
