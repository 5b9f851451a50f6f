"""Conformance: streaming (`ctx.put_stream` / `ctx.aio_put_stream`, read with
`hatchet.runs.subscribe_to_stream`) and task logs (`ctx.log`, read with
`hatchet.logs.list`) with the pinned Python SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python streaming.py

Workflows, each one task that streams 50 chunks, holding the last 45 back until the
script has read the first five (its gate), and logs lines around them:
- `conf-py-stream`: an async task, `await ctx.aio_put_stream(...)`, `ctx.log(...)` with a
  string and with a dict, and a warning on a `logging` logger (which the SDK forwards as a
  log line of level WARN);
- `conf-py-stream-sync`: a sync task, `ctx.put_stream(...)` (one chunk as bytes), `ctx.log`.

For each: `subscribe_to_stream(run_id)` gives the first five chunks while the run is not
done (the task cannot finish before the script opens its gate), and the task's first log
lines are listed (`logs.list(task_run_id)`) while it runs; then every chunk once, in
order, and the iteration ends, by which time the run is done (COMPLETED). Subscribing
after the end gives all the chunks again, then ends. `logs.list` gives the task's lines
oldest first with their level, retry count 0, attempt 1, the task's id and `{}` metadata;
`since` and `until` (a line's `created_at`) leave out that line and those before / after.
Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from _harness import Checks, client, log, run_with_worker
from hatchet_sdk import Context, EmptyModel

hatchet = client("py/streaming.py")

ASYNC_WF = "conf-py-stream"
SYNC_WF = "conf-py-stream-sync"
FIRST = 5
TOTAL = 50
# How long a task waits for the script to read its first chunks.
GATE_TIMEOUT_S = 25.0

async_wf = hatchet.workflow(name=ASYNC_WF)
sync_wf = hatchet.workflow(name=SYNC_WF)

app_logger = logging.getLogger("conf.streaming")

lock = threading.Lock()
# workflow run id -> the event that lets its task stream the rest
gates: dict[str, threading.Event] = {}


def gate(run_id: str) -> threading.Event:
    with lock:
        return gates.setdefault(run_id, threading.Event())


def chunk(prefix: str, i: int) -> str:
    return f"{prefix}-{i:02d}"


@async_wf.task()
async def talk(input: EmptyModel, ctx: Context) -> dict[str, Any]:
    ctx.log("talk: starting")
    for i in range(FIRST):
        await ctx.aio_put_stream(chunk("async", i))
    ctx.log({"stage": "first chunks sent", "count": FIRST})
    released = await asyncio.to_thread(gate(ctx.workflow_run_id).wait, GATE_TIMEOUT_S)
    if not released:
        raise RuntimeError("the script never read the first chunks")
    app_logger.warning("talk: released")
    for i in range(FIRST, TOTAL):
        await ctx.aio_put_stream(chunk("async", i))
    ctx.log("talk: done")
    return {"chunks": TOTAL}


@sync_wf.task()
def talk_sync(input: EmptyModel, ctx: Context) -> dict[str, Any]:
    ctx.log("talk_sync: starting")
    for i in range(FIRST):
        # One chunk as bytes: it arrives as its text.
        ctx.put_stream(chunk("sync", i).encode() if i == 2 else chunk("sync", i))
    ctx.log("talk_sync: first chunks sent")
    if not gate(ctx.workflow_run_id).wait(GATE_TIMEOUT_S):
        raise RuntimeError("the script never read the first chunks")
    for i in range(FIRST, TOTAL):
        ctx.put_stream(chunk("sync", i))
    ctx.log("talk_sync: done")
    return {"chunks": TOTAL}


def lines_of(task_run_id: str, **kwargs: Any) -> list[Any]:
    return hatchet.logs.list(task_run_id, **kwargs).rows or []


def wait_lines(task_run_id: str, n: int, timeout: float = 10.0) -> list[Any]:
    """The task's lines once there are at least `n` (the SDK sends them from a queue)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = lines_of(task_run_id)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


async def read_stream(
    checks: Checks, name: str, run_id: str, task: str, first_lines: list[str]
) -> tuple[list[str], str | None]:
    """Reads the run's stream, opening its task's gate after the first chunks; returns the
    chunks and the task's run id."""
    chunks: list[str] = []
    task_run_id: str | None = None

    async def while_running() -> None:
        nonlocal task_run_id
        details = await hatchet.runs.aio_get_details(run_id)
        checks.check(
            f"{name}: the first {FIRST} chunks are read while the run is not done",
            not details.done,
            f"status {details.status}",
        )
        task_run_id = details.task_runs[task].external_id
        rows = await asyncio.to_thread(wait_lines, task_run_id, len(first_lines))
        checks.expect_equal(
            f"{name}: logs.list gives the task's first lines while it runs",
            [r.message for r in rows],
            first_lines,
        )
        still = await hatchet.runs.aio_get_details(run_id)
        checks.check(f"{name}: ... and the run is still not done", not still.done, "")

    async def consume() -> None:
        async for c in hatchet.runs.subscribe_to_stream(run_id):
            chunks.append(c)
            if len(chunks) == FIRST:
                try:
                    await while_running()
                finally:
                    gate(run_id).set()

    try:
        await asyncio.wait_for(consume(), timeout=25)
        ended = True
    except TimeoutError:
        ended = False
    checks.check(f"{name}: the stream's iteration ends", ended, f"{len(chunks)} chunks read")
    if ended:
        details = await hatchet.runs.aio_get_details(run_id)
        checks.check(
            f"{name}: when the iteration ended the run was done (COMPLETED)",
            details.done and details.status.name == "COMPLETED",
            f"done={details.done} status={details.status}",
        )
    return chunks, task_run_id


def check_stream(
    checks: Checks,
    name: str,
    trigger: Callable[[], Any],
    task: str,
    prefix: str,
    first_lines: list[str],
) -> tuple[str | None, str | None]:
    ref = trigger()
    run_id = ref.workflow_run_id
    log(f"{name}: run {run_id}")
    chunks, task_run_id = asyncio.run(read_stream(checks, name, run_id, task, first_lines))
    gate(run_id).set()  # had the stream stopped early, the task would wait in vain
    expected = [chunk(prefix, i) for i in range(TOTAL)]
    checks.expect_equal(f"{name}: every chunk once, in order", chunks, expected)
    checks.expect_equal(
        f"{name}: the run completed", ref.result(), {task: {"chunks": TOTAL}}
    )

    async def late() -> list[str]:
        return [c async for c in hatchet.runs.subscribe_to_stream(run_id)]

    try:
        again = asyncio.run(asyncio.wait_for(late(), timeout=15))
    except TimeoutError:
        again = None
    checks.expect_equal(
        f"{name}: subscribing after the end gives every chunk, then ends", again, expected
    )
    return run_id, task_run_id


def check_logs(
    checks: Checks, name: str, task_run_id: str | None, expected: list[tuple[str, str]]
) -> None:
    if task_run_id is None:
        return
    rows = wait_lines(task_run_id, len(expected))
    checks.expect_equal(
        f"{name}: logs.list gives the task's lines oldest first, with their levels",
        [(r.message, r.level.value if r.level else None) for r in rows],
        expected,
    )
    checks.expect_equal(
        f"{name}: each line names the task, retry count 0, attempt 1, metadata {{}}",
        [(r.task_external_id, r.retry_count, r.attempt, r.metadata) for r in rows],
        [(task_run_id, 0, 1, {})] * len(rows),
    )
    times = [r.created_at for r in rows]
    checks.check(
        f"{name}: created_at is timezone-aware and never decreases",
        all(t.tzinfo is not None for t in times) and times == sorted(times),
        repr(times),
    )
    if len(rows) < 3 or len(set(times)) != len(times):
        return
    messages = [r.message for r in rows]
    checks.expect_equal(
        f"{name}: logs.list(since=the first line's time) leaves it out",
        [r.message for r in lines_of(task_run_id, since=times[0])],
        messages[1:],
    )
    checks.expect_equal(
        f"{name}: logs.list(until=the last line's time) leaves it out",
        [r.message for r in lines_of(task_run_id, until=times[-1])],
        messages[:-1],
    )
    checks.expect_equal(
        f"{name}: logs.list(since=, until=) gives the lines between",
        [r.message for r in lines_of(task_run_id, since=times[0], until=times[-1])],
        messages[1:-1],
    )
    checks.expect_equal(
        f"{name}: logs.list(limit=2) gives the first two",
        [r.message for r in lines_of(task_run_id, limit=2)],
        messages[:2],
    )


def body(checks: Checks) -> None:
    dict_line = '{"stage": "first chunks sent", "count": 5}'
    _, task_run = check_stream(
        checks,
        "async task, aio_put_stream",
        async_wf.run_no_wait,
        "talk",
        "async",
        ["talk: starting", dict_line],
    )
    check_logs(
        checks,
        "async task",
        task_run,
        [
            ("talk: starting", "INFO"),
            (dict_line, "INFO"),
            ("talk: released", "WARN"),
            ("talk: done", "INFO"),
        ],
    )
    _, task_run = check_stream(
        checks,
        "sync task, put_stream",
        sync_wf.run_no_wait,
        "talk_sync",
        "sync",
        ["talk_sync: starting", "talk_sync: first chunks sent"],
    )
    check_logs(
        checks,
        "sync task",
        task_run,
        [
            ("talk_sync: starting", "INFO"),
            ("talk_sync: first chunks sent", "INFO"),
            ("talk_sync: done", "INFO"),
        ],
    )


def main() -> int:
    return run_with_worker(
        "py/streaming.py",
        hatchet,
        "conf-py-streaming-worker",
        [async_wf, sync_wf],
        body,
        slots=4,
    )


if __name__ == "__main__":
    sys.exit(main())
