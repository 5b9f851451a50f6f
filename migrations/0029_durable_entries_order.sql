-- What a durable task's invocation is handed next: its ordered entries after the last
-- satisfied order it was handed (a stream keeps that mark), without reading the whole
-- log at every call.
CREATE INDEX durable_entries_order ON durable_entries (tenant_id, task_id, satisfied_order)
    WHERE satisfied_order IS NOT NULL;
