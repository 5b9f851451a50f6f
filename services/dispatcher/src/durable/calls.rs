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
        let result: Result<Option<MemoAnswer>, adze_store::Error> = async {
            let mut tx = self.deps.pool.begin().await?;
            let Some(mut log) = self.open(&mut tx, &task, id).await else {
                return Ok(None);
            };
            let at = log.allocate();
            let answer = match log::entry_at(&mut tx, &log, at).await? {
                Some(e) => {
                    if !self.matches(&task, id, at, &e.call, &call).await {
                        return Ok(None);
                    }
                    (at, true, e.done.and_then(|d| d.result))
                }
                None => {
                    let value = m.payload.as_deref().filter(|p| !p.is_empty());
                    log::insert(
                        &mut tx,
                        &log,
                        &NewEntry {
                            at,
                            call: &call,
                            spawn_key: None,
                            child_run_id: None,
                            conditions: None,
                            wake_at: None,
                            label: None,
                            memo: value,
                        },
                    )
                    .await?;
                    (at, false, None)
                }
            };
            log::save(&mut tx, &log).await?;
            tx.commit().await?;
            Ok(Some(answer))
        }
        .await;
        let ack = result.map(|answer| {
            answer.map(|(at, existed, value)| {
                Out::MemoAck(DurableTaskEventMemoAckResponse {
                    r#ref: Some(task.at(Some(at))),
                    memo_already_existed: existed,
                    memo_result_payload: value,
                })
            })
        });
        self.answer(&task, id, ack).await;
    }

    pub(super) async fn complete_memo(&self, c: DurableTaskCompleteMemoRequest) {
        let Some(r) = c.r#ref else { return };
        let Ok(id) = Uuid::parse_str(&r.durable_task_external_id) else {
            return;
        };
        let at = Position {
            branch: r.branch_id,
            node: r.node_id,
        };
        let stored = async {
            let mut conn = self.deps.pool.acquire().await?;
            log::complete_memo(&mut conn, self.tenant, id, at, &c.payload).await
        }
        .await;
        match stored {
            Ok(true) => self.hand(id).await,
            Ok(false) => {}
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
        let result: Result<Option<Position>, adze_store::Error> = async {
            let mut tx = self.deps.pool.begin().await?;
            let Some(mut log) = self.open(&mut tx, &task, id).await else {
                return Ok(None);
            };
            let at = log.allocate();
            match log::entry_at(&mut tx, &log, at).await? {
                Some(e) => {
                    if !self.matches(&task, id, at, &e.call, &call).await {
                        return Ok(None);
                    }
                }
                None => {
                    log::register_wait(&mut tx, &log, at, &call, &conditions, w.label.as_deref())
                        .await?
                }
            }
            log::save(&mut tx, &log).await?;
            tx.commit().await?;
            Ok(Some(at))
        }
        .await;
        if matches!(result, Ok(Some(_))) {
            // A sleep's end may come before the reapers' next look.
            adze_bus::hints::wake_reapers(&self.deps.bus).await;
        }
        let ack = result.map(|at| {
            at.map(|at| {
                Out::WaitForAck(DurableTaskEventWaitForAckResponse {
                    r#ref: Some(task.at(Some(at))),
                })
            })
        });
        self.answer(&task, id, ack).await;
    }
}

/// A memo call's answer: its position, whether it was logged already, and its value
/// if it has one.
type MemoAnswer = (Position, bool, Option<Vec<u8>>);
