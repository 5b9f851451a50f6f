"""Runs the document pipeline (or the smart orchestrator) once and prints its answer.

    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none python trigger.py [doc-1]
    HATCHET_CLIENT_TOKEN=<token> HATCHET_CLIENT_TLS_STRATEGY=none \
    python trigger.py --orchestrator [doc-1]

The first prints build-response's output, the second smart-orchestrator's. A worker
(`worker.py`) must be running. Exits 1 if the run failed.
"""

from __future__ import annotations

import json
import sys

from hatchet_sdk.exceptions import FailedTaskRunExceptionGroup

from orchestrator import ORCHESTRATOR_TASK, document_orchestrator
from pipeline import DocumentInput, document_pipeline


def main() -> None:
    args = sys.argv[1:]
    orchestrate = "--orchestrator" in args
    args = [a for a in args if a != "--orchestrator"]
    document_id = args[0] if args else "doc-1"
    workflow, answer = (
        (document_orchestrator, ORCHESTRATOR_TASK)
        if orchestrate
        else (document_pipeline, "build-response")
    )
    try:
        outputs = workflow.run(DocumentInput(documentId=document_id))
    except FailedTaskRunExceptionGroup as e:
        errors = "\n".join(f"  {error.exc_type}: {error.exc}" for error in e.exceptions)
        sys.exit(f"{workflow.name} failed for {document_id}:\n{errors}")
    print(json.dumps(outputs[answer], indent=2))


if __name__ == "__main__":
    main()
