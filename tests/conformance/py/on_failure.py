"""Conformance: an on-failure task runs once after a run fails, with the errors.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python on_failure.py

- `conf-py-on-failure`: task `explode` raises RuntimeError; task `stall` outlives its 1 s
  execution timeout. The workflow's `@on_failure_task` handler runs exactly once, after
  both ended, and `ctx.task_run_errors` holds both errors; the run fails.
- The same workflow with `{"calm": true}` succeeds and the handler never runs.
- `hatchet.runs.replay(run_id)` of the failed run runs its failed tasks again; they fail
  again, so the run fails again and its handler runs a second time (once per failure).
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from _harness import (
    Checks,
    client,
    log,
    run_with_worker,
)
from hatchet_sdk import Context
from hatchet_sdk.exceptions import FailedTaskRunExceptionGroup

hatchet = client("py/on_failure.py")


class Mood(BaseModel):
    calm: bool = False


# The on-failure handler's calls: (workflow run id, task_run_errors).
handled: list[tuple[str, dict[str, str]]] = []
handled_lock = threading.Lock()

wf = hatchet.workflow(name="conf-py-on-failure", input_validator=Mood)


@wf.task(retries=0)
def explode(input: Mood, ctx: Context) -> dict[str, Any]:
    if input.calm:
        return {"exploded": False}
    raise RuntimeError("conformance: explode on purpose")


@wf.task(execution_timeout=timedelta(seconds=1))
async def stall(input: Mood, ctx: Context) -> dict[str, Any]:
    if not input.calm:
        await asyncio.sleep(5)
    return {"stalled": False}


@wf.on_failure_task()
def handle(input: Mood, ctx: Context) -> dict[str, Any]:
    with handled_lock:
        handled.append((ctx.workflow_run_id, dict(ctx.task_run_errors)))
    return {"handled": True}


def calls(run_id: str) -> list[dict[str, str]]:
    with handled_lock:
        return [errors for run, errors in handled if run == run_id]


def check_failing_run(checks: Checks) -> str:
    log("running conf-py-on-failure (one task raises, one times out)")
    ref = wf.run(Mood(calm=False), wait_for_result=False)
    error: BaseException | None = None
    try:
        ref.result()
    except Exception as e:  # noqa: BLE001 - inspected below
        error = e
    checks.check(
        "the run fails",
        isinstance(error, FailedTaskRunExceptionGroup),
        f"got {type(error).__name__}: {error}",
    )
    got = calls(ref.workflow_run_id)
    checks.observe("on_failure_errors", got)
    checks.expect_equal("the on-failure task ran once, before the run ended", len(got), 1)
    errors = got[0] if got else {}
    checks.check(
        "ctx.task_run_errors has explode's error",
        "explode on purpose" in errors.get("explode", ""),
        str(errors),
    )
    checks.check(
        "ctx.task_run_errors has stall's timeout",
        "timed out" in errors.get("stall", ""),
        str(errors),
    )
    time.sleep(1.5)
    checks.expect_equal("it still ran only once", len(calls(ref.workflow_run_id)), 1)
    return ref.workflow_run_id


def check_replay(checks: Checks, run_id: str) -> None:
    log("replaying the failed run with hatchet.runs.replay")
    hatchet.runs.replay(run_id)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(calls(run_id)) < 2:
        time.sleep(0.1)
    got = calls(run_id)
    checks.expect_equal("after a replay that fails again, the handler ran once more", len(got), 2)
    if len(got) == 2:
        checks.check(
            "the replayed failure's errors reach the handler",
            "explode on purpose" in got[1].get("explode", ""),
            str(got[1]),
        )


def check_calm_run(checks: Checks) -> None:
    log("running conf-py-on-failure calmly (succeeds)")
    ref = wf.run(Mood(calm=True), wait_for_result=False)
    result = ref.result()
    checks.observe("calm_result", result)
    checks.check("the calm run succeeds", result.get("explode") == {"exploded": False}, str(result))
    checks.expect_equal("no on-failure for a run that succeeded", calls(ref.workflow_run_id), [])


def main() -> int:
    def checks_of(checks: Checks) -> None:
        failed_run = check_failing_run(checks)
        check_calm_run(checks)
        check_replay(checks, failed_run)

    return run_with_worker(
        "py/on_failure.py",
        hatchet,
        "conf-py-on-failure-worker",
        [wf],
        checks_of,
    )


if __name__ == "__main__":
    sys.exit(main())
