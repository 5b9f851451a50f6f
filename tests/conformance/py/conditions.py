"""Conformance: DAG task conditions (wait_for, skip_if, cancel_if) with the pinned SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python conditions.py

Workflow `conf-py-conditions` (input `n`), tasks:
- `start`: returns `{"n": n}`;
- `slept`: wait_for a 2 s sleep after `start`; returns when it ran and its trigger data;
- `big` / `small`: skip_if `output.n > 50` / `output.n <= 50` on `start` (one runs);
- `after_big`: child of `big` alone (skipped with it: every parent skipped);
- `joined`: child of `big` and `small`: runs, and reads which was skipped
  (`ctx.was_skipped`);
- `approved`: wait_for or_(a 30 s sleep, the event `conf:approve` with
  `input.ok == true`): runs once that event comes, with its payload as trigger data (an
  event with `ok` false does not count).
Workflow `conf-py-cancel-if`: `check` returns `{"stop": true}`; `guarded` cancel_if
`output.stop == true` on `check`: the run ends CANCELLED and `guarded` never runs.

1. n = 75: `big` and `after_big` are skipped (output `{"skipped": true}`), `small`
   runs, `joined` sees `big` skipped; `slept` started at least 2 s after `start` ended;
   `approved` waits until `conf:approve` with ok true is pushed (one with ok false first
   is ignored), and reads the payload under its key; the run completes.
2. n = 10: `small` is skipped, `big` and `after_big` run.
3. The cancel_if run is CANCELLED and its guarded task never ran.
4. A registration with a parent condition on a task that is not a parent is refused.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import timedelta
from typing import Any

from _harness import Checks, client, log, run_with_worker
from hatchet_sdk import (
    Context,
    ParentCondition,
    SleepCondition,
    UserEventCondition,
    or_,
)
from pydantic import BaseModel

hatchet = client("py/conditions.py")


class In(BaseModel):
    n: int = 0


wf = hatchet.workflow(name="conf-py-conditions", input_validator=In)
cancel_wf = hatchet.workflow(name="conf-py-cancel-if")

lock = threading.Lock()
# (workflow run id, task) -> monotonic time it started
started: dict[tuple[str, str], float] = {}
ended: dict[tuple[str, str], float] = {}


def mark(ctx: Context, task: str) -> None:
    with lock:
        started[(ctx.workflow_run_id, task)] = time.monotonic()


@wf.task()
def start(input: In, ctx: Context) -> dict[str, Any]:
    mark(ctx, "start")
    with lock:
        ended[(ctx.workflow_run_id, "start")] = time.monotonic()
    return {"n": input.n}


@wf.task(parents=[start], wait_for=[SleepCondition(timedelta(seconds=2))])
def slept(input: In, ctx: Context) -> dict[str, Any]:
    mark(ctx, "slept")
    return {"trigger": dict(ctx.trigger_data or {})}


@wf.task(parents=[start], skip_if=[ParentCondition(parent=start, expression="output.n > 50")])
def big(input: In, ctx: Context) -> dict[str, Any]:
    mark(ctx, "big")
    return {"ran": "big"}


@wf.task(parents=[start], skip_if=[ParentCondition(parent=start, expression="output.n <= 50")])
def small(input: In, ctx: Context) -> dict[str, Any]:
    mark(ctx, "small")
    return {"ran": "small"}


@wf.task(parents=[big])
def after_big(input: In, ctx: Context) -> dict[str, Any]:
    mark(ctx, "after_big")
    return {"ran": "after_big"}


@wf.task(parents=[big, small])
def joined(input: In, ctx: Context) -> dict[str, Any]:
    mark(ctx, "joined")
    return {"big_skipped": ctx.was_skipped(big), "small_skipped": ctx.was_skipped(small)}


@wf.task(
    parents=[start],
    wait_for=[
        or_(
            SleepCondition(timedelta(seconds=30)),
            UserEventCondition(event_key="conf:approve", expression="input.ok == true"),
        )
    ],
)
def approved(input: In, ctx: Context) -> dict[str, Any]:
    mark(ctx, "approved")
    return {"trigger": dict(ctx.trigger_data or {})}


@cancel_wf.task()
def check(input: In, ctx: Context) -> dict[str, Any]:
    return {"stop": True}


@cancel_wf.task(
    parents=[check], cancel_if=[ParentCondition(parent=check, expression="output.stop == true")]
)
def guarded(input: In, ctx: Context) -> dict[str, Any]:
    mark(ctx, "guarded")
    return {"ran": True}


def task_status(run_id: str, task: str) -> str | None:
    details = hatchet.runs.get_details(run_id)
    t = details.task_runs.get(task)
    return None if t is None else t.status.value


def wait_until(what: str, condition: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    log(f"gave up waiting for {what}")
    return False


def big_run(checks: Checks) -> None:
    ref = wf.run_no_wait(In(n=75))
    run = ref.workflow_run_id
    checks.check(
        "n=75: start completes",
        wait_until("start", lambda: task_status(run, "start") == "COMPLETED"),
    )
    time.sleep(1.0)
    with lock:
        early = (run, "approved") in started
    checks.check("approved waits for its event", not early)
    hatchet.event.push("conf:approve", {"ok": False})
    time.sleep(1.5)
    with lock:
        early = (run, "approved") in started
    checks.check("an event whose expression is false does not count", not early)
    hatchet.event.push("conf:approve", {"ok": True, "by": "ana"})
    result = ref.result()
    checks.expect_equal("big is skipped", result.get("big"), {"skipped": True})
    checks.expect_equal("after_big is skipped (its only parent was)", result.get("after_big"), {"skipped": True})
    checks.expect_equal("small runs", result.get("small"), {"ran": "small"})
    checks.expect_equal(
        "joined runs and sees which parent was skipped",
        result.get("joined"),
        {"big_skipped": True, "small_skipped": False},
    )
    checks.expect_equal(
        "approved reads the event's payload under its key",
        result.get("approved"),
        {"trigger": {"conf:approve": {"ok": True, "by": "ana"}}},
    )
    with lock:
        gap = started.get((run, "slept"), 0.0) - ended.get((run, "start"), 0.0)
        ran_skipped = [(run, t) in started for t in ("big", "after_big")]
    checks.check("slept started at least 2 s after start ended", gap >= 1.9, f"gap {gap:.2f} s")
    checks.expect_equal(
        "slept reads its sleep under its key",
        result.get("slept"),
        {"trigger": {"sleep:2s": {"sleep_duration": "2s"}}},
    )
    checks.expect_equal("skipped tasks never ran", ran_skipped, [False, False])
    details = hatchet.runs.get_details(run)
    checks.expect_equal("the run completed", details.status.value, "COMPLETED")


def small_run(checks: Checks) -> None:
    ref = wf.run_no_wait(In(n=10))
    run = ref.workflow_run_id
    checks.check(
        "n=10: start completes",
        wait_until("start", lambda: task_status(run, "start") == "COMPLETED"),
    )
    time.sleep(0.5)
    hatchet.event.push("conf:approve", {"ok": True})
    result = ref.result()
    checks.expect_equal("n=10: small is skipped", result.get("small"), {"skipped": True})
    checks.expect_equal("n=10: big runs", result.get("big"), {"ran": "big"})
    checks.expect_equal("n=10: after_big runs", result.get("after_big"), {"ran": "after_big"})


def cancelled_run(checks: Checks) -> None:
    ref = cancel_wf.run_no_wait(In())
    run = ref.workflow_run_id
    checks.check(
        "cancel_if: the run ends CANCELLED",
        wait_until("the cancelled run", lambda: hatchet.runs.get_details(run).done),
    )
    details = hatchet.runs.get_details(run)
    checks.expect_equal("cancel_if: run status", details.status.value, "CANCELLED")
    with lock:
        ran = (run, "guarded") in started
    checks.check("cancel_if: the guarded task never ran", not ran)


def refused_registration(checks: Checks) -> None:
    other = hatchet.workflow(name="conf-py-bad-condition")

    @other.task()
    def a(input: In, ctx: Context) -> None:
        return None

    @other.task()
    def b(input: In, ctx: Context) -> None:
        return None

    @other.task(parents=[a], skip_if=[ParentCondition(parent=b, expression="true")])
    def c(input: In, ctx: Context) -> None:
        return None

    try:
        hatchet._client.admin.put_workflow(other.to_proto())  # noqa: SLF001
        checks.check("a condition on a task that is not a parent is refused", False, "accepted")
    except Exception as e:  # noqa: BLE001 - the refusal is the point
        text = str(e)
        checks.check(
            "a condition on a task that is not a parent is refused, saying so",
            "not a parent" in text,
            text[:300],
        )


def body(checks: Checks) -> None:
    log("n = 75")
    big_run(checks)
    log("n = 10")
    small_run(checks)
    log("cancel_if")
    cancelled_run(checks)
    log("a bad registration")
    refused_registration(checks)


if __name__ == "__main__":
    sys.exit(
        run_with_worker(
            "py/conditions.py", hatchet, "conf-py-conditions", [wf, cancel_wf], body, slots=8
        )
    )
