//! The two tenants of the walk, and the snapshot of B's rows it is judged by.
//!
//! B (the test fleet's default tenant) has one of everything that has an id: a workflow
//! and its version; a finished, a failed, a running (held) and a queued run; their
//! tasks, logs and stream chunks; a durable task waiting in its log; a worker,
//! registered and listening; an event, an event filter, a cron and a scheduled run; a
//! rate limit and a concurrency key in use; an API token. Its marker [`MARK`] is in every input,
//! output, log line and payload. A has a token and a workflow of the same name as one
//! of B's whose run waits for a worker ([`SHARED`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use adze_proto::hatchet::RateLimitDuration;
use adze_sdk::{
    Client, Concurrency, Context, DurableContext, DurableTaskDef, EventOptions, EvictionPolicy,
    RateLimit, TaskDef, TaskError, TriggerOptions, Workflow,
};
use adze_tests::{TestEnv, one_task_workflow, rest, wait_for};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Ids;

/// In every input, output, log line and payload of B's: no answer to A may hold it.
pub const MARK: &str = "tenantb-secret-5c1e";
/// B's workflow of one task; its input's `mode` says how the task ends.
const B_FLOW: &str = "tenantb-flow";
/// B's durable workflow, waiting in its log for an event that never comes.
const B_DURABLE: &str = "tenantb-durable";
/// The event key B's durable task waits for.
const B_WAIT: &str = "tenantb-never";
/// A workflow name both tenants have; its action (`shared:work`) no worker of B serves.
pub const SHARED: &str = "shared";
const B_UNITS: &str = "tenantb-units";
const B_KEY: &str = "tenantb-key";
const B_EVENT: &str = "tenantb-event";
const B_WORKER: &str = "tenantb-worker";

/// Tenant B and its worker.
pub struct TenantB {
    pub ids: Ids,
    stop: CancellationToken,
    gate: Arc<Semaphore>,
}

/// B's one-task workflow: its task logs and streams the marker, then succeeds, fails,
/// or waits for `gate` (as its input's `mode` says). It takes a unit of B's rate limit
/// and holds B's concurrency key while it runs.
fn b_flow(gate: Arc<Semaphore>) -> Workflow<Value> {
    Workflow::<Value>::new(B_FLOW)
        .concurrency(Concurrency::new("input.group", 10))
        .task(
            TaskDef::new("work", move |input: Value, ctx: Context| {
                let gate = gate.clone();
                async move {
                    ctx.log(format!("log line {MARK}")).await;
                    ctx.put_stream(format!("chunk {MARK}"))
                        .await
                        .map_err(TaskError::retryable)?;
                    match input["mode"].as_str() {
                        Some("fail") => Err(TaskError::non_retryable(format!("failed {MARK}"))),
                        Some("hold") => {
                            let _permit = gate.acquire().await;
                            Ok(json!({ "held": MARK }))
                        }
                        _ => Ok(json!({ "done": MARK })),
                    }
                }
            })
            .rate_limit(RateLimit::key(B_UNITS, 1))
            .execution_timeout(Duration::from_secs(600)),
        )
}

/// B's durable workflow: a memo, then a wait for an event that never comes.
fn b_durable() -> Workflow<Value> {
    Workflow::<Value>::new(B_DURABLE).durable_task(DurableTaskDef::new(
        "run",
        |_input: Value, ctx: DurableContext| async move {
            let memo: String = ctx
                .memo(&["tenantb"], || async {
                    Ok::<_, TaskError>(MARK.to_owned())
                })
                .await?;
            let _: Value = ctx.wait_for_event(B_WAIT, "").await?;
            Ok::<_, TaskError>(json!({ "memo": memo }))
        },
    ))
}

async fn trigger(client: &Client, workflow: &str, input: Value) -> Uuid {
    let options = TriggerOptions {
        additional_metadata: Some(json!({ "secret": MARK })),
        ..Default::default()
    };
    let run = client
        .run_no_wait_with(workflow, input, options)
        .await
        .unwrap_or_else(|e| panic!("trigger {workflow}: {e}"));
    Uuid::parse_str(run.run_id()).expect("a run id")
}

async fn id(pool: &PgPool, sql: &str, tenant: Uuid, key: impl ToString) -> Uuid {
    sqlx::query_scalar(sql)
        .bind(tenant)
        .bind(key.to_string())
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn task_of(pool: &PgPool, tenant: Uuid, run: Uuid) -> Uuid {
    id(
        pool,
        "SELECT id FROM tasks WHERE tenant_id = $1 AND run_id::text = $2",
        tenant,
        run,
    )
    .await
}

/// The `metadata.id` of a REST answer of B's own, which must be 200.
fn created(what: &str, (status, body): (u16, Value)) -> Uuid {
    assert_eq!(status, 200, "B creates its {what}: {body}");
    serde_json::from_value(body["metadata"]["id"].clone()).expect("an id")
}

impl TenantB {
    /// Builds B's data and waits until it is still: every run in its state, the durable
    /// task waiting in its log.
    pub async fn start(env: &TestEnv) -> Self {
        let (pool, tenant, token) = (&env.pool, env.tenant_id, env.token.clone());
        env.put_rate_limit(B_UNITS, 1_000, RateLimitDuration::Hour)
            .await;
        env.register(&one_task_workflow(
            SHARED,
            "work",
            Default::default(),
            None,
            None,
        ))
        .await;
        let gate = Arc::new(Semaphore::new(0));
        let builder = adze_sdk::Worker::builder(env.client())
            .name(B_WORKER)
            .slots(4)
            .durable_slots(1)
            .eviction(EvictionPolicy::disabled());
        let stop = env
            .run_worker(builder, vec![b_flow(gate.clone()), b_durable()])
            .await;
        let worker = env.worker_named(B_WORKER).await;

        let client = env.client();
        let input = |mode: &str| json!({ "mode": mode, "group": B_KEY, "secret": MARK });
        let finished_run = trigger(&client, B_FLOW, input("ok")).await;
        let failed_run = trigger(&client, B_FLOW, input("fail")).await;
        let running_run = trigger(&client, B_FLOW, input("hold")).await;
        let queued_run = trigger(&client, SHARED, json!({ "secret": MARK })).await;
        let durable_run = trigger(&client, B_DURABLE, json!({ "secret": MARK })).await;
        for (run, status) in [
            (finished_run, "succeeded"),
            (failed_run, "failed"),
            (running_run, "running"),
            (queued_run, "queued"),
            (durable_run, "running"),
        ] {
            wait_for(
                &format!("B's run {run}'s task is {status}"),
                Duration::from_secs(30),
                || async move {
                    sqlx::query_scalar::<_, String>("SELECT status FROM tasks WHERE run_id = $1")
                        .bind(run)
                        .fetch_one(pool)
                        .await
                        .is_ok_and(|s| s == status)
                },
            )
            .await;
        }
        let durable_task = task_of(pool, tenant, durable_run).await;
        wait_for(
            "B's durable task waits in its log (a memo, then a wait)",
            Duration::from_secs(30),
            || async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM durable_entries WHERE task_id = $1",
                )
                .bind(durable_task)
                .fetch_one(pool)
                .await
                .is_ok_and(|n| n == 2)
            },
        )
        .await;

        let event = client
            .push_event(
                B_EVENT,
                &json!({ "secret": MARK }),
                EventOptions {
                    additional_metadata: Some(json!({ "secret": MARK })),
                    ..Default::default()
                },
            )
            .await
            .expect("B pushes an event");
        let workflow_id = id(
            pool,
            "SELECT id FROM workflows WHERE tenant_id = $1 AND name = $2",
            tenant,
            B_FLOW,
        )
        .await;
        let version_id = id(
            pool,
            "SELECT id FROM workflow_versions WHERE tenant_id = $1 AND workflow_id::text = $2 \
             ORDER BY version DESC LIMIT 1",
            tenant,
            workflow_id,
        )
        .await;
        let filters = format!("/api/v1/stable/tenants/{tenant}/filters");
        let filter = json!({
            "workflowId": workflow_id,
            "expression": "input.secret != ''",
            "scope": "tenantb-scope",
            "payload": { "secret": MARK },
        });
        let filter = created("filter", rest::post(env, &token, &filters, filter).await);
        let crons = format!("/api/v1/tenants/{tenant}/workflows/{B_FLOW}/crons");
        let cron = json!({
            "cronName": "tenantb-cron",
            "cronExpression": "0 0 1 1 *",
            "input": { "secret": MARK },
            "additionalMetadata": { "secret": MARK },
        });
        let cron = created("cron", rest::post(env, &token, &crons, cron).await);
        let schedules = format!("/api/v1/tenants/{tenant}/workflows/{B_FLOW}/scheduled");
        let schedule = json!({
            "triggerAt": "2099-01-01T00:00:00Z",
            "input": { "secret": MARK },
            "additionalMetadata": { "secret": MARK },
        });
        let scheduled = created(
            "schedule",
            rest::post(env, &token, &schedules, schedule).await,
        );

        let ids = Ids {
            tenant,
            workflow: B_FLOW.to_owned(),
            workflow_id,
            version_id,
            finished_run,
            finished_task: task_of(pool, tenant, finished_run).await,
            failed_run,
            failed_task: task_of(pool, tenant, failed_run).await,
            running_run,
            running_task: task_of(pool, tenant, running_run).await,
            queued_run,
            queued_task: task_of(pool, tenant, queued_run).await,
            durable_run,
            durable_task,
            worker,
            event: Uuid::parse_str(&event).expect("an event id"),
            filter,
            cron,
            scheduled,
            api_token: sqlx::query_scalar(
                "SELECT id FROM api_tokens WHERE tenant_id = $1 ORDER BY created_at LIMIT 1",
            )
            .bind(tenant)
            .fetch_one(pool)
            .await
            .expect("B's API token"),
            rate_limit: B_UNITS.to_owned(),
            concurrency_key: B_KEY.to_owned(),
            event_key: B_EVENT.to_owned(),
            wait_key: B_WAIT.to_owned(),
        };
        Self { ids, stop, gate }
    }

    /// Lets the held task end and stops B's worker.
    pub async fn stop(self) {
        self.gate.add_permits(16);
        self.stop.cancel();
    }
}

/// Tenant A: a token, and a workflow named as one of B's ([`SHARED`]).
pub struct TenantA {
    pub tenant: Uuid,
    pub token: String,
}

impl TenantA {
    pub async fn start(env: &TestEnv) -> Self {
        let (tenant, token) = env.tenant("tenant-a").await;
        let spec = one_task_workflow(SHARED, "work", Default::default(), None, None);
        adze_store::workflows::put_workflow(&env.pool, tenant, &spec)
            .await
            .expect("A registers its workflow");
        Self { tenant, token }
    }
}

/// Columns that change while nothing happens: a live worker's heartbeat.
const VOLATILE: &[&str] = &["last_heartbeat_at"];

/// Every base table with a `tenant_id` column.
const TENANT_TABLES: &str = r#"
    SELECT c.table_name::text
    FROM information_schema.columns c
    JOIN information_schema.tables t
      ON t.table_schema = c.table_schema AND t.table_name = c.table_name
    WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id'
      AND t.table_type = 'BASE TABLE'
    ORDER BY 1"#;

async fn tenant_tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(TENANT_TABLES)
        .fetch_all(pool)
        .await
        .expect("the tables")
}

/// The runs list's counts move from their deltas to the hourly rows whenever the
/// reaper folds them: compared as their sums, read from the deltas' table.
const RUN_COUNTS: (&str, &str) = ("run_count_deltas", "run_counts");

/// The tenant's rows of `table` as JSON text, without the volatile columns.
async fn rows_of(pool: &PgPool, table: &str, tenant: Uuid) -> Vec<String> {
    if table == RUN_COUNTS.1 {
        return Vec::new();
    }
    let sql = if table == RUN_COUNTS.0 {
        format!(
            "SELECT to_jsonb(s)::text FROM (SELECT workflow_id, hour, status, sum(n) AS n FROM ( \
               SELECT * FROM {} WHERE tenant_id = $1 UNION ALL \
               SELECT * FROM {} WHERE tenant_id = $1) c \
             GROUP BY 1, 2, 3 HAVING sum(n) <> 0) s ORDER BY 1",
            RUN_COUNTS.0, RUN_COUNTS.1
        )
    } else {
        format!(
            "SELECT (to_jsonb(t) - $2::text[])::text FROM {table} t WHERE t.tenant_id = $1 ORDER BY 1"
        )
    };
    sqlx::query_scalar(&sql)
        .bind(tenant)
        .bind(VOLATILE.to_vec())
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("read {table}: {e}"))
}

/// All of a tenant's rows, by table (its `tenants` row included).
pub struct Snapshot(BTreeMap<String, Vec<String>>);

impl Snapshot {
    pub async fn take(pool: &PgPool, tenant: Uuid) -> Self {
        let mut rows = BTreeMap::new();
        for table in tenant_tables(pool).await {
            let r = rows_of(pool, &table, tenant).await;
            rows.insert(table, r);
        }
        let own: Vec<String> =
            sqlx::query_scalar("SELECT to_jsonb(t)::text FROM tenants t WHERE id = $1")
                .bind(tenant)
                .fetch_all(pool)
                .await
                .expect("the tenant");
        rows.insert("tenants".to_owned(), own);
        Self(rows)
    }

    /// Each row gone or new in `after`, by table.
    pub fn changes(&self, after: &Snapshot) -> Vec<String> {
        let tables: BTreeSet<&String> = self.0.keys().chain(after.0.keys()).collect();
        let mut out = Vec::new();
        for t in tables {
            let (b, a) = (self.0.get(t), after.0.get(t));
            let b: BTreeSet<&String> = b.into_iter().flatten().collect();
            let a: BTreeSet<&String> = a.into_iter().flatten().collect();
            out.extend(
                b.difference(&a)
                    .map(|r| format!("{t}: row changed or gone: {r}")),
            );
            out.extend(
                a.difference(&b)
                    .map(|r| format!("{t}: row new or changed: {r}")),
            );
        }
        out
    }
}

/// A's rows that name an id of B's (or hold B's marker).
pub async fn rows_naming(pool: &PgPool, a: Uuid, b: &Ids) -> Vec<String> {
    let needles: Vec<String> = b
        .named()
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| Uuid::parse_str(v).is_ok())
        .chain([MARK.to_owned()])
        .collect();
    let mut out = Vec::new();
    for table in tenant_tables(pool).await {
        for row in rows_of(pool, &table, a).await {
            if needles.iter().any(|n| row.contains(n.as_str())) {
                out.push(format!("{table}: {row}"));
            }
        }
    }
    out
}
