"""Sends an agent-shaped trace tree to Lookout with the real OpenTelemetry
Python SDK, and writes what it sent, encoded by the SDK's own OTLP encoder,
so that the Rust test can compare the daemon's output field by field.

usage: send_trace_tree.py --protocol http|grpc --endpoint URL --sent FILE
"""

import argparse

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


def every_value_type(prefix):
    """Attributes of every AnyValue type, arrays and kvlists included."""
    return {
        f"{prefix}.string": "plain text with unicode: café ✓",
        f"{prefix}.bool": True,
        f"{prefix}.int": -9007199254740993,
        f"{prefix}.double": 3.25,
        f"{prefix}.bytes": b"\x00\x01\xfe\xff",
        f"{prefix}.string_array": ["a", "b", ""],
        f"{prefix}.bool_array": [True, False],
        f"{prefix}.int_array": [1, -2, 3],
        f"{prefix}.double_array": [0.5, -1.5],
        f"{prefix}.kvlist": {"model": "gpt-4o-mini", "tokens": 42, "nested": {"ok": True, "ratio": 0.25}},
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=["http", "grpc"], required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--sent", required=True)
    args = parser.parse_args()

    if args.protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{args.endpoint}/v1/traces")
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=args.endpoint, insecure=True)

    resource = Resource.create(
        {"service.name": f"lookout-e2e-{args.protocol}", "deployment.environment": "test", **every_value_type("resource")}
    )
    provider = TracerProvider(resource=resource)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("lookout.e2e", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0")

    with tracer.start_as_current_span("workflow qualify_lead", kind=SpanKind.SERVER, attributes=every_value_type("root")):
        with tracer.start_as_current_span("invoke_agent qualifier", attributes={"gen_ai.agent.name": "qualifier"}) as agent:
            with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as llm:
                llm.set_attributes(every_value_type("llm"))
                llm.set_attribute("gen_ai.usage.input_tokens", 1200)
                llm.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "What is the budget?", "index": 0})
                llm.add_event("retry", {"attempt": 2, "reasons": ["timeout", "429"]})
                llm_context = llm.get_span_context()
            with tracer.start_as_current_span(
                "execute_tool search_crm",
                kind=SpanKind.INTERNAL,
                links=[Link(llm_context, {"link.reason": "follows", "link.weight": 0.5})],
            ) as tool:
                tool.set_attribute("gen_ai.tool.name", "search_crm")
                try:
                    raise TimeoutError("CRM did not answer")
                except TimeoutError as err:
                    tool.record_exception(err)
                    tool.set_status(Status(StatusCode.ERROR, "CRM did not answer"))
            agent.set_status(Status(StatusCode.OK))

    provider.force_flush()
    provider.shutdown()
    spans = memory.get_finished_spans()
    with open(args.sent, "wb") as sent:
        sent.write(encode_spans(spans).SerializeToString())
    print(f"sent {len(spans)} spans over {args.protocol}")


if __name__ == "__main__":
    main()
