//! Test harness: every test gets its own Postgres database, NATS subject/stream
//! prefix and Redis key prefix, and runs the real services in-process on port 0
//! (the same composition as `adze server`). Nothing is mocked.

pub mod durable_stream;
pub mod otlp;
pub mod process;
pub mod rest;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use adze_cli::server::{RoleConfigs, serve_roles};
use adze_runtime::{Common, Shared};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Admin URL used to create per-test databases.
pub fn admin_url() -> String {
    std::env::var("ADZE_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Redis URL for tests (each test's keys are under its own prefix).
pub fn redis_url() -> String {
    std::env::var("ADZE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// NATS URL for tests.
pub fn nats_url() -> String {
    std::env::var("ADZE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn db_url(name: &str) -> String {
    let admin = admin_url();
    match admin.rfind('/') {
        Some(i) if admin[..i].contains("://") && i > admin.find("://").unwrap_or(0) + 2 => {
            format!("{}/{name}", &admin[..i])
        }
        _ => format!("{admin}/{name}"),
    }
}

/// Fast timings so failure paths resolve within a test's patience.
pub fn fast_configs() -> RoleConfigs {
    let mut c = RoleConfigs::default();
    c.scheduler.slot_refresh_ms = 200;
    c.scheduler.assignment_timeout_ms = 5_000;
    c.scheduler.lease_ms = 3_000;
    c.reaper.disconnect_grace_ms = 1_000;
    c.reaper.heartbeat_timeout_ms = 10_000;
    c.reaper.repair_after_ms = 1_000;
    c.reaper.deadline_max_idle_ms = 1_000;
    c.dispatcher.heartbeat_flush_ms = 200;
    c.dispatcher.result_poll_ms = 500;
    c
}

/// A workflow `workflow` of one durable task `task`, no retries, no timeouts.
pub fn durable_task_workflow(workflow: &str, task: &str) -> adze_core::WorkflowSpec {
    let mut spec = one_task_workflow(workflow, task, Default::default(), None, None);
    spec.tasks[0].durable = true;
    spec
}

/// A one-task workflow `name` for the Rust SDK: its task `t` counts its runs in
/// `ran`, sleeps `ms` and returns `{"ok": true}`.
pub fn counting_workflow(
    name: &str,
    ran: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ms: u64,
) -> adze_sdk::Workflow<serde_json::Value> {
    use adze_sdk::{Context, TaskDef, TaskError};
    use serde_json::{Value, json};
    adze_sdk::Workflow::<Value>::new(name).task(TaskDef::new(
        "t",
        move |_i: Value, _ctx: Context| {
            let ran = ran.clone();
            async move {
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                Ok::<_, TaskError>(json!({"ok": true}))
            }
        },
    ))
}

/// A two-task DAG `name` for the Rust SDK: `first` returns `{"n": 1}`; `second` (its
/// child) fails its first attempt ("the first try fails", retryable) and returns
/// `{"n": 2}` on its retry.
pub fn retried_pair(name: &str) -> adze_sdk::Workflow<serde_json::Value> {
    use adze_sdk::{Context, TaskDef, TaskError};
    use serde_json::{Value, json};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let tries = Arc::new(AtomicU32::new(0));
    let mut wf = adze_sdk::Workflow::<Value>::new(name);
    let first = wf.add_task(TaskDef::new("first", |_i: Value, _c: Context| async move {
        Ok::<_, TaskError>(json!({"n": 1}))
    }));
    wf.add_task(
        TaskDef::new("second", move |_i: Value, _c: Context| {
            let t = tries.clone();
            async move {
                if t.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(TaskError::retryable("the first try fails"));
                }
                Ok::<_, TaskError>(json!({"n": 2}))
            }
        })
        .parent(&first)
        .retries(1),
    );
    wf
}

/// A workflow `workflow` of one task `task` (action `<workflow>:<task>`, no parents).
pub fn one_task_workflow(
    workflow: &str,
    task: &str,
    retry: adze_core::backoff::RetryPolicy,
    execution_timeout_ms: Option<i64>,
    schedule_timeout_ms: Option<i64>,
) -> adze_core::WorkflowSpec {
    adze_core::WorkflowSpec {
        name: workflow.into(),
        tasks: vec![adze_core::TaskSpec {
            readable_id: task.into(),
            action_id: format!("{workflow}:{task}"),
            parents: Vec::new(),
            retry,
            execution_timeout_ms,
            schedule_timeout_ms,
            concurrency: Vec::new(),
            rate_limits: Vec::new(),
            worker_labels: Vec::new(),
            conditions: None,
            durable: false,
        }],
        on_failure: None,
        concurrency: Vec::new(),
        default_priority: None,
        sticky: None,
        ..Default::default()
    }
}

/// One isolated Adze deployment.
pub struct TestEnv {
    /// Database name.
    pub db_name: String,
    /// Database URL.
    pub database_url: String,
    /// Subject/stream prefix.
    pub prefix: String,
    /// Shared settings (secret, URLs) for child processes.
    pub common: Common,
    /// Pool on the test database.
    pub pool: PgPool,
    /// Connections the services use.
    pub shared: Shared,
    /// The default tenant.
    pub tenant_id: Uuid,
    /// A token of the default tenant.
    pub token: String,
    /// gRPC/REST address of the in-process server (if any API role runs).
    pub addr: Option<SocketAddr>,
    /// How the in-process server's API port is secured (plaintext unless
    /// [`TestEnv::start_secured`] says otherwise).
    pub tls: adze_runtime::tls::ServerTls,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestEnv {
    /// All roles in-process.
    pub async fn start() -> Self {
        Self::start_roles(&["ingest", "scheduler", "dispatcher", "reaper", "ratelimit"]).await
    }

    /// The given roles in-process; others can be started as child processes.
    pub async fn start_roles(roles: &[&str]) -> Self {
        Self::start_with(roles, fast_configs()).await
    }

    /// The given roles with explicit role settings.
    pub async fn start_with(roles: &[&str], configs: RoleConfigs) -> Self {
        Self::start_secured(roles, configs, adze_runtime::tls::ServerTls::plaintext()).await
    }

    /// [`TestEnv::start_with`], the API port secured with `tls`; tokens then carry an
    /// `https://` REST address.
    pub async fn start_secured(
        roles: &[&str],
        configs: RoleConfigs,
        tls: adze_runtime::tls::ServerTls,
    ) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = adze_telemetry::init("tests");
        }
        let id = Uuid::new_v4().simple().to_string();
        let db_name = format!("adze_test_{}", &id[..12]);
        let admin = PgPool::connect(&admin_url())
            .await
            .expect("connect to the Postgres admin database");
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let database_url = db_url(&db_name);
        let prefix = format!("t{}", &id[..12]);
        let common = Common {
            database_url: database_url.clone(),
            nats_url: nats_url(),
            redis_url: redis_url(),
            prefix: prefix.clone(),
            db_max_connections: 12,
            auth: adze_runtime::Auth {
                secret: format!("test-secret-{id}"),
                token_ttl_days: 1,
            },
            ..Common::default()
        };
        let shared = adze_runtime::connect(&common)
            .await
            .expect("connect to Postgres and NATS");
        adze_store::migrate(&shared.pool).await.expect("migrate");
        shared.bus.ensure_streams().await.expect("create streams");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let role_set: BTreeSet<String> = roles.iter().map(|s| s.to_string()).collect();
        let api = role_set.contains("ingest") || role_set.contains("dispatcher");
        let server = if roles.is_empty() {
            None
        } else {
            Some(tokio::spawn(serve_roles(
                api.then_some(adze_runtime::Listener::new(listener, tls.clone())),
                configs,
                shared.clone(),
                role_set,
                shutdown.clone(),
            )))
        };
        let pool = shared.pool.clone();
        let mut env = Self {
            db_name,
            database_url,
            prefix,
            common,
            pool,
            shared,
            tenant_id: Uuid::nil(),
            token: String::new(),
            addr: api.then_some(addr),
            tls,
            shutdown,
            server,
        };
        let (tenant, token) = env.tenant("default").await;
        env.tenant_id = tenant;
        env.token = token;
        if api {
            wait_for(
                "server accepts connections",
                Duration::from_secs(10),
                || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
            )
            .await;
        }
        env
    }

    /// Creates a tenant and a token for it.
    pub async fn tenant(&self, name: &str) -> (Uuid, String) {
        let (tenant, _) = adze_store::tenants::create_tenant(&self.pool, name)
            .await
            .expect("tenant");
        let keys = adze_runtime::token_keys(&self.common).expect("keys");
        let addr = self.addr.map(|a| a.to_string()).unwrap_or_default();
        let token = adze_cli::admin::issue(
            &self.pool,
            &keys,
            tenant,
            "test",
            format!("{}://{addr}", self.tls.scheme()),
            addr.clone(),
            1,
        )
        .await
        .expect("token");
        (tenant, token)
    }

    /// A token of the default tenant that has been revoked.
    pub async fn revoked_token(&self) -> String {
        let keys = adze_runtime::token_keys(&self.common).expect("keys");
        let (_, token) = self.tenant("default").await;
        let id = keys.verify(&token).expect("a valid token");
        assert!(
            adze_store::tenants::revoke_token(&self.pool, id.tenant_id, id.token_id)
                .await
                .expect("revoke"),
            "the token was live"
        );
        token
    }

    /// What the in-process server's `/metrics` shows now.
    pub async fn scrape_metrics(&self) -> String {
        let addr = self.addr.expect("an API address");
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("the fleet answers /metrics")
            .text()
            .await
            .expect("the metrics text")
    }

    /// How many new runs ingest's commits assigned with slots the scheduler lent
    /// (`adze_store::express`), as `/metrics` says.
    pub async fn express_assigned(&self) -> f64 {
        let text = self.scrape_metrics().await;
        sample(&text, "adze_ingest_express_assigned_total", &[]).unwrap_or(0.0)
    }

    /// Waits until a worker has registered `workflow` for the default tenant.
    pub async fn wait_workflow(&self, workflow: &str) {
        let pool = self.pool.clone();
        let tenant = self.tenant_id;
        wait_for(
            &format!("workflow {workflow:?} registered"),
            Duration::from_secs(30),
            || {
                let pool = pool.clone();
                let name = workflow.to_string();
                async move {
                    sqlx::query("SELECT 1 FROM workflows WHERE tenant_id = $1 AND name = $2")
                        .bind(tenant)
                        .bind(name)
                        .fetch_optional(&pool)
                        .await
                        .ok()
                        .flatten()
                        .is_some()
                }
            },
        )
        .await;
    }

    /// Waits until some task is running on a worker whose name matches the SQL
    /// `LIKE` pattern.
    pub async fn wait_running_on(&self, worker_name_like: &str) {
        let pool = self.pool.clone();
        wait_for(&format!("a task running on {worker_name_like}"), Duration::from_secs(30), || {
            let pool = pool.clone();
            let like = worker_name_like.to_string();
            async move {
                sqlx::query(
                    "SELECT 1 FROM tasks t JOIN workers w ON w.id = t.worker_id WHERE t.status = 'running' AND w.name LIKE $1",
                )
                .bind(like)
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
                .is_some()
            }
        })
        .await;
    }

    /// Registers `spec` for the default tenant, as `PutWorkflow` does.
    pub async fn register(&self, spec: &adze_core::WorkflowSpec) {
        adze_store::workflows::put_workflow(&self.pool, self.tenant_id, spec)
            .await
            .expect("register the workflow");
    }

    /// Creates `n` runs (input `{}`) of the latest version of `workflow` straight in
    /// the store, as ingest's commit does; returns their ids in order.
    pub async fn create_runs(&self, workflow: &str, n: usize) -> Vec<Uuid> {
        self.create_runs_for(self.tenant_id, workflow, n).await
    }

    /// [`TestEnv::create_runs`] for the runs of another tenant.
    pub async fn create_runs_for(&self, tenant: Uuid, workflow: &str, n: usize) -> Vec<Uuid> {
        let version = adze_store::workflows::latest_version(&self.pool, tenant, workflow)
            .await
            .expect("read the workflow")
            .unwrap_or_else(|| panic!("workflow {workflow:?} is not registered"));
        let runs: Vec<adze_store::runs::NewRun<'_>> = (0..n)
            .map(|_| adze_store::runs::NewRun {
                triggers: None,
                version: &version,
                input: serde_json::json!({}),
                additional_metadata: None,
                traceparent: None,
                concurrency: Vec::new(),
                id: None,
                priority: None,
            })
            .collect();
        adze_store::runs::create_runs(&self.pool, tenant, &runs)
            .await
            .expect("create the runs")
    }

    /// Starts an in-process Rust SDK worker named `name` with `slots` slots serving
    /// `workflows`, and waits until each is registered; cancel the token to stop it.
    pub async fn start_worker(
        &self,
        name: &str,
        slots: usize,
        workflows: Vec<adze_sdk::Workflow<serde_json::Value>>,
    ) -> CancellationToken {
        let builder = adze_sdk::Worker::builder(self.client())
            .name(name)
            .slots(slots);
        self.run_worker(builder, workflows).await
    }

    /// [`TestEnv::start_worker`] for durable tasks: one slot, one durable slot, and
    /// `eviction` as the worker's eviction policy.
    pub async fn start_durable_worker(
        &self,
        name: &str,
        eviction: adze_sdk::EvictionPolicy,
        workflows: Vec<adze_sdk::Workflow<serde_json::Value>>,
    ) -> CancellationToken {
        let builder = adze_sdk::Worker::builder(self.client())
            .name(name)
            .slots(1)
            .durable_slots(1)
            .eviction(eviction);
        self.run_worker(builder, workflows).await
    }

    /// Runs the worker `builder` makes with `workflows` in process, and waits until
    /// each is registered; cancel the token to stop it.
    pub async fn run_worker(
        &self,
        mut builder: adze_sdk::WorkerBuilder,
        workflows: Vec<adze_sdk::Workflow<serde_json::Value>>,
    ) -> CancellationToken {
        let stop = CancellationToken::new();
        let names: Vec<String> = workflows.iter().map(|w| w.name().to_string()).collect();
        for w in workflows {
            builder = builder.workflow(w);
        }
        let worker = builder.build().expect("worker");
        let s = stop.clone();
        tokio::spawn(worker.run(async move { s.cancelled().await }));
        for n in names {
            self.wait_workflow(&n).await;
        }
        stop
    }

    /// The id of the active worker named `name`, once it is listening.
    pub async fn worker_named(&self, name: &str) -> Uuid {
        let find = || async {
            sqlx::query_scalar::<_, Uuid>(
                "SELECT id FROM workers WHERE name = $1 AND status = 'active'",
            )
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .expect("worker")
        };
        wait_for(
            &format!("worker {name} is listening"),
            Duration::from_secs(15),
            || async { find().await.is_some() },
        )
        .await;
        find().await.expect("id")
    }

    /// Run `run`'s stored status (an id as the SDK gives it).
    pub async fn run_status(&self, run: &str) -> String {
        sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
            .bind(Uuid::parse_str(run).expect("a run id"))
            .fetch_one(&self.pool)
            .await
            .expect("the run")
    }

    /// The stored statuses of `runs` (ids as the SDK gives them), in their order.
    pub async fn run_statuses(&self, runs: &[String]) -> Vec<String> {
        let ids: Vec<Uuid> = runs
            .iter()
            .map(|r| Uuid::parse_str(r).expect("a run id"))
            .collect();
        let found: std::collections::HashMap<Uuid, String> =
            sqlx::query_as::<_, (Uuid, String)>("SELECT id, status FROM runs WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await
                .expect("runs")
                .into_iter()
                .collect();
        ids.iter().map(|id| found[id].clone()).collect()
    }

    /// Waits (a minute at most) until none of `runs` is queued any more.
    pub async fn wait_runs_final(&self, runs: &[String]) {
        wait_for("every run finished", Duration::from_secs(60), || async {
            self.run_statuses(runs).await.iter().all(|s| s != "queued")
        })
        .await;
    }

    /// Live holders of every concurrency key, as the scheduler's concurrency stage
    /// counts them.
    pub async fn live_key_holders(&self) -> usize {
        let keys: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT DISTINCT tenant_id, key FROM concurrency_holds")
                .fetch_all(&self.pool)
                .await
                .expect("keys");
        let mut conn = self.pool.acquire().await.expect("conn");
        adze_store::concurrency::holders(&mut conn, &keys)
            .await
            .expect("holders")
            .len()
    }

    /// Waits until some task of run `run` (an id as the SDK gives it) is running.
    pub async fn wait_task_running(&self, run: &str) {
        let id = Uuid::parse_str(run).expect("a run id");
        let pool = self.pool.clone();
        wait_for(
            &format!("a task of run {run} runs"),
            Duration::from_secs(30),
            || {
                let pool = pool.clone();
                async move {
                    sqlx::query_scalar::<_, i64>(
                        "SELECT count(*) FROM tasks WHERE run_id = $1 AND status = 'running'",
                    )
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .is_ok_and(|n| n > 0)
                }
            },
        )
        .await;
    }

    /// Waits until run `run` (an id as the SDK gives it) has the stored status `status`.
    pub async fn wait_run_status(&self, run: &str, status: &str) {
        let pool = self.pool.clone();
        let id = Uuid::parse_str(run).expect("a run id");
        wait_for(
            &format!("run {run} {status}"),
            Duration::from_secs(30),
            || {
                let pool = pool.clone();
                let status = status.to_string();
                async move {
                    sqlx::query_scalar::<_, String>("SELECT status FROM runs WHERE id = $1")
                        .bind(id)
                        .fetch_one(&pool)
                        .await
                        .is_ok_and(|s| s == status)
                }
            },
        )
        .await;
    }

    /// Registers a worker of the default tenant serving `actions` and marks it active
    /// (as its listen stream opening would), without any process behind it.
    pub async fn active_worker(&self, actions: &[&str], slots: i32) -> Uuid {
        self.active_worker_with(actions, slots, 0).await
    }

    /// [`TestEnv::active_worker`] with `durable_slots` durable slots as well.
    pub async fn active_worker_with(
        &self,
        actions: &[&str],
        slots: i32,
        durable_slots: i32,
    ) -> Uuid {
        let actions: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        let worker = adze_store::workers::register(
            &self.pool,
            &adze_store::workers::NewWorker {
                tenant_id: self.tenant_id,
                name: "w",
                actions: &actions,
                slots,
                durable_slots,
                dispatcher_id: "d",
                sdk: None,
                labels: &Default::default(),
            },
        )
        .await
        .expect("worker");
        adze_store::workers::set_status(
            &self.pool,
            self.tenant_id,
            worker,
            adze_core::WorkerStatus::Active,
            "d",
        )
        .await
        .expect("active");
        worker
    }

    /// A gRPC channel to the engine's API (ingest must be running).
    pub async fn channel(&self) -> tonic::transport::Channel {
        let addr = self.addr.expect("the engine's API address (start ingest)");
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// Defines the default tenant's rate limit `key` over gRPC (`PutRateLimit`):
    /// `limit` units per `duration`.
    pub async fn put_rate_limit(
        &self,
        key: &str,
        limit: i32,
        duration: adze_proto::hatchet::RateLimitDuration,
    ) {
        use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
        WorkflowServiceClient::new(self.channel().await)
            .put_rate_limit(authorized(
                &self.token,
                adze_proto::hatchet::PutRateLimitRequest {
                    key: key.into(),
                    limit,
                    duration: duration as i32,
                },
            ))
            .await
            .expect("put rate limit");
    }

    /// An SDK client of the default tenant.
    pub fn client(&self) -> adze_sdk::Client {
        self.client_with(&self.token)
    }

    /// An SDK client with a given token.
    pub fn client_with(&self, token: &str) -> adze_sdk::Client {
        adze_sdk::Client::new(adze_sdk::ClientConfig {
            token: token.to_string(),
            host_port: self.addr.map(|a| a.to_string()),
            tls_strategy: adze_sdk::TlsStrategy::None,
            ..Default::default()
        })
        .expect("client")
    }

    /// Environment for a child process running an Adze service or an SDK worker.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let c = &self.common;
        vec![
            ("ADZE_DATABASE_URL".into(), c.database_url.clone()),
            ("ADZE_NATS_URL".into(), c.nats_url.clone()),
            ("ADZE_REDIS_URL".into(), c.redis_url.clone()),
            ("ADZE_PREFIX".into(), c.prefix.clone()),
            ("ADZE_AUTH__SECRET".into(), c.auth.secret.clone()),
            ("HATCHET_CLIENT_TOKEN".into(), self.token.clone()),
            ("HATCHET_CLIENT_TLS_STRATEGY".into(), "none".into()),
            // A service started from configuration serves plaintext only when told to.
            ("ADZE_SERVER__TLS__MODE".into(), "none".into()),
        ]
    }

    /// Stops the in-process services and drops the database and stream.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), s).await;
        }
        self.shared.pool.close().await;
        if let Ok(js) = async_nats::connect(nats_url())
            .await
            .map(async_nats::jetstream::new)
        {
            let subjects = self.shared.bus.subjects();
            for stream in [
                subjects.events_stream(),
                subjects.intake_stream(),
                subjects.dead_letter_stream(),
            ] {
                let _ = js.delete_stream(stream).await;
            }
        }
        if let Ok(admin) = PgPool::connect(&admin_url()).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .execute(&admin)
            .await;
        }
    }
}

/// The value of the sample `name` whose labels include `labels`, from Prometheus text.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let all = labels
            .iter()
            .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        (metric == name && all).then(|| value.parse().ok())?
    })
}

/// Polls `check` until it is true; panics with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A local port free when asked (for a child process to listen on).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

/// Waits until something listens on local `port` (at most 30 s).
pub async fn wait_listening(port: u16) {
    wait_for(
        &format!("a server listening on port {port}"),
        Duration::from_secs(30),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
}

/// The directory holding this build's binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf()
}

/// Path of a workspace binary; the test command builds them first.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Admission passes through the scheduler's pipeline with no stage, as the scheduler
/// runs them, for tests that drive the store without a scheduler.
pub mod admit {
    use adze_scheduler::admission::{Pipeline, SlotBook, Source};
    use adze_store::admission::{Assignment, Fence};
    use adze_store::runs::ReadyTask;
    use sqlx::PgConnection;

    /// A pass over the queue: at most `limit` tasks, fenced when `fence` is given.
    pub async fn queue(
        conn: &mut PgConnection,
        book: &mut SlotBook,
        limit: i64,
        fence: Option<&Fence>,
    ) -> Result<Vec<Assignment>, adze_store::Error> {
        let pass = Pipeline::new()
            .admit(conn, book, Source::Queue { limit }, fence)
            .await?;
        Ok(pass.assignments)
    }

    /// A fenced pass over exactly `ready`, without reading the queue.
    pub async fn listed(
        conn: &mut PgConnection,
        book: &mut SlotBook,
        ready: &[ReadyTask],
        fence: &Fence,
    ) -> Result<Vec<Assignment>, adze_store::Error> {
        let pass = Pipeline::new()
            .admit(conn, book, Source::Listed(ready), Some(fence))
            .await?;
        Ok(pass.assignments)
    }
}

/// A gRPC request carrying `token` as its bearer credentials.
pub fn authorized<T>(token: &str, body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut().insert(
        "authorization",
        tonic::metadata::MetadataValue::try_from(format!("bearer {token}")).expect("header"),
    );
    r
}

/// Worker reports and engine events as a property test draws them, for tests that
/// drive the store's transitions directly.
pub mod ops {
    use adze_core::TaskEvent;
    use adze_store::scheduling::TaskEventRow;
    use proptest::prelude::*;
    use uuid::Uuid;

    /// What happens to a task's attempt.
    #[derive(Debug, Clone, Copy)]
    pub enum Op {
        /// The worker started it.
        Started,
        /// It succeeded.
        Completed,
        /// It failed (retryable).
        Failed,
        /// It ran past its timeout.
        TimedOut,
        /// Its worker was lost.
        Lost,
        /// It was cancelled.
        Cancel,
    }

    /// Any [`Op`], equally likely.
    pub fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Started),
            Just(Op::Completed),
            Just(Op::Failed),
            Just(Op::TimedOut),
            Just(Op::Lost),
            Just(Op::Cancel),
        ]
    }

    impl Op {
        /// The event for `attempt` of a task, as the scheduler applies it.
        pub fn row(self, tenant_id: Uuid, task_id: Uuid, attempt: i32) -> TaskEventRow {
            let event = match self {
                Op::Started => TaskEvent::Started { attempt },
                Op::Completed => TaskEvent::Completed { attempt },
                Op::Failed => TaskEvent::Failed {
                    attempt,
                    non_retryable: false,
                    retry_after_ms: None,
                },
                Op::TimedOut => TaskEvent::TimedOut { attempt },
                Op::Lost => TaskEvent::WorkerLost { attempt },
                Op::Cancel => TaskEvent::Cancel,
            };
            TaskEventRow {
                tenant_id,
                task_id,
                event,
                output: Some(serde_json::json!(1)),
                error: Some("e".into()),
            }
        }
    }
}
