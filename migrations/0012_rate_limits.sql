-- Rate-limit definitions (PutRateLimit) and pauses (PauseRateLimit), per tenant and key.
-- The buckets themselves will live in Redis; these rows are what a Redis restart must
-- not lose. A paused dynamic key may have no definition of its own (its limit comes
-- from the task's expression), hence the nullable limit.
CREATE TABLE rate_limits (
    tenant_id    uuid NOT NULL REFERENCES tenants(id),
    key          text NOT NULL,
    limit_value  integer,
    duration     text,
    paused_until timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
