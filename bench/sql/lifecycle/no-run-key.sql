-- Tasks without their (tenant, run, readable id) key.
ALTER TABLE tasks DROP CONSTRAINT tasks_tenant_id_run_id_readable_id_key;
