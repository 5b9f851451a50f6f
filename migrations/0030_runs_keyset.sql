-- Lists of runs page by (created_at, id), newest first: a page after a cursor is an
-- index range, however deep. Replaces runs_by_created, whose order it extends.
CREATE INDEX runs_by_created_id ON runs (tenant_id, created_at DESC, id DESC);
DROP INDEX runs_by_created;
