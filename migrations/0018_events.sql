-- Events as triggers. An event is stored once per (tenant, dedupe key): the key is the
-- idempotency key a publisher gave, else its NATS message id, else the JetStream
-- position of the message that carried it; events pushed over gRPC have none. The
-- runs an event started are committed in the same transaction as the event, and
-- listed in event_runs (with the filter that let each through, if one did).
CREATE TABLE events (
    tenant_id           uuid NOT NULL REFERENCES tenants(id),
    id                  uuid NOT NULL,
    key                 text NOT NULL,
    payload             jsonb NOT NULL,
    additional_metadata jsonb,
    scope               text,
    priority            smallint,
    source              text NOT NULL,   -- grpc | nats
    dedupe_key          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX events_by_created ON events (tenant_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX events_dedupe ON events (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL;

CREATE TABLE event_runs (
    tenant_id  uuid NOT NULL,
    event_id   uuid NOT NULL,
    run_id     uuid NOT NULL,
    filter_id  uuid,
    PRIMARY KEY (tenant_id, event_id, run_id)
);

-- The event triggers of each workflow's latest version (replaced when a new version is
-- registered). `pattern` is a key or a key with `*` wildcards.
CREATE TABLE event_triggers (
    tenant_id    uuid NOT NULL,
    workflow_id  uuid NOT NULL,
    pattern      text NOT NULL,
    PRIMARY KEY (tenant_id, workflow_id, pattern),
    FOREIGN KEY (tenant_id, workflow_id) REFERENCES workflows(tenant_id, id)
);

-- Event filters: for events pushed with a scope, a workflow with filters in that scope
-- runs once for each filter whose CEL expression holds. Declarative filters come from
-- the workflow's registration (default_filters) and are replaced with it.
CREATE TABLE event_filters (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    workflow_id    uuid NOT NULL,
    scope          text NOT NULL,
    expression     text NOT NULL,
    payload        jsonb NOT NULL DEFAULT '{}',
    is_declarative boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, workflow_id) REFERENCES workflows(tenant_id, id)
);
CREATE INDEX event_filters_by_workflow ON event_filters (tenant_id, workflow_id, scope);
