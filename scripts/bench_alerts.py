"""What the `threshold` connector costs: the daemon's CPU for a burst of
1,000,000 spans, with and without the connector (the default rule set) at
the end of the traces pipeline. Runs alternate between the two configs so
that the machine's noise falls on both; the figure is the ratio of the
medians. Two pipelines:

- minimal: OTLP/HTTP -> genai -> cost -> batch -> blackhole. Nothing reads
  the spans after the processors, so the connector pays alone for reading
  them back from memory: the worst case.
- shipped: the default config's traces processors, genai -> pii -> cost ->
  batch, ending in the prometheus exporter (the file and sqlite exporters
  are left out: they cannot take 100k spans/s here).

    scripts/bench-alerts                             # minimal, 3 runs of each
    scripts/bench-alerts --pipeline shipped --runs 5 --spans 2000000
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port, wait_for_port  # noqa: E402
from bench_store import cpu_seconds, metric, stop  # noqa: E402


PIPELINES = {
    "minimal": (["genai", "cost"], "blackhole"),
    "shipped": (["genai", "pii", "cost"], "prometheus"),
}


def config(with_threshold, http, telemetry, pipeline):
    processors, exporter = PIPELINES[pipeline]
    exporter_config = {
        "blackhole": "",
        "prometheus": f"  prometheus:\n    endpoint: 127.0.0.1:{free_port()}\n",
    }[exporter]
    exporters = f"[{exporter}, threshold]" if with_threshold else f"[{exporter}]"
    connectors = "connectors:\n  threshold:\n" if with_threshold else ""
    alerts = (
        "    alerts:\n      receivers: [threshold]\n      exporters: [blackhole]\n" if with_threshold else ""
    )
    return (
        "receivers:\n  otlp:\n    protocols:\n"
        f"      http:\n        endpoint: 127.0.0.1:{http}\n"
        "processors:\n  genai:\n  pii:\n  cost:\n    trace_rollup:\n      grace_period: 0s\n"
        "  batch:\n    send_batch_size: 8192\n    timeout: 200ms\n"
        "exporters:\n  blackhole:\n" + exporter_config + connectors + "service:\n  pipelines:\n    traces:\n"
        f"      receivers: [otlp]\n      processors: [{', '.join(processors)}, batch]\n"
        f"      exporters: {exporters}\n" + alerts +
        f"  telemetry:\n    logs:\n      level: warn\n    metrics:\n      endpoint: 127.0.0.1:{telemetry}\n"
    )


def one_run(args, with_threshold):
    workdir = tempfile.mkdtemp(prefix="lookout-bench-alerts-")
    http, telemetry = free_port(), free_port()
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as f:
        f.write(config(with_threshold, http, telemetry, args.pipeline))
    log = open(os.path.join(workdir, "daemon.log"), "wb")
    daemon = subprocess.Popen([os.path.join(args.bin_dir, "lookout"), "run", "--config", path],
                              stdout=log, stderr=log)
    try:
        wait_for_port(http)
        telemetry_url = f"http://127.0.0.1:{telemetry}"
        cpu0 = cpu_seconds([daemon.pid])
        seconds = args.spans / args.rate
        report_path = os.path.join(workdir, "load.json")
        subprocess.run([
            os.path.join(args.bin_dir, "lookout-loadgen"), "--endpoint", f"http://127.0.0.1:{http}",
            "--rate", str(args.rate), "--duration", f"{seconds}s", "--unique-trace-ids",
            "--json", report_path,
        ], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(report_path) as f:
            accepted = json.load(f)["accepted_spans"]
        exporter = PIPELINES[args.pipeline][1]
        series = f'lookout_exporter_sent_spans_total{{exporter="{exporter}"}}'
        deadline = time.monotonic() + 120
        while metric(telemetry_url, series) < accepted and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu = cpu_seconds([daemon.pid]) - cpu0
        return {"threshold": with_threshold, "spans": accepted, "cpu_s_per_m_spans": cpu / accepted * 1e6}
    finally:
        stop(daemon, log)
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=100_000, help="offered spans/s")
    parser.add_argument("--pipeline", choices=sorted(PIPELINES), default="minimal")
    args = parser.parse_args()
    results = {False: [], True: []}
    for run in range(args.runs):
        for with_threshold in (False, True):
            result = one_run(args, with_threshold)
            print(json.dumps(result), flush=True)
            results[with_threshold].append(result["cpu_s_per_m_spans"])
    without = statistics.median(results[False])
    with_it = statistics.median(results[True])
    print(f"\n| pipeline | daemon CPU s per 1M spans (median of {args.runs}) |\n|---|---|")
    processors, exporter = PIPELINES[args.pipeline]
    print(f"| {', '.join(processors)}, batch -> {exporter} | {without:.2f} ({min(results[False]):.2f}-{max(results[False]):.2f}) |")
    print(f"| the same + threshold (default rules) | {with_it:.2f} ({min(results[True]):.2f}-{max(results[True]):.2f}) |")
    pairs = sorted(b / a - 1 for a, b in zip(results[False], results[True]))
    print(f"\nthe threshold connector adds {100 * (with_it / without - 1):.1f}% CPU (ratio of the medians); "
          f"run by run: {', '.join(f'{100 * p:+.1f}%' for p in pairs)}, median {100 * statistics.median(pairs):+.1f}%")


if __name__ == "__main__":
    main()
