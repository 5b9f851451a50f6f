"""Conformance: the workers, rate-limit and metrics calls of the Python SDK over REST.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python dashboard_api.py

`conf-py-dash` takes 2 units of `conf-py-dash-api` (10 per minute); `conf-py-dash-held`
takes 1 unit of `conf-py-dash-paused`, a key paused for an hour, so its run stays queued.
After two runs of `conf-py-dash` and one of `conf-py-dash-held`:
- `workers.list()` and `workers.get(id)` show the script's worker, ACTIVE, with its 4
  slots and its actions;
- `rate_limits.list()` shows 6 units left of `conf-py-dash-api`, and the pause of the
  other; search and ordering by value work;
- `metrics.get_task_metrics()` counts 2 completed and 1 queued task, and
  `metrics.get_queue_metrics()` the queued one under its action.
Prints one `ADZE-RESULT <json>` line and exits 0 only if every check passed.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

from _harness import Checks, client, log, run_with_worker
from hatchet_sdk import Context
from hatchet_sdk.clients.rest.models.rate_limit_order_by_direction import (
    RateLimitOrderByDirection,
)
from hatchet_sdk.clients.rest.models.rate_limit_order_by_field import RateLimitOrderByField
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.clients.rest.models.worker_status import WorkerStatus
from hatchet_sdk.rate_limit import RateLimit, RateLimitDuration
from pydantic import BaseModel

WORKER = "conf-py-dash-worker"
API_KEY = "conf-py-dash-api"
PAUSED_KEY = "conf-py-dash-paused"

hatchet = client("py/dashboard_api.py")


class Empty(BaseModel):
    pass


limited = hatchet.workflow(name="conf-py-dash", input_validator=Empty)
held = hatchet.workflow(name="conf-py-dash-held", input_validator=Empty)


@limited.task(rate_limits=[RateLimit(static_key=API_KEY, units=2)])
def call(input: Empty, ctx: Context) -> dict[str, bool]:
    return {"called": True}


@held.task(rate_limits=[RateLimit(static_key=PAUSED_KEY, units=1)])
def wait(input: Empty, ctx: Context) -> dict[str, bool]:
    return {"ran": True}


def check_workers(checks: Checks, worker_id: str) -> None:
    rows = hatchet.workers.list().rows or []
    mine = [w for w in rows if w.metadata.id == worker_id]
    checks.expect_equal("workers.list names the worker once", len(mine), 1)
    if mine:
        checks.expect_equal("workers.list: its name", mine[0].name, WORKER)
        checks.expect_equal("workers.list: ACTIVE", mine[0].status, WorkerStatus.ACTIVE)
    worker = hatchet.workers.get(worker_id)
    checks.expect_equal("workers.get: its name", worker.name, WORKER)
    checks.expect_equal("workers.get: ACTIVE", worker.status, WorkerStatus.ACTIVE)
    slots = (worker.slot_config or {}).get("default")
    checks.expect_equal("workers.get: 4 slots", slots.limit if slots else None, 4)
    checks.check(
        "workers.get: its actions",
        any(a.startswith("conf-py-dash") for a in worker.actions or []),
        str(worker.actions),
    )


def check_rate_limits(checks: Checks) -> None:
    listed = hatchet.rate_limits.list(search="conf-py-dash").rows or []
    by_key = {r.key: r for r in listed}
    checks.expect_equal("rate_limits.list: both keys", sorted(by_key), [API_KEY, PAUSED_KEY])
    api = by_key.get(API_KEY)
    if api is not None:
        checks.expect_equal("rate_limits.list: the limit", api.limit_value, 10)
        checks.expect_equal("rate_limits.list: 6 units left after 2 runs of 2", api.value, 6)
        checks.expect_equal("rate_limits.list: the window", api.window, "MINUTE")
    paused = by_key.get(PAUSED_KEY)
    checks.check(
        "rate_limits.list: the pause",
        paused is not None and paused.paused_until is not None,
        repr(paused),
    )
    ordered = hatchet.rate_limits.list(
        search="conf-py-dash",
        order_by_field=RateLimitOrderByField.VALUE,
        order_by_direction=RateLimitOrderByDirection.ASC,
    ).rows or []
    checks.expect_equal(
        "rate_limits.list by value, ascending (5 left, then 6)",
        [r.key for r in ordered],
        [PAUSED_KEY, API_KEY],
    )


def run_checks(checks: Checks) -> None:
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    for ref in [limited.run_no_wait(Empty()) for _ in range(2)]:
        ref.result()
    queued = held.run_no_wait(Empty())
    tasks = hatchet.runs.get(queued.workflow_run_id).tasks
    action = tasks[0].action_id if tasks else None
    checks.expect_equal(
        "the held run waits for its paused key",
        hatchet.runs.get_status(queued.workflow_run_id),
        V1TaskStatus.QUEUED,
    )

    check_workers(checks, checks.observed["worker_id"])
    check_rate_limits(checks)

    metrics = hatchet.metrics.get_task_metrics(since=since)
    checks.observe("task_metrics", metrics.model_dump())
    checks.expect_equal("get_task_metrics: 2 completed", metrics.completed, 2)
    checks.expect_equal("get_task_metrics: 1 queued", metrics.queued, 1)
    checks.expect_equal(
        "get_task_metrics: none running, failed or cancelled",
        (metrics.running, metrics.failed, metrics.cancelled),
        (0, 0, 0),
    )
    queues = hatchet.metrics.get_queue_metrics()
    checks.expect_equal("get_queue_metrics: the queued task under its action", queues, {action: 1})
    log(f"queues {queues}")


def main() -> int:
    # Static keys are defined before a workflow using them registers.
    hatchet.rate_limits.put(API_KEY, 10, RateLimitDuration.MINUTE)
    hatchet.rate_limits.put(PAUSED_KEY, 5, RateLimitDuration.MINUTE)
    hatchet.rate_limits.pause(PAUSED_KEY, datetime.now(timezone.utc) + timedelta(hours=1))
    return run_with_worker(
        "py/dashboard_api.py", hatchet, WORKER, [limited, held], run_checks, slots=4
    )


if __name__ == "__main__":
    sys.exit(main())
