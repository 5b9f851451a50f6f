"""Runs the document pipeline's tasks with the unmodified Hatchet Python SDK.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none \
    ADZE_DATABASE_URL=postgres://... python worker.py

Creates the `documents` table if needed, serves the built-in documents on 127.0.0.1 unless
ADZE_DOCSTORE_URL points at another store, and runs until Ctrl-C / SIGTERM, on which the
SDK pauses the worker on the engine and lets running tasks finish.
"""

from __future__ import annotations

import os
import sys

from pipeline import DocStore, document_pipeline, ensure_schema, hatchet


def main() -> None:
    try:
        ensure_schema()
    except Exception as e:  # noqa: BLE001 - any failure here means the worker cannot run
        sys.exit(f"cannot prepare the documents table: {e}")

    if not os.environ.get("ADZE_DOCSTORE_URL"):
        store = DocStore().start()
        os.environ["ADZE_DOCSTORE_URL"] = store.url
        print(f"document store: serving doc-1, doc-2, doc-3 at {store.url}", file=sys.stderr)

    worker = hatchet.worker("document-pipeline-worker", slots=4, workflows=[document_pipeline])
    worker.start()


if __name__ == "__main__":
    main()
