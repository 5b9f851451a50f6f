-- W3C trace context of each run, created at trigger time and carried on every message
-- about the run, so one run is one trace across services.
ALTER TABLE runs ADD COLUMN traceparent text;

-- The reaper's scan for assignments nobody started.
CREATE INDEX tasks_assigned ON tasks (assigned_at) WHERE status = 'assigned';
