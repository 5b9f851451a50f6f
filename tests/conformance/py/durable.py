"""Conformance: durable tasks with the pinned SDK (the DurableTask stream, engine >= v0.80).

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python durable.py

The worker has one durable slot (`durable_slots=1`) and the default eviction policy, so a
durable task that waits 10 s or more is evicted (capacity eviction) and re-dispatched with
a higher invocation count once what it waits for is done. Workflows:
- `conf-py-dchild` (input `{i, delay, family}`): sleeps `delay` s, returns `{"i", "sq"}`;
- `conf-py-orchestrator` (durable): `n = 2 + now.second % 3` from a memoized `aio_now()`,
  spawns n children with `aio_run_many`, returns the sum of squares and its invocation;
- `conf-py-race` (durable): two children raced with `asyncio.wait(FIRST_COMPLETED)`;
- `conf-py-nap` (durable): `aio_sleep_for(2 s)`;
- `conf-py-listener` (durable): `aio_wait_for_event("conf-py-go:<family>", "input.ok == true")`;
- `conf-py-failing-child`: raises; `conf-py-catcher` (durable) runs it and returns what it
  caught;
- `conf-py-shifty` (durable, one retry): invocation 1 sleeps 1 s and raises; its retry
  takes another path, a memoized `aio_now()` where the log has the sleep.

1. Orchestrator: the run completes with n children's squares summed, n decided at runtime;
   exactly n child runs ran, each once.
2. Race: the fast child wins (`{"winner": 1}`).
3. Sleep: the task slept about 2 s (at least 2 s, and the SDK reports 2 s).
4. Event: a first event that fails the expression does not wake it; a second one does,
   and the task returns that event's payload.
5. A child's failure reaches the durable task as an exception carrying the child's error.
6. Cancel: cancelling an orchestrator whose children run cancels it and its children.
7. Non-determinism: the retry of `conf-py-shifty` fails with the engine's non-determinism
   error (its node 1 is not the logged call) instead of returning.
8. Eviction: an orchestrator whose 3 children sleep 12 s is evicted after 10 s (its slot
   freed, `is_evicted` while it waits, RUNNING and not done as GetRunDetails says), then
   restored and replayed when they finish: it completes on invocation 2 with the same
   `now` as invocation 1, and no child was spawned twice (3 child runs ran, each once).
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
from hatchet_sdk import Context, DurableContext

hatchet = client("py/durable.py")

NONCE = uuid.uuid4().hex[:8]


class Child(BaseModel):
    i: int
    delay: float
    family: str


class Family(BaseModel):
    family: str
    delay: float = 0.3


child_wf = hatchet.workflow(name="conf-py-dchild", input_validator=Child)

lock = threading.Lock()
# family -> child run id -> how many times it ran
children: dict[str, dict[str, int]] = {}
# family -> what each invocation of the durable task saw
invocations: dict[str, list[dict[str, Any]]] = {}


def note(family: str, what: dict[str, Any]) -> None:
    with lock:
        invocations.setdefault(family, []).append(what)


def notes(family: str) -> list[dict[str, Any]]:
    with lock:
        return list(invocations.get(family, []))


@child_wf.task(execution_timeout=timedelta(seconds=60))
async def dchild(input: Child, ctx: Context) -> dict[str, int]:
    with lock:
        runs = children.setdefault(input.family, {})
        runs[ctx.workflow_run_id] = runs.get(ctx.workflow_run_id, 0) + 1
    await asyncio.sleep(input.delay)
    return {"i": input.i, "sq": input.i * input.i}


@hatchet.durable_task(
    name="conf-py-orchestrator",
    input_validator=Family,
    execution_timeout=timedelta(seconds=60),
)
async def orchestrator(input: Family, ctx: DurableContext) -> dict[str, Any]:
    now = await ctx.aio_now()
    n = 2 + now.second % 3
    note(input.family, {"invocation": ctx.invocation_count, "now": now.isoformat(), "n": n})
    outputs = await child_wf.aio_run_many(
        [
            child_wf.create_bulk_run_item(
                input=Child(i=i, delay=input.delay, family=input.family)
            )
            for i in range(n)
        ]
    )
    squares = [o["dchild"]["sq"] if "dchild" in o else o["sq"] for o in outputs]
    return {"n": n, "sum_sq": sum(squares), "invocation": ctx.invocation_count}


@hatchet.durable_task(name="conf-py-race", input_validator=Family)
async def race(input: Family, ctx: DurableContext) -> dict[str, int]:
    fast = asyncio.ensure_future(
        child_wf.aio_run(Child(i=1, delay=0.5, family=input.family))
    )
    slow = asyncio.ensure_future(
        child_wf.aio_run(Child(i=2, delay=4.0, family=input.family))
    )
    done, _ = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
    first = next(iter(done)).result()
    first = first.get("dchild", first)
    return {"winner": first["i"]}


@hatchet.durable_task(name="conf-py-nap", input_validator=Family)
async def nap(input: Family, ctx: DurableContext) -> dict[str, float]:
    started = time.monotonic()
    slept = await ctx.aio_sleep_for(timedelta(seconds=2))
    return {
        "reported_s": slept.duration.total_seconds(),
        "wall_s": time.monotonic() - started,
    }


@hatchet.durable_task(name="conf-py-listener", input_validator=Family)
async def listener(input: Family, ctx: DurableContext) -> dict[str, Any]:
    note(input.family, {"invocation": ctx.invocation_count, "listening": True})
    event = await ctx.aio_wait_for_event(f"conf-py-go:{input.family}", "input.ok == true")
    return {"event": event}


failing_wf = hatchet.workflow(name="conf-py-failing-child", input_validator=Family)


@failing_wf.task(retries=0)
async def explode(input: Family, ctx: Context) -> dict[str, str]:
    raise ValueError(f"page {input.family} is unreadable")


@hatchet.durable_task(name="conf-py-catcher", input_validator=Family)
async def catcher(input: Family, ctx: DurableContext) -> dict[str, str]:
    try:
        await failing_wf.aio_run(Family(family=input.family))
    except Exception as e:  # noqa: BLE001 - what reached the parent is the result
        return {"caught": f"{type(e).__name__}: {e}"[:500]}
    return {"caught": ""}


@hatchet.durable_task(name="conf-py-shifty", input_validator=Family, retries=1)
async def shifty(input: Family, ctx: DurableContext) -> dict[str, str]:
    if ctx.invocation_count == 1:
        await ctx.aio_sleep_for(timedelta(seconds=1))
        note(input.family, {"invocation": 1, "slept": True})
        raise RuntimeError("the first invocation fails after its sleep, to be retried")
    note(input.family, {"invocation": ctx.invocation_count})
    # The retry's code has changed: node 1 is now a memo, not the logged sleep.
    now = await ctx.aio_now()
    return {"now": str(now)}


def describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:300]}"


def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def family_children(family: str) -> dict[str, int]:
    with lock:
        return dict(children.get(family, {}))


def orchestrator_checks(checks: Checks) -> None:
    family = f"orch-{NONCE}"
    ref = orchestrator.run_no_wait(Family(family=family))
    try:
        result = ref.result()
    except Exception as e:  # noqa: BLE001 - the failed check says what came instead
        checks.check("orchestrator: the run completes", False, describe(e))
        return
    n = result.get("n", 0)
    checks.observe("orchestrator_result", result)
    checks.check("orchestrator: n decided at runtime (2 to 4)", 2 <= n <= 4, str(result))
    checks.expect_equal(
        "orchestrator: the sum of its children's squares",
        result.get("sum_sq"),
        sum(i * i for i in range(n)),
    )
    time.sleep(1)
    checks.expect_equal(
        "orchestrator: n child runs ran, each once",
        sorted(family_children(family).values()),
        [1] * n,
    )


def race_checks(checks: Checks) -> None:
    family = f"race-{NONCE}"
    try:
        result = race.run(Family(family=family))
    except Exception as e:  # noqa: BLE001
        checks.check("race: the run completes", False, describe(e))
        return
    checks.expect_equal("race: the fast child wins", result, {"winner": 1})


def sleep_checks(checks: Checks) -> None:
    try:
        result = nap.run(Family(family=f"nap-{NONCE}"))
    except Exception as e:  # noqa: BLE001
        checks.check("sleep: the run completes", False, describe(e))
        return
    checks.observe("sleep_result", result)
    checks.expect_equal("sleep: the SDK reports 2 s slept", result.get("reported_s"), 2.0)
    checks.check(
        "sleep: it slept at least 2 s and not much longer",
        1.95 <= result.get("wall_s", 0) < 6,
        str(result),
    )


def event_checks(checks: Checks) -> None:
    family = f"event-{NONCE}"
    ref = listener.run_no_wait(Family(family=family))
    listening = wait_until(lambda: any(n.get("listening") for n in notes(family)), 15)
    checks.check("event: the task runs and listens", listening, str(notes(family)))
    # The wait is registered a moment after the task starts.
    time.sleep(1.0)
    key = f"conf-py-go:{family}"
    hatchet.event.push(key, {"ok": False, "n": 1})
    time.sleep(1.5)
    details = hatchet.runs.get_details(ref.workflow_run_id)
    checks.check(
        "event: an event the expression refuses does not wake it",
        not details.done,
        f"status {details.status}",
    )
    hatchet.event.push(key, {"ok": True, "n": 2})
    try:
        result = ref.result()
    except Exception as e:  # noqa: BLE001
        checks.check("event: the run completes", False, describe(e))
        return
    checks.expect_equal(
        "event: the task gets the matching event's payload",
        result,
        {"event": {"ok": True, "n": 2}},
    )


def failure_checks(checks: Checks) -> None:
    family = f"fail-{NONCE}"
    try:
        result = catcher.run(Family(family=family))
    except Exception as e:  # noqa: BLE001
        checks.check("failure: the catcher completes", False, describe(e))
        return
    caught = result.get("caught", "")
    checks.observe("failure_caught", caught)
    checks.check(
        "failure: the child's error reaches the durable task as an exception",
        f"page {family} is unreadable" in caught,
        caught,
    )


def cancel_checks(checks: Checks) -> None:
    family = f"cancel-{NONCE}"
    ref = orchestrator.run_no_wait(Family(family=family, delay=30.0))
    running = wait_until(lambda: len(family_children(family)) >= 2, 20)
    checks.check("cancel: the orchestrator's children run", running, str(family_children(family)))
    hatchet.runs.cancel(ref.workflow_run_id)
    runs = [ref.workflow_run_id, *family_children(family)]
    ended = wait_until(
        lambda: all(str(hatchet.runs.get_details(r).status).endswith("CANCELLED") for r in runs),
        15,
    )
    checks.check(
        "cancel: the orchestrator and its children end CANCELLED",
        ended,
        str([str(hatchet.runs.get_details(r).status) for r in runs]),
    )


def nondeterminism_checks(checks: Checks) -> None:
    family = f"nde-{NONCE}"
    try:
        result = shifty.run(Family(family=family))
        checks.check("nondeterminism: the changed retry fails", False, f"it returned {result}")
    except Exception as e:  # noqa: BLE001 - the failure is the expected result
        text = describe(e)
        checks.observe("nondeterminism_error", text)
        checks.check(
            "nondeterminism: the changed code fails with the non-determinism error",
            "determinism" in text.lower(),
            text,
        )
    checks.expect_equal(
        "nondeterminism: invocation 1 slept, then its retry, invocation 2, ran",
        notes(family),
        [{"invocation": 1, "slept": True}, {"invocation": 2}],
    )


def eviction_checks(checks: Checks) -> None:
    family = f"evict-{NONCE}"
    ref = orchestrator.run_no_wait(Family(family=family, delay=13.0))
    run_id = ref.workflow_run_id
    # Capacity eviction comes 10 s into the wait (one durable slot, one waiting task).
    evicted = wait_until(
        lambda: any(t.is_evicted for t in hatchet.runs.get_details(run_id).task_runs.values()),
        20,
    )
    details = hatchet.runs.get_details(run_id)
    checks.check("eviction: the waiting orchestrator is evicted", evicted, str(details))
    checks.check(
        "eviction: an evicted run reads RUNNING, not done (GetRunDetails)",
        str(details.status).endswith("RUNNING") and not details.done,
        f"status {details.status}, done {details.done}",
    )
    try:
        result = ref.result()
    except Exception as e:  # noqa: BLE001
        checks.check("eviction: the run completes after its children", False, describe(e))
        return
    seen = notes(family)
    checks.observe("eviction_invocations", seen)
    checks.observe("eviction_result", result)
    orch = result.get("conf-py-orchestrator", result)
    checks.expect_equal("eviction: it completed on invocation 2", orch.get("invocation"), 2)
    checks.check(
        "eviction: invocation 2 replayed with the same memoized now and n",
        len(seen) == 2 and seen[0]["now"] == seen[1]["now"] and seen[0]["n"] == seen[1]["n"],
        str(seen),
    )
    n = seen[0]["n"] if seen else 0
    time.sleep(1)
    checks.expect_equal(
        "eviction: no child was spawned twice (n child runs ran, each once)",
        sorted(family_children(family).values()),
        [1] * n,
    )


def body(checks: Checks) -> None:
    orchestrator_checks(checks)
    race_checks(checks)
    sleep_checks(checks)
    event_checks(checks)
    failure_checks(checks)
    cancel_checks(checks)
    nondeterminism_checks(checks)
    eviction_checks(checks)


def main() -> int:
    return run_with_worker(
        "py/durable.py",
        hatchet,
        "conf-py-durable-worker",
        [child_wf, orchestrator, race, nap, listener, failing_wf, catcher, shifty],
        body,
        slots=10,
        durable_slots=1,
    )


if __name__ == "__main__":
    sys.exit(main())
