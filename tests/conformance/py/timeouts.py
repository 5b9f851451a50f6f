"""Conformance: execution timeouts, cancellation from outside, and ctx.aio_cancel().

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python timeouts.py

- `conf-py-timeout`: task `nap` (execution_timeout 1 s, retries=1) sleeps 4 s, then
  records that it woke. Both attempts are stopped by the engine at their deadline
  (CANCEL_STEP_RUN: the SDK cancels the asyncio task), the run fails with a timeout
  error, and the code after the sleep never runs.
- `conf-py-cancel`: task `long` sleeps 30 s; `hatchet.runs.cancel(run_id)` stops it (the
  handler sees asyncio.CancelledError) and the run ends cancelled.
- `conf-py-self-cancel`: task `quit` calls `await ctx.aio_cancel()`; the engine stops it
  and the run ends cancelled.
- `conf-py-refresh`: task `extend` (execution_timeout 1 s) calls
  `ctx.refresh_timeout(timedelta(seconds=2))` after 0.5 s and finishes at 1.7 s: the run
  succeeds, past its first deadline.
- `conf-py-release`: task `hold` sleeps 2.5 s, first calling `ctx.aio_release_slot()`
  when its input says so. Five runs on the worker's four slots: without the release the
  fifth starts only when a slot frees (the control), with it all five start at once.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from collections import defaultdict
from datetime import timedelta

from _harness import (
    Checks,
    client,
    log,
    run_with_worker,
)
from hatchet_sdk import Context, EmptyModel
from hatchet_sdk.exceptions import FailedTaskRunExceptionGroup
from pydantic import BaseModel

hatchet = client("py/timeouts.py")

# What each task did, per workflow run: "started", "woke", "cancelled".
seen: dict[str, list[str]] = defaultdict(list)
seen_lock = threading.Lock()


def note(ctx: Context, what: str) -> None:
    with seen_lock:
        seen[ctx.workflow_run_id].append(what)


def notes(run_id: str) -> list[str]:
    with seen_lock:
        return list(seen.get(run_id, []))


timeout_wf = hatchet.workflow(name="conf-py-timeout")
cancel_wf = hatchet.workflow(name="conf-py-cancel")
self_cancel_wf = hatchet.workflow(name="conf-py-self-cancel")
refresh_wf = hatchet.workflow(name="conf-py-refresh")


class HoldInput(BaseModel):
    release: bool = False


release_wf = hatchet.workflow(name="conf-py-release", input_validator=HoldInput)
# When each `hold` run started (monotonic seconds), per workflow run.
hold_started: dict[str, float] = {}


async def sleep_noting(ctx: Context, seconds: float) -> dict[str, str]:
    """Sleeps, noting whether the engine's cancellation interrupted it or it woke."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        note(ctx, "cancelled")
        raise
    note(ctx, "woke")
    return {"woke": "yes"}


@timeout_wf.task(execution_timeout=timedelta(seconds=1), retries=1, backoff_max_seconds=1)
async def nap(input: EmptyModel, ctx: Context) -> dict[str, str]:
    note(ctx, "started")
    return await sleep_noting(ctx, 4)


@cancel_wf.task(execution_timeout=timedelta(seconds=60))
async def long(input: EmptyModel, ctx: Context) -> dict[str, str]:
    note(ctx, "started")
    return await sleep_noting(ctx, 30)


@self_cancel_wf.task(execution_timeout=timedelta(seconds=60))
async def quit(input: EmptyModel, ctx: Context) -> dict[str, str]:
    note(ctx, "started")
    await ctx.aio_cancel()
    return await sleep_noting(ctx, 30)


@refresh_wf.task(execution_timeout=timedelta(seconds=1))
async def extend(input: EmptyModel, ctx: Context) -> dict[str, str]:
    note(ctx, "started")
    await asyncio.sleep(0.5)
    ctx.refresh_timeout(timedelta(seconds=2))
    return await sleep_noting(ctx, 1.2)


@release_wf.task(execution_timeout=timedelta(seconds=60))
async def hold(input: HoldInput, ctx: Context) -> dict[str, bool]:
    with seen_lock:
        hold_started[ctx.workflow_run_id] = time.monotonic()
    if input.release:
        await ctx.aio_release_slot()
    await asyncio.sleep(2.5)
    return {"released": input.release}


def wait_until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def check_timeout(checks: Checks) -> None:
    log("running conf-py-timeout (sleeps past its 1 s timeout, twice)")
    ref = timeout_wf.run(wait_for_result=False)
    error: BaseException | None = None
    try:
        ref.result()
    except Exception as e:  # noqa: BLE001 - inspected below
        error = e
    checks.observe("timeout_error", None if error is None else str(error)[:300])
    checks.check(
        "a timed-out run fails with FailedTaskRunExceptionGroup",
        isinstance(error, FailedTaskRunExceptionGroup),
        f"got {type(error).__name__}: {error}",
    )
    if isinstance(error, FailedTaskRunExceptionGroup):
        texts = [e.exc for e in error.exceptions]
        checks.check(
            "the task's error says it timed out",
            any("timed out" in t for t in texts),
            f"errors: {texts}",
        )
    # Past the 4 s sleep of the second attempt: a handler that was not stopped wakes.
    time.sleep(4.5)
    got = notes(ref.workflow_run_id)
    checks.observe("timeout_notes", got)
    checks.expect_equal("the task was attempted twice (one retry)", got.count("started"), 2)
    checks.expect_equal("both attempts were stopped by the engine", got.count("cancelled"), 2)
    checks.expect_equal("the code after the sleep never ran", got.count("woke"), 0)


def check_external_cancel(checks: Checks) -> None:
    log("running conf-py-cancel and cancelling it with hatchet.runs.cancel")
    ref = cancel_wf.run(wait_for_result=False)
    started = wait_until(lambda: "started" in notes(ref.workflow_run_id), 20)
    checks.check("the long task started", started)
    hatchet.runs.cancel(ref.workflow_run_id)
    stopped = wait_until(lambda: "cancelled" in notes(ref.workflow_run_id), 15)
    checks.check(
        "the running task saw asyncio.CancelledError", stopped, str(notes(ref.workflow_run_id))
    )
    error: BaseException | None = None
    try:
        ref.result()
    except Exception as e:  # noqa: BLE001 - inspected below
        error = e
    checks.check(
        "the cancelled run's result says it was cancelled",
        isinstance(error, ValueError) and "cancelled" in str(error),
        f"got {type(error).__name__}: {error}",
    )


def check_self_cancel(checks: Checks) -> None:
    log("running conf-py-self-cancel (ctx.aio_cancel())")
    ref = self_cancel_wf.run(wait_for_result=False)
    error: BaseException | None = None
    try:
        ref.result()
    except Exception as e:  # noqa: BLE001 - inspected below
        error = e
    checks.check(
        "a task that cancels itself ends its run cancelled",
        isinstance(error, ValueError) and "cancelled" in str(error),
        f"got {type(error).__name__}: {error}",
    )
    stopped = wait_until(lambda: "cancelled" in notes(ref.workflow_run_id), 10)
    checks.check("the self-cancelled task was stopped", stopped, str(notes(ref.workflow_run_id)))
    checks.expect_equal("it never woke", notes(ref.workflow_run_id).count("woke"), 0)


def check_refresh(checks: Checks) -> None:
    log("running conf-py-refresh (refreshes its 1 s timeout, finishes at 1.7 s)")
    ref = refresh_wf.run(wait_for_result=False)
    result = ref.result()
    checks.observe("refresh_result", result)
    checks.expect_equal(
        "a task that refreshed its timeout outlives its first deadline",
        result.get("extend"),
        {"woke": "yes"},
    )
    checks.expect_equal("it was not stopped", notes(ref.workflow_run_id).count("cancelled"), 0)


def start_spread(release: bool) -> float:
    """Runs five `hold` runs on the four slots; seconds between the first and the
    last start."""
    refs = release_wf.run_many(
        [release_wf.create_bulk_run_item(input=HoldInput(release=release)) for _ in range(5)],
        wait_for_result=False,
    )
    for ref in refs:
        ref.result()
    with seen_lock:
        starts = [hold_started[ref.workflow_run_id] for ref in refs]
    return max(starts) - min(starts)


def check_release_slot(checks: Checks) -> None:
    log("running conf-py-release: five 2.5 s runs on four slots, without and with release")
    held = start_spread(release=False)
    checks.observe("start_spread_holding_s", round(held, 2))
    checks.check(
        "without a release the fifth run waits for a slot", held >= 2.0, f"spread {held:.2f} s"
    )
    released = start_spread(release=True)
    checks.observe("start_spread_released_s", round(released, 2))
    checks.check(
        "after ctx.aio_release_slot() the fifth run starts at once",
        released < 1.5,
        f"spread {released:.2f} s",
    )


def main() -> int:
    def checks_of(checks: Checks) -> None:
        check_timeout(checks)
        check_external_cancel(checks)
        check_self_cancel(checks)
        check_refresh(checks)
        check_release_slot(checks)

    return run_with_worker(
        "py/timeouts.py",
        hatchet,
        "conf-py-timeouts-worker",
        [timeout_wf, cancel_wf, self_cancel_wf, refresh_wf, release_wf],
        checks_of,
    )


if __name__ == "__main__":
    sys.exit(main())
