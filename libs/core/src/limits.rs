//! Limits enforced at the edge, shared by every service that checks them.

/// Largest accepted input or output payload (JSON text), in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// Largest accepted number of tasks in one workflow.
pub const MAX_TASKS_PER_WORKFLOW: usize = 2_000;

/// Largest number of runs accepted by one bulk trigger.
pub const MAX_BULK_TRIGGER: usize = 1_000;
