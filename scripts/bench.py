#!/usr/bin/env python3
"""Load benchmark of Lookout's configurations against rotel.

Each measurement starts a fresh daemon pinned to one core and runs
lookout-loadgen pinned to the other, so the two never share a core. The
figures are medians of --runs runs; ratios to rotel compare runs made in
this same invocation.

  max spans/s      closed loop: --concurrency requests in flight, as fast as accepted
  CPU s / M spans  the daemon's user+system CPU time (/proc/PID/stat) per million accepted spans
  peak RSS         the daemon's VmHWM over the run
  p99 @ 50%        request latency p99 with the load offered at half the median max
  overload         3x the median max as the target, 512 requests in flight; accepted,
                   refused, peak RSS, and whether accepted = exported

Run it through scripts/bench, which installs rotel and builds the binaries.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

DAEMON_CORE = "1"
GENERATOR_CORE = "0"
# Processors of configuration (b), in pipeline order; each is included once
# `lookout validate` knows it, so (b) grows as the issues land.
LLM_PROCESSORS = ["genai", "pii", "cost"]
# Settings of (b)'s processors: the node agent's (deploy/lookout.yaml), whose
# applications export whole traces, so the cost roll-up finishes each trace
# on its root instead of holding roots for a grace period.
PROCESSOR_SETTINGS = {"cost": "    trace_rollup:\n      grace_period: 0s\n"}
OVERLOAD_MEMORY_LIMIT_MIB = 160
OVERLOAD_CONCURRENCY = 512
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


class Daemon:
    def __init__(self, command, ports, workdir):
        self.log = open(os.path.join(workdir, "daemon.log"), "wb")
        self.process = subprocess.Popen(
            ["taskset", "-c", DAEMON_CORE, *command], stdout=self.log, stderr=self.log, cwd=workdir
        )
        for port in ports:
            wait_for_port(port)

    def cpu_seconds(self):
        with open(f"/proc/{self.process.pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def peak_rss_mib(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = args.bin_dir
        self.processors = self.available_processors()
        self.has_prometheus = self.exporter_available("prometheus")

    def lookout(self, *arguments):
        return [os.path.join(self.bin, "lookout"), *arguments]

    def available_processors(self):
        found = []
        with tempfile.TemporaryDirectory() as scratch:
            for name in LLM_PROCESSORS:
                config = os.path.join(scratch, f"{name}.yaml")
                with open(config, "w") as f:
                    f.write(self.lookout_config(scratch, 1, 2, 3, [name], "blackhole"))
                ok = subprocess.run(self.lookout("validate", "--config", config), capture_output=True).returncode == 0
                if ok:
                    found.append(name)
        return found

    def exporter_available(self, name):
        with tempfile.TemporaryDirectory() as scratch:
            config = os.path.join(scratch, "config.yaml")
            with open(config, "w") as f:
                f.write(self.lookout_config(scratch, 1, 2, 3, [], "blackhole", prometheus=4))
            return subprocess.run(self.lookout("validate", "--config", config), capture_output=True).returncode == 0

    def lookout_config(self, workdir, http, grpc, telemetry, processors, exporter, memory_limit=None,
                       prometheus=None):
        exporter_config = {
            "blackhole": "  blackhole:\n",
            "file": f"  file:\n    path: {workdir}/out.jsonl\n",
        }[exporter]
        exporters = [exporter]
        if prometheus:
            exporter_config += f"  prometheus:\n    endpoint: 127.0.0.1:{prometheus}\n"
            exporters.append("prometheus")
        limit = f"  memory_limit_mib: {memory_limit}\n" if memory_limit else ""
        return (
            "receivers:\n  otlp:\n    protocols:\n"
            f"      http:\n        endpoint: 127.0.0.1:{http}\n"
            f"      grpc:\n        endpoint: 127.0.0.1:{grpc}\n"
            "processors:\n"
            + "".join(f"  {p}:\n{PROCESSOR_SETTINGS.get(p, '')}" for p in processors)
            + "  batch:\n"
            "exporters:\n" + exporter_config + "service:\n  pipelines:\n    traces:\n"
            "      receivers: [otlp]\n"
            f"      processors: [{', '.join([*processors, 'batch'])}]\n"
            f"      exporters: [{', '.join(exporters)}]\n"
            f"  telemetry:\n    logs:\n      level: warn\n    metrics:\n      endpoint: 127.0.0.1:{telemetry}\n"
            + limit
        )

    def start(self, system, workdir, memory_limit=None):
        http, grpc, telemetry = free_port(), free_port(), free_port()
        if system == "rotel":
            command = [
                self.args.rotel, "start", "--exporter", "blackhole",
                "--otlp-http-endpoint", f"127.0.0.1:{http}", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc}",
                "--pid-file", os.path.join(workdir, "rotel.pid"), "--log-file", os.path.join(workdir, "rotel.log"),
            ]
        else:
            processors = {
                "lookout-a": [],
                # (b) less the pii processor: what PII scrubbing costs.
                "lookout-b-no-pii": [p for p in self.processors if p != "pii"],
            }.get(system, self.processors)
            exporter = "file" if system == "lookout-c" else "blackhole"
            # (b) is the full LLM pipeline, "with Prometheus": its product
            # metrics exporter sits beside the blackhole.
            prometheus = free_port() if system.startswith("lookout-b") and self.has_prometheus else None
            config = os.path.join(workdir, "config.yaml")
            with open(config, "w") as f:
                f.write(self.lookout_config(workdir, http, grpc, telemetry, processors, exporter, memory_limit,
                                            prometheus))
            command = self.lookout("run", "--config", config)
        daemon = Daemon(command, [http, grpc], workdir)
        daemon.endpoints = {"http": f"http://127.0.0.1:{http}", "grpc": f"http://127.0.0.1:{grpc}"}
        daemon.telemetry = f"http://127.0.0.1:{telemetry}"
        return daemon

    def loadgen(self, endpoint, protocol, rate=None, concurrency=None, duration=None, unique_ids=False):
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            command = [
                "taskset", "-c", GENERATOR_CORE, os.path.join(self.bin, "lookout-loadgen"),
                "--endpoint", endpoint, "--protocol", protocol,
                "--concurrency", str(concurrency or self.args.concurrency),
                "--duration", f"{duration or self.args.duration}s", "--json", report.name,
            ]
            if rate:
                command += ["--rate", str(rate)]
            if unique_ids:
                # The cost roll-up keeps per-trace state: repeated trace ids
                # would make most spans look late and measure the wrong path.
                command += ["--unique-trace-ids"]
            subprocess.run(command, check=True, capture_output=True)
            with open(report.name) as f:
                return json.load(f)

    def one_run(self, system, protocol, rate=None, concurrency=None, memory_limit=None):
        workdir = tempfile.mkdtemp(prefix="lookout-bench-")
        try:
            daemon = self.start(system, workdir, memory_limit)
            time.sleep(0.3)
            cpu_before = daemon.cpu_seconds()
            unique_ids = system.startswith("lookout-b") and "cost" in self.processors
            report = self.loadgen(daemon.endpoints[protocol], protocol, rate, concurrency, unique_ids=unique_ids)
            report["daemon_cpu_seconds"] = daemon.cpu_seconds() - cpu_before
            report["daemon_peak_rss_mib"] = daemon.peak_rss_mib()
            if system != "rotel":
                report["daemon_metrics"] = self.scrape(daemon.telemetry)
            daemon.stop()
            return report
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    def scrape(telemetry):
        # Let in-flight batches reach the exporter before reading the counters.
        time.sleep(1.0)
        with urllib.request.urlopen(f"{telemetry}/metrics", timeout=5) as response:
            text = response.read().decode()
        totals = {}
        for line in text.splitlines():
            for name in ("lookout_receiver_accepted_spans_total", "lookout_exporter_sent_spans_total",
                         "lookout_receiver_refused_spans_total"):
                if line.startswith(name + "{"):
                    totals[name] = totals.get(name, 0) + float(line.rsplit(" ", 1)[1])
        return totals

    def measure(self, system, protocol):
        runs = [self.one_run(system, protocol) for _ in range(self.args.runs)]
        max_rate = statistics.median(r["accepted_spans_per_sec"] for r in runs)
        cpu = statistics.median(
            r["daemon_cpu_seconds"] / (r["accepted_spans"] / 1e6) for r in runs if r["accepted_spans"]
        )
        rss = statistics.median(r["daemon_peak_rss_mib"] for r in runs)
        paced = [self.one_run(system, protocol, rate=max_rate / 2) for _ in range(self.args.runs)]
        p99 = statistics.median(r["latency_ms_p99"] for r in paced)
        result = {
            "system": system, "protocol": protocol, "max_spans_per_sec": max_rate,
            "cpu_seconds_per_million_spans": cpu, "peak_rss_mib": rss, "p99_ms_at_half_max": p99,
            "runs": runs, "paced_runs": paced,
        }
        print(f"  {system:10} {protocol:4}  {max_rate:10,.0f} spans/s  {cpu:6.2f} CPU s/M  "
              f"{rss:6.1f} MiB  p99@50% {p99:6.2f} ms", flush=True)
        return result

    def overload(self, system, protocol, max_rate):
        limit = OVERLOAD_MEMORY_LIMIT_MIB if system != "rotel" else None
        report = self.one_run(
            system, protocol, rate=3 * max_rate, concurrency=OVERLOAD_CONCURRENCY, memory_limit=limit
        )
        sent = report["accepted_spans"] + report["refused_spans"] + 100 * report["error_requests"]
        metrics = report.get("daemon_metrics") or {}
        daemon_accepted = metrics.get("lookout_receiver_accepted_spans_total")
        exported = metrics.get("lookout_exporter_sent_spans_total")
        result = {
            "system": system, "protocol": protocol, "target_spans_per_sec": 3 * max_rate,
            "offered_spans_per_sec": sent / report["duration_s"],
            "accepted_spans_per_sec": report["accepted_spans_per_sec"],
            "accepted_spans": report["accepted_spans"], "refused_spans": report["refused_spans"],
            "error_requests": report["error_requests"], "peak_rss_mib": report["daemon_peak_rss_mib"],
            "memory_limit_mib": limit, "latency_ms_p99": report["latency_ms_p99"],
            # Nothing silent: what the client saw accepted, the daemon counted
            # accepted, and the exporter counted sent.
            "nothing_lost": None if daemon_accepted is None else
                daemon_accepted == report["accepted_spans"] == exported,
            "daemon_metrics": metrics,
        }
        print(f"  overload {system:10} {protocol:4}: offered {result['offered_spans_per_sec']:,.0f}/s "
              f"(target {3 * max_rate:,.0f}), accepted {result['accepted_spans_per_sec']:,.0f}/s, refused "
              f"{result['refused_spans']:,} spans, {result['error_requests']} errors, peak RSS "
              f"{result['peak_rss_mib']:.1f} MiB, accepted = exported: {result['nothing_lost']}", flush=True)
        return result


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    return {
        "cores": os.cpu_count(), "model": model, "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + ("-dirty" if dirty else ""),
    }


def markdown(results, overloads, processors, info, args, with_prometheus=False):
    rotel = {r["protocol"]: r for r in results if r["system"] == "rotel"}
    lines = [
        f"Machine: {info['cores']} cores, {info['model']}, kernel {info['kernel']}. "
        f"Date: {info['date']}. Commit: `{info['commit']}`.",
        f"Runs per figure: {args.runs} (median), {args.duration} s each, closed loop with "
        f"{args.concurrency} requests in flight, 100 spans per request.",
        f"Configuration (b) processors: {', '.join(processors) or 'none yet'} → batch → blackhole"
        + (" + prometheus." if with_prometheus else "."),
        "",
        "| system | protocol | max spans/s | × rotel | CPU s / M spans | × rotel | peak RSS MiB | × rotel | p99 @ 50% max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        peer = rotel.get(r["protocol"])
        ratio = lambda key: f"{r[key] / peer[key]:.2f}" if peer and r["system"] != "rotel" else "—"
        lines.append(
            f"| {r['system']} | {r['protocol']} | {r['max_spans_per_sec']:,.0f} | {ratio('max_spans_per_sec')} "
            f"| {r['cpu_seconds_per_million_spans']:.2f} | {ratio('cpu_seconds_per_million_spans')} "
            f"| {r['peak_rss_mib']:.1f} | {ratio('peak_rss_mib')} | {r['p99_ms_at_half_max']:.2f} ms |"
        )
    if overloads:
        lines += [
            "",
            f"Overload: 3× the median max as the target rate, {OVERLOAD_CONCURRENCY} requests in flight, "
            f"Lookout with `memory_limit_mib: {OVERLOAD_MEMORY_LIMIT_MIB}`.",
            "The generator waits for each answer, so what it could offer is shown beside the target.",
            "",
            "| system | protocol | target spans/s | offered spans/s | accepted spans/s | refused spans | failed requests | peak RSS MiB | memory limit | accepted = exported |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for o in overloads:
            limit = f"{o['memory_limit_mib']} MiB" if o["memory_limit_mib"] else "none"
            lost = {True: "yes", False: "NO", None: "—"}[o["nothing_lost"]]
            lines.append(
                f"| {o['system']} | {o['protocol']} | {o['target_spans_per_sec']:,.0f} | "
                f"{o['offered_spans_per_sec']:,.0f} | {o['accepted_spans_per_sec']:,.0f} | "
                f"{o['refused_spans']:,} | {o['error_requests']} | {o['peak_rss_mib']:.1f} | {limit} | {lost} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--rotel", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--systems", default="lookout-a,lookout-b,lookout-b-no-pii,lookout-c,rotel")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--no-overload", action="store_true")
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()

    bench = Bench(args)
    info = machine()
    print(f"machine: {info}", flush=True)
    print(f"configuration (b) processors: {bench.processors or 'none yet'}; prometheus: {bench.has_prometheus}",
          flush=True)
    results, overloads = [], []
    for protocol in args.protocols.split(","):
        for system in args.systems.split(","):
            results.append(bench.measure(system, protocol))
    if not args.no_overload:
        for r in results:
            overloads.append(bench.overload(r["system"], r["protocol"], r["max_spans_per_sec"]))
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"bench-{stamp}.json")
    with open(path, "w") as f:
        json.dump({"machine": info, "args": vars(args), "processors": bench.processors,
                   "results": results, "overload": overloads}, f, indent=2)
    print(f"\nraw results: {path}\n")
    print(markdown(results, overloads, bench.processors, info, args, bench.has_prometheus))


if __name__ == "__main__":
    main()
