"""Conformance helper: a worker serving a durable orchestrator and its children, run until
killed.

    ADZE_WORKER_NAME=A HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none \
    python durable_worker.py

Workflows: `conf-py-kill-page` (input `{page, sleep_s}`): sleeps `sleep_s[<this worker's
name>]` seconds, returns `{"page", "worker"}`; `conf-py-kill-orchestrator` (durable, input
`{pages, sleep_s}`):
memoizes the page count, spawns one page child per page with `aio_run_many`, and returns
`{"pages", "parsed", "invocation", "worker"}`. Prints `READY` on stdout once the engine
answered Dispatcher/Register. SIGKILL stops it like a crash; a Rust test drives it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from datetime import timedelta

from pydantic import BaseModel

from _harness import Stdout, client, log
from hatchet_sdk import Context, DurableContext

hatchet = client("py/durable_worker.py")


class Page(BaseModel):
    page: int
    # Seconds to sleep, by worker name (a page child sleeps long on the worker about
    # to be killed, briefly elsewhere).
    sleep_s: dict[str, float]


class Document(BaseModel):
    pages: int
    sleep_s: dict[str, float]


class PageCount(BaseModel):
    pages: int


page_wf = hatchet.workflow(name="conf-py-kill-page", input_validator=Page)


@page_wf.task(name="parse", execution_timeout=timedelta(seconds=120))
async def parse(input: Page, ctx: Context) -> dict[str, object]:
    await asyncio.sleep(input.sleep_s.get(os.environ["ADZE_WORKER_NAME"], 0.0))
    return {"page": input.page, "worker": os.environ["ADZE_WORKER_NAME"]}


@hatchet.durable_task(
    name="conf-py-kill-orchestrator",
    input_validator=Document,
    execution_timeout=timedelta(seconds=120),
)
async def orchestrate(input: Document, ctx: DurableContext) -> dict[str, object]:
    async def count() -> PageCount:
        return PageCount(pages=input.pages)

    counted = await ctx._aio_memo(count, PageCount)  # noqa: SLF001 - the SDK's memo
    outputs = await page_wf.aio_run_many(
        [
            page_wf.create_bulk_run_item(input=Page(page=p, sleep_s=input.sleep_s))
            for p in range(counted.pages)
        ]
    )
    parsed = sorted(o["parse"]["page"] if "parse" in o else o["page"] for o in outputs)
    return {
        "pages": counted.pages,
        "parsed": parsed,
        "invocation": ctx.invocation_count,
        "worker": os.environ["ADZE_WORKER_NAME"],
    }


def announce_when_registered(worker: object) -> None:
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
    Stdout.claim()
    worker = hatchet.worker(name, slots=25, durable_slots=5, workflows=[page_wf, orchestrate])
    threading.Thread(
        target=announce_when_registered, args=(worker,), name="ready", daemon=True
    ).start()
    log(f"starting worker {name!r}")
    worker.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
