//! Error types: [`SdkError`] for client and worker operations, [`TaskError`] for task
//! handlers.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Errors returned by the client, the worker and the task [`Context`](crate::Context).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The client configuration is missing or invalid (token, address, TLS strategy).
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// A TLS file (`HATCHET_CLIENT_TLS_*`) could not be read, or does not hold what it
    /// should.
    #[error("cannot use {setting} {}", .path.display())]
    TlsFile {
        /// The setting naming the file, e.g. `HATCHET_CLIENT_TLS_ROOT_CA_FILE`.
        setting: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The API token could not be decoded.
    #[error("invalid HATCHET_CLIENT_TOKEN: {0}")]
    InvalidToken(String),

    /// A workflow definition is invalid (duplicate task, unknown parent, cycle...).
    #[error("invalid workflow: {0}")]
    InvalidWorkflow(String),

    /// The gRPC channel could not be created or connected.
    #[error("cannot connect to the engine at {address}")]
    Connect {
        /// The `host:port` the client tried.
        address: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },

    /// An RPC returned an error status. Shown as the engine's message and the code's
    /// name, then, when the call never reached the engine, the transport's causes (a
    /// refused TLS handshake, a connection closed with a reason); the status is not also
    /// a `source`, or an error chain would print it twice.
    #[error(
        "{method} failed: {} ({:?}){}",
        .status.message(),
        .status.code(),
        transport_causes(.status)
    )]
    Rpc {
        /// The gRPC method, e.g. `Dispatcher.Register`.
        method: &'static str,
        /// The status returned by the engine ([`SdkError::status`]).
        status: Box<tonic::Status>,
    },

    /// A workflow run finished with failed (or cancelled) tasks.
    #[error("workflow run {run_id} failed: {}", format_errors(.errors))]
    RunFailed {
        /// The workflow run id.
        run_id: String,
        /// Error message per failed task name.
        errors: BTreeMap<String, String>,
    },

    /// A run result has no output for the requested task.
    #[error("no output for task \"{task}\" (is it an ancestor of this task / part of this run?)")]
    MissingTaskOutput {
        /// The task name that was looked up.
        task: String,
    },

    /// A JSON value could not be decoded into the requested type.
    #[error("cannot decode {what}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A REST call was refused, or could not be made.
    #[error("{call} failed: {message}")]
    Rest {
        /// The call, e.g. `POST .../tasks/cancel`.
        call: String,
        /// The HTTP status, when the engine answered.
        status: Option<u16>,
        /// The engine's description, or the transport's error.
        message: String,
    },

    /// A value could not be encoded as JSON.
    #[error("cannot encode {what} as JSON")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A durable task's code no longer matches its event log: replaying it, the durable
    /// call at `node` is not the one the log holds there (the code changed, or depends
    /// on something else than its input and the answers of durable calls). The task
    /// fails without retries, whatever error the handler turns this into.
    #[error(
        "durable task {task} (invocation {invocation}) diverged from its event log at node {node}: {message}"
    )]
    NonDeterminism {
        /// The durable task's run id.
        task: String,
        /// The invocation that made the call.
        invocation: i32,
        /// The node of the event log the call met (0 if the engine did not say).
        node: i64,
        /// The engine's description: what the log expected and what it received.
        message: String,
    },

    /// A durable call failed: the engine refused it, did not answer in time, or the
    /// durable stream dropped while the call waited for its answer. Retrying the task
    /// replays it from its event log.
    #[error("durable call of task {task} failed: {message}")]
    Durable {
        /// The durable task's run id.
        task: String,
        /// What went wrong.
        message: String,
    },

    /// A child run spawned by a durable task failed or was cancelled.
    #[error("child run {run_id} failed: {message}")]
    ChildFailed {
        /// The child's workflow run id.
        run_id: String,
        /// The child's error, as the engine reported it.
        message: String,
    },

    /// The durable task's invocation was taken off this worker (evicted) while the call
    /// waited; the engine runs the task again later, replaying its event log.
    #[error("durable task {task} (invocation {invocation}) was evicted: {reason}")]
    Evicted {
        /// The durable task's run id.
        task: String,
        /// The evicted invocation.
        invocation: i32,
        /// Why, as the engine or the worker put it.
        reason: String,
    },
}

/// The causes tonic keeps behind a status it made from a transport failure, each
/// after `: ` (empty for a status the engine answered): without them a refused
/// handshake reads only "operation was canceled".
fn transport_causes(status: &tonic::Status) -> String {
    let mut text = String::new();
    let mut cause = std::error::Error::source(status);
    while let Some(c) = cause {
        let line = c.to_string();
        if line != status.message() && !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

impl SdkError {
    pub(crate) fn rpc(method: &'static str, status: tonic::Status) -> Self {
        SdkError::Rpc {
            method,
            status: Box::new(status),
        }
    }

    /// The run already holding the idempotency key of a trigger the engine answered
    /// "idempotency key collision" (`ALREADY_EXISTS`), if this is that error.
    pub fn existing_run_id(&self) -> Option<String> {
        use prost::Message;
        let status = self.status()?;
        if status.code() != tonic::Code::AlreadyExists {
            return None;
        }
        let rich = adze_proto::rpc::Status::decode(status.details()).ok()?;
        rich.details.iter().find_map(|d| {
            if d.type_url.ends_with("/v1.IdempotencyCollisionError") {
                adze_proto::v1::IdempotencyCollisionError::decode(d.value.as_slice())
                    .ok()
                    .map(|c| c.existing_run_external_id)
            } else {
                None
            }
        })
    }

    /// The gRPC status of an [`SdkError::Rpc`] error.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            SdkError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }
}

fn format_errors(errors: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|(task, err)| format!("{task}: {err}"))
        .collect();
    parts.join("; ")
}

/// Whether the engine may retry a failed task attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskErrorKind {
    /// Retried while the task has retries left.
    Retryable,
    /// Fails the task at once (`should_not_retry = true`), whatever its retries.
    NonRetryable,
}

/// The error a task handler returns.
///
/// Any `std::error::Error` converts into a retryable `TaskError` with `?`; use
/// [`TaskError::non_retryable`] for permanent failures and
/// [`TaskError::with_retry_after`] to ask for an explicit delay before the next attempt.
///
/// `TaskError` deliberately does not implement `std::error::Error` itself, so that the
/// blanket conversion from every error type is possible (the same trick as `anyhow`).
pub struct TaskError {
    message: String,
    kind: TaskErrorKind,
    retry_after: Option<Duration>,
}

impl TaskError {
    /// A failure the engine retries while the task has retries left.
    pub fn retryable(message: impl fmt::Display) -> Self {
        TaskError {
            message: message.to_string(),
            kind: TaskErrorKind::Retryable,
            retry_after: None,
        }
    }

    /// A permanent failure: the task fails at once without further retries.
    pub fn non_retryable(message: impl fmt::Display) -> Self {
        TaskError {
            message: message.to_string(),
            kind: TaskErrorKind::NonRetryable,
            retry_after: None,
        }
    }

    /// Asks the engine to wait `delay` before the next attempt (still consumes a retry).
    #[must_use]
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The message sent to the engine (and shown as the task's error).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Retryable or not.
    pub fn kind(&self) -> TaskErrorKind {
        self.kind
    }

    /// `true` unless created with [`TaskError::non_retryable`].
    pub fn is_retryable(&self) -> bool {
        self.kind == TaskErrorKind::Retryable
    }

    /// The explicit delay before the next attempt, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("message", &self.message)
            .field("kind", &self.kind)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    /// Keeps the whole cause chain in the message: `outer: inner: root`.
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        TaskError::retryable(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rpc_error_reads_as_the_engines_message_once() {
        let status = tonic::Status::invalid_argument("workflow \"nope\" is not registered");
        let err = SdkError::rpc("WorkflowService.TriggerWorkflow", status);
        assert_eq!(
            err.to_string(),
            "WorkflowService.TriggerWorkflow failed: workflow \"nope\" is not registered (InvalidArgument)"
        );
        assert!(std::error::Error::source(&err).is_none());
        assert_eq!(
            err.status().map(tonic::Status::code),
            Some(tonic::Code::InvalidArgument)
        );
    }

    #[test]
    fn conversion_keeps_cause_chain_and_is_retryable() {
        let err = SdkError::Decode {
            what: "output of task \"fetch\"".into(),
            source: serde_json::from_str::<u32>("\"x\"").unwrap_err(),
        };
        let task_err = TaskError::from(err);
        assert!(task_err.is_retryable());
        assert!(
            task_err
                .message()
                .starts_with("cannot decode output of task \"fetch\": ")
        );
    }

    #[test]
    fn non_retryable_with_delay() {
        let err = TaskError::non_retryable("bad doc").with_retry_after(Duration::from_secs(2));
        assert_eq!(err.kind(), TaskErrorKind::NonRetryable);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(err.to_string(), "bad doc");
    }
}
