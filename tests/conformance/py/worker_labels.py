"""Conformance: worker labels and a task's desired labels, with the pinned SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python worker_labels.py

The worker registers labels `model = "gpu"` and `memory = 64`.
- `conf-py-gpu` requires `model = "gpu"`: it runs.
- `conf-py-big` requires `memory > 32` (GREATER_THAN): it runs.
- `conf-py-tpu` requires `model = "tpu"`: after 3 s its handler has not run; cancelled,
  the run ends cancelled without ever running.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import sys
import threading
import time

from _harness import Checks, client, log, run_with_worker
from hatchet_sdk import Context, EmptyModel
from hatchet_sdk.labels import DesiredWorkerLabel
from hatchet_sdk.types.labels import WorkerLabelComparator

hatchet = client("py/worker_labels.py")

ran: list[str] = []
lock = threading.Lock()


def note(name: str) -> dict[str, str]:
    with lock:
        ran.append(name)
    return {"ran": name}


gpu = hatchet.workflow(name="conf-py-gpu")
big = hatchet.workflow(name="conf-py-big")
tpu = hatchet.workflow(name="conf-py-tpu")


@gpu.task(desired_worker_labels=[DesiredWorkerLabel(key="model", value="gpu", required=True)])
async def on_gpu(input: EmptyModel, ctx: Context) -> dict[str, str]:
    return note("gpu")


@big.task(
    desired_worker_labels=[
        DesiredWorkerLabel(
            key="memory", value=32, required=True, comparator=WorkerLabelComparator.GREATER_THAN
        )
    ]
)
async def on_big(input: EmptyModel, ctx: Context) -> dict[str, str]:
    return note("big")


@tpu.task(desired_worker_labels=[DesiredWorkerLabel(key="model", value="tpu", required=True)])
async def on_tpu(input: EmptyModel, ctx: Context) -> dict[str, str]:
    return note("tpu")


def body(checks: Checks) -> None:
    log("a required label the worker has, and a comparison it satisfies")
    checks.expect_equal("conf-py-gpu ran", gpu.run(wait_for_result=True).get("on_gpu"), {"ran": "gpu"})
    checks.expect_equal("conf-py-big ran", big.run(wait_for_result=True).get("on_big"), {"ran": "big"})
    log("a required label no worker has")
    ref = tpu.run(wait_for_result=False)
    time.sleep(3)
    with lock:
        seen = list(ran)
    checks.check("conf-py-tpu never ran on the worker without the label", "tpu" not in seen, str(seen))
    hatchet.runs.cancel(ref.workflow_run_id)
    error: BaseException | None = None
    try:
        ref.result()
    except Exception as e:  # noqa: BLE001 - inspected below
        error = e
    checks.check(
        "cancelled, it ends cancelled",
        error is not None and "cancel" in str(error).lower(),
        repr(error),
    )


def main() -> int:
    return run_with_worker(
        "py/worker_labels.py",
        hatchet,
        "conf-py-labelled-worker",
        [gpu, big, tpu],
        body,
        # This SDK version's hatchet.worker() takes its labels as a dict.
        labels={"model": "gpu", "memory": 64},
    )


if __name__ == "__main__":
    sys.exit(main())
