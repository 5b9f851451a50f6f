"""Conformance: idempotent triggers (a workflow's `idempotency`) with the pinned SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python idempotency.py

Workflows, each one task returning `{"order": input.order}` and noting the run it ran in:
- `conf-py-idem-ttl`: `TTLBasedIdempotencyConfig(key_expression="input.order", ttl=10 min)`;
- `conf-py-idem-short`: `TTLBasedIdempotencyConfig(key_expression="additional_metadata.account",
  ttl=2 s)`;
- `conf-py-idem-status`: `StatusBasedIdempotencyConfig(key_expression="input.order",
  fallback_ttl=10 min)`; its task waits until the script lets it finish.

A trigger whose key is held is answered ALREADY_EXISTS "idempotency key collision" with a
`v1.IdempotencyCollisionError` (bulk: `v1.BulkTriggerIdempotencyCollisionError`) detail; the
SDK (clients/admin.py run_workflow / aio_run_workflow / run_workflows / aio_run_workflows)
raises `IdempotencyCollisionError` / `BulkTriggerIdempotencyCollisionError` only if the code,
the message and the detail's type are all as expected, and the raw gRPC error otherwise.

1. `run_no_wait` twice with one key: the second raises, naming the first run; a different
   key is a new run; `aio_run_no_wait` with the held key raises naming the first run, and
   with a new key twice creates then raises naming that run. The first run completes.
2. Eight concurrent `aio_run_no_wait` with one new key: exactly one run, every other
   trigger raises naming it.
3. `run_many_no_wait` with keys [held, b, held, c, b]: raises with the ids of b's and c's
   runs (in request order, runs of b and c per their results) and the collisions
   [held, held, b's run]; the created runs hold their keys. `aio_run_many_no_wait` with new
   keys answers the runs in order; with [held b, new f] it raises with f's run and b's.
4. A key from additional metadata, held for 2 s: another input of the same account
   collides, another account does not; the key is free again after its TTL, not before.
5. STATUS: while the run is running its key is held; once it finished (the worker ran it),
   the key is free at once and the next run completes.
6. The tasks ran exactly the runs that were created, each once.
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

import grpc
from pydantic import BaseModel

from _harness import Checks, client, log, run_with_worker
from hatchet_sdk import (
    BulkTriggerIdempotencyCollisionError,
    Context,
    IdempotencyCollisionError,
    StatusBasedIdempotencyConfig,
    TTLBasedIdempotencyConfig,
)
from hatchet_sdk.workflow_run import WorkflowRunRef

hatchet = client("py/idempotency.py")

TTL_WF = "conf-py-idem-ttl"
SHORT_WF = "conf-py-idem-short"
STATUS_WF = "conf-py-idem-status"
SHORT_TTL = timedelta(seconds=2)


class Order(BaseModel):
    order: str


ttl_wf = hatchet.workflow(
    name=TTL_WF,
    input_validator=Order,
    idempotency=TTLBasedIdempotencyConfig(
        key_expression="input.order", ttl=timedelta(minutes=10)
    ),
)
short_wf = hatchet.workflow(
    name=SHORT_WF,
    input_validator=Order,
    idempotency=TTLBasedIdempotencyConfig(
        key_expression="additional_metadata.account", ttl=SHORT_TTL
    ),
)
status_wf = hatchet.workflow(
    name=STATUS_WF,
    input_validator=Order,
    idempotency=StatusBasedIdempotencyConfig(
        key_expression="input.order", fallback_ttl=timedelta(minutes=10)
    ),
)

lock = threading.Lock()
# workflow run id -> (workflow, order) for every run a task ran in, with how often
executed: dict[str, list[tuple[str, str]]] = {}
# set by the STATUS task once it runs; it finishes once `release` is set
status_started = threading.Event()
release = threading.Event()


def note(ctx: Context, workflow: str, input: Order) -> dict[str, str]:
    with lock:
        executed.setdefault(ctx.workflow_run_id, []).append((workflow, input.order))
    return {"order": input.order}


@ttl_wf.task()
def ship(input: Order, ctx: Context) -> dict[str, str]:
    return note(ctx, TTL_WF, input)


@short_wf.task()
def bill(input: Order, ctx: Context) -> dict[str, str]:
    return note(ctx, SHORT_WF, input)


@status_wf.task()
def gated(input: Order, ctx: Context) -> dict[str, str]:
    status_started.set()
    release.wait(30)
    return note(ctx, STATUS_WF, input)


# A fresh suffix, so that keys held by an earlier run of this script (same tenant) do not
# collide with this one's.
NONCE = uuid.uuid4().hex[:8]


def key(name: str) -> str:
    return f"{name}-{NONCE}"


# Every run this script created: run id -> (workflow, order)
created: dict[str, tuple[str, str]] = {}


def describe(e: BaseException) -> str:
    if isinstance(e, grpc.RpcError):
        code = e.code() if hasattr(e, "code") else None
        details = e.details() if hasattr(e, "details") else None
        return f"raw gRPC error {code} {details!r} (the SDK did not recognise a collision)"
    return f"{type(e).__name__}: {e}"


def created_run(
    checks: Checks, name: str, call: Callable[[], WorkflowRunRef], workflow: str, order: str
) -> str | None:
    """A trigger that must create a run; its id."""
    try:
        ref = call()
    except Exception as e:  # noqa: BLE001 - the failed check says what came instead
        checks.check(f"{name}: creates a run", False, describe(e))
        return None
    run_id = ref.workflow_run_id
    checks.check(f"{name}: creates a run", bool(run_id), repr(run_id))
    created[run_id] = (workflow, order)
    return run_id


def collides(
    checks: Checks, name: str, call: Callable[[], WorkflowRunRef], holder: str | None
) -> None:
    """A trigger that must raise IdempotencyCollisionError naming `holder`."""
    try:
        ref = call()
    except IdempotencyCollisionError as e:
        checks.expect_equal(
            f"{name}: IdempotencyCollisionError names the holding run",
            e.existing_run_external_id,
            holder,
        )
        return
    except Exception as e:  # noqa: BLE001 - the failed check says what came instead
        checks.check(f"{name}: raises IdempotencyCollisionError", False, describe(e))
        return
    created[ref.workflow_run_id] = ("?", name)
    checks.check(
        f"{name}: raises IdempotencyCollisionError",
        False,
        f"created run {ref.workflow_run_id} instead",
    )


def order_of(run_id: str) -> dict[str, Any]:
    return hatchet.runs.get_run_ref(run_id).result()


def sync_triggers(checks: Checks) -> str | None:
    k1, k2 = key("o-1"), key("o-2")
    log(f"run_no_wait twice with key {k1}")
    first = created_run(
        checks, "run_no_wait (key o-1)", lambda: ttl_wf.run_no_wait(Order(order=k1)), TTL_WF, k1
    )
    collides(
        checks,
        "run_no_wait again (key o-1)",
        lambda: ttl_wf.run_no_wait(Order(order=k1)),
        first,
    )
    second = created_run(
        checks,
        "run_no_wait with another key (o-2)",
        lambda: ttl_wf.run_no_wait(Order(order=k2)),
        TTL_WF,
        k2,
    )
    checks.check("another key: another run", second != first, f"{second} == {first}")
    return first


async def aio_triggers(checks: Checks, first: str | None) -> None:
    """All the asyncio triggers, on one event loop (the SDK's spawn_index_lock is an
    asyncio.Lock created at import)."""
    k1, k3, k4 = key("o-1"), key("o-3"), key("o-4")
    log(f"aio_run_no_wait with the held key {k1}")
    try:
        ref = await ttl_wf.aio_run_no_wait(Order(order=k1))
        created[ref.workflow_run_id] = ("?", "aio o-1")
        checks.check(
            "aio_run_no_wait (key o-1, held): raises IdempotencyCollisionError",
            False,
            f"created run {ref.workflow_run_id} instead",
        )
    except IdempotencyCollisionError as e:
        checks.expect_equal(
            "aio_run_no_wait (key o-1, held): IdempotencyCollisionError names the holding run",
            e.existing_run_external_id,
            first,
        )
    except Exception as e:  # noqa: BLE001
        checks.check(
            "aio_run_no_wait (key o-1, held): raises IdempotencyCollisionError", False, describe(e)
        )

    log(f"aio_run_no_wait twice with key {k3}")
    third: str | None = None
    try:
        third = (await ttl_wf.aio_run_no_wait(Order(order=k3))).workflow_run_id
        created[third] = (TTL_WF, k3)
        checks.check("aio_run_no_wait (key o-3): creates a run", bool(third), repr(third))
    except Exception as e:  # noqa: BLE001
        checks.check("aio_run_no_wait (key o-3): creates a run", False, describe(e))
    try:
        again = await ttl_wf.aio_run_no_wait(Order(order=k3))
        created[again.workflow_run_id] = ("?", "aio o-3 again")
        checks.check(
            "aio_run_no_wait again (key o-3): raises IdempotencyCollisionError",
            False,
            f"created run {again.workflow_run_id} instead",
        )
    except IdempotencyCollisionError as e:
        checks.expect_equal(
            "aio_run_no_wait again (key o-3): IdempotencyCollisionError names the holding run",
            e.existing_run_external_id,
            third,
        )
    except Exception as e:  # noqa: BLE001
        checks.check(
            "aio_run_no_wait again (key o-3): raises IdempotencyCollisionError",
            False,
            describe(e),
        )

    n = 8
    log(f"{n} concurrent aio_run_no_wait with key {k4}")
    answers = await asyncio.gather(
        *[ttl_wf.aio_run_no_wait(Order(order=k4)) for _ in range(n)], return_exceptions=True
    )
    refs = [a for a in answers if isinstance(a, WorkflowRunRef)]
    collisions = [a for a in answers if isinstance(a, IdempotencyCollisionError)]
    others = [
        describe(a)
        for a in answers
        if isinstance(a, BaseException) and not isinstance(a, IdempotencyCollisionError)
    ]
    for r in refs:
        created[r.workflow_run_id] = (TTL_WF, k4)
    checks.observe("concurrent", {"created": len(refs), "collisions": len(collisions)})
    checks.expect_equal(f"{n} concurrent triggers, one key: no other error", others, [])
    checks.expect_equal(f"{n} concurrent triggers, one key: exactly one run", len(refs), 1)
    checks.expect_equal(
        f"{n} concurrent triggers, one key: every other one raises IdempotencyCollisionError",
        len(collisions),
        n - 1,
    )
    if len(refs) == 1:
        holder = refs[0].workflow_run_id
        checks.expect_equal(
            f"{n} concurrent triggers, one key: every collision names the run",
            [c.existing_run_external_id for c in collisions],
            [holder] * len(collisions),
        )

    kd, ke, kf = key("d"), key("e"), key("f")
    log("aio_run_many_no_wait with new keys")
    try:
        refs = await ttl_wf.aio_run_many_no_wait(
            [ttl_wf.create_bulk_run_item(input=Order(order=k)) for k in (kd, ke)]
        )
        ids = [r.workflow_run_id for r in refs]
        for run_id, k in zip(ids, (kd, ke)):
            created[run_id] = (TTL_WF, k)
        checks.expect_equal("aio_run_many_no_wait, new keys: two runs", len(set(ids)), 2)
        outputs = [(await r.aio_result()).get("ship") for r in refs]
        checks.expect_equal(
            "aio_run_many_no_wait, new keys: the runs in request order",
            outputs,
            [{"order": kd}, {"order": ke}],
        )
    except Exception as e:  # noqa: BLE001
        checks.check("aio_run_many_no_wait, new keys: creates the runs", False, describe(e))
    b_run = held_b.get("run")
    log("aio_run_many_no_wait with a held key (b) and a new one (f)")
    try:
        refs = await ttl_wf.aio_run_many_no_wait(
            [ttl_wf.create_bulk_run_item(input=Order(order=k)) for k in (key("b"), kf)]
        )
        for r in refs:
            created[r.workflow_run_id] = ("?", "aio bulk b, f")
        checks.check(
            "aio_run_many_no_wait [held b, f]: raises BulkTriggerIdempotencyCollisionError",
            False,
            f"created {[r.workflow_run_id for r in refs]} instead",
        )
    except BulkTriggerIdempotencyCollisionError as e:
        ok = checks.expect_equal(
            "aio_run_many_no_wait [held b, f]: one run created",
            len(e.successful_workflow_run_external_ids),
            1,
        )
        if ok:
            f_run = e.successful_workflow_run_external_ids[0]
            created[f_run] = (TTL_WF, kf)
            checks.expect_equal(
                "aio_run_many_no_wait [held b, f]: the created run is f's",
                (await hatchet.runs.get_run_ref(f_run).aio_result()).get("ship"),
                {"order": kf},
            )
        checks.expect_equal(
            "aio_run_many_no_wait [held b, f]: the collision names b's run",
            [c.existing_run_external_id for c in e.collisions],
            [b_run],
        )
    except Exception as e:  # noqa: BLE001
        checks.check(
            "aio_run_many_no_wait [held b, f]: raises BulkTriggerIdempotencyCollisionError",
            False,
            describe(e),
        )


# b's run, created by the sync bulk trigger, for the asyncio one
held_b: dict[str, str] = {}


def bulk(checks: Checks, first: str | None) -> None:
    k1, kb, kc = key("o-1"), key("b"), key("c")
    log(f"run_many_no_wait with keys [{k1} (held), b, {k1}, c, b]")
    items = [ttl_wf.create_bulk_run_item(input=Order(order=k)) for k in (k1, kb, k1, kc, kb)]
    try:
        refs = ttl_wf.run_many_no_wait(items)
    except BulkTriggerIdempotencyCollisionError as e:
        ids = list(e.successful_workflow_run_external_ids)
        checks.observe("bulk_collision", {"successful": ids, "collisions": len(e.collisions)})
        if not checks.expect_equal("run_many_no_wait: the runs of b and c created", len(ids), 2):
            for run_id in ids:
                created[run_id] = ("?", "bulk")
            return
        b_run, c_run = ids
        created[b_run] = (TTL_WF, kb)
        created[c_run] = (TTL_WF, kc)
        held_b["run"] = b_run
        checks.expect_equal(
            "run_many_no_wait: the collisions in request order name their holders "
            "(o-1's run twice, then b's run created in this call)",
            [c.existing_run_external_id for c in e.collisions],
            [first, first, b_run],
        )
        checks.check(
            "run_many_no_wait: each collision is an IdempotencyCollisionError",
            all(isinstance(c, IdempotencyCollisionError) for c in e.collisions),
            str([type(c).__name__ for c in e.collisions]),
        )
        checks.expect_equal(
            "run_many_no_wait: the created ids are b's run then c's",
            [order_of(b_run).get("ship"), order_of(c_run).get("ship")],
            [{"order": kb}, {"order": kc}],
        )
        collides(
            checks,
            "run_no_wait (key b) after the bulk",
            lambda: ttl_wf.run_no_wait(Order(order=kb)),
            b_run,
        )
        return
    except Exception as e:  # noqa: BLE001
        checks.check(
            "run_many_no_wait: raises BulkTriggerIdempotencyCollisionError", False, describe(e)
        )
        return
    for r in refs:
        created[r.workflow_run_id] = ("?", "bulk")
    checks.check(
        "run_many_no_wait: raises BulkTriggerIdempotencyCollisionError",
        False,
        f"created {[r.workflow_run_id for r in refs]} instead",
    )


def metadata_ttl(checks: Checks) -> None:
    account, other = key("acct-1"), key("acct-2")
    log(f"a key from additional metadata, held for {SHORT_TTL.total_seconds():.0f} s")
    started = time.monotonic()
    held = created_run(
        checks,
        "short TTL: account acct-1",
        lambda: short_wf.run_no_wait(Order(order="s-1"), additional_metadata={"account": account}),
        SHORT_WF,
        "s-1",
    )
    collides(
        checks,
        "short TTL: account acct-1, another input",
        lambda: short_wf.run_no_wait(Order(order="s-2"), additional_metadata={"account": account}),
        held,
    )
    created_run(
        checks,
        "short TTL: account acct-2",
        lambda: short_wf.run_no_wait(Order(order="s-3"), additional_metadata={"account": other}),
        SHORT_WF,
        "s-3",
    )
    if held is None:
        return
    refused: list[str] = []
    free_after: float | None = None
    while time.monotonic() - started < 10:
        time.sleep(0.25)
        try:
            ref = short_wf.run_no_wait(
                Order(order="s-4"), additional_metadata={"account": account}
            )
        except IdempotencyCollisionError as e:
            if e.existing_run_external_id != held:
                refused.append(e.existing_run_external_id)
            continue
        created[ref.workflow_run_id] = (SHORT_WF, "s-4")
        free_after = time.monotonic() - started
        break
    checks.observe("short_ttl_free_after_s", free_after)
    checks.expect_equal("short TTL: while held, every collision names the first run", refused, [])
    checks.check(
        "short TTL: the key is free again within 10 s", free_after is not None, "never freed"
    )
    if free_after is not None:
        checks.check(
            "short TTL: ... but not before its TTL",
            free_after >= SHORT_TTL.total_seconds(),
            f"free after {free_after:.2f} s",
        )


def status_based(checks: Checks) -> None:
    try:
        held_while_running(checks)
    finally:
        release.set()  # never leave the task waiting, whatever happened


def held_while_running(checks: Checks) -> None:
    k = key("s")
    log(f"STATUS: a run with key {k}, held while it runs")
    first = created_run(
        checks, "STATUS: run_no_wait", lambda: status_wf.run_no_wait(Order(order=k)), STATUS_WF, k
    )
    if first is None:
        return
    if not checks.check(
        "STATUS: the worker started the run", status_started.wait(15), "not within 15 s"
    ):
        return
    collides(
        checks,
        "STATUS: run_no_wait while the run is running",
        lambda: status_wf.run_no_wait(Order(order=k)),
        first,
    )
    release.set()
    checks.expect_equal(
        "STATUS: the first run completes normally",
        order_of(first),
        {"gated": {"order": k}},
    )
    log("STATUS: the run finished, the key is free")
    second = created_run(
        checks,
        "STATUS: run_no_wait once the run finished",
        lambda: status_wf.run_no_wait(Order(order=k)),
        STATUS_WF,
        k,
    )
    if second is not None:
        checks.check("STATUS: another run", second != first, f"{second} == {first}")
        checks.expect_equal(
            "STATUS: the second run completes", order_of(second), {"gated": {"order": k}}
        )


def every_run_ran_once(checks: Checks) -> None:
    expected = {run_id: [what] for run_id, what in created.items()}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with lock:
            if all(run_id in executed for run_id in expected):
                break
        time.sleep(0.2)
    # Give a run nobody asked for (a collision that created one anyway) time to show up.
    time.sleep(1.5)
    with lock:
        ran = {run_id: list(what) for run_id, what in executed.items()}
    checks.observe("runs_created", len(expected))
    checks.expect_equal(
        "the tasks ran exactly the runs created, each once, with its key", ran, expected
    )


def body(checks: Checks) -> None:
    first = sync_triggers(checks)
    if first is not None:
        checks.expect_equal(
            "the first run (key o-1) completes normally",
            order_of(first),
            {"ship": {"order": key("o-1")}},
        )
    bulk(checks, first)
    asyncio.run(aio_triggers(checks, first))
    metadata_ttl(checks)
    status_based(checks)
    every_run_ran_once(checks)


def main() -> int:
    return run_with_worker(
        "py/idempotency.py",
        hatchet,
        "conf-py-idempotency-worker",
        [ttl_wf, short_wf, status_wf],
        body,
        slots=10,
    )


if __name__ == "__main__":
    sys.exit(main())
