-- Idempotency keys of triggers: a workflow's `idempotency` expression gives each run a
-- key; while the key is held, a trigger with the same key is answered with the run that
-- holds it instead of starting another. A key is held until `expires_at` (method TTL),
-- or while its run is open and at most until `expires_at` (method STATUS). A claim of a
-- key no longer held takes the row over.
CREATE TABLE idempotency_keys (
    tenant_id      uuid NOT NULL,
    workflow_id    uuid NOT NULL,
    key            text NOT NULL,
    run_id         uuid NOT NULL,
    until_finished boolean NOT NULL,
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, workflow_id, key)
);
