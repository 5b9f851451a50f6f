-- The rate-limit units each attempt of a task takes, evaluated at trigger:
-- [{"k": key, "u": units, "l": a dynamic key's limit, "w": its window in ms}].
-- NULL for the common task with none.
ALTER TABLE tasks ADD COLUMN rate_limits jsonb;
