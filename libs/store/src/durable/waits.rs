//! Waits: those whose sleep ended (the timeout-reaper), those an event meets (ingest),
//! the events stored before one that its lookback catches (the dispatcher, as it
//! registers it), and deciding them.

use super::*;

/// A wait whose next sleep has ended, claimed by a reaper.
#[derive(Debug, Clone)]
pub struct DueWait {
    /// Tenant.
    pub tenant_id: Uuid,
    /// The durable task.
    pub task_id: Uuid,
    /// Where the wait is in its log.
    pub at: Position,
    /// What it waits for.
    pub conditions: TaskConditions,
    /// Event payloads that met some of its conditions, by condition key.
    pub hits: serde_json::Map<String, Value>,
    /// When it started waiting (its sleeps count from then).
    pub armed_at: DateTime<Utc>,
}

/// Claims up to `limit` waits whose next sleep ended by `now`, locking their tasks'
/// logs (skipping logs another transaction holds), so two reapers never decide one
/// wait together and a reaper takes a log's lock before any entry's, as every
/// satisfier does. Call inside a transaction.
pub async fn due_waits(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DueWait>> {
    let rows = sqlx::query(
        r#"SELECT e.tenant_id, e.task_id, e.branch, e.node, e.conditions, e.hits, e.armed_at
           FROM durable_entries e
           JOIN durable_logs l ON l.tenant_id = e.tenant_id AND l.task_id = e.task_id
           WHERE e.wake_at IS NOT NULL AND e.satisfied_at IS NULL AND e.wake_at <= $1
           ORDER BY e.wake_at
           LIMIT $2
           FOR UPDATE OF l SKIP LOCKED"#,
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(due_wait).collect()
}

/// A wait read from a row of `durable_entries` `e`.
fn due_wait(r: &sqlx::postgres::PgRow) -> Result<DueWait> {
    let conditions: Option<Value> = r.try_get("conditions")?;
    let hits: Option<Value> = r.try_get("hits")?;
    Ok(DueWait {
        tenant_id: r.try_get("tenant_id")?,
        task_id: r.try_get("task_id")?,
        at: Position {
            branch: r.try_get("branch")?,
            node: r.try_get("node")?,
        },
        conditions: serde_json::from_value(conditions.unwrap_or(Value::Null))
            .map_err(|e| Error::Corrupt(format!("a durable wait's conditions: {e}")))?,
        hits: match hits {
            Some(Value::Object(m)) => m,
            _ => Default::default(),
        },
        armed_at: r.try_get("armed_at")?,
    })
}

/// Sets when a wait's next sleep ends (none: it waits for events only).
pub async fn set_wake(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    at: Position,
    wake_at: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query(
        r#"UPDATE durable_entries SET wake_at = $5
           WHERE tenant_id = $1 AND task_id = $2 AND branch = $3 AND node = $4"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(at.branch)
    .bind(at.node)
    .bind(wake_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// What became of a wait looked at now: satisfied (with the payload the task is
/// handed), or still waiting (until its next sleep ends, if it has one).
pub fn decide_wait(
    conditions: &TaskConditions,
    hits: &serde_json::Map<String, Value>,
    armed_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> std::result::Result<Outcome, Option<DateTime<Utc>>> {
    use adze_core::conditions::{Decision, Facts, decide};
    let facts = Facts {
        parents: &[],
        events: hits,
        armed_at,
        now,
    };
    match decide(conditions, &facts, |_, _| false) {
        Decision::Queue(met) => Ok(Outcome {
            result: serde_json::to_vec(&adze_core::durable::wait_payload(met)).unwrap_or_default(),
            is_failure: false,
            error: None,
        }),
        Decision::Wait { until, .. } => Err(until),
        // A wait has only conditions that let it go on.
        Decision::Skip(_) | Decision::Cancel(_) => Err(None),
    }
}

/// A wait that listens for an event key, as an event with that key finds it.
#[derive(Debug, Clone)]
pub struct EventWait {
    /// The key it listens for.
    pub event_key: String,
    /// The wait.
    pub wait: DueWait,
}

/// The open waits of the tenant's durable tasks that listen for any of `keys`, with
/// their logs locked (in task order) until the transaction ends: the event's
/// transaction records what it meets and decides each.
pub async fn event_waits(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    keys: &[&str],
) -> Result<Vec<EventWait>> {
    let rows = sqlx::query(
        r#"SELECT w.event_key, e.tenant_id, e.task_id, e.branch, e.node, e.conditions, e.hits, e.armed_at
           FROM durable_event_waits w
           JOIN durable_entries e ON e.tenant_id = w.tenant_id AND e.task_id = w.task_id
                                 AND e.branch = w.branch AND e.node = w.node
           JOIN durable_logs l ON l.tenant_id = e.tenant_id AND l.task_id = e.task_id
           WHERE w.tenant_id = $1 AND w.event_key = ANY($2) AND e.satisfied_at IS NULL
           ORDER BY e.task_id, e.branch, e.node
           FOR UPDATE OF l"#,
    )
    .bind(tenant_id)
    .bind(keys)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EventWait {
                event_key: r.try_get("event_key")?,
                wait: due_wait(r)?,
            })
        })
        .collect()
}

/// Records the event payloads that met some of a wait's conditions (by condition
/// key), for when it is decided.
pub async fn set_hits(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    at: Position,
    hits: &serde_json::Map<String, Value>,
) -> Result<()> {
    sqlx::query(
        r#"UPDATE durable_entries SET hits = $5
           WHERE tenant_id = $1 AND task_id = $2 AND branch = $3 AND node = $4"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(at.branch)
    .bind(at.node)
    .bind(Value::Object(hits.clone()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Most stored events one lookback condition with an expression reads (oldest first):
/// past them, only events pushed from now on can meet it. One without reads only the
/// oldest, which meets it.
pub const LOOKBACK_LIMIT: i64 = 1_000;

/// Looks back for the wait just registered at `at` (in the same transaction, its log
/// locked): each of its event conditions with a scope and a start
/// ([`TaskConditions::lookbacks`]) is met by the oldest event of the tenant stored with
/// its key and scope since that start whose payload `holds` its expression
/// (`holds(expression, payload)`: the store does not evaluate CEL). The hits are
/// recorded, and the wait satisfied when they meet it (OR within an or-group, AND
/// across groups); events pushed from now on are matched as they come (ingest).
/// Returns whether it is satisfied.
pub async fn look_back(
    conn: &mut PgConnection,
    log: &Log,
    at: Position,
    conditions: &TaskConditions,
    holds: impl Fn(&str, &Value) -> bool,
) -> Result<bool> {
    let wanted = conditions.lookbacks();
    if wanted.is_empty() {
        return Ok(false);
    }
    let mut index = Vec::with_capacity(wanted.len());
    let mut keys = Vec::with_capacity(wanted.len());
    let mut scopes = Vec::with_capacity(wanted.len());
    let mut since = Vec::with_capacity(wanted.len());
    let mut limits = Vec::with_capacity(wanted.len());
    for (i, key, scope, start) in wanted {
        index.push(i32::try_from(i).map_err(|_| Error::Corrupt("too many conditions".into()))?);
        keys.push(key);
        scopes.push(scope);
        since.push(start);
        limits.push(if conditions.conditions[i].expression.is_empty() {
            1
        } else {
            LOOKBACK_LIMIT
        });
    }
    // One read for every condition (`events_lookback`): each one's events, oldest
    // first.
    let rows = sqlx::query(
        r#"SELECT w.i, e.payload
           FROM UNNEST($2::int4[], $3::text[], $4::text[], $5::timestamptz[], $6::int8[])
                AS w(i, key, scope, since, n)
           CROSS JOIN LATERAL (
               SELECT ev.payload, ev.created_at, ev.id FROM events ev
               WHERE ev.tenant_id = $1 AND ev.key = w.key AND ev.scope = w.scope
                 AND ev.created_at >= w.since
               ORDER BY ev.created_at, ev.id
               LIMIT w.n
           ) e
           ORDER BY w.i, e.created_at, e.id"#,
    )
    .bind(log.tenant_id)
    .bind(&index)
    .bind(&keys)
    .bind(&scopes)
    .bind(&since)
    .bind(&limits)
    .fetch_all(&mut *conn)
    .await?;
    let mut hits = serde_json::Map::new();
    for r in &rows {
        let i: i32 = r.try_get("i")?;
        let Some(c) = usize::try_from(i)
            .ok()
            .and_then(|i| conditions.conditions.get(i))
        else {
            continue;
        };
        if hits.contains_key(&c.key) {
            continue;
        }
        let payload: Value = r.try_get("payload")?;
        if holds(&c.expression, &payload) {
            hits.insert(c.key.clone(), payload);
        }
    }
    if hits.is_empty() {
        return Ok(false);
    }
    // Registered just now: none of its sleeps has ended.
    let now = Utc::now();
    match decide_wait(conditions, &hits, now, now) {
        Ok(outcome) => {
            satisfy(conn, log.tenant_id, log.task_id, &[(at, outcome)]).await?;
            Ok(true)
        }
        Err(_) => {
            set_hits(conn, log.tenant_id, log.task_id, at, &hits).await?;
            Ok(false)
        }
    }
}
