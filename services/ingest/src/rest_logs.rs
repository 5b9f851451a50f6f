//! REST for task logs (HATCHET-REST.md P3-8): `GET /api/v1/stable/tasks/{task}/logs`,
//! the lines `EventsService.PutLog` stored for a task, filtered by time, text, level and
//! attempt, oldest first unless asked otherwise (as Hatchet's engine answers).
//!
//! Beside Hatchet's fields the answer carries `adzeRun` (the task's run and whether it
//! has ended), which the SDKs' models ignore: a reader following the lines (`adze runs
//! logs --follow`) learns from it when no more will come.

use adze_store::logs::{LEVELS, LogLine, LogQuery, TaskLogs};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Deps;
use crate::rest::{ApiError, Pagination, api_error, caller};
use crate::rest_query::{all, bad, one, pairs, time};

pub(crate) fn router() -> axum::Router<Deps> {
    axum::Router::new().route("/api/v1/stable/tasks/{task}/logs", get(list_logs))
}

/// Page size when none is asked for, as Hatchet's.
const DEFAULT_LIMIT: i64 = 50;
/// Largest page, as Hatchet's.
const MAX_LIMIT: i64 = 10_000;

/// A log line (`V1LogLine`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = V1LogLine)]
pub(crate) struct LogLineOut {
    created_at: String,
    message: String,
    /// An object (`{}` when the line has none).
    #[schema(value_type = Object)]
    metadata: Value,
    task_external_id: Uuid,
    task_display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_count: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<i32>,
    level: String,
}

/// Adze's addition: the task's run, and whether it has ended (then every line its
/// tasks stored while it ran is counted in this answer).
#[derive(Serialize, ToSchema)]
#[schema(as = AdzeLogRun)]
pub(crate) struct RunOut {
    id: Uuid,
    done: bool,
}

/// A page of a task's log lines (`V1LogLineList`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = V1LogLineList)]
pub(crate) struct LogLineList {
    pagination: Pagination,
    rows: Vec<LogLineOut>,
    adze_run: RunOut,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl LogLineOut {
    fn new(task: Uuid, display_name: &str, l: LogLine) -> Self {
        let metadata = match l.metadata {
            Some(m @ Value::Object(_)) => m,
            _ => Value::Object(serde_json::Map::new()),
        };
        Self {
            created_at: ts(l.created_at),
            message: l.message,
            metadata,
            task_external_id: task,
            task_display_name: display_name.to_string(),
            retry_count: l.retry_count,
            attempt: l.retry_count.map(|r| r + 1),
            level: l.level,
        }
    }
}

impl LogLineList {
    fn new(task: Uuid, limit: i64, logs: TaskLogs) -> Self {
        let name = logs.readable_id;
        Self {
            pagination: Pagination::new(0, limit, logs.total),
            rows: logs
                .lines
                .into_iter()
                .map(|l| LogLineOut::new(task, &name, l))
                .collect(),
            adze_run: RunOut {
                id: logs.run_id,
                done: logs.run_status.is_terminal(),
            },
        }
    }
}

fn int(pairs: &[(String, String)], name: &str) -> Result<Option<i64>, ApiError> {
    one(pairs, name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| bad(format!("{name} {v:?} is not an integer")))
        })
        .transpose()
}

fn query(q: &[(String, String)]) -> Result<LogQuery, ApiError> {
    let limit = int(q, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(format!(
            "limit {limit} is out of range (1 to {MAX_LIMIT})"
        )));
    }
    let levels = all(q, "levels")
        .into_iter()
        .map(|l| {
            LEVELS
                .contains(&l)
                .then(|| l.to_string())
                .ok_or_else(|| bad(format!("levels: {l:?} is not one of {}", LEVELS.join(", "))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let newest_first = match one(q, "order_by_direction") {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(o) => return Err(bad(format!("order_by_direction {o:?} is not ASC or DESC"))),
    };
    let attempt = int(q, "attempt")?
        .map(|a| {
            i32::try_from(a).ok().filter(|a| *a >= 1).ok_or_else(|| {
                bad(format!(
                    "attempt {a} is not a positive integer (the first is 1)"
                ))
            })
        })
        .transpose()?;
    Ok(LogQuery {
        limit,
        since: time(q, "since")?,
        until: time(q, "until")?,
        search: one(q, "search").map(str::to_string),
        levels,
        newest_first,
        attempt,
    })
}

/// `GET /api/v1/stable/tasks/{task}/logs` (`logs.list`): a task's log lines.
#[utoipa::path(
    get,
    path = "/api/v1/stable/tasks/{task}/logs",
    params(
        ("task" = Uuid, Path, description = "A task id"),
        ("limit" = Option<i64>, Query, description = "Most lines, 1 to 10000 (default 50)"),
        ("since" = Option<String>, Query, description = "Lines at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Lines at or before (RFC 3339)"),
        ("search" = Option<String>, Query, description = "Lines containing this"),
        ("levels" = Option<Vec<String>>, Query, description = "Repeated: any of DEBUG, INFO, WARN, ERROR"),
        ("order_by_direction" = Option<String>, Query, description = "ASC (default: oldest first) or DESC"),
        ("attempt" = Option<i32>, Query, description = "Lines of this attempt only (the first is 1)"),
    ),
    responses(
        (status = 200, body = LogLineList),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn list_logs(
    State(deps): State<Deps>,
    Path(task): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<LogLineList>, ApiError> {
    let task = Uuid::parse_str(&task).map_err(|_| bad("invalid task id"))?;
    let tenant = caller(&deps, &headers).await?;
    let query = query(&pairs(raw))?;
    // Unknown, or another tenant's: do not reveal which.
    let logs = adze_store::logs::list(&deps.pool, tenant, task, &query)
        .await
        .map_err(|e| api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "not found"))?;
    Ok(Json(LogLineList::new(task, query.limit, logs)))
}
