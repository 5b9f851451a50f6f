-- Admission reads the ready queue per (tenant, action): one index range in order,
-- read no further than the free slots of the workers serving that action. The old
-- index led with not_before, so a query filtered on tenant and action could be
-- planned as a bitmap over the primary key instead.
DROP INDEX tasks_queue;
CREATE INDEX tasks_ready ON tasks (tenant_id, action_id, not_before, queued_at) WHERE status = 'queued';

-- The hot tables churn: vacuum and analyze them by a small fixed share, not the
-- default fifth of a table that keeps growing, so dead queue entries and stale
-- statistics do not pile up.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02,
                       autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE runs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
                      autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);

-- Foreign keys on the two hot tables cost a lookup per inserted row. Runs and their
-- tasks are written together in one transaction by the store, for a tenant that was
-- authenticated first; the checks added nothing those writes do not already ensure.
ALTER TABLE runs DROP CONSTRAINT runs_tenant_id_fkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_tenant_id_run_id_fkey;
