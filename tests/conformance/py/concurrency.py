"""Conformance: concurrency keys, the seed's "max 5 runs per user", and CANCEL_IN_PROGRESS.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python concurrency.py

- `conf-py-per-user` (concurrency `input.user_id`, max_runs 5, GROUP_ROUND_ROBIN): task
  `process` sleeps 1.5 s, counting how many of its user's runs are in it at once. Alice
  triggers 10 runs, then bob 5, on a worker with 20 slots: alice never has more than 5
  at once (and has 5), bob's 5 all run at once, all 15 complete.
- `conf-py-sync` (concurrency `input.account`, max_runs 1, CANCEL_IN_PROGRESS): three
  syncs triggered in a row, 0.3 s apart, each sleeping 3 s: only the last completes; the
  first two end cancelled.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import defaultdict

from _harness import Checks, client, log, run_with_worker
from hatchet_sdk import ConcurrencyExpression, ConcurrencyLimitStrategy, Context
from pydantic import BaseModel

hatchet = client("py/concurrency.py")


class UserInput(BaseModel):
    user_id: str


class SyncInput(BaseModel):
    account: str
    n: int


per_user = hatchet.workflow(
    name="conf-py-per-user",
    input_validator=UserInput,
    concurrency=ConcurrencyExpression(
        expression="input.user_id",
        max_runs=5,
        limit_strategy=ConcurrencyLimitStrategy.GROUP_ROUND_ROBIN,
    ),
)
sync = hatchet.workflow(
    name="conf-py-sync",
    input_validator=SyncInput,
    concurrency=ConcurrencyExpression(
        expression="input.account",
        max_runs=1,
        limit_strategy=ConcurrencyLimitStrategy.CANCEL_IN_PROGRESS,
    ),
)

lock = threading.Lock()
in_flight: dict[str, int] = defaultdict(int)
most: dict[str, int] = defaultdict(int)
finished_syncs: list[int] = []


@per_user.task()
async def process(input: UserInput, ctx: Context) -> dict[str, str]:
    with lock:
        in_flight[input.user_id] += 1
        most[input.user_id] = max(most[input.user_id], in_flight[input.user_id])
    try:
        await asyncio.sleep(1.5)
    finally:
        with lock:
            in_flight[input.user_id] -= 1
    return {"user": input.user_id}


@sync.task()
async def pull(input: SyncInput, ctx: Context) -> dict[str, int]:
    await asyncio.sleep(3)
    with lock:
        finished_syncs.append(input.n)
    return {"n": input.n}


def check_per_user(checks: Checks) -> None:
    log("alice triggers 10 runs of conf-py-per-user, bob 5")
    alice = per_user.run_many(
        [per_user.create_bulk_run_item(input=UserInput(user_id="alice")) for _ in range(10)],
        wait_for_result=False,
    )
    bob = per_user.run_many(
        [per_user.create_bulk_run_item(input=UserInput(user_id="bob")) for _ in range(5)],
        wait_for_result=False,
    )
    results = [ref.result() for ref in alice + bob]
    with lock:
        seen = dict(most)
    checks.observe("most_at_once", seen)
    checks.expect_equal("all 15 runs completed", len(results), 15)
    checks.check("alice never had more than 5 at once", seen.get("alice", 0) <= 5, str(seen))
    checks.expect_equal("alice ran 5 at a time", seen.get("alice"), 5)
    checks.expect_equal("all of bob's runs ran at once", seen.get("bob"), 5)


def check_cancel_in_progress(checks: Checks) -> None:
    log("three syncs of one account in a row (CANCEL_IN_PROGRESS, max_runs 1)")
    refs = []
    for n in range(3):
        refs.append(sync.run(SyncInput(account="acme", n=n), wait_for_result=False))
        time.sleep(0.3)
    outcomes: list[str] = []
    for ref in refs:
        try:
            ref.result()
            outcomes.append("completed")
        except Exception as e:  # noqa: BLE001 - inspected below
            outcomes.append("cancelled" if "cancel" in str(e).lower() else f"error: {e}")
    checks.observe("sync_outcomes", outcomes)
    checks.expect_equal(
        "only the last sync completes", outcomes, ["cancelled", "cancelled", "completed"]
    )
    time.sleep(0.5)
    with lock:
        done = list(finished_syncs)
    checks.expect_equal("only the last sync's handler ran to its end", done, [2])


def main() -> int:
    def checks_of(checks: Checks) -> None:
        check_per_user(checks)
        check_cancel_in_progress(checks)

    return run_with_worker(
        "py/concurrency.py",
        hatchet,
        "conf-py-concurrency-worker",
        [per_user, sync],
        checks_of,
        slots=20,
    )


if __name__ == "__main__":
    sys.exit(main())
