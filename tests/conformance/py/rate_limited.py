"""Conformance: tasks under rate limits, static and dynamic, with the pinned SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python rate_limited.py

- `conf-py-parse` takes 1 unit of the static key `conf-py-parser-api`, defined with
  `hatchet.rate_limits.put(key, 10, SECOND)` before the worker registers: 25 runs all complete, spread over three
  windows (the last starts at least 1.5 s after the first), never more than two
  windows' worth (20) within any 0.95 s.
- `conf-py-per-user` takes 1 unit of `RateLimit(dynamic_key="input.user_id", limit=2,
  duration=SECOND)`: alice's 6 runs need three windows, bob's 2 start at once.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import sys
import threading
import time

from _harness import Checks, client, log, run_with_worker
from hatchet_sdk import Context
from hatchet_sdk.rate_limit import RateLimit, RateLimitDuration
from pydantic import BaseModel

hatchet = client("py/rate_limited.py")


class Call(BaseModel):
    user_id: str = ""
    i: int = 0


parse = hatchet.workflow(name="conf-py-parse", input_validator=Call)
per_user = hatchet.workflow(name="conf-py-per-user-rl", input_validator=Call)

lock = threading.Lock()
starts: dict[str, list[tuple[float, str]]] = {"parse": [], "per_user": []}


@parse.task(rate_limits=[RateLimit(static_key="conf-py-parser-api", units=1)])
async def call_parser(input: Call, ctx: Context) -> dict[str, int]:
    with lock:
        starts["parse"].append((time.monotonic(), input.user_id))
    return {"i": input.i}


@per_user.task(
    rate_limits=[
        RateLimit(dynamic_key="input.user_id", units=1, limit=2, duration=RateLimitDuration.SECOND)
    ]
)
async def call_api(input: Call, ctx: Context) -> dict[str, int]:
    with lock:
        starts["per_user"].append((time.monotonic(), input.user_id))
    return {"i": input.i}


def most_within(times: list[float], window: float) -> int:
    return max((sum(1 for b in times if a <= b < a + window) for a in times), default=0)


def check_static(checks: Checks) -> None:
    log("25 runs of conf-py-parse under 10 per second")
    refs = parse.run_many(
        [parse.create_bulk_run_item(input=Call(i=i)) for i in range(25)], wait_for_result=False
    )
    for ref in refs:
        ref.result()
    with lock:
        times = sorted(t for t, _ in starts["parse"])
    checks.expect_equal("all 25 ran", len(times), 25)
    span = times[-1] - times[0]
    checks.observe("static_span_s", round(span, 2))
    checks.check("they were spread over three windows", span >= 1.5, f"span {span:.2f} s")
    most = most_within(times, 0.95)
    checks.check("never more than two windows' worth at once", most <= 20, f"{most} in 0.95 s")


def check_dynamic(checks: Checks) -> None:
    log("alice 6 runs, bob 2, of conf-py-per-user-rl (2 per second per user)")
    items = [per_user.create_bulk_run_item(input=Call(user_id="alice", i=i)) for i in range(6)]
    items += [per_user.create_bulk_run_item(input=Call(user_id="bob", i=i)) for i in range(2)]
    for ref in per_user.run_many(items, wait_for_result=False):
        ref.result()
    with lock:
        got = list(starts["per_user"])
    first = min(t for t, _ in got)
    alice = [t - first for t, u in got if u == "alice"]
    bob = [t - first for t, u in got if u == "bob"]
    checks.observe("alice_starts_s", [round(a, 2) for a in sorted(alice)])
    checks.observe("bob_starts_s", [round(b, 2) for b in sorted(bob)])
    checks.expect_equal("every run ran", (len(alice), len(bob)), (6, 2))
    checks.check("bob's runs started at once", max(bob) < 0.9, str(bob))
    checks.check("alice's needed three windows", max(alice) >= 1.5, str(alice))


def main() -> int:
    # A static key is defined before a workflow using it registers (the engine refuses
    # the registration otherwise, naming the key).
    hatchet.rate_limits.put("conf-py-parser-api", 10, RateLimitDuration.SECOND)

    def checks_of(checks: Checks) -> None:
        check_static(checks)
        check_dynamic(checks)

    return run_with_worker(
        "py/rate_limited.py",
        hatchet,
        "conf-py-rate-limited-worker",
        [parse, per_user],
        checks_of,
        slots=30,
    )


if __name__ == "__main__":
    sys.exit(main())
