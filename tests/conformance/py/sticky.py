"""Conformance: sticky assignment (StickyStrategy SOFT and HARD) with the pinned SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python sticky.py

Two workers in this process serve `conf-py-sticky-soft` and `conf-py-sticky-hard`, each
two roots and a child returning `ctx.worker_id`. Six runs of each: every run's three
tasks ran on one worker, one of the two registered (without stickiness the two roots
of a run go one to each worker, the one with the most room first). Each worker has room
for every root at once: a SOFT run whose worker is full goes elsewhere by design, and the
SDK reports a worker registered before its action stream is open, so the first runs may
all be placed on the one worker the scheduler knows so far.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import sys
import time
import traceback

from _harness import (
    Checks,
    InProcessWorker,
    Stdout,
    capture_sdk_logs,
    check_clean_stop,
    client,
    log,
    start_deadline,
)
from hatchet_sdk import Context, EmptyModel, StickyStrategy

hatchet = client("py/sticky.py")

soft = hatchet.workflow(name="conf-py-sticky-soft", sticky=StickyStrategy.SOFT)
hard = hatchet.workflow(name="conf-py-sticky-hard", sticky=StickyStrategy.HARD)


def worker_of(ctx: Context) -> dict[str, str]:
    time.sleep(0.2)
    return {"worker": ctx.worker_id}


@soft.task()
def soft_a(input: EmptyModel, ctx: Context) -> dict[str, str]:
    return worker_of(ctx)


@soft.task()
def soft_b(input: EmptyModel, ctx: Context) -> dict[str, str]:
    return worker_of(ctx)


@soft.task(parents=[soft_a, soft_b])
def soft_c(input: EmptyModel, ctx: Context) -> dict[str, str]:
    return worker_of(ctx)


@hard.task()
def hard_a(input: EmptyModel, ctx: Context) -> dict[str, str]:
    return worker_of(ctx)


@hard.task()
def hard_b(input: EmptyModel, ctx: Context) -> dict[str, str]:
    return worker_of(ctx)


@hard.task(parents=[hard_a, hard_b])
def hard_c(input: EmptyModel, ctx: Context) -> dict[str, str]:
    return worker_of(ctx)


def check_runs(checks: Checks, name: str, workflow, tasks: list[str], workers: set[str]) -> None:
    refs = workflow.run_many(
        [workflow.create_bulk_run_item(input=EmptyModel()) for _ in range(6)],
        wait_for_result=False,
    )
    results = [ref.result() for ref in refs]
    per_run = [{results[i][t]["worker"] for t in tasks} for i in range(len(results))]
    checks.observe(f"{name}_workers_per_run", [sorted(w) for w in per_run])
    checks.check(
        f"{name}: every run's tasks ran on one worker",
        all(len(w) == 1 for w in per_run),
        str(per_run),
    )
    checks.check(
        f"{name}: on a registered worker",
        all(w <= workers for w in per_run),
        f"{per_run} not within {workers}",
    )


def main() -> int:
    Stdout.claim()
    checks = Checks("py/sticky.py")
    sdk_logs = capture_sdk_logs()
    one = InProcessWorker(hatchet, "conf-py-sticky-one", [soft, hard], slots=12)
    two = InProcessWorker(hatchet, "conf-py-sticky-two", [soft, hard], slots=12)

    def kill() -> None:
        one.kill()
        two.kill()

    start_deadline(checks, on_timeout=kill)
    one.start()
    two.start()
    try:
        workers = {one.wait_registered(), two.wait_registered()}
        checks.observe("workers", sorted(workers))
        checks.expect_equal("two workers registered", len(workers), 2)
        check_runs(checks, "SOFT", soft, ["soft_a", "soft_b", "soft_c"], workers)
        check_runs(checks, "HARD", hard, ["hard_a", "hard_b", "hard_c"], workers)
    except Exception as e:  # noqa: BLE001 - every failure becomes a failed check
        log(traceback.format_exc())
        checks.check("no unexpected error", False, f"{type(e).__name__}: {e}")
    finally:
        log("stopping the workers")
        stopped_one = one.stop()
        stopped_two = two.stop()
        checks.observe("stop_two", stopped_two)
        checks.check(
            "second worker stopped cleanly",
            stopped_two["worker_thread_stopped"] and stopped_two["listener_process_exit_code"] == 0,
            str(stopped_two),
        )
        check_clean_stop(checks, one, stopped_one, sdk_logs)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
