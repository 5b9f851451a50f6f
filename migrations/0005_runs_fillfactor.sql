-- Finishing a run changes only columns no index covers (status, finished_at). With
-- room left on each page the new row version stays on the same page as a heap-only
-- tuple and no index entry is written for it.
ALTER TABLE runs SET (fillfactor = 85);
