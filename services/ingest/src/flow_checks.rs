//! The flow-control fields of a registration (concurrency and rate limits), checked
//! for mistakes: every CEL expression compiles with the variables a run carries, a
//! strategy or duration is one the engine knows, `max_runs` and `units` are positive.
//! A mistake is INVALID_ARGUMENT naming the workflow, the task and the field (for an
//! expression, its text and where it fails), whatever the engine does with the rest.

use adze_proto::v1::{
    Concurrency, ConcurrencyLimitStrategy, CreateTaskOpts, CreateTaskRateLimit,
    CreateWorkflowVersionRequest, RateLimitDuration,
};
use tonic::Status;

/// Checks every concurrency and rate-limit field of `req`.
pub(crate) fn check(req: &CreateWorkflowVersionRequest) -> Result<(), Status> {
    let wf = req.name.as_str();
    let at_workflow = format!("workflow {wf:?}");
    for c in req.concurrency.iter().chain(&req.concurrency_arr) {
        // The SDKs send an empty legacy entry when none is set.
        if c.expression.is_empty() && c.max_runs_expression.is_none() {
            continue;
        }
        concurrency(&at_workflow, c)?;
    }
    for t in req.tasks.iter().chain(&req.on_failure_task) {
        task(wf, t)?;
    }
    Ok(())
}

/// Checks that every static rate-limit key `req` uses is defined for the tenant
/// (`PutRateLimit`, the SDKs' `rate_limits.put`); a dynamic key takes its limit from its
/// task's `limit_values_expr`.
pub(crate) async fn check_definitions(
    deps: &crate::Deps,
    tenant_id: uuid::Uuid,
    req: &CreateWorkflowVersionRequest,
) -> Result<(), Status> {
    let mut keys: Vec<&str> = req
        .tasks
        .iter()
        .chain(&req.on_failure_task)
        .flat_map(|t| &t.rate_limits)
        .filter(|r| r.key_expr.is_none() && !r.key.is_empty())
        .map(|r| r.key.as_str())
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    let missing = adze_store::rate_limits::undefined(&deps.pool, tenant_id, &keys)
        .await
        .map_err(crate::errors::store_status)?;
    match missing.first() {
        None => Ok(()),
        Some(key) => Err(Status::invalid_argument(format!(
            "workflow {:?}: rate limit key {key:?} is not defined for this tenant; define it first \
             (PutRateLimit, the SDKs' rate_limits.put)",
            req.name
        ))),
    }
}

fn task(wf: &str, t: &CreateTaskOpts) -> Result<(), Status> {
    let at = format!("workflow {wf:?}: task {:?}", t.readable_id);
    for c in &t.concurrency {
        concurrency(&at, c)?;
    }
    for r in &t.rate_limits {
        rate_limit(&at, r)?;
    }
    Ok(())
}

fn invalid(at: &str, what: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{at}: {what}"))
}

/// Compiles `source`, an expression in field `field`.
fn expression(at: &str, field: &str, source: &str) -> Result<(), Status> {
    adze_expr::Expr::compile_with(source, adze_expr::RUN_VARIABLES)
        .map(drop)
        .map_err(|e| invalid(at, format_args!("{field}: {e}")))
}

fn concurrency(at: &str, c: &Concurrency) -> Result<(), Status> {
    let at = format!("{at}: concurrency");
    if c.expression.is_empty() {
        return Err(invalid(
            &at,
            "expression: empty (it gives each run its key)",
        ));
    }
    expression(&at, "expression", &c.expression)?;
    if let Some(e) = &c.max_runs_expression {
        expression(&at, "max_runs_expression", e)?;
    }
    if let Some(n) = c.max_runs.filter(|&n| n < 1) {
        return Err(invalid(
            &at,
            format_args!("max_runs: {n}; it must be at least 1"),
        ));
    }
    if let Some(s) = c.limit_strategy {
        ConcurrencyLimitStrategy::try_from(s)
            .map_err(|_| invalid(&at, format_args!("limit_strategy: unknown strategy {s}")))?;
    }
    Ok(())
}

fn rate_limit(at: &str, r: &CreateTaskRateLimit) -> Result<(), Status> {
    let at = format!("{at}: rate limit {:?}", r.key);
    if r.key.is_empty() && r.key_expr.is_none() {
        return Err(invalid(&at, "neither a key nor a key_expr"));
    }
    for (field, source) in [
        ("key_expr", &r.key_expr),
        ("units_expr", &r.units_expr),
        ("limit_values_expr", &r.limit_values_expr),
    ] {
        if let Some(source) = source {
            expression(&at, field, source)?;
        }
    }
    if r.key_expr.is_some() && r.limit_values_expr.is_none() {
        return Err(invalid(
            &at,
            "a dynamic key (key_expr) needs limit_values_expr, the limit of each key it gives",
        ));
    }
    if let Some(u) = r.units.filter(|&u| u < 1) {
        return Err(invalid(
            &at,
            format_args!("units: {u}; it must be at least 1"),
        ));
    }
    if let Some(d) = r.duration {
        RateLimitDuration::try_from(d)
            .map_err(|_| invalid(&at, format_args!("duration: unknown duration {d}")))?;
    }
    Ok(())
}
