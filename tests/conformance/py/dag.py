"""Conformance: a two-task DAG, its result read with sync run() and with aio_run().

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python dag.py

Workflow `conf-py-dag`: `first` returns {"value": n * 2}; `second` (parent: first) returns
{"sum": first.value + 1}. Sync `run()` polls v1.AdminService/GetRunDetails; `aio_run()`
waits on Dispatcher/SubscribeToWorkflowRuns. Prints one `ADZE-RESULT <json>` line on stdout
and exits 0 only if every check passed.
"""

from __future__ import annotations

import asyncio
import sys

from typing import Any

from pydantic import BaseModel

from _harness import (
    Checks,
    client,
    log,
    run_with_worker,
)
from hatchet_sdk import Context

WORKFLOW = "conf-py-dag"

hatchet = client("py/dag.py")


class DagInput(BaseModel):
    n: int


class FirstOutput(BaseModel):
    value: int


class SecondOutput(BaseModel):
    sum: int


dag = hatchet.workflow(name=WORKFLOW, input_validator=DagInput)


@dag.task()
def first(input: DagInput, ctx: Context) -> FirstOutput:
    return FirstOutput(value=input.n * 2)


@dag.task(parents=[first])
async def second(input: DagInput, ctx: Context) -> SecondOutput:
    return SecondOutput(sum=ctx.task_output(first).value + 1)


def expected(n: int) -> dict[str, Any]:
    return {"first": {"value": n * 2}, "second": {"sum": n * 2 + 1}}


def run_checks(checks: Checks) -> None:
    sync_n, async_n = 5, 7

    log(f"sync run() with n={sync_n}")
    sync_result = dag.run(DagInput(n=sync_n))
    checks.observe("sync_result", sync_result)
    checks.expect_equal("sync run() returns every task's output", sync_result, expected(sync_n))

    async def aio() -> dict[str, Any]:
        return await dag.aio_run(DagInput(n=async_n))

    log(f"aio_run() with n={async_n}")
    async_result = asyncio.run(aio())
    checks.observe("async_result", async_result)
    checks.expect_equal("aio_run() returns every task's output", async_result, expected(async_n))


def main() -> int:
    def checks_of(checks: Checks) -> None:
        run_checks(checks)

    return run_with_worker(
        "py/dag.py",
        hatchet,
        f"{WORKFLOW}-worker",
        [dag],
        checks_of,
    )


if __name__ == "__main__":
    sys.exit(main())
