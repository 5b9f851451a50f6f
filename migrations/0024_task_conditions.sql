-- Task conditions (wait_for / skip_if / cancel_if). A task with conditions carries them
-- in `conditions` (adze_core::conditions::TaskConditions) from its creation until the
-- scheduler's conditions stage settles them: it is queued once its parents are done,
-- and the stage then queues it for real (clearing `conditions` and starting its
-- schedule timeout), skips it, cancels it, or holds it back until a sleep ends or an
-- event it listens for comes. `condition_data` holds what met its conditions, by key:
-- an event's payload (written by ingest when the event is committed) or a sleep's
-- duration; its action payload carries it under `triggers`.
ALTER TABLE tasks ADD COLUMN conditions jsonb, ADD COLUMN condition_data jsonb;

-- The event keys tasks with conditions listen for, so that committing an event finds
-- them with one index probe (only tasks still queued with conditions count).
CREATE TABLE task_event_waits (
    tenant_id  uuid NOT NULL,
    event_key  text NOT NULL,
    task_id    uuid NOT NULL,
    PRIMARY KEY (tenant_id, event_key, task_id)
);
