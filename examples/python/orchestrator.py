"""The seed's smart orchestrator (strategy 2, durable tasks), for the unmodified Hatchet
Python SDK.

    document-orchestrator / smart-orchestrator (durable, input {documentId})
        fetch the document -> cut it into pages -> one parse-page run per page
        -> wait for them all -> save the totals -> {status, parsedPages, words}

How many pages a document has is known only once it is fetched, so the children are
spawned at runtime, all at once (`aio_run_many`). The orchestrator's spawns and waits are
kept in its event log on the engine: while it waits for the pages its worker may evict it,
and when it runs again it gets the same page runs back instead of spawning new ones.

A page starts at every heading outside a code fence and runs to the next one (text before
the first heading is a page too, unless blank). `parse-page` counts the words of one page
with pipeline.py's `parse_text`, so the pages' words add up to the document's. The totals
are upserted into `orchestrated_documents` (`ADZE_DATABASE_URL`): saving twice, as a
retry does, leaves one row. `worker.py` serves these workflows; `trigger.py
--orchestrator` runs one.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
from pydantic import BaseModel

from hatchet_sdk import Context, DurableContext

from pipeline import HEADING, DocumentInput, database_url, fetch_content, hatchet, parse_text

WORKFLOW_NAME = "document-orchestrator"
ORCHESTRATOR_TASK = "smart-orchestrator"
PAGE_WORKFLOW = "parse-page"

# The same statement is in examples/rust/src/db.rs and examples/typescript/orchestrator.ts.
CREATE_ORCHESTRATED_TABLE = """
CREATE TABLE IF NOT EXISTS orchestrated_documents (
    id       text PRIMARY KEY,
    pages    int NOT NULL,
    words    int NOT NULL,
    saved_at timestamptz NOT NULL
)
"""

UPSERT_ORCHESTRATED = """
INSERT INTO orchestrated_documents (id, pages, words, saved_at)
VALUES (%s, %s, %s, now())
ON CONFLICT (id) DO UPDATE
    SET pages = EXCLUDED.pages,
        words = EXCLUDED.words,
        saved_at = EXCLUDED.saved_at
"""

FENCES = ("```", "~~~")


class PageInput(BaseModel):
    documentId: str
    page: int
    text: str


class ParsedPage(BaseModel):
    page: int
    title: str
    words: int


class OrchestratorResult(BaseModel):
    status: str
    parsedPages: int
    words: int


def ensure_schema() -> None:
    with psycopg.connect(database_url()) as conn:
        conn.execute(CREATE_ORCHESTRATED_TABLE)


def split_pages(content: str) -> list[str]:
    """Pages of markdown text: a new one at every heading outside a code fence."""
    pages: list[str] = []
    page = ""
    fence: str | None = None
    for line in content.splitlines(keepends=True):
        stripped = line.strip()
        marker = next((m for m in FENCES if stripped.startswith(m)), None)
        if marker is not None:
            if fence is None:
                fence = marker
            elif fence == marker:
                fence = None
        elif fence is None and HEADING.match(stripped) and page.strip():
            pages.append(page)
            page = ""
        page += line
    if page.strip():
        pages.append(page)
    return pages


@hatchet.task(name=PAGE_WORKFLOW, input_validator=PageInput)
def parse_page(input: PageInput, ctx: Context) -> ParsedPage:
    parsed = parse_text(input.documentId, input.text)
    return ParsedPage(page=input.page, title=parsed.title, words=parsed.wordCount)


def save_totals(document_id: str, pages: int, words: int) -> None:
    with psycopg.connect(database_url()) as conn:
        conn.execute(UPSERT_ORCHESTRATED, (document_id, pages, words))


document_orchestrator = hatchet.workflow(name=WORKFLOW_NAME, input_validator=DocumentInput)


@document_orchestrator.durable_task(
    name=ORCHESTRATOR_TASK,
    retries=1,
    execution_timeout=timedelta(minutes=2),
)
async def smart_orchestrator(input: DocumentInput, ctx: DurableContext) -> OrchestratorResult:
    # Not in the event log (the SDK's memo, `_aio_memo`, is private): each invocation of
    # this task, after an eviction or a retry, fetches the document again. The built-in
    # documents never change, so a replay cuts the same pages and gets the same page runs
    # back; with a store whose documents change, a replay could ask for other children
    # than the log holds and fail as non-deterministic.
    content = await asyncio.to_thread(fetch_content, input.documentId)
    pages = split_pages(content)

    # All pages at once; inside a durable task these spawns and waits go to the event log.
    parsed = await parse_page.aio_run_many(
        [
            parse_page.create_bulk_run_item(
                input=PageInput(documentId=input.documentId, page=number, text=text)
            )
            for number, text in enumerate(pages)
        ]
    )
    words = sum(page.words for page in parsed)

    # An upsert: saving again on a retry is harmless.
    await asyncio.to_thread(save_totals, input.documentId, len(parsed), words)
    return OrchestratorResult(status="success", parsedPages=len(parsed), words=words)
