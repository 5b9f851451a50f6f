//! `trigger_runs`: children logged first (each with the id it is created with), then
//! created through ingest under their keys, then acknowledged in request order.

use super::*;

/// How long a spawn waits for ingest to create its children.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a child's idempotency key (`child:<task>:<key>`) is held: as long as any
/// replay of its parent may come.
const CHILD_KEY_TTL_MS: i64 = 30 * 24 * 3_600 * 1_000;

impl Session {
    pub(super) async fn trigger_runs(&self, t: DurableTaskTriggerRunsRequest) {
        let task = TaskRef {
            text: t.durable_task_external_id,
            invocation: t.invocation_count,
        };
        let Some(id) = self.task(&task).await else {
            return;
        };
        for o in &t.trigger_opts {
            if o.name.trim().is_empty() {
                self.error(
                    &task,
                    None,
                    false,
                    "trigger_opts: a run without a workflow name".into(),
                )
                .await;
                return;
            }
        }
        let planned = match self.plan_spawns(&task, id, &t.trigger_opts).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                self.error(&task, None, false, format!("storage unavailable: {e}"))
                    .await;
                return;
            }
        };
        // The children that do not exist yet are created through ingest, each with
        // the id its entry names and under its key, so asking again is the same run.
        let asked = futures::future::join_all(planned.iter().zip(&t.trigger_opts).map(
            |(p, o)| async move {
                if p.exists {
                    return FireReply::Run { run_id: p.child };
                }
                self.deps
                    .bus
                    .fire(&self.spawn_request(p, o), SPAWN_TIMEOUT)
                    .await
            },
        ))
        .await;
        let mut refused = Vec::new();
        for (p, reply) in planned.iter().zip(&asked) {
            match reply {
                FireReply::Run { .. } => {}
                FireReply::Refused { reason } | FireReply::Unavailable { reason } => {
                    refused.push((p, reason.clone()));
                }
            }
        }
        if let Some((first, reason)) = refused.first() {
            // What was not spawned is not logged either: a new call spawns it again.
            let gone: Vec<Position> = refused
                .iter()
                .filter(|(p, _)| p.new)
                .map(|(p, _)| p.at)
                .collect();
            if let Err(e) = self.forget(id, &gone).await {
                tracing::warn!(error = %e, "cannot forget unspawned children");
            }
            self.error(
                &task,
                Some(first.at),
                false,
                format!("cannot spawn a run of {:?}: {reason}", first.workflow),
            )
            .await;
            return;
        }
        self.send(Out::TriggerRunsAck(
            DurableTaskEventTriggerRunsAckResponse {
                durable_task_external_id: task.text.clone(),
                invocation_count: task.invocation,
                run_entries: planned
                    .iter()
                    .map(|p| DurableTaskRunAckEntry {
                        node_id: p.at.node,
                        branch_id: p.at.branch,
                        workflow_run_external_id: p.child.to_string(),
                    })
                    .collect(),
            },
        ))
        .await;
        self.hand(id).await;
    }

    /// Logs the spawns of one `trigger_runs` (or finds them logged): one entry per
    /// child, in request order. `None` when the call was refused (and told so).
    async fn plan_spawns(
        &self,
        task: &TaskRef,
        id: Uuid,
        opts: &[TriggerWorkflowRequest],
    ) -> Result<Option<Vec<Spawn>>, adze_store::Error> {
        let asked: Vec<Asked> = opts
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let keyed = o.child_key.as_deref().filter(|k| !k.is_empty());
                Asked {
                    call: run_call(&o.name, &o.input),
                    workflow: o.name.clone(),
                    spawn_key: match keyed {
                        Some(k) => format!("key:{k}"),
                        None => format!("index:{}", o.child_index.unwrap_or(i as i32)),
                    },
                    keyed: keyed.is_some(),
                }
            })
            .collect();
        let (tenant, t) = (self.tenant, task.clone());
        let logged = self
            .writer
            .write((tenant, id), move |conn| {
                Box::pin(async move { log_spawns(conn, tenant, &t, id, asked).await })
            })
            .await?;
        let mut planned = match logged {
            Ok(planned) => planned,
            Err(refusal) => {
                self.send(refusal).await;
                return Ok(None);
            }
        };
        // Children already created need no second ask.
        let children: Vec<Uuid> = planned.iter().map(|p| p.child).collect();
        let existing = adze_store::runs::existing(&self.deps.pool, self.tenant, &children).await?;
        for p in &mut planned {
            p.exists = existing.contains(&p.child);
        }
        Ok(Some(planned))
    }

    /// What ingest is asked to create a planned child with.
    fn spawn_request(&self, p: &Spawn, o: &TriggerWorkflowRequest) -> FireRequest {
        let input = serde_json::from_str(&o.input).unwrap_or_else(|_| json!({}));
        let additional_metadata = o
            .additional_metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_else(|| json!({}));
        let key = if p.at.branch == 1 {
            format!("child:{}:{}", p.parent_task, p.spawn_key)
        } else {
            format!("child:{}:b{}:{}", p.parent_task, p.at.branch, p.spawn_key)
        };
        FireRequest {
            tenant_id: self.tenant,
            workflow: o.name.clone(),
            input,
            additional_metadata,
            priority: o.priority.and_then(|p| i16::try_from(p).ok()),
            key,
            triggers: json!({
                "parent_workflow_run_id": p.parent_run.to_string(),
                "child_index": o.child_index,
                "child_key": o.child_key.as_deref().filter(|k| !k.is_empty()),
            }),
            parent: Some((p.parent_run, p.parent_task, p.spawn_key.clone())),
            key_ttl_ms: CHILD_KEY_TTL_MS,
            run_id: Some(p.child),
        }
    }

    async fn forget(&self, id: Uuid, at: &[Position]) -> Result<(), adze_store::Error> {
        if at.is_empty() {
            return Ok(());
        }
        let mut conn = self.deps.pool.acquire().await?;
        log::forget(&mut conn, self.tenant, id, at).await
    }
}

/// A child a `trigger_runs` asks for.
struct Asked {
    call: Call,
    workflow: String,
    spawn_key: String,
    /// The task named its key (else it is the child's index).
    keyed: bool,
}

/// Logs the children of one `trigger_runs` in `conn`'s transaction: each child spawned
/// under its key before (a replay re-attaches to it), or the entry the log has at the
/// next node, or a new entry there; or what refuses the call.
async fn log_spawns(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    task: &TaskRef,
    id: Uuid,
    asked: Vec<Asked>,
) -> Result<Result<Vec<Spawn>, Out>, adze_store::Error> {
    let mut log = match open(conn, tenant, task, id).await? {
        Ok(log) => log,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut planned: Vec<Spawn> = Vec::with_capacity(asked.len());
    for a in asked {
        let logged = match log::spawned(conn, &log, &a.spawn_key).await? {
            Some(e) => e,
            None => {
                let at = log.allocate();
                match log::entry_at(conn, &log, at).await? {
                    Some(e) => e,
                    None => {
                        let p = Spawn::new(at, &a.workflow, a.spawn_key, (log.run_id, id));
                        log::insert(
                            conn,
                            &log,
                            &NewEntry {
                                spawn_key: Some(&p.spawn_key),
                                child_run_id: Some(p.child),
                                ..NewEntry::of(at, &a.call)
                            },
                        )
                        .await?;
                        planned.push(p);
                        continue;
                    }
                }
            }
        };
        // A child found by the key the task named is the same child whatever its
        // input; otherwise the call must be the logged one.
        if !a.keyed
            && let Some(nde) = mismatch(task, id, logged.at, &logged.call, &a.call)
        {
            return Ok(Err(nde));
        }
        let Some(child) = logged.child_run_id else {
            let message = format!(
                "non-determinism error in task {id} at node {}: the durable log has {} {} \
                 there, not a spawn",
                logged.at, logged.call.kind, logged.call.what
            );
            return Ok(Err(error_out(task, Some(logged.at), true, message)));
        };
        log.touch(logged.at.node);
        let key = logged.spawn_key.unwrap_or(a.spawn_key);
        let mut p = Spawn::new(logged.at, &a.workflow, key, (log.run_id, id));
        p.child = child;
        p.new = false;
        planned.push(p);
    }
    log::save(conn, &mut log).await?;
    Ok(Ok(planned))
}

/// A child of one `trigger_runs`, as logged.
struct Spawn {
    at: Position,
    workflow: String,
    spawn_key: String,
    child: Uuid,
    /// Logged by this call.
    new: bool,
    /// Created already.
    exists: bool,
    parent_run: Uuid,
    parent_task: Uuid,
}

impl Spawn {
    /// A new child at `at` of the task `(run, task)`, under `spawn_key`.
    fn new(at: Position, workflow: &str, spawn_key: String, (run, task): (Uuid, Uuid)) -> Self {
        Self {
            at,
            workflow: workflow.to_string(),
            spawn_key,
            child: Uuid::now_v7(),
            new: true,
            exists: false,
            parent_run: run,
            parent_task: task,
        }
    }
}
