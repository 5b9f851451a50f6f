//! The log calls that answer at once: a memo (and its value), a wait.

use super::*;

impl Session {
    pub(super) async fn memo(&self, m: DurableTaskMemoRequest) {
        let task = TaskRef {
            text: m.durable_task_external_id,
            invocation: m.invocation_count,
        };
        let Some(id) = self.task(&task).await else {
            return;
        };
        if m.key.is_empty() {
            self.error(&task, None, false, "memo key is empty".into())
                .await;
            return;
        }
        let call = memo_call(&m.key);
        let value = m.payload.filter(|p| !p.is_empty());
        let (tenant, t) = (self.tenant, task.clone());
        let told = self
            .writer
            .write((tenant, id), move |conn| {
                Box::pin(async move {
                    let memo = MemoEntry {
                        call: &call,
                        value: value.as_deref(),
                    };
                    let (_, at, logged) =
                        match next_node(conn, tenant, &t, id, &call, Some(memo)).await? {
                            Ok(next) => next,
                            Err(refusal) => return Ok(Told::Refused(refusal)),
                        };
                    // Logged before: its value, if it has one; else written just now.
                    let (existed, stored) = match logged {
                        Some(e) => (true, e.done.and_then(|d| d.result)),
                        None => (false, value.clone()),
                    };
                    Ok(Told::Memo {
                        ack: Out::MemoAck(DurableTaskEventMemoAckResponse {
                            r#ref: Some(t.at(Some(at))),
                            memo_already_existed: existed,
                            memo_result_payload: if existed { stored.clone() } else { None },
                        }),
                        value: stored.map(|v| (at, v)),
                    })
                })
            })
            .await;
        self.answer(&task, id, told).await;
    }

    /// Stores a memo's value. No answer when it is stored (or the memo had one); a stale
    /// invocation's value is refused as its other calls are (`server_evict`), and a value
    /// for an entry that is not a memo this invocation made is an `error` naming it.
    /// A refused value changes nothing.
    pub(super) async fn complete_memo(&self, c: DurableTaskCompleteMemoRequest) {
        let Some(r) = c.r#ref else {
            let nobody = TaskRef {
                text: String::new(),
                invocation: 0,
            };
            self.error(
                &nobody,
                None,
                false,
                "complete_memo has no ref: name the memo entry (task, invocation, branch, node) \
                 its memo call was acknowledged with"
                    .into(),
            )
            .await;
            return;
        };
        let task = TaskRef {
            text: r.durable_task_external_id,
            invocation: r.invocation_count,
        };
        let Some(id) = self.task(&task).await else {
            return;
        };
        let at = Position {
            branch: r.branch_id,
            node: r.node_id,
        };
        let (tenant, invocation) = (self.tenant, task.invocation);
        let value = c.payload;
        let stored = self
            .writer
            .write((tenant, id), move |conn| {
                Box::pin(async move {
                    Ok(
                        log::complete_memo_of(conn, tenant, id, invocation, at, &value)
                            .await?
                            .map(|stored| stored.then_some(value)),
                    )
                })
            })
            .await;
        match stored {
            Ok(Ok(Some(value))) => self.hand_memo(id, invocation, at, value).await,
            Ok(Ok(None)) => {}
            Ok(Err(refusal)) => {
                let node = format!(
                    "complete_memo names node {} of branch {} of task {}",
                    at.node, at.branch, task.text
                );
                let why = match refusal {
                    // Stale or not running: refused as its other calls are.
                    MemoRefusal::Call(refusal) => {
                        self.send(refused(&task, refusal)).await;
                        return;
                    }
                    MemoRefusal::NoEntry => "which its log does not have".to_string(),
                    MemoRefusal::NotMemo(call) => {
                        format!("which is a {} entry ({}), not a memo", call.kind, call.what)
                    }
                    MemoRefusal::NotReached { latest_node } => format!(
                        "which invocation {invocation} has not reached (its last node is \
                         {latest_node}); send the value after the memo call's ack, with its ref"
                    ),
                };
                self.error(&task, Some(at), false, format!("{node}, {why}"))
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot store a memo's value; the task computes it again on replay")
            }
        }
    }

    pub(super) async fn wait_for(&self, w: DurableTaskWaitForRequest) {
        let task = TaskRef {
            text: w.durable_task_external_id,
            invocation: w.invocation_count,
        };
        let Some(id) = self.task(&task).await else {
            return;
        };
        let conditions = match w
            .wait_for_conditions
            .as_ref()
            .ok_or_else(|| "wait_for_conditions is missing".to_string())
            .and_then(adze_expr::conditions::durable_wait)
        {
            Ok(c) => c,
            Err(problem) => {
                self.error(&task, None, false, format!("wait_for: {problem}"))
                    .await;
                return;
            }
        };
        let call = wait_call(&conditions.conditions);
        let (tenant, t, label) = (self.tenant, task.clone(), w.label);
        let told = self
            .writer
            .write((tenant, id), move |conn| {
                Box::pin(async move {
                    let (mut log, at, logged) =
                        match next_node(conn, tenant, &t, id, &call, None).await? {
                            Ok(next) => next,
                            Err(refusal) => return Ok(Told::Refused(refusal)),
                        };
                    if logged.is_none() {
                        log::register_wait(conn, &log, at, &call, &conditions, label.as_deref())
                            .await?;
                        // Events stored before it that its lookback conditions (with
                        // a scope and a start) catch: satisfied now, it is handed
                        // right after the ack.
                        let exprs = adze_expr::Cache::new(adze_expr::CONDITION_VARIABLES);
                        log::look_back(conn, &log, at, &conditions, |expression, payload| {
                            adze_expr::conditions::event_holds(&exprs, expression, payload)
                        })
                        .await?;
                    }
                    log::save(conn, &mut log).await?;
                    Ok(Told::Ack(Out::WaitForAck(
                        DurableTaskEventWaitForAckResponse {
                            r#ref: Some(t.at(Some(at))),
                        },
                    )))
                })
            })
            .await;
        if matches!(told, Ok(Told::Ack(_))) {
            // A sleep's end may come before the reapers' next look.
            adze_bus::hints::wake_reapers(&self.deps.bus).await;
        }
        self.answer(&task, id, told).await;
    }
}
