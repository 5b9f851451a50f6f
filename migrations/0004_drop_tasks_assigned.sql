-- The reaper's scan for assignments nobody started reads the in-flight index
-- (`tasks_on_worker`, bounded by the workers' slots) instead; one index fewer to write on
-- every assignment.
DROP INDEX IF EXISTS tasks_assigned;
