"""Sends LLM traces to Lookout with the real OpenTelemetry Python SDK, for
the store tests: TRACES traces of SPANS chat spans each (a root call and
its children), OTel GenAI attributes, a call id on the root.

Ids come from a seeded generator and times from --base-ns, so a second
run with the same arguments sends the very same spans: a replay.

usage: store_load.py --endpoint URL --traces N --spans-per-trace M
                     --seed S --base-ns NANOS
"""

import argparse
import random

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry import trace


class SeededIds(IdGenerator):
    def __init__(self, seed):
        self.random = random.Random(seed)

    def generate_span_id(self):
        return self.random.getrandbits(64) or 1

    def generate_trace_id(self):
        return self.random.getrandbits(128) or 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--traces", type=int, required=True)
    parser.add_argument("--spans-per-trace", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--base-ns", type=int, required=True)
    args = parser.parse_args()

    provider = TracerProvider(
        resource=Resource.create({"service.name": "store-load"}),
        id_generator=SeededIds(args.seed),
    )
    exporter = OTLPSpanExporter(endpoint=f"{args.endpoint}/v1/traces", timeout=30)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=args.traces * args.spans_per_trace, max_export_batch_size=500)
    )
    tracer = provider.get_tracer("lookout.e2e.store")

    for t in range(args.traces):
        start = args.base_ns + t * 1_000_000_000
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 100 + t % 50,
            "gen_ai.usage.output_tokens": 20 + t % 7,
        }
        root = tracer.start_span(
            "chat gpt-4o-mini",
            start_time=start,
            attributes={**attributes, "call_id": f"call-{t}", "gen_ai.workflow.name": "qualify_lead"},
        )
        context = trace.set_span_in_context(root)
        for s in range(1, args.spans_per_trace):
            child = tracer.start_span(
                "chat gpt-4o-mini",
                context=context,
                start_time=start + s * 1_000_000,
                attributes={**attributes, "gen_ai.usage.output_tokens": 10 + s},
            )
            child.end(end_time=start + s * 1_000_000 + 500_000)
        root.end(end_time=start + 900_000_000)

    if not provider.force_flush(timeout_millis=120_000):
        raise SystemExit("the SDK could not export every span in time")
    provider.shutdown()


if __name__ == "__main__":
    main()
