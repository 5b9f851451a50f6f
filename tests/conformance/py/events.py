"""Conformance: events as triggers (EventsService.Push / BulkPush), with the pinned SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python events.py

Workflows (each one task returning its input and noting what it saw):
- `conf-py-on-event`, `on_events=["user:create", "subscription:*"]`;
- `conf-py-late`, `on_events=["invoice:*"]`;
- `conf-py-filtered`, `on_events=["order:placed"]`, with the default filter
  `input.amount > payload.min` (payload `{"min": 100}`) in scope `shop-1`.

1. A first worker registers `conf-py-late` and stops. `invoice:paid` pushed with no worker
   running: the event lists one triggered run, queued, that does not run; a second worker
   starts and the run completes with the payload as its input.
2. `user:create` pushed with additional metadata: one run of `conf-py-on-event`, its input
   the payload and its metadata the event's (per GetRunDetails and as the task saw it);
   `subscription:renewed` matches the wildcard; `user:created` and `nobody:listens` start
   nothing and are still listed; `hatchet.event.list` finds events by key and by metadata,
   with each one's triggered runs and run summary.
3. `bulk_push` of three events (two keys, each with its own metadata): answered in order,
   each starts its run with its own payload and metadata.
4. Filters: the declarative one is listed (`is_declarative`); `filters.create` adds
   `additional_metadata.tier == 'gold'` in scope `vip`. In `shop-1` amount 50 is held
   back and 150 runs (the run names the filter); in `vip` gold runs and silver is held
   back; an unscoped event is not filtered; once the `vip` filter is deleted, silver runs.
   Each filtered run's task reads its filter's payload as `ctx.filter_payload`; an
   unfiltered one reads `{}`.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Any

from _harness import (
    Checks,
    InProcessWorker,
    Stdout,
    capture_sdk_logs,
    check_clean_stop,
    client,
    log,
    start_deadline,
)
from hatchet_sdk import Context, DefaultFilter, EmptyModel
from hatchet_sdk.clients.events import BulkPushEventWithMetadata

hatchet = client("py/events.py")

on_event = hatchet.workflow(name="conf-py-on-event", on_events=["user:create", "subscription:*"])
late = hatchet.workflow(name="conf-py-late", on_events=["invoice:*"])
filtered = hatchet.workflow(
    name="conf-py-filtered",
    on_events=["order:placed"],
    default_filters=[
        DefaultFilter(expression="input.amount > payload.min", scope="shop-1", payload={"min": 100})
    ],
)

lock = threading.Lock()
# workflow run id -> what the task saw
seen: dict[str, dict[str, Any]] = {}


def note(ctx: Context, input: EmptyModel) -> dict[str, Any]:
    body = input.model_dump()
    with lock:
        seen[ctx.workflow_run_id] = {
            "input": body,
            "metadata": dict(ctx.additional_metadata or {}),
            "filter_payload": dict(ctx.filter_payload or {}),
        }
    return body


@on_event.task()
async def echo(input: EmptyModel, ctx: Context) -> dict[str, Any]:
    return note(ctx, input)


@late.task()
async def late_echo(input: EmptyModel, ctx: Context) -> dict[str, Any]:
    return note(ctx, input)


@filtered.task()
async def filtered_echo(input: EmptyModel, ctx: Context) -> dict[str, Any]:
    return note(ctx, input)


def triggered(event_id: str) -> list[tuple[str, str | None]]:
    """(workflow run id, filter id) of the runs an event started, per REST."""
    event = hatchet.event.get(event_id)
    return [(r.workflow_run_id, r.filter_id) for r in event.triggered_runs or []]


def one_run(checks: Checks, name: str, event_id: str) -> str | None:
    runs = triggered(event_id)
    if not checks.expect_equal(f"{name}: the event started one run", len(runs), 1):
        return None
    return runs[0][0]


def result_of(run_id: str) -> dict[str, Any]:
    return hatchet.runs.get_run_ref(run_id).result()


def contains(metadata: Any, expected: dict[str, str]) -> bool:
    return isinstance(metadata, dict) and all(metadata.get(k) == v for k, v in expected.items())


def check_run(
    checks: Checks,
    name: str,
    run_id: str | None,
    task: str,
    payload: dict[str, Any],
    metadata: dict[str, str] | None = None,
) -> None:
    """The run completed with the event's payload as its input (and its metadata)."""
    if run_id is None:
        return
    outputs = result_of(run_id)
    checks.expect_equal(
        f"{name}: the run completed with the payload as its input", outputs, {task: payload}
    )
    details = hatchet.runs.get_details(run_id)
    checks.expect_equal(f"{name}: GetRunDetails input is the payload", details.input, payload)
    with lock:
        saw = dict(seen.get(run_id, {}))
    checks.expect_equal(f"{name}: the task received the payload", saw.get("input"), payload)
    if metadata is not None:
        checks.check(
            f"{name}: the run carries the event's additional metadata",
            contains(details.additional_metadata, metadata),
            f"expected {metadata!r} within {details.additional_metadata!r}",
        )
        checks.check(
            f"{name}: the task saw the event's additional metadata",
            contains(saw.get("metadata"), metadata),
            f"expected {metadata!r} within {saw.get('metadata')!r}",
        )


def before_any_worker(checks: Checks) -> tuple[str | None, str]:
    """Pushes `invoice:paid` with no worker running; returns (run id, event id)."""
    log("invoice:paid pushed while no worker runs")
    event = hatchet.event.push(
        "invoice:paid", {"invoice": 7}, additional_metadata={"batch": "nightly"}
    )
    run_id = one_run(checks, "invoice:paid before any worker", event.event_id)
    if run_id is None:
        return None, event.event_id
    time.sleep(2)
    details = hatchet.runs.get_details(run_id)
    with lock:
        ran = run_id in seen
    status = details.status.value
    checks.observe("late_run_before_worker", {"status": status, "done": details.done})
    checks.check(
        "invoice:paid before any worker: the run waits (not done, nothing ran)",
        not details.done and not ran,
        f"status={status} done={details.done} ran={ran}",
    )
    summary = hatchet.event.get(event.event_id).workflow_run_summary
    checks.expect_equal(
        "invoice:paid before any worker: the event's run is queued", summary.queued, 1
    )
    return run_id, event.event_id


def pushes(checks: Checks) -> None:
    log("user:create with additional metadata")
    created = hatchet.event.push(
        "user:create", {"user": "anna"}, additional_metadata={"source": "signup-form"}
    )
    checks.expect_equal("push answers with the key", created.key, "user:create")
    run_created = one_run(checks, "user:create", created.event_id)
    log("subscription:renewed (the wildcard)")
    renewed = hatchet.event.push("subscription:renewed", {"plan": "pro"})
    run_renewed = one_run(checks, "subscription:renewed (wildcard)", renewed.event_id)
    log("keys no one listens to")
    near = hatchet.event.push("user:created", {"user": "bo"})
    nobody = hatchet.event.push("nobody:listens", {"x": 1})
    checks.expect_equal(
        "user:created (not an exact match) starts nothing", triggered(near.event_id), []
    )
    checks.expect_equal("nobody:listens starts nothing", triggered(nobody.event_id), [])

    check_run(
        checks, "user:create", run_created, "echo", {"user": "anna"}, {"source": "signup-form"}
    )
    check_run(checks, "subscription:renewed (wildcard)", run_renewed, "echo", {"plan": "pro"})

    listed = hatchet.event.list(keys=["user:create", "user:created", "nobody:listens"])
    rows = {r.metadata.id: r for r in listed.rows or []}
    checks.expect_equal(
        "event.list by key finds the three events",
        sorted(rows),
        sorted([created.event_id, near.event_id, nobody.event_id]),
    )
    row = rows.get(created.event_id)
    if checks.check("event.list has user:create", row is not None, str(sorted(rows))):
        checks.expect_equal(
            "its additional metadata", row.additional_metadata, {"source": "signup-form"}
        )
        checks.expect_equal("its payload", row.payload, {"user": "anna"})
        checks.expect_equal(
            "its triggered runs",
            [r.workflow_run_id for r in row.triggered_runs or []],
            [run_created],
        )
        checks.expect_equal(
            "its run summary counts one succeeded", row.workflow_run_summary.succeeded, 1
        )
    quiet = rows.get(nobody.event_id)
    if quiet is not None:
        checks.expect_equal(
            "nobody:listens lists no triggered runs", quiet.triggered_runs or [], []
        )
    by_meta = hatchet.event.list(additional_metadata={"source": "signup-form"})
    checks.expect_equal(
        "event.list by additional metadata finds only user:create",
        [r.metadata.id for r in by_meta.rows or []],
        [created.event_id],
    )


def bulk(checks: Checks) -> None:
    log("bulk_push of three events")
    items = [
        BulkPushEventWithMetadata(
            key="subscription:started", payload={"n": 1}, additional_metadata={"i": "1"}
        ),
        BulkPushEventWithMetadata(
            key="user:create", payload={"n": 2}, additional_metadata={"i": "2"}
        ),
        BulkPushEventWithMetadata(
            key="subscription:ended", payload={"n": 3}, additional_metadata={"i": "3"}
        ),
    ]
    events = hatchet.event.bulk_push(items)
    checks.expect_equal(
        "bulk_push answers every event in order",
        [e.key for e in events],
        ["subscription:started", "user:create", "subscription:ended"],
    )
    checks.expect_equal(
        "bulk_push events have distinct ids", len({e.event_id for e in events}), 3
    )
    runs = [one_run(checks, f"bulk_push event {i + 1}", e.event_id) for i, e in enumerate(events)]
    for i, run_id in enumerate(runs):
        n = i + 1
        check_run(checks, f"bulk_push event {n}", run_id, "echo", {"n": n}, {"i": str(n)})


def filters(checks: Checks) -> None:
    log("filters: the declarative one, and one created with filters.create")
    declared = hatchet.filters.list(scopes=["shop-1"]).rows or []
    checks.expect_equal("default_filters: one filter in scope shop-1", len(declared), 1)
    if not declared:
        return
    shop = declared[0]
    checks.expect_equal("it is declarative", shop.is_declarative, True)
    checks.expect_equal("its expression", shop.expression, "input.amount > payload.min")
    checks.expect_equal("its payload", shop.payload, {"min": 100})
    vip = hatchet.filters.create(
        workflow_id=shop.workflow_id,
        expression="additional_metadata.tier == 'gold'",
        scope="vip",
        payload={"perk": "lounge"},
    )
    checks.check(
        "filters.create: not declarative", vip.is_declarative is False, str(vip.is_declarative)
    )
    checks.expect_equal(
        "filters.get answers it", hatchet.filters.get(vip.metadata.id).scope, "vip"
    )

    def push(
        amount: int, scope: str | None, tier: str | None = None
    ) -> list[tuple[str, str | None]]:
        meta = {"tier": tier} if tier else {}
        e = hatchet.event.push(
            "order:placed", {"amount": amount}, additional_metadata=meta, scope=scope
        )
        return triggered(e.event_id)

    def run_of(runs: list[tuple[str, str | None]]) -> str | None:
        return runs[0][0] if runs else None

    small = push(50, "shop-1")
    big = push(150, "shop-1")
    gold = push(5, "vip", "gold")
    silver = push(6, "vip", "silver")
    unscoped = push(7, None)
    checks.expect_equal("shop-1: amount 50 is held back", small, [])
    checks.expect_equal("shop-1: amount 150 runs once", len(big), 1)
    if big:
        checks.expect_equal("its run names the filter", big[0][1], shop.metadata.id)
    checks.expect_equal("vip: tier gold runs once", len(gold), 1)
    if gold:
        checks.expect_equal("its run names the created filter", gold[0][1], vip.metadata.id)
    checks.expect_equal("vip: tier silver is held back", silver, [])
    checks.expect_equal("no scope: not filtered", len(unscoped), 1)
    if unscoped:
        checks.check("no scope: no filter named", unscoped[0][1] is None, str(unscoped[0][1]))
    task = "filtered_echo"
    check_run(checks, "shop-1 amount 150", run_of(big), task, {"amount": 150})
    check_run(checks, "vip gold", run_of(gold), task, {"amount": 5}, {"tier": "gold"})
    check_run(checks, "unscoped", run_of(unscoped), task, {"amount": 7})

    deleted = hatchet.filters.delete(vip.metadata.id)
    checks.expect_equal(
        "filters.delete answers the deleted filter", deleted.metadata.id, vip.metadata.id
    )
    left = hatchet.filters.list(scopes=["vip"]).rows or []
    checks.expect_equal("filters.list: none left in vip", left, [])
    after = push(8, "vip", "silver")
    checks.expect_equal("vip, filter deleted: tier silver runs", len(after), 1)
    check_run(checks, "vip silver, filter deleted", run_of(after), task, {"amount": 8})

    with lock:
        amounts = sorted(s["input"].get("amount") for s in seen.values() if "amount" in s["input"])
    checks.check(
        "no held-back event ever reached the task",
        50 not in amounts and 6 not in amounts,
        str(amounts),
    )
    # The task reads the payload of the filter that let its run through
    # (ctx.filter_payload: the action payload's triggers.filter_payload).
    runs = {"shop-1": run_of(big), "vip": run_of(gold), "unscoped": run_of(unscoped)}
    with lock:
        ctx_seen = {k: seen.get(v, {}).get("filter_payload") for k, v in runs.items()}
    checks.expect_equal("shop-1: ctx.filter_payload", ctx_seen["shop-1"], {"min": 100})
    checks.expect_equal("vip: ctx.filter_payload", ctx_seen["vip"], {"perk": "lounge"})
    checks.expect_equal("unscoped: ctx.filter_payload", ctx_seen["unscoped"], {})


def main() -> int:
    Stdout.claim()
    checks = Checks("py/events.py")
    first_logs = capture_sdk_logs()
    registrar = InProcessWorker(hatchet, "conf-py-events-registrar", [late], slots=2)
    worker = InProcessWorker(hatchet, "conf-py-events-worker", [on_event, late, filtered], slots=10)

    def kill() -> None:
        registrar.kill()
        worker.kill()

    start_deadline(checks, on_timeout=kill)
    sdk_logs = None
    try:
        log("a first worker registers conf-py-late, then stops")
        registrar.start()
        checks.observe("registrar_id", registrar.wait_registered())
        stopped = registrar.stop()
        checks.observe("registrar_stop", stopped)
        checks.check(
            "first worker paused and stopped cleanly",
            first_logs.paused
            and stopped["worker_thread_stopped"]
            and stopped["listener_process_exit_code"] == 0,
            f"paused={first_logs.paused} {stopped}",
        )
        late_run, _ = before_any_worker(checks)

        sdk_logs = capture_sdk_logs()
        worker.start()
        checks.observe("worker_id", worker.wait_registered())
        if late_run is not None:
            log("the worker came: the event's run completes")
            check_run(
                checks,
                "invoice:paid before any worker",
                late_run,
                "late_echo",
                {"invoice": 7},
                {"batch": "nightly"},
            )
        pushes(checks)
        bulk(checks)
        filters(checks)
    except Exception as e:  # noqa: BLE001 - every failure becomes a failed check
        log(traceback.format_exc())
        checks.check("no unexpected error", False, f"{type(e).__name__}: {e}")
    finally:
        if sdk_logs is not None:
            log("stopping the worker")
            check_clean_stop(checks, worker, worker.stop(), sdk_logs)
        elif not registrar.exited.is_set():
            registrar.stop()
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
