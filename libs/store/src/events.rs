//! Events and what they trigger: the events themselves (stored once per dedupe key),
//! the runs each started, the workflows' trigger patterns and their event filters.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use adze_core::RunStatus;

use crate::Result;
use crate::sql::Sql;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `EventsService.Push` / `BulkPush`.
    Grpc,
    /// A message published to the NATS intake subject.
    Nats,
}

impl Source {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Grpc => "grpc",
            Source::Nats => "nats",
        }
    }
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Its id (chosen by the caller, so runs can name it before the commit).
    pub id: Uuid,
    /// Key.
    pub key: String,
    /// Payload (the input of the runs it starts).
    pub payload: Value,
    /// Additional metadata (carried to the runs).
    pub additional_metadata: Option<Value>,
    /// Scope, for filters.
    pub scope: Option<String>,
    /// Priority of the runs it starts.
    pub priority: Option<i16>,
    /// Where it came from.
    pub source: Source,
    /// What makes a second delivery of it the same event, if anything does.
    pub dedupe_key: Option<String>,
}

/// Stores events; an event whose dedupe key the tenant already has is not stored
/// again. Returns, per event in order, `None` when it was stored, or the id of the
/// event stored earlier under its dedupe key.
pub async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    events: &[NewEvent],
) -> Result<Vec<Option<Uuid>>> {
    let tenant: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    let id: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let key: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let payload: Vec<&Value> = events.iter().map(|e| &e.payload).collect();
    let meta: Vec<Option<&Value>> = events
        .iter()
        .map(|e| e.additional_metadata.as_ref())
        .collect();
    let scope: Vec<Option<&str>> = events.iter().map(|e| e.scope.as_deref()).collect();
    let priority: Vec<Option<i16>> = events.iter().map(|e| e.priority).collect();
    let source: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
    let dedupe: Vec<Option<&str>> = events.iter().map(|e| e.dedupe_key.as_deref()).collect();
    let stored: Vec<Uuid> = sqlx::query_scalar(
        r#"INSERT INTO events (tenant_id, id, key, payload, additional_metadata, scope, priority,
                               source, dedupe_key)
           SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::jsonb[],
                                $6::text[], $7::int2[], $8::text[], $9::text[])
           ON CONFLICT (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
           RETURNING id"#,
    )
    .bind(&tenant)
    .bind(&id)
    .bind(&key)
    .bind(&payload)
    .bind(&meta)
    .bind(&scope)
    .bind(&priority)
    .bind(&source)
    .bind(&dedupe)
    .fetch_all(&mut **tx)
    .await?;
    let stored: std::collections::HashSet<Uuid> = stored.into_iter().collect();
    let mut out = vec![None; events.len()];
    let missing: Vec<usize> = (0..events.len())
        .filter(|&i| !stored.contains(&events[i].id))
        .collect();
    if missing.is_empty() {
        return Ok(out);
    }
    // Each one not stored has a dedupe key the tenant already had (or that an earlier
    // event of this batch took).
    let (t, d): (Vec<Uuid>, Vec<&str>) = missing
        .iter()
        .map(|&i| {
            (
                events[i].tenant_id,
                events[i].dedupe_key.as_deref().unwrap_or(""),
            )
        })
        .unzip();
    let rows = sqlx::query(
        r#"SELECT e.tenant_id, e.dedupe_key, e.id FROM UNNEST($1::uuid[], $2::text[]) AS k(tenant_id, dedupe_key)
           JOIN events e ON e.tenant_id = k.tenant_id AND e.dedupe_key = k.dedupe_key"#,
    )
    .bind(&t)
    .bind(&d)
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let (tenant_id, dedupe_key, existing): (Uuid, String, Uuid) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        for &i in &missing {
            if events[i].tenant_id == tenant_id
                && events[i].dedupe_key.as_deref() == Some(dedupe_key.as_str())
            {
                out[i] = Some(existing);
            }
        }
    }
    Ok(out)
}

/// A run an event started.
#[derive(Debug, Clone, Copy)]
pub struct EventRun {
    /// Tenant.
    pub tenant_id: Uuid,
    /// The event.
    pub event_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// The filter that let it through, if one did.
    pub filter_id: Option<Uuid>,
}

/// Records which runs events started.
pub async fn link_runs(db: impl PgExecutor<'_>, links: &[EventRun]) -> Result<()> {
    if links.is_empty() {
        return Ok(());
    }
    let tenant: Vec<Uuid> = links.iter().map(|l| l.tenant_id).collect();
    let event: Vec<Uuid> = links.iter().map(|l| l.event_id).collect();
    let run: Vec<Uuid> = links.iter().map(|l| l.run_id).collect();
    let filter: Vec<Option<Uuid>> = links.iter().map(|l| l.filter_id).collect();
    sqlx::query(
        r#"INSERT INTO event_runs (tenant_id, event_id, run_id, filter_id)
           SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[])"#,
    )
    .bind(&tenant)
    .bind(&event)
    .bind(&run)
    .bind(&filter)
    .execute(db)
    .await?;
    Ok(())
}

/// A workflow's event trigger.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// The pattern it declared.
    pub pattern: String,
    /// The workflow.
    pub workflow_id: Uuid,
    /// Its name.
    pub workflow_name: String,
}

/// Every event trigger of the tenant's workflows.
pub async fn triggers(db: impl PgExecutor<'_>, tenant_id: Uuid) -> Result<Vec<Trigger>> {
    let rows = sqlx::query(
        r#"SELECT t.pattern, t.workflow_id, w.name FROM event_triggers t
           JOIN workflows w ON w.tenant_id = t.tenant_id AND w.id = t.workflow_id
           WHERE t.tenant_id = $1 ORDER BY w.name, t.pattern"#,
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Trigger {
                pattern: r.try_get(0)?,
                workflow_id: r.try_get(1)?,
                workflow_name: r.try_get(2)?,
            })
        })
        .collect()
}

/// Replaces a workflow's event triggers and declarative filters (at registration of a
/// new version).
pub async fn replace_triggers(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant_id: Uuid,
    workflow_id: Uuid,
    patterns: &[String],
    filters: &[adze_core::dag::DefaultFilter],
) -> Result<()> {
    sqlx::query("DELETE FROM event_triggers WHERE tenant_id = $1 AND workflow_id = $2")
        .bind(tenant_id)
        .bind(workflow_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        r#"INSERT INTO event_triggers (tenant_id, workflow_id, pattern)
           SELECT $1, $2, p FROM UNNEST($3::text[]) AS p ON CONFLICT DO NOTHING"#,
    )
    .bind(tenant_id)
    .bind(workflow_id)
    .bind(patterns)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM event_filters WHERE tenant_id = $1 AND workflow_id = $2 AND is_declarative",
    )
    .bind(tenant_id)
    .bind(workflow_id)
    .execute(&mut **tx)
    .await?;
    for f in filters {
        sqlx::query(
            r#"INSERT INTO event_filters (tenant_id, id, workflow_id, scope, expression, payload, is_declarative)
               VALUES ($1, $2, $3, $4, $5, $6, true)"#,
        )
        .bind(tenant_id)
        .bind(Uuid::now_v7())
        .bind(workflow_id)
        .bind(&f.scope)
        .bind(&f.expression)
        .bind(&f.payload)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// An event filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: Uuid,
    /// The workflow it applies to.
    pub workflow_id: Uuid,
    /// The scope it applies in.
    pub scope: String,
    /// CEL expression over the event.
    pub expression: String,
    /// Payload handed to the runs it lets through.
    pub payload: Value,
    /// Declared with the workflow (replaced at its registration).
    pub is_declarative: bool,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Updated at.
    pub updated_at: DateTime<Utc>,
}

const FILTER_COLUMNS: &str = "id, tenant_id, workflow_id, scope, expression, payload, is_declarative, created_at, updated_at";

fn filter_row(r: &sqlx::postgres::PgRow) -> Result<Filter> {
    Ok(Filter {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        workflow_id: r.try_get("workflow_id")?,
        scope: r.try_get("scope")?,
        expression: r.try_get("expression")?,
        payload: r.try_get("payload")?,
        is_declarative: r.try_get("is_declarative")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A filter's fields as a client gives them.
#[derive(Debug, Clone)]
pub struct FilterFields {
    /// Scope.
    pub scope: String,
    /// Expression (checked by the caller).
    pub expression: String,
    /// Payload.
    pub payload: Value,
}

/// Creates a filter; `None` when the workflow is not the tenant's.
pub async fn create_filter(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    workflow_id: Uuid,
    f: &FilterFields,
) -> Result<Option<Filter>> {
    let row = sqlx::query(&format!(
        r#"INSERT INTO event_filters (tenant_id, id, workflow_id, scope, expression, payload)
           SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS
             (SELECT 1 FROM workflows WHERE tenant_id = $1 AND id = $3)
           RETURNING {FILTER_COLUMNS}"#
    ))
    .bind(tenant_id)
    .bind(Uuid::now_v7())
    .bind(workflow_id)
    .bind(&f.scope)
    .bind(&f.expression)
    .bind(&f.payload)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(filter_row).transpose()
}

/// One filter of the tenant.
pub async fn get_filter(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Filter>> {
    let row = sqlx::query(&format!(
        "SELECT {FILTER_COLUMNS} FROM event_filters WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(filter_row).transpose()
}

/// Changes the given fields of a filter; `None` when it is not the tenant's.
pub async fn update_filter(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
    scope: Option<&str>,
    expression: Option<&str>,
    payload: Option<&Value>,
) -> Result<Option<Filter>> {
    let row = sqlx::query(&format!(
        r#"UPDATE event_filters SET scope = COALESCE($3, scope),
               expression = COALESCE($4, expression), payload = COALESCE($5, payload),
               updated_at = now()
           WHERE tenant_id = $1 AND id = $2 RETURNING {FILTER_COLUMNS}"#
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(scope)
    .bind(expression)
    .bind(payload)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(filter_row).transpose()
}

/// Deletes a filter and returns it; `None` when it is not the tenant's.
pub async fn delete_filter(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Filter>> {
    let row = sqlx::query(&format!(
        "DELETE FROM event_filters WHERE tenant_id = $1 AND id = $2 RETURNING {FILTER_COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(filter_row).transpose()
}

/// The tenant's filters, optionally of some workflows and scopes only, oldest first.
pub async fn list_filters(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    workflow_ids: &[Uuid],
    scopes: &[String],
    offset: i64,
    limit: i64,
) -> Result<(Vec<Filter>, i64)> {
    let rows = sqlx::query(&format!(
        r#"SELECT {FILTER_COLUMNS}, count(*) OVER () AS total FROM event_filters
           WHERE tenant_id = $1
             AND (cardinality($2::uuid[]) = 0 OR workflow_id = ANY($2))
             AND (cardinality($3::text[]) = 0 OR scope = ANY($3))
           ORDER BY created_at, id OFFSET $4 LIMIT $5"#
    ))
    .bind(tenant_id)
    .bind(workflow_ids)
    .bind(scopes)
    .bind(offset)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let total = crate::total(&rows)?;
    Ok((rows.iter().map(filter_row).collect::<Result<_>>()?, total))
}

/// A stored event with what it started.
#[derive(Debug, Clone)]
pub struct EventView {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: Uuid,
    /// Key.
    pub key: String,
    /// Payload.
    pub payload: Value,
    /// Additional metadata.
    pub additional_metadata: Option<Value>,
    /// Scope.
    pub scope: Option<String>,
    /// Where it came from.
    pub source: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// The runs it started, with the filter that let each through.
    pub runs: Vec<(Uuid, Option<Uuid>)>,
    /// How many of those runs are in each status (`running` once one of its tasks
    /// left the queue).
    pub run_statuses: Vec<(RunStatus, i64)>,
}

/// What to list events by.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only these keys.
    pub keys: Vec<String>,
    /// Only these ids.
    pub ids: Vec<Uuid>,
    /// Only these scopes.
    pub scopes: Vec<String>,
    /// Only events whose additional metadata holds all of these pairs.
    pub additional_metadata: Option<Value>,
    /// Only events that started a run of one of these workflows.
    pub workflow_ids: Vec<Uuid>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Skip this many.
    pub offset: i64,
    /// At most this many.
    pub limit: i64,
}

/// The tenant's events, newest first, with the total that matched.
pub async fn list(
    db: impl PgExecutor<'_> + Copy,
    tenant_id: Uuid,
    q: &EventQuery,
) -> Result<(Vec<EventView>, i64)> {
    let rows = sqlx::query(
        r#"SELECT e.id, e.tenant_id, e.key, e.payload, e.additional_metadata, e.scope, e.source,
                  e.created_at, count(*) OVER () AS total
           FROM events e
           WHERE e.tenant_id = $1
             AND (cardinality($2::text[]) = 0 OR e.key = ANY($2))
             AND (cardinality($3::uuid[]) = 0 OR e.id = ANY($3))
             AND (cardinality($4::text[]) = 0 OR e.scope = ANY($4))
             AND ($5::jsonb IS NULL OR e.additional_metadata @> $5)
             AND ($6::timestamptz IS NULL OR e.created_at >= $6)
             AND ($7::timestamptz IS NULL OR e.created_at < $7)
             AND (cardinality($8::uuid[]) = 0 OR EXISTS (
                   SELECT 1 FROM event_runs er JOIN runs r ON r.tenant_id = er.tenant_id AND r.id = er.run_id
                   WHERE er.tenant_id = e.tenant_id AND er.event_id = e.id AND r.workflow_id = ANY($8)))
           ORDER BY e.created_at DESC, e.id DESC OFFSET $9 LIMIT $10"#,
    )
    .bind(tenant_id)
    .bind(&q.keys)
    .bind(&q.ids)
    .bind(&q.scopes)
    .bind(&q.additional_metadata)
    .bind(q.since)
    .bind(q.until)
    .bind(&q.workflow_ids)
    .bind(q.offset)
    .bind(q.limit)
    .fetch_all(db)
    .await?;
    let total = crate::total(&rows)?;
    let mut events = rows
        .iter()
        .map(|r| {
            Ok(EventView {
                id: r.try_get("id")?,
                tenant_id: r.try_get("tenant_id")?,
                key: r.try_get("key")?,
                payload: r.try_get("payload")?,
                additional_metadata: r.try_get("additional_metadata")?,
                scope: r.try_get("scope")?,
                source: r.try_get("source")?,
                created_at: r.try_get("created_at")?,
                runs: Vec::new(),
                run_statuses: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    attach_runs(db, tenant_id, &mut events).await?;
    Ok((events, total))
}

/// One event of the tenant.
pub async fn get(
    db: impl PgExecutor<'_> + Copy,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<EventView>> {
    let q = EventQuery {
        ids: vec![id],
        limit: 1,
        ..Default::default()
    };
    Ok(list(db, tenant_id, &q).await?.0.pop())
}

/// Fills in each event's runs and their statuses (a run's status is final or derived
/// from its tasks: `queued` until one of them starts).
async fn attach_runs(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    events: &mut [EventView],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    static RUNS: Sql = Sql::new(
        r#"SELECT er.event_id, er.run_id, er.filter_id, r.status,
                  EXISTS (SELECT 1 FROM tasks t WHERE t.tenant_id = r.tenant_id AND t.run_id = r.id
                            AND t.status NOT IN ({queued}, {pending})) AS started
           FROM event_runs er JOIN runs r ON r.tenant_id = er.tenant_id AND r.id = er.run_id
           WHERE er.tenant_id = $1 AND er.event_id = ANY($2)
           ORDER BY er.run_id"#,
    );
    let rows = sqlx::query(RUNS.text())
        .bind(tenant_id)
        .bind(&ids)
        .fetch_all(db)
        .await?;
    for r in rows {
        let event_id: Uuid = r.try_get("event_id")?;
        let stored: String = r.try_get("status")?;
        let stored: RunStatus = stored
            .parse()
            .map_err(|e| crate::Error::Corrupt(format!("{e}")))?;
        let status = if stored.is_terminal() {
            stored
        } else if r.try_get("started")? {
            RunStatus::Running
        } else {
            RunStatus::Queued
        };
        if let Some(e) = events.iter_mut().find(|e| e.id == event_id) {
            e.runs.push((r.try_get("run_id")?, r.try_get("filter_id")?));
            match e.run_statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => e.run_statuses.push((status, 1)),
            }
        }
    }
    Ok(())
}
