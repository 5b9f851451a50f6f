//! [`Workflow`]: a named DAG of tasks, and its registration request.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::time::Duration;

use adze_proto::v1::{CreateTaskOpts, CreateWorkflowVersionRequest};

use crate::task::{ErasedHandler, TaskOptions};
use crate::{DurableTaskDef, SdkError, TaskDef, TaskRef, format_duration};

/// Execution timeout of a task that sets none (the Python SDK's default).
const DEFAULT_EXECUTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A workflow whose runs take input `I`: tasks plus the dependencies between them.
///
/// ```no_run
/// # use adze_sdk::{Context, TaskDef, TaskError, Workflow};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Doc { id: String }
/// let mut wf = Workflow::<Doc>::new("docs");
/// let fetch = wf.add_task(TaskDef::new("fetch", |doc: Doc, _ctx: Context| async move {
///     Ok::<_, TaskError>(format!("contents of {}", doc.id))
/// }));
/// wf.add_task(TaskDef::new("count", {
///     let fetch = fetch.clone();
///     move |_doc: Doc, ctx: Context| {
///         let fetch = fetch.clone();
///         async move { Ok::<_, TaskError>(ctx.parent_output(&fetch)?.len()) }
///     }
/// }).parent(&fetch));
/// ```
pub struct Workflow<I = serde_json::Value> {
    def: WorkflowDef,
    _input: PhantomData<fn(I)>,
}

/// The type-erased workflow the worker registers and runs.
#[derive(Clone)]
pub(crate) struct WorkflowDef {
    pub name: String,
    pub description: String,
    pub tasks: Vec<TaskEntry>,
    /// Run once when a run of the workflow fails.
    pub on_failure: Option<TaskEntry>,
    /// Limits held by each run.
    pub concurrency: Vec<crate::Concurrency>,
    /// Whether runs keep to one worker.
    pub sticky: Option<crate::Sticky>,
    /// Event keys (or `*` patterns) that start a run.
    pub on_events: Vec<String>,
    /// How a trigger is recognised as one already made.
    pub idempotency: Option<adze_proto::v1::IdempotencyConfig>,
    /// Cron expressions that start a run at each tick.
    pub crons: Vec<String>,
    /// The input of the runs the crons start (JSON), or why it could not be encoded.
    pub cron_input: Option<Result<serde_json::Value, String>>,
}

/// One task of a [`WorkflowDef`].
#[derive(Clone)]
pub(crate) struct TaskEntry {
    pub name: String,
    pub options: TaskOptions,
    pub handler: ErasedHandler,
}

impl<I> Clone for Workflow<I> {
    fn clone(&self) -> Self {
        Workflow {
            def: self.def.clone(),
            _input: PhantomData,
        }
    }
}

impl<I> std::fmt::Debug for Workflow<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tasks: Vec<&str> = self.def.tasks.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("Workflow")
            .field("name", &self.def.name)
            .field("tasks", &tasks)
            .finish()
    }
}

impl<I> Workflow<I> {
    /// An empty workflow named `name` (the namespace, if any, is added at registration).
    pub fn new(name: impl Into<String>) -> Self {
        let def = WorkflowDef {
            name: name.into(),
            description: String::new(),
            tasks: Vec::new(),
            on_failure: None,
            concurrency: Vec::new(),
            sticky: None,
            on_events: Vec::new(),
            idempotency: None,
            crons: Vec::new(),
            cron_input: None,
        };
        Workflow {
            def,
            _input: PhantomData,
        }
    }

    /// Limits how many runs are in progress at once per key: a run holds its key from
    /// its first task's start to its end. Several limits may be set.
    pub fn concurrency(mut self, limit: crate::Concurrency) -> Self {
        self.def.concurrency.push(limit);
        self
    }

    /// Keeps each run's tasks on one worker: the one its first task went to, or the one
    /// its trigger names ([`TriggerOptions::desired_worker_id`](crate::TriggerOptions)).
    #[must_use]
    pub fn sticky(mut self, sticky: crate::Sticky) -> Self {
        self.def.sticky = Some(sticky);
        self
    }

    /// Starts a run whenever an event with this key is pushed
    /// ([`Client::push_event`](crate::Client::push_event), or published to NATS); `*`
    /// stands for any run of characters (`"subscription:*"`). The run's input is the
    /// event's payload. Several keys may be given. The client's namespace, if any, is
    /// put before the key at registration, as before the keys it pushes.
    #[must_use]
    pub fn on_event(mut self, key: impl Into<String>) -> Self {
        self.def.on_events.push(key.into());
        self
    }

    /// Starts a run at every tick of the cron expression `expression`, in UTC: five
    /// fields (`"*/5 * * * *"`), six with seconds first (`"*/10 * * * * *"`), or
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. Several may be given. The
    /// engine keeps them with the workflow's latest version: a registration that no
    /// longer declares one removes it, one still declared keeps its schedule. The
    /// runs' input is [`cron_input`](Self::cron_input) (`{}` without one). A bad
    /// expression is refused when the worker registers the workflow.
    #[must_use]
    pub fn on_cron(mut self, expression: impl Into<String>) -> Self {
        let expression = expression.into();
        if !self.def.crons.contains(&expression) {
            self.def.crons.push(expression);
        }
        self
    }

    /// The input of the runs [`on_cron`](Self::on_cron) starts; it must encode as a
    /// JSON object.
    #[must_use]
    pub fn cron_input(mut self, input: I) -> Self
    where
        I: serde::Serialize,
    {
        self.def.cron_input = Some(serde_json::to_value(&input).map_err(|e| e.to_string()));
        self
    }

    /// Makes triggers idempotent: `key_expression` (CEL over `input` and
    /// `additional_metadata`) gives each run a key, and while a key is held a trigger
    /// with the same key creates nothing: it fails with an error whose
    /// [`SdkError::existing_run_id`](crate::SdkError::existing_run_id) is the run that
    /// holds it. A key is held for `ttl`, or with `until_finished` only while its run
    /// is open (and at most `ttl`).
    #[must_use]
    pub fn idempotency(
        mut self,
        key_expression: impl Into<String>,
        ttl: Duration,
        until_finished: bool,
    ) -> Self {
        let method = if until_finished {
            adze_proto::v1::IdempotencyMethod::Status
        } else {
            adze_proto::v1::IdempotencyMethod::Ttl
        };
        self.def.idempotency = Some(adze_proto::v1::IdempotencyConfig {
            expression: key_expression.into(),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            method: Some(method as i32),
        });
        self
    }

    /// The workflow name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Sets the description shown in the dashboard.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.def.description = description.into();
        self
    }

    /// Adds a task (builder style).
    #[must_use]
    pub fn task<O>(mut self, task: TaskDef<I, O>) -> Self {
        self.add_task(task);
        self
    }

    /// Adds a task and returns a typed handle to it, for later tasks' `parent` and
    /// [`Context::parent_output`](crate::Context::parent_output).
    pub fn add_task<O>(&mut self, task: TaskDef<I, O>) -> TaskRef<O> {
        let task_ref = task.task_ref();
        self.def.tasks.push(TaskEntry {
            name: task.name,
            options: task.options,
            handler: task.handler,
        });
        task_ref
    }

    /// Adds a durable task (builder style).
    #[must_use]
    pub fn durable_task<O>(mut self, task: DurableTaskDef<I, O>) -> Self {
        self.add_durable_task(task);
        self
    }

    /// Adds a durable task and returns a typed handle to it.
    pub fn add_durable_task<O>(&mut self, task: DurableTaskDef<I, O>) -> TaskRef<O> {
        self.add_task(task.into_task_def())
    }

    /// Sets the on-failure task: it runs once when a run of this workflow fails
    /// (retries exhausted, a non-retryable error, a timeout), after every other task
    /// ended, and reads the failed tasks' errors with
    /// [`Context::task_errors`](crate::Context::task_errors). It has no parents; the run
    /// stays failed whatever it returns.
    #[must_use]
    pub fn on_failure<O>(mut self, task: TaskDef<I, O>) -> Self {
        self.def.on_failure = Some(TaskEntry {
            name: task.name,
            options: task.options,
            handler: task.handler,
        });
        self
    }

    /// The task names, in the order they were added.
    pub fn task_names(&self) -> impl Iterator<Item = &str> {
        self.def.tasks.iter().map(|t| t.name.as_str())
    }

    /// Checks names, parents, that the tasks form a DAG, task conditions and crons.
    pub fn validate(&self) -> Result<(), SdkError> {
        self.def.validate()
    }

    pub(crate) fn into_def(self) -> WorkflowDef {
        self.def
    }
}

impl WorkflowDef {
    pub(crate) fn validate(&self) -> Result<(), SdkError> {
        let invalid = |msg: String| Err(SdkError::InvalidWorkflow(msg));
        if self.name.trim().is_empty() {
            return invalid("a workflow needs a non-empty name".into());
        }
        if self.tasks.is_empty() {
            return invalid(format!("workflow \"{}\" has no tasks", self.name));
        }
        if let Some(f) = &self.on_failure
            && !f.options.parents.is_empty()
        {
            return invalid(format!(
                "workflow \"{}\": the on-failure task \"{}\" must not have parents",
                self.name, f.name
            ));
        }
        let mut parents: HashMap<&str, &[String]> = HashMap::new();
        for task in self.tasks.iter().chain(&self.on_failure) {
            if task.name.trim().is_empty() || task.name.contains(':') {
                return invalid(format!(
                    "workflow \"{}\": task name \"{}\" must be non-empty and without ':'",
                    self.name, task.name
                ));
            }
            if parents.insert(&task.name, &task.options.parents).is_some() {
                return invalid(format!(
                    "workflow \"{}\" has two tasks named \"{}\"",
                    self.name, task.name
                ));
            }
        }
        for task in &self.tasks {
            if let Some(p) = task
                .options
                .parents
                .iter()
                .find(|p| !parents.contains_key(p.as_str()))
            {
                return invalid(format!(
                    "workflow \"{}\": task \"{}\" has unknown parent \"{p}\"",
                    self.name, task.name
                ));
            }
        }
        if let Some(cycle) = find_cycle(&parents) {
            return invalid(format!(
                "workflow \"{}\" has a cycle: {}",
                self.name,
                cycle.join(" -> ")
            ));
        }
        for task in self.tasks.iter().chain(&self.on_failure) {
            crate::conditions::check(&task.name, &task.options.parents, &task.options.conditions)
                .or_else(|problem| invalid(format!("workflow \"{}\": {problem}", self.name)))?;
        }
        if self.crons.iter().any(|c| c.trim().is_empty()) {
            return invalid(format!(
                "workflow \"{}\": a cron expression is empty",
                self.name
            ));
        }
        match &self.cron_input {
            Some(Err(e)) => {
                return invalid(format!(
                    "workflow \"{}\": cannot encode the cron input as JSON: {e}",
                    self.name
                ));
            }
            Some(Ok(input)) if !input.is_object() => {
                return invalid(format!(
                    "workflow \"{}\": the cron input must be a JSON object, not {input}",
                    self.name
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The action id the engine assigns this task under: `<lower(workflow)>:<task>`.
    pub(crate) fn action_id(workflow_name: &str, task: &str) -> String {
        format!("{}:{task}", workflow_name.to_lowercase())
    }

    /// The `v1.AdminService.PutWorkflow` request, `name` being the namespaced name and
    /// `namespace` applying the namespace to event keys (of `on_event` and of task
    /// conditions).
    pub(crate) fn create_request(
        &self,
        name: &str,
        namespace: &dyn Fn(&str) -> String,
    ) -> CreateWorkflowVersionRequest {
        let tasks = self
            .tasks
            .iter()
            .map(|task| create_task_opts(name, task, namespace))
            .collect();
        CreateWorkflowVersionRequest {
            name: name.to_owned(),
            description: self.description.clone(),
            tasks,
            on_failure_task: self
                .on_failure
                .as_ref()
                .map(|task| create_task_opts(name, task, namespace)),
            concurrency_arr: self.concurrency.iter().map(|c| c.to_proto()).collect(),
            sticky: self.sticky.map(|s| s.to_proto() as i32),
            // Namespaced as pushed events' keys are.
            event_triggers: self.on_events.iter().map(|key| namespace(key)).collect(),
            idempotency: self.idempotency.clone(),
            cron_triggers: self.crons.clone(),
            cron_input: match &self.cron_input {
                Some(Ok(input)) => Some(input.to_string()),
                _ => None,
            },
            ..Default::default()
        }
    }
}

fn create_task_opts(
    workflow_name: &str,
    task: &TaskEntry,
    namespace: &dyn Fn(&str) -> String,
) -> CreateTaskOpts {
    let o = &task.options;
    let action = WorkflowDef::action_id(workflow_name, &task.name);
    CreateTaskOpts {
        readable_id: task.name.clone(),
        conditions: crate::conditions::to_proto(&action, &o.conditions, namespace),
        action,
        timeout: format_duration(o.execution_timeout.unwrap_or(DEFAULT_EXECUTION_TIMEOUT)),
        inputs: "{}".to_owned(),
        parents: o.parents.clone(),
        retries: i32::try_from(o.retries).unwrap_or(i32::MAX),
        backoff_factor: o.backoff_factor,
        backoff_max_seconds: o
            .backoff_max_seconds
            .map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
        schedule_timeout: o.schedule_timeout.map(format_duration),
        concurrency: o.concurrency.iter().map(|c| c.to_proto()).collect(),
        rate_limits: o.rate_limits.iter().map(|r| r.to_proto()).collect(),
        worker_labels: o
            .worker_labels
            .iter()
            .map(|l| (l.key().to_owned(), l.to_proto()))
            .collect(),
        is_durable: o.durable,
        // A durable task holds one of the worker's durable slots.
        slot_requests: if o.durable {
            [("durable".to_owned(), 1)].into()
        } else {
            HashMap::new()
        },
        ..Default::default()
    }
}

/// A path `a -> b -> ... -> a` through the parent edges, if there is one.
fn find_cycle<'a>(parents: &HashMap<&'a str, &'a [String]>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        parents: &HashMap<&'a str, &'a [String]>,
        done: &mut HashSet<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(start) = path.iter().position(|n| *n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for parent in parents.get(node).copied().unwrap_or_default() {
            if let Some(cycle) = visit(parent, parents, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = HashSet::new();
    let mut names: Vec<&str> = parents.keys().copied().collect();
    names.sort_unstable();
    names
        .into_iter()
        .find_map(|name| visit(name, parents, &mut done, &mut Vec::new()))
}

#[cfg(test)]
mod tests;
