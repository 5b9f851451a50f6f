"""Conformance: child runs (a task running other workflows) with the pinned SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python children.py

Inside a task, `workflow.aio_run(...)` / `aio_run_many(...)` trigger a child: hatchet_sdk
1.43.1 clients/admin.py `_create_workflow_run_request` reads the task's context vars
(runnables/contextvars.py) and sends `parent_id` (the task's workflow run), `parent_task_run_external_id`
(its step run id) and `child_index` (a counter per `Action.key`, i.e. per task run *and*
retry count, so a retry counts from 0 again); `child_key=` is sent as given. The deprecated
`options=TriggerWorkflowOptions(...)` is still taken, but its `key` field never reaches the
wire (admin.py `TriggerWorkflowRequest` has no such field): a child's key is `child_key`.

Workflows:
- `conf-py-child-double` (input `{n, family}`): task `double` notes the run it ran in and
  what it saw, returns `{"twice": 2n}`;
- `conf-py-fan-out`: task `fan_out` runs five `double` children with `aio_run_many` and
  sums their outputs;
- `conf-py-spawn-retry` (retries=1): task `spawn` starts three `double` children by index and
  one with `child_key="ten"` (`aio_run(wait_for_result=False)`), raises on its first attempt,
  and on its retry spawns the same four again and sums their outputs;
- `conf-py-waiting-parent`: task `hold` starts a `conf-py-child-waiter` child (depth 1) and
  awaits it; the waiter at depth 1 starts another waiter (depth 0) and awaits it; the one at
  depth 0 sleeps 30 s, i.e. waits to be cancelled.

1. Fan-out: the parent's output is the sum of the five children (in request order), five
   child runs ran, each once, with the parent's additional metadata.
2. Retry: the parent fails its first attempt after spawning and succeeds on its retry, with
   the same four child run ids (in order) both times; exactly four child runs ran, each
   once (not eight).
3. Cancel: `hatchet.runs.cancel(parent)` while the grandchild waits ends the parent, the child
   and the grandchild cancelled (GetRunDetails); the grandchild's task saw
   asyncio.CancelledError, the parent's and the child's either that or their child's run
   reported cancelled (whichever reached the worker first), and none of them went on.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from _harness import Checks, client, log, run_with_worker
from hatchet_sdk import Context
from hatchet_sdk.clients.admin import RunStatus

hatchet = client("py/children.py")

# A fresh suffix, so runs of an earlier run of this script (same tenant) are told apart.
NONCE = uuid.uuid4().hex[:8]
FAN_OUT = 5


class Family(BaseModel):
    family: str


class Num(BaseModel):
    n: int
    family: str


class Nap(BaseModel):
    depth: int
    family: str


double_wf = hatchet.workflow(name="conf-py-child-double", input_validator=Num)
fan_out_wf = hatchet.workflow(name="conf-py-fan-out", input_validator=Family)
retry_wf = hatchet.workflow(name="conf-py-spawn-retry", input_validator=Family)
waiter_wf = hatchet.workflow(name="conf-py-child-waiter", input_validator=Nap)
holder_wf = hatchet.workflow(name="conf-py-waiting-parent", input_validator=Family)

lock = threading.Lock()
# family -> child run id -> what `double` saw, once per execution
doubled: dict[str, dict[str, list[dict[str, Any]]]] = {}
# the retried parent's attempts: what each one spawned
attempts: list[dict[str, Any]] = []
# workflow run id -> what the waiting tasks did ("started", "spawned <id>", "cancelled", ...)
waits: dict[str, list[str]] = {}


def wait_note(run_id: str, what: str) -> None:
    with lock:
        waits.setdefault(run_id, []).append(what)


def wait_notes(run_id: str | None) -> list[str]:
    with lock:
        return list(waits.get(run_id or "", []))


@double_wf.task()
async def double(input: Num, ctx: Context) -> dict[str, int]:
    with lock:
        doubled.setdefault(input.family, {}).setdefault(ctx.workflow_run_id, []).append(
            {
                "n": input.n,
                "metadata": dict(ctx.additional_metadata or {}),
                # From AssignedAction.parent_workflow_run_id / child_workflow_index /
                # child_workflow_key (context/context.py).
                "parent_workflow_run_id": ctx.parent_workflow_run_id,
                "child_index": ctx.child_index,
                "child_key": ctx.child_key,
            }
        )
    return {"twice": 2 * input.n}


@fan_out_wf.task(execution_timeout=timedelta(seconds=40))
async def fan_out(input: Family, ctx: Context) -> dict[str, Any]:
    outputs = await double_wf.aio_run_many(
        [
            double_wf.create_bulk_run_item(input=Num(n=n, family=input.family))
            for n in range(FAN_OUT)
        ]
    )
    twice = [o["double"]["twice"] for o in outputs]
    return {"sum": sum(twice), "outputs": twice}


@retry_wf.task(execution_timeout=timedelta(seconds=40), retries=1)
async def spawn(input: Family, ctx: Context) -> dict[str, Any]:
    refs = [
        await double_wf.aio_run(Num(n=n, family=input.family), wait_for_result=False)
        for n in range(3)
    ]
    refs.append(
        await double_wf.aio_run(
            Num(n=10, family=input.family), wait_for_result=False, child_key="ten"
        )
    )
    ids = [r.workflow_run_id for r in refs]
    with lock:
        attempts.append({"retry_count": ctx.retry_count, "children": ids})
    if ctx.retry_count == 0:
        raise RuntimeError(f"conformance: planned failure after spawning {ids}")
    outputs = [await r.aio_result() for r in refs]
    return {"sum": sum(o["double"]["twice"] for o in outputs), "children": ids}


async def await_child(ctx: Context, ref_of: Callable[[], Any]) -> dict[str, str]:
    ref = await ref_of()
    wait_note(ctx.workflow_run_id, f"spawned {ref.workflow_run_id}")
    try:
        await ref.aio_result()
    except Exception as e:
        # The child may end (cancelled) before this task's own CANCEL_STEP_RUN arrives.
        wait_note(ctx.workflow_run_id, f"child failed: {type(e).__name__}: {e}"[:300])
        raise
    return {"child": ref.workflow_run_id}


@waiter_wf.task(execution_timeout=timedelta(seconds=60))
async def wait(input: Nap, ctx: Context) -> dict[str, str]:
    wait_note(ctx.workflow_run_id, "started")
    try:
        if input.depth > 0:
            out = await await_child(
                ctx,
                lambda: waiter_wf.aio_run(
                    Nap(depth=input.depth - 1, family=input.family), wait_for_result=False
                ),
            )
        else:
            await asyncio.sleep(30)
            out = {}
    except asyncio.CancelledError:
        wait_note(ctx.workflow_run_id, "cancelled")
        raise
    wait_note(ctx.workflow_run_id, "went on")
    return out


@holder_wf.task(execution_timeout=timedelta(seconds=60))
async def hold(input: Family, ctx: Context) -> dict[str, str]:
    wait_note(ctx.workflow_run_id, "started")
    try:
        out = await await_child(
            ctx,
            lambda: waiter_wf.aio_run(Nap(depth=1, family=input.family), wait_for_result=False),
        )
    except asyncio.CancelledError:
        wait_note(ctx.workflow_run_id, "cancelled")
        raise
    wait_note(ctx.workflow_run_id, "went on")
    return out


def describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:300]}"


def family_runs(family: str) -> dict[str, list[dict[str, Any]]]:
    with lock:
        return {run_id: list(seen) for run_id, seen in doubled.get(family, {}).items()}


def settle(family: str, expected: int) -> dict[str, list[dict[str, Any]]]:
    """The family's child runs once `expected` ran, and a moment more for any extra one."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(family_runs(family)) < expected:
        time.sleep(0.1)
    time.sleep(1.5)
    return family_runs(family)


def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def fan_out_checks(checks: Checks) -> None:
    family = f"fan-{NONCE}"
    log(f"conf-py-fan-out: {FAN_OUT} children with aio_run_many")
    ref = fan_out_wf.run_no_wait(Family(family=family), additional_metadata={"family": family})
    try:
        result = ref.result()
    except Exception as e:  # noqa: BLE001 - the failed check says what came instead
        checks.check("fan-out: the parent completes", False, describe(e))
        return
    expected = [2 * n for n in range(FAN_OUT)]
    checks.expect_equal(
        "fan-out: the parent's output sums its children's, in request order",
        result.get("fan_out"),
        {"sum": sum(expected), "outputs": expected},
    )
    runs = settle(family, FAN_OUT)
    checks.observe("fan_out_children", runs)
    checks.expect_equal(
        f"fan-out: {FAN_OUT} child runs ran, each once, one per input",
        sorted((len(seen), seen[0]["n"]) for seen in runs.values()),
        [(1, n) for n in range(FAN_OUT)],
    )
    checks.check(
        "fan-out: every child carries the parent's additional metadata",
        bool(runs) and all(seen[0]["metadata"].get("family") == family for seen in runs.values()),
        str([seen[0]["metadata"] for seen in runs.values()]),
    )
    checks.expect_equal(
        "fan-out: each child knows its parent run (ctx.parent_workflow_run_id)",
        sorted({seen[0]["parent_workflow_run_id"] for seen in runs.values()}),
        [ref.workflow_run_id],
    )
    checks.expect_equal(
        "fan-out: each child knows its place (ctx.child_index by its input)",
        sorted((seen[0]["n"], seen[0]["child_index"]) for seen in runs.values()),
        [(n, n) for n in range(FAN_OUT)],
    )


def retry_checks(checks: Checks) -> None:
    family = f"retry-{NONCE}"
    log("conf-py-spawn-retry: spawns four children, fails, spawns them again on its retry")
    ref = retry_wf.run_no_wait(Family(family=family))
    try:
        result = ref.result()
    except Exception as e:  # noqa: BLE001 - the failed check says what came instead
        checks.check("retry: the parent succeeds on its retry", False, describe(e))
        result = None
    with lock:
        seen = [dict(a) for a in attempts]
    checks.observe("retry_attempts", seen)
    checks.expect_equal(
        "retry: the parent ran twice (retry_count 0, then 1)",
        [a["retry_count"] for a in seen],
        [0, 1],
    )
    if len(seen) == 2:
        first, second = seen[0]["children"], seen[1]["children"]
        checks.check(
            "retry: the first attempt got four distinct child runs",
            len(set(first)) == 4,
            str(first),
        )
        checks.expect_equal(
            "retry: the retry got the same child run ids back, in order", second, first
        )
    if result is not None:
        checks.expect_equal(
            "retry: the parent's output sums the four children",
            result.get("spawn", {}).get("sum"),
            0 + 2 + 4 + 20,
        )
        checks.expect_equal(
            "retry: the output names the first attempt's children",
            result.get("spawn", {}).get("children"),
            seen[0]["children"] if seen else None,
        )
    runs = settle(family, 4)
    checks.observe("retry_children", runs)
    checks.expect_equal(
        "retry: four child runs ran (not eight), each once",
        sorted((len(v), v[0]["n"]) for v in runs.values()),
        [(1, 0), (1, 1), (1, 2), (1, 10)],
    )
    checks.expect_equal(
        "retry: the keyed child knows its key (ctx.child_key), the others their index",
        sorted(
            (v[0]["n"], v[0]["child_key"] or None, None if v[0]["n"] == 10 else v[0]["child_index"])
            for v in runs.values()
        ),
        [(0, None, 0), (1, None, 1), (2, None, 2), (10, "ten", None)],
    )
    if seen:
        checks.expect_equal(
            "retry: the child runs that ran are the ones the parent got",
            sorted(runs),
            sorted(seen[0]["children"]),
        )


def spawned(run_id: str | None) -> str | None:
    for what in wait_notes(run_id):
        if what.startswith("spawned "):
            return what.removeprefix("spawned ")
    return None


def stopped_or_saw_cancel(notes: list[str]) -> bool:
    return any(
        n == "cancelled" or (n.startswith("child failed") and "cancelled" in n) for n in notes
    )


def status_of(run_id: str) -> RunStatus | str:
    try:
        return hatchet.runs.get_details(run_id).status
    except Exception as e:  # noqa: BLE001 - shown as the status it could not read
        return describe(e)


def cancel_checks(checks: Checks) -> None:
    family = f"cancel-{NONCE}"
    log("conf-py-waiting-parent: parent -> waiter -> waiter, then cancel the parent")
    parent = holder_wf.run_no_wait(Family(family=family)).workflow_run_id
    ready = wait_until(lambda: "started" in wait_notes(spawned(spawned(parent))), 20)
    child, grandchild = spawned(parent), spawned(spawned(parent))
    checks.observe("cancel_family", {"parent": parent, "child": child, "grandchild": grandchild})
    if not checks.check(
        "cancel: the parent, its child and its grandchild are running", ready, str(waits)
    ):
        hatchet.runs.cancel(parent)
        return
    # The engine learns a task started from the worker's event, a moment after it did.
    running = wait_until(
        lambda: status_of(child or "") == status_of(grandchild or "") == RunStatus.RUNNING, 5
    )
    checks.check(
        "cancel: before, the child and grandchild are RUNNING (GetRunDetails)",
        running,
        f"child {status_of(child or '')}, grandchild {status_of(grandchild or '')}",
    )
    log(f"cancelling the parent run {parent}")
    hatchet.runs.cancel(parent)
    runs = {"parent": parent, "child": child or "", "grandchild": grandchild or ""}
    ended = wait_until(
        lambda: all(status_of(r) == RunStatus.CANCELLED for r in runs.values()), 15
    )
    final = {name: status_of(run) for name, run in runs.items()}
    checks.observe("cancel_statuses", {k: str(v) for k, v in final.items()})
    checks.check(
        "cancel: the parent, the child and the grandchild end CANCELLED (GetRunDetails)",
        ended,
        str(final),
    )
    stopped = wait_until(lambda: "cancelled" in wait_notes(grandchild), 10)
    notes = {name: wait_notes(run) for name, run in runs.items()}
    checks.observe("cancel_notes", notes)
    checks.check(
        "cancel: the waiting grandchild was stopped (asyncio.CancelledError)",
        stopped,
        str(notes),
    )
    # Whichever comes first: the engine's CANCEL_STEP_RUN for the task itself, or its
    # child's run reported cancelled to the `aio_result()` it awaits.
    checks.check(
        "cancel: the parent and the child were stopped, or saw their child cancelled",
        all(stopped_or_saw_cancel(notes[name]) for name in ("parent", "child")),
        str(notes),
    )
    checks.check(
        "cancel: none of them went on",
        not any("went on" in n for n in notes.values()),
        str(notes),
    )


def body(checks: Checks) -> None:
    fan_out_checks(checks)
    retry_checks(checks)
    cancel_checks(checks)


def main() -> int:
    return run_with_worker(
        "py/children.py",
        hatchet,
        "conf-py-children-worker",
        [double_wf, fan_out_wf, retry_wf, waiter_wf, holder_wf],
        body,
        slots=10,
    )


if __name__ == "__main__":
    sys.exit(main())
