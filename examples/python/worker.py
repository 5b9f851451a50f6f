"""Runs the document pipeline's and the smart orchestrator's tasks with the unmodified
Hatchet Python SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none \
    ADZE_DATABASE_URL=postgres://... python worker.py

Creates the `documents` and `orchestrated_documents` tables if needed, serves the built-in
documents on 127.0.0.1 unless ADZE_DOCSTORE_URL points at another store, and runs until
Ctrl-C / SIGTERM, on which the SDK pauses the worker on the engine and lets running tasks
finish.
"""

from __future__ import annotations

import os
import sys

import orchestrator
from pipeline import DocStore, document_pipeline, ensure_schema, hatchet


def main() -> None:
    try:
        ensure_schema()
        orchestrator.ensure_schema()
    except Exception as e:  # noqa: BLE001 - any failure here means the worker cannot run
        sys.exit(f"cannot prepare the document tables: {e}")

    if not os.environ.get("ADZE_DOCSTORE_URL"):
        store = DocStore().start()
        os.environ["ADZE_DOCSTORE_URL"] = store.url
        print(f"document store: serving doc-1, doc-2, doc-3 at {store.url}", file=sys.stderr)

    # The orchestrators run on durable slots, apart from the 4 slots of the other tasks.
    worker = hatchet.worker(
        "document-pipeline-worker",
        slots=4,
        durable_slots=4,
        workflows=[
            document_pipeline,
            orchestrator.parse_page,
            orchestrator.document_orchestrator,
        ],
    )
    worker.start()


if __name__ == "__main__":
    main()
