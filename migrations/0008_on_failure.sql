-- On-failure tasks: defined with the workflow version (flagged), created in a run only
-- when the run fails, so a run that succeeds carries no row for it.
ALTER TABLE workflow_tasks ADD COLUMN on_failure boolean NOT NULL DEFAULT false;
ALTER TABLE tasks ADD COLUMN on_failure boolean NOT NULL DEFAULT false;
-- True while a run's workflow has an on-failure task that this run has not created:
-- such a run whose tasks all ended with a failure is not finished yet.
ALTER TABLE runs ADD COLUMN on_failure_pending boolean NOT NULL DEFAULT false;
