"""Conformance: the pinned Python SDK's OpenTelemetry instrumentation
(`hatchet_sdk.opentelemetry.instrumentor.HatchetInstrumentor`, the `otel` extra) and the
engine's traces.

    ADZE_OTLP_ENDPOINT=http://127.0.0.1:4317 HATCHET_CLIENT_TOKEN=<token> \
        HATCHET_CLIENT_TLS_STRATEGY=none python tracing.py

The instrumentor exports to `ADZE_OTLP_ENDPOINT` (OTLP/gRPC, service `conf-py-worker`),
not to the engine (`enable_hatchet_otel_collector=False`). Workflow `conf-py-traced`,
one task `hello`. The script triggers it with `run_no_wait` inside a span of its own
(`conf-py-caller`): the instrumentor's `hatchet.run_workflow` span puts its context under
`traceparent` in the run's additional metadata; the worker's `hatchet.start_step_run`
span takes its parent from `traceparent` in the action's additional metadata. The test
that runs this script checks the trace the engine and the SDK made together; the script
checks the run completed, that the task saw a `traceparent` in its metadata, and flushes
its spans. Prints one `ADZE-RESULT <json>` line.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from hatchet_sdk.opentelemetry.instrumentor import HatchetInstrumentor

provider = TracerProvider(resource=Resource.create({"service.name": "conf-py-worker"}))
provider.add_span_processor(
    BatchSpanProcessor(
        OTLPSpanExporter(endpoint=os.environ.get("ADZE_OTLP_ENDPOINT", ""), insecure=True)
    )
)
# Before the client and the worker exist, so their calls are wrapped.
HatchetInstrumentor(tracer_provider=provider, enable_hatchet_otel_collector=False).instrument()

from _harness import Checks, client, log, run_with_worker  # noqa: E402
from hatchet_sdk import Context, EmptyModel  # noqa: E402

WORKFLOW = "conf-py-traced"

hatchet = client("py/tracing.py")
wf = hatchet.workflow(name=WORKFLOW)

# The metadata each attempt saw, by workflow run id.
seen: dict[str, Any] = {}


@wf.task()
def hello(_input: EmptyModel, ctx: Context) -> dict[str, Any]:
    seen[ctx.workflow_run_id] = dict(ctx.additional_metadata or {})
    return {"hello": "traced"}


def checks_of(checks: Checks) -> None:
    tracer = provider.get_tracer("conf-py")
    with tracer.start_as_current_span("conf-py-caller") as caller:
        ctx = caller.get_span_context()
        checks.observe("caller_trace_id", format(ctx.trace_id, "032x"))
        checks.observe("caller_span_id", format(ctx.span_id, "016x"))
        ref = wf.run_no_wait()
    checks.observe("run_id", ref.workflow_run_id)
    result = ref.result()
    checks.check("the run completed", result.get("hello") == {"hello": "traced"}, str(result))
    meta = seen.get(ref.workflow_run_id, {})
    checks.check(
        "the task saw a traceparent in its metadata",
        isinstance(meta.get("traceparent"), str),
        str(meta),
    )
    checks.check("the spans were flushed", provider.force_flush(10_000))
    log(f"run {ref.workflow_run_id}")


def main() -> int:
    return run_with_worker("py/tracing.py", hatchet, f"{WORKFLOW}-worker", [wf], checks_of)


if __name__ == "__main__":
    sys.exit(main())
