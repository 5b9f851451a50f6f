"""Runs the document pipeline once and prints build-response's output.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python trigger.py [doc-1]

A worker (`worker.py`) must be running. Exits 1 if the run failed.
"""

from __future__ import annotations

import json
import sys

from hatchet_sdk.exceptions import FailedTaskRunExceptionGroup

from pipeline import DocumentInput, document_pipeline


def main() -> None:
    document_id = sys.argv[1] if len(sys.argv) > 1 else "doc-1"
    try:
        outputs = document_pipeline.run(DocumentInput(documentId=document_id))
    except FailedTaskRunExceptionGroup as e:
        errors = "\n".join(f"  {error.exc_type}: {error.exc}" for error in e.exceptions)
        sys.exit(f"document-pipeline failed for {document_id}:\n{errors}")
    print(json.dumps(outputs["build-response"], indent=2))


if __name__ == "__main__":
    main()
