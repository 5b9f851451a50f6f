-- The runs list's counts per status without visiting every run of the window.
--
-- Runs are counted per (tenant, workflow, hour of creation): how many were created, and
-- how many of those are final in each final status. The statements that create runs,
-- finish them and reopen them for a replay add what they changed to
-- `run_count_deltas` in the same statement (one row per tenant, workflow, hour and
-- status of the batch: an append to a table without an index, so finishing a run stays
-- a heap-only update of `runs`). The timeout-reaper folds the deltas into `run_counts`
-- every second; readers add both, so a count is exact whether or not the fold has run.
-- A window's open runs are its created runs less its final ones; which of them are
-- still queued is read from the tasks queued or pending, which are indexed.
CREATE TABLE run_counts (
    tenant_id   uuid NOT NULL,
    workflow_id uuid NOT NULL,
    hour        timestamptz NOT NULL,
    -- 'created', or the final status the runs ended in.
    status      text NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY (tenant_id, hour, workflow_id, status)
);

CREATE TABLE run_count_deltas (
    tenant_id   uuid NOT NULL,
    workflow_id uuid NOT NULL,
    hour        timestamptz NOT NULL,
    status      text NOT NULL,
    n           bigint NOT NULL
);

-- The runs there are already.
INSERT INTO run_counts (tenant_id, workflow_id, hour, status, n)
SELECT tenant_id, workflow_id, date_bin('1 hour', created_at, TIMESTAMPTZ 'epoch'), 'created', count(*)
FROM runs GROUP BY 1, 2, 3;

INSERT INTO run_counts (tenant_id, workflow_id, hour, status, n)
SELECT tenant_id, workflow_id, date_bin('1 hour', created_at, TIMESTAMPTZ 'epoch'), status, count(*)
FROM runs WHERE status NOT IN ('queued', 'running') GROUP BY 1, 2, 3, 4;
