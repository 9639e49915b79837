"""Sends spans and log records full of personal data to Lookout with the
real OpenTelemetry Python SDK: in the resource, span names, attributes
(strings, arrays and JSON messages), events, links, status messages, log
bodies (maps included) and log attributes. Writes the raw values it used,
so that the Rust test can check that none of them reaches an exporter.

usage: send_pii.py --endpoint URL --raw FILE
"""

import argparse
import json

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
CARD_DASHED = "5500-0000-0000-0004"
PHONE = "+44 20 7946 0958"
IBAN = "GB82 WEST 1234 5698 7654 32"
SSN = "123-45-6789"
IPV4 = "203.0.113.77"
IPV6 = "2001:db8:85a3::8a2e:370:7334"
OPENAI_KEY = "sk-proj-Zq3xT9vLmN2pR8sK4wY7bC1dF6gH0jQe"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
DB_PASSWORD = "s3cr3t-Pa55"
DB_URL = f"postgres://app:{DB_PASSWORD}@db.internal:5432/crm"

RAW = [EMAIL, CARD, CARD_DASHED, PHONE, IBAN, SSN, IPV4, IPV6, OPENAI_KEY, AWS_KEY, GITHUB_TOKEN, JWT, DB_PASSWORD]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--raw", required=True)
    args = parser.parse_args()

    resource = Resource.create({"service.name": "pii-e2e", "service.owner": EMAIL, "host.ip": IPV4})

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{args.endpoint}/v1/traces")))
    tracer = tracer_provider.get_tracer("lookout.e2e.pii")

    messages = [
        {"role": "system", "parts": [{"type": "text", "content": "You are a billing assistant."}]},
        {
            "role": "user",
            "parts": [
                {
                    "type": "text",
                    "content": f"I'm {EMAIL}, card {CARD}.\nCall me on {PHONE}; my SSN is {SSN}.",
                }
            ],
        },
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "name": "refund", "arguments": {"iban": IBAN, "api_key": OPENAI_KEY}}],
        },
    ]
    with tracer.start_as_current_span(f"support ticket from {EMAIL}") as root:
        root.set_attribute("user.phone", PHONE)
        with tracer.start_as_current_span("chat gpt-4o-mini") as llm:
            llm.set_attribute("gen_ai.request.model", "gpt-4o-mini-2024-07-18")
            llm.set_attribute("gen_ai.input.messages", json.dumps(messages))
            llm.set_attribute("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": f"Refund sent to {IBAN}"}]))
            llm.set_attribute("http.request.header.authorization", [f"Bearer {JWT}"])
            llm.set_attribute("client.addresses", [IPV4, IPV6])
            llm.set_attribute("order.id", "ORD-2024-000123")
            llm.add_event("gen_ai.user.message", {"content": f"my card is {CARD_DASHED}"})
            llm.add_event("deploy", {"aws.key": AWS_KEY, "github.token": GITHUB_TOKEN})
            llm_context = llm.get_span_context()
        with tracer.start_as_current_span("query crm", links=[Link(llm_context, {"db.url": DB_URL})]) as tool:
            tool.set_status(Status(StatusCode.ERROR, f"no customer with SSN {SSN}"))
    tracer_provider.shutdown()

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{args.endpoint}/v1/logs")))
    logger = logger_provider.get_logger("lookout.e2e.pii")
    logger.emit(body=f"payment from {EMAIL} with {CARD}", attributes={"client.ip": IPV4})
    logger.emit(body={"customer": {"email": EMAIL, "iban": IBAN}, "notes": [f"call {PHONE}"]}, attributes={"ssn": SSN})
    logger_provider.shutdown()

    with open(args.raw, "w") as out:
        json.dump(RAW, out)


if __name__ == "__main__":
    main()
