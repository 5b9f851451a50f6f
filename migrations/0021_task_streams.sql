-- Chunks a task streams while it runs (PutStreamEvent), kept in order so a subscriber
-- that comes late still reads them all, then the live ones.
CREATE TABLE task_streams (
    tenant_id   uuid NOT NULL,
    run_id      uuid NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    task_id     uuid NOT NULL,
    event_index bigint,
    message     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id, id)
);
