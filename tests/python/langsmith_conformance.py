"""One agent run tree, chain -> llm and chain -> tool (which fails), sent
twice: by the official langsmith SDK straight to the LangSmith test server
(project "sdk"), and as OTLP spans by the OpenTelemetry SDK to Lookout,
whose langsmith exporter sends them to the same server (project "lookout").
The Rust test compares the two.

Env: LANGSMITH_ENDPOINT, LANGSMITH_API_KEY, OTLP_ENDPOINT.
"""

import datetime
import json
import os

from langsmith import Client
from langsmith.run_trees import RunTree
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

UTC = datetime.timezone.utc
BASE = datetime.datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC)


def at(ms):
    return BASE + datetime.timedelta(milliseconds=ms)


def ns(moment):
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


QUESTION = {"question": "Weather in Paris?"}
ANSWER = {"answer": "18C and sunny"}
PROMPT = [{"role": "user", "content": "Weather in Paris?"}]
REPLY = [{"role": "assistant", "content": "Let me check.", "finish_reason": "stop"}]
TOKENS = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}
# gpt-4o-mini at $0.15 / $0.60 per million tokens.
COSTS = {"input_cost": 12 * 0.15e-6, "output_cost": 5 * 0.6e-6, "total_cost": 12 * 0.15e-6 + 5 * 0.6e-6}
ARGS = {"city": "Paris"}
ERROR = "ValueError: boom"


def send_with_sdk():
    client = Client(api_url=os.environ["LANGSMITH_ENDPOINT"], api_key=os.environ["LANGSMITH_API_KEY"])
    root = RunTree(name="agent", run_type="chain", inputs=QUESTION, start_time=at(0),
                   project_name="sdk", client=client)
    llm = root.create_child(name="chat gpt-4o-mini", run_type="llm",
                            inputs={"messages": PROMPT}, start_time=at(10))
    llm.set(usage_metadata={**TOKENS, **COSTS})
    llm.end(outputs={"messages": REPLY}, end_time=at(500))
    tool = root.create_child(name="get_weather", run_type="tool", inputs=ARGS, start_time=at(600))
    tool.end(error=ERROR, end_time=at(700))
    root.end(outputs=ANSWER, end_time=at(900))
    root.post(exclude_child_runs=False)
    client.flush()


def send_with_otel():
    provider = TracerProvider(resource=Resource.create({"service.name": "conformance"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=os.environ["OTLP_ENDPOINT"])))
    tracer = provider.get_tracer("conformance")
    root = tracer.start_span("agent", start_time=ns(at(0)), attributes={
        "openinference.span.kind": "CHAIN",
        "input.value": json.dumps(QUESTION), "input.mime_type": "application/json",
        "output.value": json.dumps(ANSWER), "output.mime_type": "application/json",
    })
    context = trace.set_span_in_context(root)
    llm = tracer.start_span("chat gpt-4o-mini", context=context, start_time=ns(at(10)), attributes={
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "Let me check."}],
              "finish_reason": "stop"}]),
    })
    llm.end(end_time=ns(at(500)))
    tool = tracer.start_span("get_weather", context=context, start_time=ns(at(600)), attributes={
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.call.arguments": json.dumps(ARGS),
    })
    tool.record_exception(ValueError("boom"))
    tool.set_status(Status(StatusCode.ERROR, ERROR))
    tool.end(end_time=ns(at(700)))
    root.end(end_time=ns(at(900)))
    provider.shutdown()


send_with_sdk()
send_with_otel()
