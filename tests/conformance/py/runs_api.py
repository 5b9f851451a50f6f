"""Conformance: the run-inspection calls of the Python SDK over REST.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python runs_api.py

Workflow `conf-py-runs`: `first` returns {"value": n * 2}; `second` (parent: first)
returns {"sum": first.value + 1}. After a run with metadata completes, the script reads it
back with `runs.get`, `runs.get_status`, `runs.get_result`, `runs.get_task_run`,
`runs.list` (runs and tasks, filtered by workflow, metadata and status),
`Workflow.list_runs` and `workflows.list`, then triggers one with `runs.create` (the REST
trigger) and waits for its result. Prints one `ADZE-RESULT <json>` line on stdout and
exits 0 only if every check passed.
"""

from __future__ import annotations

import sys
import time

from pydantic import BaseModel

from _harness import Checks, client, log, run_with_worker
from hatchet_sdk import Context, TriggerWorkflowOptions
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus

WORKFLOW = "conf-py-runs"

hatchet = client("py/runs_api.py")


class RunsInput(BaseModel):
    n: int


class FirstOutput(BaseModel):
    value: int


class SecondOutput(BaseModel):
    sum: int


dag = hatchet.workflow(name=WORKFLOW, input_validator=RunsInput)


@dag.task()
def first(input: RunsInput, ctx: Context) -> FirstOutput:
    return FirstOutput(value=input.n * 2)


@dag.task(parents=[first])
def second(input: RunsInput, ctx: Context) -> SecondOutput:
    return SecondOutput(sum=ctx.task_output(first).value + 1)


def run_checks(checks: Checks) -> None:
    ref = dag.run_no_wait(
        RunsInput(n=4),
        options=TriggerWorkflowOptions(additional_metadata={"suite": "runs"}),
    )
    result = ref.result()
    checks.expect_equal("the run's result", result, {"first": {"value": 8}, "second": {"sum": 9}})
    run_id = ref.workflow_run_id
    checks.observe("run_id", run_id)

    details = hatchet.runs.get(run_id)
    checks.expect_equal("runs.get: the run's id", details.run.metadata.id, run_id)
    checks.expect_equal("runs.get: COMPLETED", details.run.status, V1TaskStatus.COMPLETED)
    checks.expect_equal("runs.get: its input", details.run.input, {"n": 4})
    checks.expect_equal("runs.get: its metadata", details.run.additional_metadata, {"suite": "runs"})
    names = sorted(t.display_name for t in details.tasks)
    checks.expect_equal("runs.get: its two tasks", names, ["first", "second"])
    shape = {s.task_name: s for s in details.shape}
    checks.expect_equal(
        "runs.get: the shape's edge first -> second",
        shape["first"].children_step_ids,
        [shape["second"].step_id],
    )
    checks.check("runs.get: task events", len(details.task_events) >= 4, str(len(details.task_events)))
    checks.expect_equal("runs.get_status", hatchet.runs.get_status(run_id), V1TaskStatus.COMPLETED)
    checks.expect_equal("runs.get_result: the last task's output", hatchet.runs.get_result(run_id), {"sum": 9})

    second_task = next(t for t in details.tasks if t.display_name == "second")
    task = hatchet.runs.get_task_run(second_task.task_external_id)
    checks.expect_equal("runs.get_task_run: its name", task.display_name, "second")
    checks.expect_equal("runs.get_task_run: its output", task.output, {"sum": 9})
    checks.expect_equal("runs.get_task_run: its run", task.workflow_run_external_id, run_id)

    listed = hatchet.runs.list(workflow_ids=[dag.id], additional_metadata={"suite": "runs"})
    ids = [r.metadata.id for r in listed.rows]
    checks.expect_equal("runs.list by workflow and metadata", ids, [run_id])
    checks.expect_equal(
        "runs.list: the run's tasks as children",
        sorted(c.display_name for c in (listed.rows[0].children or [])),
        ["first", "second"],
    )
    tasks = hatchet.runs.list(workflow_ids=[dag.id], only_tasks=True)
    checks.expect_equal("runs.list only_tasks: two tasks", len(tasks.rows), 2)
    none = hatchet.runs.list(workflow_ids=[dag.id], statuses=[V1TaskStatus.FAILED])
    checks.expect_equal("runs.list with statuses=FAILED: none", none.rows, [])
    checks.check(
        "Workflow.list_runs names the run",
        run_id in [r.metadata.id for r in dag.list_runs()],
    )
    rows = hatchet.workflows.list(workflow_name=WORKFLOW).rows or []
    checks.check("workflows.list names the workflow", any(w.name == WORKFLOW for w in rows))

    made = hatchet.runs.create(WORKFLOW, {"n": 10}, additional_metadata={"via": "rest"})
    made_id = made.run.metadata.id
    checks.observe("created_id", made_id)
    checks.check(
        "runs.create: QUEUED or later",
        made.run.status in (V1TaskStatus.QUEUED, V1TaskStatus.RUNNING, V1TaskStatus.COMPLETED),
        str(made.run.status),
    )
    deadline = time.monotonic() + 30
    while hatchet.runs.get_status(made_id) != V1TaskStatus.COMPLETED:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    log(f"created run {made_id}")
    checks.expect_equal("the REST-made run completes", hatchet.runs.get_result(made_id), {"sum": 21})


def main() -> int:
    return run_with_worker("py/runs_api.py", hatchet, f"{WORKFLOW}-worker", [dag], run_checks)


if __name__ == "__main__":
    sys.exit(main())
