-- Durable tasks run on their worker's durable slots (Register's slot_config "durable"),
-- apart from its default slots: an orchestrator waiting for its children holds no slot
-- a child needs.
ALTER TABLE workers ADD COLUMN durable_slots integer NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN durable boolean NOT NULL DEFAULT false;

-- The actions whose task is durable in the latest registration of its workflow: the
-- scheduler offers a worker's durable slots to these actions and its default slots to
-- the others.
CREATE TABLE durable_actions (
    tenant_id  uuid NOT NULL,
    action_id  text NOT NULL,
    PRIMARY KEY (tenant_id, action_id)
);
