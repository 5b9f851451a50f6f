//! A workflow's idempotency at trigger: its expression gives each run a key; the
//! committer claims the key in the run's transaction, and a trigger whose key is held
//! is answered ALREADY_EXISTS "idempotency key collision" with the holding run's id in a
//! `v1.IdempotencyCollisionError` detail, as the SDKs expect.

use std::collections::HashMap;
use std::sync::Mutex;

use adze_core::dag::IdempotencySpec;
use adze_expr::{Expr, RUN_VARIABLES, Vars};
use adze_proto::v1::{self, IdempotencyCollisionError};
use prost::Message;
use serde_json::Value;
use tonic::{Code, Status};
use uuid::Uuid;

/// The key a new run claims.
#[derive(Debug, Clone)]
pub(crate) struct RunKey {
    pub(crate) key: String,
    pub(crate) until_finished: bool,
    pub(crate) ttl_ms: i64,
}

/// Checks a registration's idempotency settings.
pub(crate) fn spec(wf: &str, i: &v1::IdempotencyConfig) -> Result<IdempotencySpec, Status> {
    let bad = |e: String| Status::invalid_argument(format!("workflow {wf:?}: idempotency: {e}"));
    Expr::compile_with(&i.expression, RUN_VARIABLES).map_err(|e| bad(e.to_string()))?;
    if i.ttl_ms <= 0 {
        return Err(bad(format!(
            "ttl_ms is {}; a key must be held for some time (ttl_ms ≥ 1)",
            i.ttl_ms
        )));
    }
    let until_finished = match i.method.map(v1::IdempotencyMethod::try_from) {
        None | Some(Ok(v1::IdempotencyMethod::Ttl)) => false,
        Some(Ok(v1::IdempotencyMethod::Status)) => true,
        Some(Err(_)) => {
            return Err(bad(format!(
                "unknown method {} (TTL = 0 or STATUS = 1)",
                i.method.unwrap_or_default()
            )));
        }
    };
    Ok(IdempotencySpec {
        expression: i.expression.clone(),
        ttl_ms: i.ttl_ms,
        until_finished,
    })
}

/// Compiled idempotency expressions of the versions triggered lately.
#[derive(Default)]
pub(crate) struct KeyCache {
    exprs: Mutex<HashMap<Uuid, Expr>>,
}

impl KeyCache {
    /// The key a run of version `version_id` with this input claims.
    pub(crate) fn key(
        &self,
        version_id: Uuid,
        spec: &IdempotencySpec,
        run_id: Uuid,
        input: &Value,
        metadata: Option<&Value>,
    ) -> Result<RunKey, Status> {
        let cached = self
            .exprs
            .lock()
            .ok()
            .and_then(|m| m.get(&version_id).cloned());
        let expr = match cached {
            Some(e) => e,
            None => {
                let e = Expr::compile_with(&spec.expression, RUN_VARIABLES)
                    .map_err(|e| Status::internal(format!("stored idempotency expression: {e}")))?;
                if let Ok(mut m) = self.exprs.lock() {
                    if m.len() > 10_000 {
                        m.clear();
                    }
                    m.insert(version_id, e.clone());
                }
                e
            }
        };
        let mut vars = Vars::new().input(input).workflow_run_id(run_id.to_string());
        if let Some(m) = metadata {
            vars.set("additional_metadata", m);
        }
        let key = expr.eval_string(&vars).map_err(|e| {
            Status::invalid_argument(format!(
                "the idempotency key {:?} does not evaluate for this input: {e}",
                spec.expression
            ))
        })?;
        Ok(RunKey {
            key,
            until_finished: spec.until_finished,
            ttl_ms: spec.ttl_ms,
        })
    }
}

/// The message the SDKs match exactly.
const COLLISION: &str = "idempotency key collision";

fn with_detail(type_name: &str, detail: Vec<u8>) -> Status {
    let status = adze_proto::rpc::Status {
        code: Code::AlreadyExists as i32,
        message: COLLISION.into(),
        details: vec![prost_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: detail,
        }],
    };
    Status::with_details(
        Code::AlreadyExists,
        COLLISION,
        status.encode_to_vec().into(),
    )
}

/// A trigger answered with the run that holds its key.
pub(crate) fn collision(existing: Uuid, colliding: Uuid) -> Status {
    let detail = IdempotencyCollisionError {
        existing_run_external_id: existing.to_string(),
        colliding_run_external_id: colliding.to_string(),
    };
    with_detail("v1.IdempotencyCollisionError", detail.encode_to_vec())
}

/// A bulk trigger some of whose runs were created and some answered with the runs that
/// hold their keys.
pub(crate) fn bulk_collision(created: &[Uuid], collisions: &[(Uuid, Uuid)]) -> Status {
    let detail = v1::BulkTriggerIdempotencyCollisionError {
        successful_workflow_run_external_ids: created.iter().map(Uuid::to_string).collect(),
        collisions: collisions
            .iter()
            .map(|(existing, colliding)| IdempotencyCollisionError {
                existing_run_external_id: existing.to_string(),
                colliding_run_external_id: colliding.to_string(),
            })
            .collect(),
    };
    with_detail(
        "v1.BulkTriggerIdempotencyCollisionError",
        detail.encode_to_vec(),
    )
}
