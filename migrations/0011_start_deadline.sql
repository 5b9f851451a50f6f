-- When an assignment must have started: set by the scheduler's assignment statement,
-- claimed and cleared by the timeout-reaper (which then reassigns the task). Read
-- through the in-flight index `tasks_on_worker`, like the execution deadline, so it
-- costs no index entry of its own.
ALTER TABLE tasks ADD COLUMN start_deadline timestamptz;
