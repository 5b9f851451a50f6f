"""Open-loop load from the official Hatchet Python SDK (hatchet-sdk==1.43.1), for `adze-bench wire`.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none \
    python load.py --workflow bench-py-noop --rate 500 --secs 20 --phase 7 --sends sends.txt

Triggers `--rate` runs per second for `--secs` seconds with `Workflow.aio_run(input,
wait_for_result=False)` (what `aio_run_no_wait` does in 1.43.1, without its deprecation
warning), each trigger its own asyncio task, never waiting for results before sending more
(at most --max-in-flight triggers outstanding). Input: {"phase": --phase, "seq": n}.
Writes "<seq> <sent ns> <acked ns> <run id>" per accepted trigger to --sends and prints one line
"ADZE-BENCH <json>" with the totals on stdout (the SDK's own logging may share stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from pydantic import BaseModel

from hatchet_sdk import Hatchet


class SeqInput(BaseModel):
    phase: int
    seq: int


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflow", default="bench-py-noop")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--secs", type=float, required=True)
    parser.add_argument("--phase", type=int, required=True)
    parser.add_argument("--sends", required=True)
    parser.add_argument("--max-in-flight", type=int, default=1024)
    args = parser.parse_args()

    hatchet = Hatchet()
    workflow = hatchet.workflow(name=args.workflow, input_validator=SeqInput)
    total = int(args.rate * args.secs)
    in_flight = asyncio.Semaphore(args.max_in_flight)
    pending: set[asyncio.Task[None]] = set()
    stats = {"sent": 0, "errors": 0, "first_error": None, "max_lag_ms": 0.0}

    with open(args.sends, "w") as sends:

        async def trigger(seq: int) -> None:
            try:
                sent = time.time_ns()
                ref = await workflow.aio_run(
                    SeqInput(phase=args.phase, seq=seq), wait_for_result=False
                )
                sends.write(f"{seq} {sent} {time.time_ns()} {ref.workflow_run_id}\n")
            except Exception as e:  # noqa: BLE001 - counted and reported
                stats["errors"] += 1
                stats["first_error"] = stats["first_error"] or f"{type(e).__name__}: {e}"
            finally:
                in_flight.release()

        start = time.monotonic()
        t0 = time.time_ns()
        seq = 0
        while seq < total:
            due = min(total, int((time.monotonic() - start) * args.rate) + 1)
            while seq < due:
                await in_flight.acquire()
                lag_ms = ((time.monotonic() - start) - seq / args.rate) * 1e3
                stats["max_lag_ms"] = max(stats["max_lag_ms"], lag_ms)
                task = asyncio.create_task(trigger(seq))
                pending.add(task)
                task.add_done_callback(pending.discard)
                seq += 1
            await asyncio.sleep(0.001)
        t1 = time.time_ns()
        await asyncio.gather(*pending)

    stats.update(sent=seq, t0=t0, t1=t1, offered_per_s=args.rate)
    print("ADZE-BENCH " + json.dumps(stats), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
