-- A task that released its worker slot early (ReleaseSlot) keeps running but no longer
-- counts against its worker's slots; reset when the task is queued again.
ALTER TABLE tasks ADD COLUMN slot_released boolean NOT NULL DEFAULT false;
