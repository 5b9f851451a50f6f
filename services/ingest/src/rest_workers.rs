//! Workers over REST (HATCHET-REST.md P4, `worker_list` and `worker_get`): the SDKs'
//! `workers.list()` and `workers.get(id)`, and the dashboard's workers page. A worker
//! answers as Hatchet's `Worker`, with what the dashboard draws beside it: the slots
//! its tasks take now (`slotsUsed`, `durableSlotsUsed`), its durable slots, and when
//! it was last handed a task (`lastTaskAcceptedAt`, also once it holds none; null until
//! its first).

use std::collections::BTreeMap;

use adze_core::WorkerStatus;
use adze_core::labels::LabelValue;
use adze_store::workers::WorkerSummary;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Deps;
use crate::rest::{
    ApiError, ResourceMeta, api_error, caller, caller_of, parse_id, store_error, ts,
};
use crate::rest_query::{all, bad, pairs};
use crate::rest_runs::PaginationResponse;

pub(crate) fn router() -> axum::Router<Deps> {
    axum::Router::new()
        .route("/api/v1/tenants/{tenant}/worker", get(list_workers))
        .route("/api/v1/workers/{worker}", get(get_worker))
}

/// A worker's status as the SDKs' closed `WorkerStatus` enum spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schema(as = WorkerStatus)]
pub(crate) enum ApiWorkerStatus {
    Active,
    Inactive,
    Paused,
}

impl From<WorkerStatus> for ApiWorkerStatus {
    fn from(s: WorkerStatus) -> Self {
        match s {
            WorkerStatus::Paused => Self::Paused,
            WorkerStatus::Active | WorkerStatus::Registered => Self::Active,
            WorkerStatus::Disconnected | WorkerStatus::Inactive => Self::Inactive,
        }
    }
}

impl ApiWorkerStatus {
    /// The stored statuses shown as this one.
    fn stored(self) -> impl Iterator<Item = WorkerStatus> {
        WorkerStatus::ALL
            .into_iter()
            .filter(move |s| Self::from(*s) == self)
    }

    fn parse(v: &str) -> Result<Self, ApiError> {
        match v {
            "ACTIVE" => Ok(Self::Active),
            "INACTIVE" => Ok(Self::Inactive),
            "PAUSED" => Ok(Self::Paused),
            other => Err(bad(format!(
                "statuses: {other:?} is not one of ACTIVE, INACTIVE, PAUSED"
            ))),
        }
    }
}

/// How a worker is run: Adze's are all the user's own processes.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum WorkerType {
    Selfhosted,
}

/// The slots of one kind (`default`, `durable`): how many, and how many are free.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkerSlotConfig {
    available: i64,
    limit: i64,
}

/// A label of a worker.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkerLabel {
    metadata: ResourceMeta,
    key: String,
    value: String,
}

/// The SDK a worker runs, as it registered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkerRuntimeInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    sdk_version: Option<String>,
    /// `GOLANG`, `PYTHON`, `TYPESCRIPT` or `RUBY`, when it is one of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<&'static str>,
}

/// A worker (`Worker`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Worker {
    metadata: ResourceMeta,
    name: String,
    #[serde(rename = "type")]
    kind: WorkerType,
    status: ApiWorkerStatus,
    last_heartbeat_at: String,
    actions: Vec<String>,
    /// `default` and, for a worker that has some, `durable`.
    slot_config: BTreeMap<&'static str, WorkerSlotConfig>,
    labels: Vec<WorkerLabel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime_info: Option<WorkerRuntimeInfo>,
    /// Adze: default slots the tasks it holds take now.
    slots_used: i64,
    /// Adze: its durable slots.
    durable_slots: i32,
    /// Adze: durable slots the durable tasks it holds take now.
    durable_slots_used: i64,
    /// Adze: when it was last handed a task, whether or not it holds one now (null
    /// until its first).
    last_task_accepted_at: Option<String>,
}

/// A page of workers (`WorkerList`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkerList {
    pagination: PaginationResponse,
    rows: Vec<Worker>,
}

fn runtime_of(sdk: Option<&str>) -> Option<WorkerRuntimeInfo> {
    let (language, version) = sdk?.split_once(' ').unwrap_or((sdk?, ""));
    let language = match language {
        "GO" | "GOLANG" => Some("GOLANG"),
        "PYTHON" => Some("PYTHON"),
        "TYPESCRIPT" => Some("TYPESCRIPT"),
        "RUBY" => Some("RUBY"),
        _ => None,
    };
    Some(WorkerRuntimeInfo {
        sdk_version: Some(version.to_owned()).filter(|v| !v.is_empty()),
        language,
    })
}

/// A worker as the API answers it.
pub(crate) fn worker_out(w: WorkerSummary) -> Worker {
    let registered = ts(w.registered_at);
    let slots = |limit: i32, used: i64| WorkerSlotConfig {
        available: (i64::from(limit) - used).max(0),
        limit: i64::from(limit),
    };
    let mut slot_config = BTreeMap::from([("default", slots(w.slots, w.slots_used))]);
    if w.durable_slots > 0 {
        slot_config.insert("durable", slots(w.durable_slots, w.durable_slots_used));
    }
    let labels = w
        .labels
        .into_iter()
        .map(|(key, value)| WorkerLabel {
            metadata: ResourceMeta {
                id: Uuid::new_v5(&w.id, key.as_bytes()),
                created_at: registered.clone(),
                updated_at: registered.clone(),
            },
            value: match value {
                LabelValue::Int(i) => i.to_string(),
                LabelValue::Str(s) => s,
            },
            key,
        })
        .collect();
    Worker {
        metadata: ResourceMeta {
            id: w.id,
            created_at: registered,
            updated_at: ts(w.last_heartbeat_at),
        },
        name: w.name,
        kind: WorkerType::Selfhosted,
        status: w.status.into(),
        last_heartbeat_at: ts(w.last_heartbeat_at),
        actions: w.actions,
        slot_config,
        labels,
        runtime_info: runtime_of(w.sdk.as_deref()),
        slots_used: w.slots_used,
        durable_slots: w.durable_slots,
        durable_slots_used: w.durable_slots_used,
        last_task_accepted_at: w.last_task_accepted_at.map(ts),
    }
}

/// The tenant's worker `worker`, or 404.
pub(crate) async fn read_worker(
    deps: &Deps,
    tenant: Uuid,
    worker: Uuid,
) -> Result<Worker, ApiError> {
    adze_store::workers::get(&deps.pool, tenant, worker)
        .await
        .map_err(store_error)?
        .map(worker_out)
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "not found"))
}

/// `GET /api/v1/tenants/{tenant}/worker` (`workers.list`): the tenant's workers,
/// present ones first, then the newest.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/worker",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("statuses" = Option<Vec<ApiWorkerStatus>>, Query, description = "Repeated: any of these"),
        ("offset" = Option<i64>, Query, description = "Rows to skip"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 50)"),
    ),
    responses(
        (status = 200, body = WorkerList),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn list_workers(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<WorkerList>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let q = pairs(raw);
    let (offset, limit) = crate::rest_query::page(&q)?;
    let mut statuses = Vec::new();
    for v in all(&q, "statuses") {
        statuses.extend(ApiWorkerStatus::parse(v)?.stored());
    }
    let (workers, total) = adze_store::workers::list(&deps.pool, tenant, &statuses, offset, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(WorkerList {
        pagination: PaginationResponse::of_offset(offset, limit, total),
        rows: workers.into_iter().map(worker_out).collect(),
    }))
}

/// `GET /api/v1/workers/{worker}` (`workers.get`): one of the caller's workers.
#[utoipa::path(
    get,
    path = "/api/v1/workers/{worker}",
    params(("worker" = Uuid, Path, description = "A worker id")),
    responses(
        (status = 200, body = Worker),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn get_worker(
    State(deps): State<Deps>,
    Path(worker): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Worker>, ApiError> {
    let worker = parse_id("worker", &worker)?;
    let tenant = caller(&deps, &headers).await?;
    read_worker(&deps, tenant, worker).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_filter_the_stored_statuses_they_show_as() {
        let stored = |s: ApiWorkerStatus| s.stored().collect::<Vec<_>>();
        assert_eq!(
            stored(ApiWorkerStatus::Active),
            [WorkerStatus::Registered, WorkerStatus::Active]
        );
        assert_eq!(stored(ApiWorkerStatus::Paused), [WorkerStatus::Paused]);
        assert_eq!(
            stored(ApiWorkerStatus::Inactive),
            [WorkerStatus::Disconnected, WorkerStatus::Inactive]
        );
        assert!(ApiWorkerStatus::parse("DRAINING").is_err());
    }

    #[test]
    fn the_runtime_names_only_the_sdks_closed_languages() {
        let go = runtime_of(Some("GO 0.1")).expect("info");
        assert_eq!(
            (go.language, go.sdk_version.as_deref()),
            (Some("GOLANG"), Some("0.1"))
        );
        let unknown = runtime_of(Some("UNKNOWN ")).expect("info");
        assert_eq!((unknown.language, unknown.sdk_version), (None, None));
        assert!(runtime_of(None).is_none());
    }
}
