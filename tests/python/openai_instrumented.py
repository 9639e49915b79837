"""Calls a (fake) OpenAI server through the real `openai` SDK, traced by
one real instrumentation, and exports the spans over OTLP/HTTP.

usage: openai_instrumented.py {openllmetry|openinference|openlit} OPENAI_BASE_URL OTLP_ENDPOINT

It makes one gpt-4o-mini chat call and one o4-mini chat call; the fake
server decides the usage each reports.
"""

import json
import os
import sys
import tempfile

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def instrument(name, provider):
    if name == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif name == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif name == "openlit":
        import openlit
        from opentelemetry import trace

        # OpenLIT takes the global tracer provider when one is set.
        trace.set_tracer_provider(provider)

        # OpenLIT fetches its price list from GitHub unless given one; the
        # tests have no network, so it gets an empty list and reports a
        # cost of 0, which Lookout replaces with its own.
        pricing = os.path.join(tempfile.mkdtemp(), "pricing.json")
        with open(pricing, "w") as f:
            json.dump({"chat": {}, "embeddings": {}, "images": {}, "audio": {}}, f)
        openlit.init(
            disable_metrics=True,
            disable_events=True,
            pricing_json=pricing,
            capture_message_content=False,
        )
    else:
        raise SystemExit(f"unknown instrumentation {name}")


def main():
    name, base_url, otlp = sys.argv[1:4]
    provider = TracerProvider(resource=Resource.create({"service.name": f"cost-{name}"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp}/v1/traces")))
    instrument(name, provider)

    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-test")
    for model in ["gpt-4o-mini", "o4-mini"]:
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Say hello"}],
        )
    provider.force_flush()
    provider.shutdown()


if __name__ == "__main__":
    main()
