"""The seed's document pipeline, written against the unmodified Hatchet Python SDK.

    fetch-document -> parse-document -> save-state -> build-response

`worker.py` runs these tasks and `trigger.py` runs the workflow; both import this module.

- fetch-document GETs `${ADZE_DOCSTORE_URL}/docs/<documentId>`. A 404 is permanent
  (NonRetryableException); anything else that goes wrong is retried (3 retries, exponential
  backoff), and one attempt may take at most 30 s.
- parse-document extracts the title, the word count and the headings of the text.
- save-state upserts the parsed document into the Postgres table `documents`
  (`ADZE_DATABASE_URL`). The upsert makes a retried save harmless.
- build-response reads its grandparent's output (parse-document) and the save time.

`DocStore` is the small HTTP document store a worker serves when `ADZE_DOCSTORE_URL` is
unset. `doc-3` is flaky on purpose: its first request in each store answers 503, so its
fetch-document succeeds on the second attempt and shows a retry.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from hatchet_sdk import Context, Hatchet, NonRetryableException

WORKFLOW_NAME = "document-pipeline"

# The same statement is in examples/typescript/workflow.ts: both workers may share a database.
CREATE_DOCUMENTS_TABLE = """
CREATE TABLE IF NOT EXISTS documents (
    id         text PRIMARY KEY,
    title      text,
    word_count int,
    parsed     jsonb,
    saved_at   timestamptz
)
"""

UPSERT_DOCUMENT = """
INSERT INTO documents (id, title, word_count, parsed, saved_at)
VALUES (%s, %s, %s, %s, now())
ON CONFLICT (id) DO UPDATE
    SET title = EXCLUDED.title,
        word_count = EXCLUDED.word_count,
        parsed = EXCLUDED.parsed,
        saved_at = EXCLUDED.saved_at
RETURNING saved_at
"""

hatchet = Hatchet()


class DocumentInput(BaseModel):
    documentId: str


class FetchedDocument(BaseModel):
    documentId: str
    content: str


class Heading(BaseModel):
    level: int
    text: str


class ParsedDocument(BaseModel):
    documentId: str
    title: str
    wordCount: int
    headings: list[Heading]


class SavedState(BaseModel):
    documentId: str
    savedAt: str


class PipelineResponse(BaseModel):
    documentId: str
    title: str
    wordCount: int
    savedAt: str


document_pipeline = hatchet.workflow(name=WORKFLOW_NAME, input_validator=DocumentInput)


def database_url() -> str:
    url = os.environ.get("ADZE_DATABASE_URL")
    if not url:
        raise RuntimeError(
            "ADZE_DATABASE_URL is not set: point it at a Postgres database, "
            "e.g. postgres://postgres@127.0.0.1:5432/postgres"
        )
    return url


def docstore_url() -> str:
    url = os.environ.get("ADZE_DOCSTORE_URL")
    if not url:
        raise RuntimeError(
            "ADZE_DOCSTORE_URL is not set: the worker starts a local document store "
            "when it is unset, so this task ran outside `worker.py`"
        )
    return url.rstrip("/")


def ensure_schema() -> None:
    with psycopg.connect(database_url()) as conn:
        conn.execute(CREATE_DOCUMENTS_TABLE)


@document_pipeline.task(
    name="fetch-document",
    retries=3,
    backoff_factor=2.0,
    backoff_max_seconds=10,
    execution_timeout=timedelta(seconds=30),
)
def fetch_document(input: DocumentInput, ctx: Context) -> FetchedDocument:
    url = document_url(input.documentId)
    ctx.log(f"GET {url} (attempt {ctx.attempt_number} of {ctx.max_attempts})")
    return FetchedDocument(documentId=input.documentId, content=fetch_content(input.documentId))


def document_url(document_id: str) -> str:
    return f"{docstore_url()}/docs/{urllib.parse.quote(document_id, safe='')}"


def fetch_content(document_id: str) -> str:
    """The text of a document. A 404 is NonRetryableException; other failures are retried."""
    url = document_url(document_id)
    try:
        with urllib.request.urlopen(url, timeout=10) as res:
            body = json.load(res)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            # Retrying cannot make a missing document appear.
            raise NonRetryableException(
                f"document {document_id!r} does not exist ({url} answered 404)"
            ) from None
        raise RuntimeError(f"document store answered {e.code} for {url}") from None
    return str(body["content"])


@document_pipeline.task(name="parse-document", parents=[fetch_document])
def parse_document(input: DocumentInput, ctx: Context) -> ParsedDocument:
    fetched = ctx.task_output(fetch_document)
    parsed = parse_text(fetched.documentId, fetched.content)
    ctx.log(f"parsed {parsed.documentId}: {parsed.wordCount} words, {len(parsed.headings)} headings")
    return parsed


@document_pipeline.task(name="save-state", parents=[parse_document])
def save_state(input: DocumentInput, ctx: Context) -> SavedState:
    parsed = ctx.task_output(parse_document)
    with psycopg.connect(database_url()) as conn:
        row = conn.execute(
            UPSERT_DOCUMENT,
            (parsed.documentId, parsed.title, parsed.wordCount, Jsonb(parsed.model_dump())),
        ).fetchone()
    assert row is not None  # RETURNING always yields the upserted row
    saved_at = row[0].astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return SavedState(documentId=parsed.documentId, savedAt=saved_at.replace("+00:00", "Z"))


@document_pipeline.task(name="build-response", parents=[save_state])
def build_response(input: DocumentInput, ctx: Context) -> PipelineResponse:
    # parse-document is a grandparent: the engine hands every ancestor's output to a task.
    parsed = ctx.task_output(parse_document)
    saved = ctx.task_output(save_state)
    return PipelineResponse(
        documentId=parsed.documentId,
        title=parsed.title,
        wordCount=parsed.wordCount,
        savedAt=saved.savedAt,
    )


# --- parsing -------------------------------------------------------------------------------

HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
WORD_CHAR = re.compile(r"[^\W_]")  # a letter or a digit, in any script


def parse_text(document_id: str, content: str) -> ParsedDocument:
    """Title, word count and headings of markdown-ish text.

    A heading is a line starting with 1 to 6 `#` and a space. The title is the first
    level-1 heading, else the first heading, else the first non-empty line. A word is a
    whitespace-separated token with at least one letter or digit, so `#`, `-` and `*`
    markup is not counted. examples/typescript/workflow.ts implements the same rules.
    """
    headings: list[Heading] = []
    first_line = ""
    for raw in content.splitlines():
        line = raw.strip()
        if line and not first_line:
            first_line = line
        match = HEADING.match(line)
        if match:
            headings.append(Heading(level=len(match.group(1)), text=match.group(2)))

    level_one = [h.text for h in headings if h.level == 1]
    title = level_one[0] if level_one else headings[0].text if headings else first_line
    words = [token for token in content.split() if WORD_CHAR.search(token)]
    return ParsedDocument(
        documentId=document_id,
        title=title or document_id,
        wordCount=len(words),
        headings=headings,
    )


# --- the local document store --------------------------------------------------------------

# The same documents are in examples/typescript/workflow.ts.
DOCUMENTS: dict[str, str] = {
    "doc-1": """# Durable Execution 101

Durable execution records every step of a job in a database, so a crash
does not lose the work that was already done.

## Why it matters

A pipeline that fetches, parses and saves a document touches several services.
If one of them fails, the run resumes from the last recorded step.

## What to remember

- Tasks are functions with a name.
- Workflows connect tasks with parents.
""",
    "doc-2": """# Retries and Backoff

Throw an error and the task is retried; throw a non-retryable error and it is not.

## Backoff

Each retry waits longer than the one before, up to a maximum.
""",
    "doc-3": """# A Flaky Document

The store answers 503 to the first request for this document, so fetching it
needs a retry.

## Lesson

Transient failures are what retries are for.
""",
}

FLAKY_DOCUMENTS = frozenset({"doc-3"})


class DocStore:
    """A tiny threaded HTTP server: `GET /docs/<id>` answers `{"id", "content"}` or 404."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._served_once: set[str] = set()
        self._lock = threading.Lock()
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = urllib.parse.urlparse(self.path).path
                if not path.startswith("/docs/"):
                    self._send(404, {"error": f"no route for {path}"})
                    return
                doc_id = urllib.parse.unquote(path[len("/docs/"):])
                if doc_id not in DOCUMENTS:
                    self._send(404, {"error": f"document {doc_id!r} not found"})
                    return
                if store._first_request(doc_id) and doc_id in FLAKY_DOCUMENTS:
                    self._send(503, {"error": f"document {doc_id!r} is flaky: try again"})
                    return
                self._send(200, {"id": doc_id, "content": DOCUMENTS[doc_id]})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep the worker's output about tasks

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="docstore", daemon=True
        )

    def _first_request(self, doc_id: str) -> bool:
        with self._lock:
            first = doc_id not in self._served_once
            self._served_once.add(doc_id)
            return first

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DocStore:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
