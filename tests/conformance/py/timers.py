"""Conformance: crons and scheduled runs with the pinned SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python timers.py

Workflows (one task each, noting the input and metadata it saw):
- `conf-py-declared`, `on_crons=["* * * * * *"]` (every second, seconds first);
- `conf-py-timed`, no trigger of its own.

1. The declared cron is listed (`cron.list(workflow_name=...)`, method DEFAULT) and starts
   runs every second while the worker runs.
2. `cron.create` on `conf-py-timed` (every second, input and metadata): answered with
   method API, enabled, its name and expression; `cron.get`, `cron.list` by name and by
   metadata find it; its runs carry its input and metadata; creating it again and an
   expression the server cannot parse (`61 * * * *`, which the SDK's own check lets
   through) are refused with what is wrong; once deleted it starts nothing more and
   it is no longer listed.
3. `Workflow.schedule` (gRPC ScheduleWorkflow) two seconds ahead: `scheduled.get` shows
   it, then it starts one run with its input, and `scheduled.get` names that run.
4. `scheduled.create` a minute ahead: listed with status SCHEDULED; `scheduled.update`
   moves it a second ahead and it fires; one created in the past fires at once; one
   deleted never fires; `bulk_update` moves one and reports an unknown id as an error;
   `bulk_delete` removes what it names.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from _harness import Checks, client, log, run_with_worker
from hatchet_sdk import Context, EmptyModel
from hatchet_sdk.clients.rest.models.scheduled_run_status import ScheduledRunStatus

hatchet = client("py/timers.py")

declared = hatchet.workflow(name="conf-py-declared", on_crons=["* * * * * *"])
timed = hatchet.workflow(name="conf-py-timed")

lock = threading.Lock()
# workflow run id -> (workflow, input, metadata)
seen: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}


def note(name: str, ctx: Context, input: EmptyModel) -> dict[str, Any]:
    body = input.model_dump()
    with lock:
        seen[ctx.workflow_run_id] = (name, body, dict(ctx.additional_metadata or {}))
    return body


@declared.task()
async def declared_tick(input: EmptyModel, ctx: Context) -> dict[str, Any]:
    return note("declared", ctx, input)


@timed.task()
async def timed_echo(input: EmptyModel, ctx: Context) -> dict[str, Any]:
    return note("timed", ctx, input)


def runs_with(input: dict[str, Any]) -> list[str]:
    with lock:
        return [run for run, (name, body, _) in seen.items() if name == "timed" and body == input]


def wait_until(what: str, condition: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    log(f"gave up waiting for {what}")
    return False


def refused(call: Any) -> str | None:
    """The error text of a call expected to fail, or None when it succeeded."""
    try:
        call()
    except Exception as e:  # noqa: BLE001 - any SDK error is the refusal
        return f"{type(e).__name__}: {e}"
    return None


def declared_cron(checks: Checks) -> None:
    listed = hatchet.cron.list(workflow_name="conf-py-declared").rows or []
    checks.expect_equal(
        "the declared cron is listed with method DEFAULT",
        [(c.cron, c.method.value, c.enabled) for c in listed],
        [("* * * * * *", "DEFAULT", True)],
    )

    def declared_runs() -> int:
        with lock:
            return sum(1 for (name, _, _) in seen.values() if name == "declared")

    checks.check(
        "the declared cron starts a run every second",
        wait_until("declared runs", lambda: declared_runs() >= 3, 10),
        f"{declared_runs()} runs",
    )


def api_cron(checks: Checks) -> None:
    cron = hatchet.cron.create(
        "conf-py-timed",
        "every-second",
        "* * * * * *",
        input={"from": "cron"},
        additional_metadata={"origin": "cron"},
    )
    checks.expect_equal(
        "cron.create answers the cron",
        (cron.name, cron.cron, cron.method.value, cron.enabled, cron.workflow_name),
        ("every-second", "* * * * * *", "API", True, "conf-py-timed"),
    )
    got = hatchet.cron.get(cron.metadata.id)
    checks.expect_equal("cron.get finds it", got.metadata.id, cron.metadata.id)
    by_name = hatchet.cron.list(cron_name="every-second").rows or []
    checks.expect_equal("cron.list by name", [c.metadata.id for c in by_name], [cron.metadata.id])
    by_meta = hatchet.cron.list(additional_metadata={"origin": "cron"}).rows or []
    checks.expect_equal(
        "cron.list by metadata", [c.metadata.id for c in by_meta], [cron.metadata.id]
    )
    checks.check(
        "the cron's runs carry its input",
        wait_until("cron runs", lambda: len(runs_with({"from": "cron"})) >= 2, 10),
        f"{len(runs_with({'from': 'cron'}))} runs",
    )
    with lock:
        metas = [m for (name, body, m) in seen.values() if body == {"from": "cron"}]
    checks.check(
        "... and its metadata",
        bool(metas) and all(m.get("origin") == "cron" for m in metas),
        str(metas[:3]),
    )
    again = refused(
        lambda: hatchet.cron.create(
            "conf-py-timed", "every-second", "* * * * * *", input={}, additional_metadata={}
        )
    )
    checks.check(
        "the same name and expression again is refused",
        again is not None and "already exists" in again,
        str(again),
    )
    bad = refused(
        lambda: hatchet.cron.create(
            "conf-py-timed", "bad", "61 * * * *", input={}, additional_metadata={}
        )
    )
    checks.check(
        "an expression the server cannot parse is refused, naming it",
        bad is not None and "61 * * * *" in bad,
        str(bad),
    )
    hatchet.cron.delete(cron.metadata.id)
    time.sleep(1.5)
    settled = len(runs_with({"from": "cron"}))
    time.sleep(2)
    checks.expect_equal(
        "a deleted cron starts nothing more", len(runs_with({"from": "cron"})), settled
    )
    # (cron.get of it would fail only after the SDK's five retries of a 404.)
    checks.expect_equal(
        "a deleted cron is no longer listed",
        [c.metadata.id for c in hatchet.cron.list(cron_name="every-second").rows or []],
        [],
    )


def grpc_schedule(checks: Checks) -> None:
    at = datetime.now(timezone.utc) + timedelta(seconds=2)
    version = timed.schedule(at, input=EmptyModel.model_validate({"from": "grpc"}))
    ids = [s.id for s in version.scheduled_workflows]
    if not checks.expect_equal("Workflow.schedule answers one schedule", len(ids), 1):
        return
    pending = hatchet.scheduled.get(ids[0])
    checks.check(
        "scheduled.get shows it before it fires, at its time",
        pending.workflow_run_id is None and abs((pending.trigger_at - at).total_seconds()) < 0.01,
        f"run={pending.workflow_run_id} at={pending.trigger_at} wanted {at}",
    )
    checks.check(
        "it starts a run with its input",
        wait_until("the scheduled run", lambda: len(runs_with({"from": "grpc"})) == 1),
    )
    fired = hatchet.scheduled.get(ids[0])
    checks.expect_equal(
        "scheduled.get names the run it started",
        fired.workflow_run_id,
        (runs_with({"from": "grpc"}) or [None])[0],
    )


def rest_schedules(checks: Checks) -> None:
    now = datetime.now(timezone.utc)
    later = hatchet.scheduled.create(
        "conf-py-timed", now + timedelta(minutes=1), {"from": "moved"}, {"batch": "b1"}
    )
    listed = hatchet.scheduled.list(statuses=[ScheduledRunStatus.SCHEDULED]).rows or []
    checks.check(
        "a schedule a minute ahead is listed as SCHEDULED",
        later.metadata.id in [s.metadata.id for s in listed],
    )
    hatchet.scheduled.update(later.metadata.id, datetime.now(timezone.utc) + timedelta(seconds=1))
    past = hatchet.scheduled.create(
        "conf-py-timed", now - timedelta(minutes=5), {"from": "past"}, {}
    )
    gone = hatchet.scheduled.create(
        "conf-py-timed", now + timedelta(seconds=2), {"from": "deleted"}, {}
    )
    hatchet.scheduled.delete(gone.metadata.id)
    checks.check(
        "a schedule moved a second ahead fires",
        wait_until("the moved schedule", lambda: len(runs_with({"from": "moved"})) == 1),
    )
    checks.check(
        "a schedule in the past fires at once",
        wait_until("the past schedule", lambda: len(runs_with({"from": "past"})) == 1, 5),
    )
    checks.check(
        "a deleted schedule is no longer listed",
        gone.metadata.id
        not in [s.metadata.id for s in hatchet.scheduled.list(limit=1000).rows or []],
    )

    far = [
        hatchet.scheduled.create("conf-py-timed", now + timedelta(hours=1), {"far": i}, {})
        for i in range(3)
    ]
    unknown = "00000000-0000-4000-8000-000000000001"
    when = now + timedelta(hours=2)
    updated = hatchet.scheduled.bulk_update([(far[0].metadata.id, when), (unknown, when)])
    checks.expect_equal(
        "bulk_update moves one and reports the unknown id",
        (updated.updated_ids, [e.id for e in updated.errors]),
        ([far[0].metadata.id], [unknown]),
    )
    moved = hatchet.scheduled.get(far[0].metadata.id)
    checks.check(
        "... to the new time", abs((moved.trigger_at - when).total_seconds()) < 0.01, str(moved)
    )
    deleted = hatchet.scheduled.bulk_delete(scheduled_ids=[f.metadata.id for f in far[:2]])
    checks.expect_equal(
        "bulk_delete removes what it names",
        sorted(deleted.deleted_ids),
        sorted(f.metadata.id for f in far[:2]),
    )
    time.sleep(2.5)
    checks.expect_equal(
        "the deleted schedule never fired", runs_with({"from": "deleted"}), []
    )
    checks.expect_equal(
        "each schedule started one run",
        [len(runs_with({"from": k})) for k in ("moved", "past", "grpc")],
        [1, 1, 1],
    )


def body(checks: Checks) -> None:
    log("declared cron")
    declared_cron(checks)
    log("cron over REST")
    api_cron(checks)
    log("Workflow.schedule over gRPC")
    grpc_schedule(checks)
    log("schedules over REST")
    rest_schedules(checks)


if __name__ == "__main__":
    sys.exit(
        run_with_worker("py/timers.py", hatchet, "conf-py-timers", [declared, timed], body, slots=8)
    )
