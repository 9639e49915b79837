"""Agents reporting through the OpenTelemetry Python SDK, some failing.

Phase one (--failing seconds): agent `qualifier` fails 1 call in 5 (20%),
`planner` 1 in 10 (10%), `closer` never. Phase two (--healthy seconds):
nobody fails. Each agent makes 50 calls a second, each an
`invoke_agent` span with the OTel GenAI attributes.
"""

import argparse
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

FAILURE_EVERY = {"qualifier": 5, "planner": 10, "closer": 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--failing", type=float, required=True)
    parser.add_argument("--healthy", type=float, required=True)
    args = parser.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": "insighthub"}))
    exporter = OTLPSpanExporter(endpoint=f"{args.endpoint}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
    tracer = provider.get_tracer("agents")

    calls = 0
    for phase, seconds in (("failing", args.failing), ("healthy", args.healthy)):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            calls += 1
            for agent, every in FAILURE_EVERY.items():
                with tracer.start_as_current_span(f"invoke_agent {agent}") as span:
                    span.set_attribute("gen_ai.operation.name", "invoke_agent")
                    span.set_attribute("gen_ai.agent.name", agent)
                    if phase == "failing" and every and calls % every == 0:
                        span.set_status(Status(StatusCode.ERROR, "upstream timeout"))
            time.sleep(0.02)
    provider.force_flush()
    provider.shutdown()


if __name__ == "__main__":
    main()
