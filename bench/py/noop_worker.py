"""Bench worker on the official Hatchet Python SDK (hatchet-sdk==1.43.1), for `adze-bench wire`.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none \
    ADZE_BENCH_STARTS=/tmp/starts.txt [ADZE_BENCH_SLOTS=100] python noop_worker.py

Registers workflow `bench-py-noop` (or $ADZE_BENCH_WORKFLOW) with one no-op task, `run`, whose
input is {"phase": int, "seq": int}. The handler's first act is to append
"<phase> <seq> <wall-clock ns>" to $ADZE_BENCH_STARTS; the bench merges those lines with its
own send and finish times. Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from hatchet_sdk import Context, Hatchet


class SeqInput(BaseModel):
    phase: int
    seq: int


class Done(BaseModel):
    ok: bool = True


hatchet = Hatchet()
bench = hatchet.workflow(
    name=os.environ.get("ADZE_BENCH_WORKFLOW", "bench-py-noop"), input_validator=SeqInput
)

# Line-buffered appends: one small write per task, atomic between processes.
_starts = open(os.environ.get("ADZE_BENCH_STARTS", os.devnull), "a", buffering=1)  # noqa: SIM115


@bench.task(name="run")
async def run(input: SeqInput, ctx: Context) -> Done:
    _starts.write(f"{input.phase} {input.seq} {time.time_ns()}\n")
    return Done()


def main() -> None:
    slots = int(os.environ.get("ADZE_BENCH_SLOTS", "100"))
    worker = hatchet.worker("bench-py-worker", slots=slots, workflows=[bench])
    worker.start()  # blocks until SIGTERM/SIGINT


if __name__ == "__main__":
    main()
