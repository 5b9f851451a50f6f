-- Retries waiting out their backoff, by when they are due: the reaper sleeps until the
-- next one and wakes the scheduler then (instead of scanning the queue every 250 ms).
-- Only tasks queued again (attempt > 0) are in it: a first attempt adds no entry.
CREATE INDEX tasks_retry_due ON tasks (not_before) WHERE status = 'queued' AND attempt > 0;
