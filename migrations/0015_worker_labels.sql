-- Worker labels ({"model": "gpu", "memory": 64}) from registration and
-- UpsertWorkerLabels, and the labels a task wants of its worker, from its definition
-- and its trigger ([{"key", "value", "required", "comparator", "weight"}]). NULL for
-- the common worker and task with none.
ALTER TABLE workers ADD COLUMN labels jsonb;
ALTER TABLE tasks ADD COLUMN desired_labels jsonb;
