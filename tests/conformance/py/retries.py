"""Conformance: retries with backoff, and a NonRetryableException that is never retried.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python retries.py

- `conf-py-retries`: task `flaky` (retries=3, backoff_factor=2, backoff_max_seconds=1)
  fails attempts 1 and 2 and succeeds on attempt 3; the run succeeds, and the task saw
  retry_count 0, 1, 2.
- `conf-py-non-retryable`: task `permanent` (retries=3) raises NonRetryableException; the
  run fails after exactly one attempt and the client sees the exception's type and message,
  both through sync run() (GetRunDetails) and aio_run() (SubscribeToWorkflowRuns).
Calls are counted in this process, per workflow run. Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from collections import defaultdict
from typing import Any

from pydantic import BaseModel

from _harness import (
    Checks,
    client,
    log,
    run_with_worker,
)
from hatchet_sdk import Context, EmptyModel, NonRetryableException
from hatchet_sdk.exceptions import FailedTaskRunExceptionGroup, TaskRunError

RETRIES_WORKFLOW = "conf-py-retries"
NON_RETRYABLE_WORKFLOW = "conf-py-non-retryable"
FAIL_ATTEMPTS = 2
PERMANENT_MESSAGE = "conformance: permanent failure, do not retry"

hatchet = client("py/retries.py")

# Every call of a task, per workflow run: (retry_count, attempt_number, monotonic time).
calls: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
calls_lock = threading.Lock()


def record_call(ctx: Context) -> list[tuple[int, int, float]]:
    with calls_lock:
        run_calls = calls[ctx.workflow_run_id]
        run_calls.append((ctx.retry_count, ctx.attempt_number, time.monotonic()))
        return list(run_calls)


class FlakyOutput(BaseModel):
    attempt_number: int
    retry_count: int
    calls_seen: int


retries_wf = hatchet.workflow(name=RETRIES_WORKFLOW)
non_retryable_wf = hatchet.workflow(name=NON_RETRYABLE_WORKFLOW)


@retries_wf.task(retries=3, backoff_factor=2, backoff_max_seconds=1)
def flaky(input: EmptyModel, ctx: Context) -> FlakyOutput:
    seen = record_call(ctx)
    if ctx.attempt_number <= FAIL_ATTEMPTS:
        raise RuntimeError(f"conformance: planned failure on attempt {ctx.attempt_number}")
    return FlakyOutput(
        attempt_number=ctx.attempt_number, retry_count=ctx.retry_count, calls_seen=len(seen)
    )


@non_retryable_wf.task(retries=3)
def permanent(input: EmptyModel, ctx: Context) -> dict[str, Any]:
    record_call(ctx)
    raise NonRetryableException(PERMANENT_MESSAGE)


def calls_of(run_id: str) -> list[tuple[int, int, float]]:
    with calls_lock:
        return list(calls.get(run_id, []))


def check_retried_run(checks: Checks) -> None:
    log("running conf-py-retries (fails twice, then succeeds)")
    ref = retries_wf.run(wait_for_result=False)
    result = ref.result()
    checks.observe("retries_result", result)
    output = result.get("flaky") or {}
    run_calls = calls_of(ref.workflow_run_id)
    gaps = [round(b[2] - a[2], 2) for a, b in zip(run_calls, run_calls[1:])]
    checks.observe("retries_retry_counts_seen", [c[0] for c in run_calls])
    checks.observe("retries_seconds_between_attempts", gaps)

    checks.expect_equal("retried run succeeds on attempt 3", output.get("attempt_number"), 3)
    checks.expect_equal("ctx.retry_count is 2 on the 3rd attempt", output.get("retry_count"), 2)
    checks.expect_equal(
        "the engine sent retry_count 0, 1, 2", [c[0] for c in run_calls], [0, 1, 2]
    )


def is_permanent_error(error: TaskRunError) -> bool:
    return error.exc_type == "NonRetryableException" and PERMANENT_MESSAGE in error.exc


def check_failure(checks: Checks, how: str, error: BaseException | None) -> None:
    checks.observe(f"non_retryable_{how}_error", None if error is None else str(error)[:300])
    if not isinstance(error, FailedTaskRunExceptionGroup):
        checks.check(
            f"{how}: the run fails with FailedTaskRunExceptionGroup",
            False,
            f"got {type(error).__name__ if error else 'a successful result'}: {error}",
        )
        return
    checks.check(f"{how}: the run fails with FailedTaskRunExceptionGroup", True)
    types = [(e.exc_type, e.exc) for e in error.exceptions]
    checks.check(
        f"{how}: the client sees the NonRetryableException and its message",
        any(is_permanent_error(e) for e in error.exceptions),
        f"errors seen: {types}",
    )


def check_non_retryable(checks: Checks) -> None:
    log("running conf-py-non-retryable with sync run()")
    sync_ref = non_retryable_wf.run(wait_for_result=False)
    sync_error: BaseException | None = None
    try:
        sync_ref.result()
    except Exception as e:  # noqa: BLE001 - inspected below
        sync_error = e
    check_failure(checks, "sync run()", sync_error)

    log("running conf-py-non-retryable with aio_run()")

    async def aio() -> tuple[str, BaseException | None]:
        ref = await non_retryable_wf.aio_run(wait_for_result=False)
        try:
            await ref.aio_result()
        except Exception as e:  # noqa: BLE001 - inspected below
            return ref.workflow_run_id, e
        return ref.workflow_run_id, None

    async_run_id, async_error = asyncio.run(aio())
    check_failure(checks, "aio_run()", async_error)

    # A wrongly scheduled retry would come at least a second later (retries use backoff
    # or the engine's retry delay); give it that long to show up before counting.
    time.sleep(1.5)
    counts = {run_id: len(calls_of(run_id)) for run_id in (sync_ref.workflow_run_id, async_run_id)}
    checks.observe("non_retryable_calls_per_run", counts)
    checks.expect_equal(
        "a NonRetryableException is attempted exactly once per run",
        sorted(counts.values()),
        [1, 1],
    )


def main() -> int:
    def checks_of(checks: Checks) -> None:
        check_retried_run(checks)
        check_non_retryable(checks)

    return run_with_worker(
        "py/retries.py",
        hatchet,
        "conf-py-retries-worker",
        [retries_wf, non_retryable_wf],
        checks_of,
    )


if __name__ == "__main__":
    sys.exit(main())
