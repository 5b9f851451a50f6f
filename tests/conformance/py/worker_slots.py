"""Conformance helper: ONE worker with a fixed number of slots, run until killed.

    ADZE_WORKER_NAME=w1 [ADZE_WORKER_SLOTS=2] \
    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python worker_slots.py

Registers workflow `conf-slots` with one task, `work`, which sleeps `input.sleep_ms`
(or `input.sleep_ms_by_worker[<this worker's name>]` when given)
milliseconds (asynchronously, so only the worker's slots limit how many run at once) and
returns {"worker": $ADZE_WORKER_NAME}. Prints `READY` on stdout once the engine answered
Dispatcher/Register; everything else goes to stderr. SIGTERM or SIGINT stop it gracefully
(the SDK pauses the worker on the engine and lets running tasks finish; exit code 0),
SIGKILL stops it like a crash. A Rust test drives it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

from pydantic import BaseModel

from _harness import Stdout, client, log
from hatchet_sdk import Context

WORKFLOW = "conf-slots"

hatchet = client("py/worker_slots.py")


class WorkInput(BaseModel):
    sleep_ms: int = 0
    sleep_ms_by_worker: dict[str, int] = {}


class WorkOutput(BaseModel):
    worker: str


slots_wf = hatchet.workflow(name=WORKFLOW, input_validator=WorkInput)


@slots_wf.task(name="work")
async def work(input: WorkInput, ctx: Context) -> WorkOutput:
    ms = input.sleep_ms_by_worker.get(os.environ["ADZE_WORKER_NAME"], input.sleep_ms)
    await asyncio.sleep(max(ms, 0) / 1000)
    return WorkOutput(worker=os.environ["ADZE_WORKER_NAME"])


def announce_when_registered(worker: object) -> None:
    # hatchet_sdk 1.43.1: the listener subprocess puts the worker id it got from
    # Dispatcher/Register on Worker._worker_id_queue, and the worker reads it back when it
    # pauses itself on shutdown, so it is put back after reading.
    ids = worker._worker_id_queue  # type: ignore[attr-defined]  # noqa: SLF001
    worker_id = ids.get()
    ids.put(worker_id)
    log(f"registered as worker {worker_id}")
    Stdout.write_line("READY")


def main() -> int:
    name = os.environ.get("ADZE_WORKER_NAME")
    if not name:
        log("ADZE_WORKER_NAME is not set")
        return 2
    try:
        slots = int(os.environ.get("ADZE_WORKER_SLOTS", "2"))
    except ValueError:
        log(f"ADZE_WORKER_SLOTS must be an integer, got {os.environ['ADZE_WORKER_SLOTS']!r}")
        return 2

    Stdout.claim()
    worker = hatchet.worker(name, slots=slots, workflows=[slots_wf])
    threading.Thread(
        target=announce_when_registered, args=(worker,), name="ready", daemon=True
    ).start()
    log(f"starting worker {name!r} with {slots} slots")
    worker.start()  # blocks until SIGTERM/SIGINT; exits the process itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
