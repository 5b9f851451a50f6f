//! [`Worker`]: registers workflows, receives task assignments and runs their handlers.
//!
//! Three parts cooperate inside [`Worker::run`]: the [`connection`] (register, listen,
//! heartbeat, re-register), the [`executor`] (bounded concurrency, cancellation, drain)
//! and one [`attempt`] per assigned task (handler + step events). A worker with durable
//! tasks also has their stream and eviction checks ([`crate::durable`]), started at its
//! first durable task and stopped after the drain.

mod attempt;
mod connection;
mod events;
mod executor;
mod trace;

pub(crate) use connection::Backoff;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use adze_proto::hatchet::GetVersionRequest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::durable::DurableRuntime;
use crate::task::Handler;
use crate::workflow::WorkflowDef;
use crate::{Client, EvictionPolicy, SdkError, Workflow};

use connection::Connection;
use executor::{Executor, Setup};

/// Default number of tasks a worker runs at once.
const DEFAULT_SLOTS: usize = 100;
/// Default number of durable tasks a worker runs at once (as the official SDKs).
const DEFAULT_DURABLE_SLOTS: usize = 1000;
/// Default time in-flight tasks get to finish on shutdown.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a [`Worker`]; see [`Worker::builder`].
#[must_use]
pub struct WorkerBuilder {
    client: Client,
    name: String,
    slots: usize,
    durable_slots: usize,
    eviction: EvictionPolicy,
    shutdown_timeout: Duration,
    workflows: Vec<WorkflowDef>,
    labels: HashMap<String, crate::LabelValue>,
}

impl WorkerBuilder {
    /// A label of this worker (`model` = `"gpu"`, `memory` = 64): tasks that require
    /// or prefer it are placed here.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<crate::LabelValue>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The worker name shown in the dashboard (default `"worker"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many tasks run at once (default 100).
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }

    /// How many durable tasks run at once (default 1000), besides the
    /// [`slots`](Self::slots) of ordinary tasks. A durable task holds its slot while it
    /// waits, until it is evicted ([`eviction`](Self::eviction)).
    pub fn durable_slots(mut self, slots: usize) -> Self {
        self.durable_slots = slots;
        self
    }

    /// When waiting durable tasks are evicted from this worker (default
    /// [`EvictionPolicy::default`]; [`EvictionPolicy::disabled`] never evicts but at
    /// shutdown).
    pub fn eviction(mut self, policy: EvictionPolicy) -> Self {
        self.eviction = policy;
        self
    }

    /// How long [`Worker::run`] waits for in-flight tasks after shutdown is requested
    /// before cancelling them (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Registers `workflow` on this worker (clone it first to keep using it, e.g. as a
    /// [`Client::run`] target).
    pub fn workflow<I>(mut self, workflow: Workflow<I>) -> Self {
        self.workflows.push(workflow.into_def());
        self
    }

    /// Validates the workflows and the settings.
    pub fn build(self) -> Result<Worker, SdkError> {
        if self.name.trim().is_empty() {
            return Err(SdkError::Config("the worker name must not be empty".into()));
        }
        if self.slots == 0 || i32::try_from(self.slots).is_err() {
            return Err(SdkError::Config(format!(
                "slots must be 1..=2^31-1, got {}",
                self.slots
            )));
        }
        if i32::try_from(self.durable_slots).is_err() {
            return Err(SdkError::Config(format!(
                "durable slots must be 0..=2^31-1, got {}",
                self.durable_slots
            )));
        }
        if self.workflows.is_empty() {
            return Err(SdkError::Config(format!(
                "worker \"{}\" has no workflows",
                self.name
            )));
        }
        let mut handlers: HashMap<String, Handler> = HashMap::new();
        let mut workflows = Vec::new();
        for def in self.workflows {
            def.validate()?;
            let name = self.client.namespaced(&def.name);
            for task in def.tasks.iter().chain(&def.on_failure) {
                let action = WorkflowDef::action_id(&name, &task.name);
                let handler = Handler {
                    run: task.handler.clone(),
                    durable: task.options.durable,
                };
                if handler.durable && self.durable_slots == 0 {
                    return Err(SdkError::Config(format!(
                        "worker \"{}\" has the durable task \"{action}\" but no durable slots",
                        self.name
                    )));
                }
                if handlers.insert(action.clone(), handler).is_some() {
                    return Err(SdkError::InvalidWorkflow(format!(
                        "action \"{action}\" is defined twice (two workflows with the same name?)"
                    )));
                }
            }
            workflows.push((name, def));
        }
        Ok(Worker {
            client: self.client,
            name: self.name,
            labels: self.labels,
            slots: self.slots,
            durable_slots: self.durable_slots,
            eviction: self.eviction,
            shutdown_timeout: self.shutdown_timeout,
            workflows,
            handlers: Arc::new(handlers),
        })
    }
}

/// A worker process's connection to the engine. Build with [`Worker::builder`], then
/// [`Worker::run`] until shutdown.
pub struct Worker {
    client: Client,
    name: String,
    labels: HashMap<String, crate::LabelValue>,
    slots: usize,
    durable_slots: usize,
    eviction: EvictionPolicy,
    shutdown_timeout: Duration,
    /// Namespaced name and definition.
    workflows: Vec<(String, WorkflowDef)>,
    /// Handler by action id.
    handlers: Arc<HashMap<String, Handler>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("slots", &self.slots)
            .field("durable_slots", &self.durable_slots)
            .field("actions", &self.actions())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts building a worker that talks to the engine through `client`.
    pub fn builder(client: Client) -> WorkerBuilder {
        WorkerBuilder {
            client,
            name: "worker".to_owned(),
            slots: DEFAULT_SLOTS,
            durable_slots: DEFAULT_DURABLE_SLOTS,
            eviction: EvictionPolicy::default(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            workflows: Vec::new(),
            labels: HashMap::new(),
        }
    }

    /// The worker name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The action ids this worker registers (`<lower(workflow)>:<task>`), sorted.
    pub fn actions(&self) -> Vec<String> {
        let mut actions: Vec<String> = self.handlers.keys().cloned().collect();
        actions.sort_unstable();
        actions
    }

    /// Registers the workflows and the worker, then runs assigned tasks until `shutdown`
    /// resolves. On shutdown it stops taking tasks, unsubscribes, evicts the durable
    /// tasks that wait, and waits up to the shutdown timeout for the other in-flight
    /// tasks.
    ///
    /// Fails if the engine cannot be reached or rejects a workflow at startup; later
    /// connection losses are retried with backoff.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), SdkError> {
        let version = self
            .client
            .dispatcher()
            .get_version(GetVersionRequest {})
            .await
            .map_err(|s| SdkError::rpc("Dispatcher.GetVersion", s))?
            .into_inner()
            .version;
        tracing::info!(engine_version = %version, worker = %self.name, "connected to engine");
        for (name, def) in &self.workflows {
            self.client
                .admin()
                .put_workflow(def.create_request(name, &|key| self.client.namespaced(key)))
                .await
                .map_err(|s| SdkError::rpc("AdminService.PutWorkflow", s))?;
            tracing::info!(workflow = %name, tasks = def.tasks.len(), "workflow registered");
        }
        let slots = i32::try_from(self.slots).unwrap_or(i32::MAX);
        let durable_slots = i32::try_from(self.durable_slots).unwrap_or(i32::MAX);
        let connection = Connection::new(
            self.client.clone(),
            self.name.clone(),
            self.actions(),
            slots,
            durable_slots,
            self.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.to_worker_proto()))
                .collect(),
        );
        let worker_id = connection.register().await?;
        tracing::info!(%worker_id, slots, "worker registered");

        let stop = CancellationToken::new();
        let (assignments, receiver) = mpsc::channel(64);
        let durable = self.handlers.values().any(|h| h.durable).then(|| {
            DurableRuntime::new(
                self.client.clone(),
                self.durable_slots,
                self.eviction.clone(),
            )
        });
        let executor = Executor::new(Setup {
            client: self.client,
            handlers: self.handlers,
            slots: self.slots,
            durable_slots: self.durable_slots,
            drain_timeout: self.shutdown_timeout,
            durable: durable.clone(),
        });
        let signal = async {
            tokio::select! {
                () = shutdown => tracing::info!("shutdown requested; draining"),
                () = stop.cancelled() => {}
            }
            stop.cancel();
        };
        tokio::join!(
            signal,
            connection.run(worker_id, assignments, stop.clone()),
            executor.run(receiver)
        );
        if let Some(durable) = durable {
            durable.stop().await;
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}
