-- Sticky assignment. A sticky run's tasks carry its strategy (`SOFT` or `HARD`;
-- NULL for every other task, so the hot statements read one NULL column); the run
-- records its sticky worker: the worker its trigger named, or else the worker its
-- first assigned task went to (written by the assignment statement, only for sticky
-- tasks). The candidate statements read it for sticky tasks only.
ALTER TABLE runs ADD COLUMN sticky_worker uuid;
ALTER TABLE tasks ADD COLUMN sticky text;
