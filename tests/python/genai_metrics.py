"""Model calls reported as the OTel GenAI client metric
`gen_ai.client.operation.duration`, through the OpenTelemetry Python SDK
(cumulative temporality, its default).

Five healthy calls are exported first; then 80 calls succeed and 20 fail
with `error.type`: 20 failures in 105 calls for gpt-4o, the failures in a
series that first appears in the second export.
"""

import argparse
import time

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    args = parser.parse_args()

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{args.endpoint}/v1/metrics"), export_interval_millis=200
    )
    provider = MeterProvider(resource=Resource.create({"service.name": "insighthub"}), metric_readers=[reader])
    duration = provider.get_meter("genai").create_histogram(
        "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration"
    )
    call = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}

    for _ in range(5):
        duration.record(0.3, call)
    time.sleep(0.8)
    for _ in range(80):
        duration.record(0.4, call)
    for _ in range(20):
        duration.record(2.0, {**call, "error.type": "timeout"})
    time.sleep(0.8)
    provider.force_flush()
    provider.shutdown()


if __name__ == "__main__":
    main()
