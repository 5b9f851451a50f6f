//! Concurrency entries and rate limits: converted from a registration into the
//! workflow's spec, and evaluated for each run at trigger into the keys and units its
//! tasks carry. Expressions are compiled once per workflow version and kept
//! ([`KeyExprs`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use adze_core::{
    ConcurrencyKey, ConcurrencySpec, ConcurrencyStrategy, RateLimitNeed, RateLimitSpec,
    RateLimitWindow, TaskLimits,
};
use adze_expr::{Expr, Vars};
use adze_proto::v1::{
    Concurrency, ConcurrencyLimitStrategy, CreateTaskRateLimit, RateLimitDuration,
};
use adze_store::workflows::WorkflowVersion;
use serde_json::Value;
use tonic::Status;
use uuid::Uuid;

/// The spec of one registered entry (already checked by `flow_checks`). Without a
/// strategy an entry is CANCEL_IN_PROGRESS, the default the TypeScript SDK documents
/// (it sends none then; Python always names one); without `max_runs`, one at a time.
pub(crate) fn spec(c: &Concurrency) -> ConcurrencySpec {
    let strategy = match c
        .limit_strategy
        .and_then(|s| ConcurrencyLimitStrategy::try_from(s).ok())
    {
        Some(ConcurrencyLimitStrategy::CancelInProgress) | None => {
            ConcurrencyStrategy::CancelInProgress
        }
        Some(ConcurrencyLimitStrategy::DropNewest) => ConcurrencyStrategy::DropNewest,
        Some(ConcurrencyLimitStrategy::QueueNewest) => ConcurrencyStrategy::QueueNewest,
        Some(ConcurrencyLimitStrategy::CancelNewest) => ConcurrencyStrategy::CancelNewest,
        Some(ConcurrencyLimitStrategy::CancelQueuedExceptNewest) => {
            ConcurrencyStrategy::CancelQueuedExceptNewest
        }
        Some(ConcurrencyLimitStrategy::CancelQueuedExceptOldest) => {
            ConcurrencyStrategy::CancelQueuedExceptOldest
        }
        Some(ConcurrencyLimitStrategy::GroupRoundRobin) => ConcurrencyStrategy::GroupRoundRobin,
    };
    ConcurrencySpec {
        expression: c.expression.clone(),
        max_runs: c.max_runs.unwrap_or(1),
        max_runs_expression: c.max_runs_expression.clone(),
        strategy,
        tenant_scope: c
            .is_tenant_scoped
            .unwrap_or(false)
            .then(|| c.name.clone().unwrap_or_else(|| c.expression.clone())),
    }
}

/// The spec of one registered rate limit (already checked by `flow_checks`).
pub(crate) fn rate_limit_spec(r: &CreateTaskRateLimit) -> RateLimitSpec {
    let window = r
        .duration
        .and_then(|d| RateLimitDuration::try_from(d).ok())
        .map(|d| match d {
            RateLimitDuration::Second => RateLimitWindow::Second,
            RateLimitDuration::Minute => RateLimitWindow::Minute,
            RateLimitDuration::Hour => RateLimitWindow::Hour,
            RateLimitDuration::Day => RateLimitWindow::Day,
            RateLimitDuration::Week => RateLimitWindow::Week,
            RateLimitDuration::Month => RateLimitWindow::Month,
            RateLimitDuration::Year => RateLimitWindow::Year,
        });
    RateLimitSpec {
        key: r.key.clone(),
        units: r.units.unwrap_or(1),
        key_expr: r.key_expr.clone(),
        units_expr: r.units_expr.clone(),
        // A static key's limit is its definition's (the Python SDK sends "-1" here).
        limit_expr: r.key_expr.as_ref().and(r.limit_values_expr.clone()),
        window,
    }
}

/// The labels a task wants of its worker, from a registration or a trigger, in name
/// order; an error names a label with no value.
pub(crate) fn desired_labels(
    labels: &std::collections::HashMap<String, adze_proto::v1::DesiredWorkerLabels>,
) -> Result<Vec<adze_core::labels::DesiredLabel>, String> {
    use adze_core::labels::{Comparator, DesiredLabel, LabelValue};
    use adze_proto::v1::WorkerLabelComparator as C;
    let mut out: Vec<DesiredLabel> = labels
        .iter()
        .map(|(key, l)| {
            let value = match (&l.str_value, l.int_value) {
                (Some(s), _) => LabelValue::Str(s.clone()),
                (None, Some(i)) => LabelValue::Int(i64::from(i)),
                (None, None) => {
                    return Err(format!(
                        "worker label {key:?}: neither str_value nor int_value is set"
                    ));
                }
            };
            let comparator = match l.comparator.and_then(|c| C::try_from(c).ok()) {
                None | Some(C::Equal) => Comparator::Equal,
                Some(C::NotEqual) => Comparator::NotEqual,
                Some(C::GreaterThan) => Comparator::GreaterThan,
                Some(C::GreaterThanOrEqual) => Comparator::GreaterThanOrEqual,
                Some(C::LessThan) => Comparator::LessThan,
                Some(C::LessThanOrEqual) => Comparator::LessThanOrEqual,
            };
            Ok(DesiredLabel {
                key: key.clone(),
                value,
                required: l.required.unwrap_or(false),
                comparator,
                weight: l.weight.unwrap_or(0),
            })
        })
        .collect::<Result<_, _>>()?;
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The labels of one task of a run: its own, with the trigger's in place of any of
/// the same name.
pub(crate) fn merge_labels(
    task: &[adze_core::labels::DesiredLabel],
    trigger: &[adze_core::labels::DesiredLabel],
) -> Vec<adze_core::labels::DesiredLabel> {
    let mut out: Vec<_> = task
        .iter()
        .filter(|l| !trigger.iter().any(|t| t.key == l.key))
        .cloned()
        .collect();
    out.extend(trigger.iter().cloned());
    out
}

/// The workflow-level entries of a registration: the SDKs send the legacy single
/// entry empty when there is none.
pub(crate) fn workflow_specs(
    single: Option<&Concurrency>,
    many: &[Concurrency],
) -> Vec<ConcurrencySpec> {
    single
        .into_iter()
        .chain(many)
        .filter(|c| !c.expression.is_empty())
        .map(spec)
        .collect()
}

/// One entry compiled, with the scope its keys are stored under.
struct Compiled {
    scope: String,
    key: Expr,
    max_runs: i32,
    max_runs_expr: Option<Expr>,
    strategy: ConcurrencyStrategy,
    run_level: bool,
}

/// One rate limit compiled.
struct CompiledLimit {
    key: Result<String, Expr>,
    units: Result<i32, Expr>,
    limit: Option<Expr>,
    window_ms: i64,
}

/// A version's entries compiled: the workflow's, then each task's; each task's rate
/// limits.
pub(crate) struct VersionExprs {
    workflow: Vec<Compiled>,
    tasks: Vec<Vec<Compiled>>,
    limits: Vec<Vec<CompiledLimit>>,
}

impl VersionExprs {
    fn compile(tenant_id: Uuid, v: &WorkflowVersion) -> Result<Self, Status> {
        let expr = |e: &str| {
            Expr::compile_with(e, adze_expr::RUN_VARIABLES).map_err(|err| {
                Status::failed_precondition(format!(
                    "workflow {:?}: stored expression does not compile: {err}",
                    v.name
                ))
            })
        };
        let compile = |scope: String, c: &ConcurrencySpec, run_level: bool| {
            Ok::<_, Status>(Compiled {
                scope: match &c.tenant_scope {
                    Some(name) => format!("tenant:{tenant_id}:{name}"),
                    None => scope,
                },
                key: expr(&c.expression)?,
                max_runs: c.max_runs,
                max_runs_expr: c.max_runs_expression.as_deref().map(expr).transpose()?,
                strategy: c.strategy,
                run_level,
            })
        };
        let workflow = v
            .concurrency
            .iter()
            .enumerate()
            .map(|(i, c)| compile(format!("{}:w{i}", v.workflow_id), c, true))
            .collect::<Result<_, _>>()?;
        let tasks = v
            .tasks
            .iter()
            .map(|t| {
                t.concurrency
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        compile(format!("{}:{}:{i}", v.workflow_id, t.readable_id), c, false)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()?;
        let limits = v
            .tasks
            .iter()
            .map(|t| {
                t.rate_limits
                    .iter()
                    .map(|r| {
                        Ok::<_, Status>(CompiledLimit {
                            key: match &r.key_expr {
                                Some(e) => Err(expr(e)?),
                                None => Ok(r.key.clone()),
                            },
                            units: match &r.units_expr {
                                Some(e) => Err(expr(e)?),
                                None => Ok(r.units),
                            },
                            limit: r.limit_expr.as_deref().map(expr).transpose()?,
                            window_ms: r.window.unwrap_or(RateLimitWindow::Minute).millis(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            workflow,
            tasks,
            limits,
        })
    }

    /// The keys of each task of one run, evaluated from its input and metadata; a key
    /// that does not evaluate is the trigger's error, naming the expression.
    pub(crate) fn keys(
        &self,
        workflow: &str,
        run_id: Uuid,
        input: &Value,
        metadata: Option<&Value>,
    ) -> Result<Vec<TaskLimits>, Status> {
        let empty = Value::Object(Default::default());
        let vars = Vars::new()
            .input(input)
            .additional_metadata(metadata.unwrap_or(&empty))
            .workflow_run_id(run_id.to_string());
        let eval = |c: &Compiled| -> Result<ConcurrencyKey, Status> {
            let bad = |e: adze_expr::EvalError| {
                Status::invalid_argument(format!(
                    "workflow {workflow:?}: concurrency: {e} (check the run's input and additional metadata)"
                ))
            };
            let value = c.key.eval_string(&vars).map_err(bad)?;
            let max_runs = match &c.max_runs_expr {
                Some(e) => {
                    let n = e.eval_int(&vars).map_err(bad)?;
                    i32::try_from(n).ok().filter(|&n| n >= 1).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "workflow {workflow:?}: concurrency: max_runs_expression {:?} gave {n}; it must be between 1 and {}",
                            e.source(),
                            i32::MAX
                        ))
                    })?
                }
                None => c.max_runs,
            };
            Ok(ConcurrencyKey {
                key: ConcurrencyKey::scoped(&c.scope, &value),
                value,
                max_runs,
                strategy: c.strategy,
                run_level: c.run_level,
            })
        };
        let run_keys = self
            .workflow
            .iter()
            .map(eval)
            .collect::<Result<Vec<_>, _>>()?;
        let bad = |what: &str, e: adze_expr::EvalError| {
            Status::invalid_argument(format!(
                "workflow {workflow:?}: rate limit {what}: {e} (check the run's input and additional metadata)"
            ))
        };
        let positive = |what: &str, source: &str, n: i64| {
            i32::try_from(n).ok().filter(|&n| n >= 1).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "workflow {workflow:?}: rate limit {what} {source:?} gave {n}; it must be between 1 and {}",
                    i32::MAX
                ))
            })
        };
        let need = |l: &CompiledLimit| -> Result<RateLimitNeed, Status> {
            let key = match &l.key {
                Ok(k) => k.clone(),
                Err(e) => e.eval_string(&vars).map_err(|err| bad("key_expr", err))?,
            };
            let units = match &l.units {
                Ok(u) => *u,
                Err(e) => positive(
                    "units_expr",
                    e.source(),
                    e.eval_int(&vars).map_err(|err| bad("units_expr", err))?,
                )?,
            };
            let limit = match &l.limit {
                Some(e) => Some(positive(
                    "limit_values_expr",
                    e.source(),
                    e.eval_int(&vars)
                        .map_err(|err| bad("limit_values_expr", err))?,
                )?),
                None => None,
            };
            Ok(RateLimitNeed {
                key,
                units,
                window_ms: limit.map(|_| l.window_ms),
                limit,
            })
        };
        self.tasks
            .iter()
            .zip(&self.limits)
            .map(|(entries, limits)| {
                let mut keys = run_keys.clone();
                for c in entries {
                    keys.push(eval(c)?);
                }
                let rate_limits = limits.iter().map(need).collect::<Result<_, _>>()?;
                Ok(TaskLimits {
                    keys,
                    rate_limits,
                    ..Default::default()
                })
            })
            .collect()
    }
}

/// Compiled entries of the versions triggered lately, by version id.
#[derive(Default)]
pub(crate) struct KeyExprs {
    entries: Mutex<HashMap<Uuid, Arc<VersionExprs>>>,
}

impl KeyExprs {
    /// The compiled entries of `v` (None when it has none).
    pub(crate) fn of(
        &self,
        tenant_id: Uuid,
        v: &WorkflowVersion,
    ) -> Result<Option<Arc<VersionExprs>>, Status> {
        if !v.has_limits() {
            return Ok(None);
        }
        if let Some(e) = self
            .entries
            .lock()
            .ok()
            .and_then(|m| m.get(&v.version_id).cloned())
        {
            return Ok(Some(e));
        }
        let compiled = Arc::new(VersionExprs::compile(tenant_id, v)?);
        if let Ok(mut m) = self.entries.lock() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(v.version_id, compiled.clone());
        }
        Ok(Some(compiled))
    }
}
