-- Runs are created in batches, so the runs of one page tend to end together, in one
-- completion statement. Their new versions stay heap-only (no index entry) only while
-- the page has room for all of them: at fillfactor 85 about one in four did.
ALTER TABLE runs SET (fillfactor = 50);
