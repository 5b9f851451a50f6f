-- What started a run other than a direct trigger, as the SDKs read it from a task's
-- action payload (`triggers`): for a run an event started, the event's id and key and
-- the payload of the filter that let it through. NULL for every directly triggered run,
-- so the hot statements carry one NULL column.
ALTER TABLE runs ADD COLUMN triggers jsonb;
