//! Limits enforced at the edge, shared by every service that checks them.

/// Largest accepted input or output payload (JSON text), in bytes. Payloads travel in
/// NATS messages, whose default `max_payload` is 1 MiB; an action carries the run input
/// and its ancestors' outputs, so one payload is held well below that.
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;

/// Longest error text kept for a failed attempt; longer ones are cut (tail dropped).
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Largest accepted number of tasks in one workflow.
pub const MAX_TASKS_PER_WORKFLOW: usize = 2_000;

/// Largest number of runs accepted by one bulk trigger.
pub const MAX_BULK_TRIGGER: usize = 1_000;
