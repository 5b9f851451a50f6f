-- A durable wait's lookback (`event_scope` with `consider_events_since`): when the wait
-- is registered, the tenant's events with its key and scope stored since then, oldest
-- first. Only scoped events are indexed: a lookback needs a scope, and most events
-- have none (they cost the index nothing).
CREATE INDEX events_lookback ON events (tenant_id, key, scope, created_at)
    WHERE scope IS NOT NULL;
