"""Sustained spans/s into PostgreSQL and SQLite, two ways:

- the load benchmark (default): the whole daemon, lookout-loadgen →
  OTLP/HTTP → genai → cost → batch → postgres | sqlite, with the load
  generator, the daemon and PostgreSQL sharing the machine's 2 cores;
- --write-path: the exporters' criterion benchmark (exporters/benches/
  store.rs), which writes ready batches through Exporter::export.

The figure is spans *stored* per second (the exporter's
lookout_store_spans_total{result="stored"}) over the measured window, not
spans accepted: the queue can absorb a burst, the database sets the pace.
Trace ids are unique per round (--unique-trace-ids), so every span is a
new row, never a cheap duplicate.

PostgreSQL is a throwaway cluster in a temp directory, fresh for every
run, run as `nobody` when this runs as root, with fsync and
synchronous_commit on. --pg-settings default keeps the server's defaults;
tuned gives it the memory a write-heavy store is given (see TUNED).
Run by scripts/bench-store.
"""

import argparse
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from bench import free_port, wait_for_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A quarter of this machine's 24 GiB for shared buffers, and checkpoints
# spaced as for a write-heavy database; durability settings untouched.
TUNED = "-c shared_buffers=6GB -c max_wal_size=8GB -c checkpoint_timeout=15min"


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


class Postgres:
    def __init__(self, workdir, settings):
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
        if not versions:
            raise SystemExit("no PostgreSQL server under /usr/lib/postgresql: apt-get install postgresql")
        self.bin = os.path.dirname(versions[-1])
        self.dir = os.path.join(workdir, "pg")
        os.mkdir(self.dir)
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("nobody")
            os.chmod(workdir, 0o755)
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.port = free_port()
        self.run("initdb", "--auth=trust", "--username=lookout", f"--pgdata={self.dir}/data")
        extra = TUNED if settings == "tuned" else ""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' {extra}"
        self.run("pg_ctl", "start", "--wait", f"--pgdata={self.dir}/data", f"--log={self.dir}/log", "-o", options)
        self.url = f"postgres://lookout@127.0.0.1:{self.port}/postgres"

    def run(self, program, *args):
        def demote():
            if self.user:
                os.setgid(self.user.pw_gid)
                os.setuid(self.user.pw_uid)

        done = subprocess.run([os.path.join(self.bin, program), *args], capture_output=True, text=True,
                              cwd=self.dir, preexec_fn=demote)
        if done.returncode != 0:
            raise SystemExit(f"{program} failed: {done.stderr}")

    def cpu_seconds(self):
        pids = subprocess.run(["pgrep", "-f", f"{self.dir}/data"], capture_output=True, text=True).stdout.split()
        children = []
        for pid in pids:
            children += subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split()
        return cpu_seconds(pids + children)

    def stop(self):
        try:
            self.run("pg_ctl", "stop", "--mode=fast", f"--pgdata={self.dir}/data")
        except SystemExit as err:
            print(err)


def stop(daemon, log):
    """SIGTERM, and SIGKILL if the daemon has not drained in two minutes."""
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=120)
    except subprocess.TimeoutExpired:
        daemon.kill()
    log.close()


def metric(telemetry, series):
    with urllib.request.urlopen(f"{telemetry}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def config(backend, workdir, http, telemetry, pg_url):
    exporter = {
        "postgres": f"  postgres:\n    url: {pg_url}\n",
        "sqlite": f"  sqlite:\n    path: {workdir}/lookout.db\n",
    }[backend]
    return (
        "receivers:\n  otlp:\n    protocols:\n"
        f"      http:\n        endpoint: 127.0.0.1:{http}\n"
        "processors:\n  genai:\n  cost:\n    trace_rollup:\n      grace_period: 0s\n"
        "  batch:\n    send_batch_size: 8192\n    timeout: 200ms\n"
        "exporters:\n" + exporter + "service:\n  pipelines:\n    traces:\n"
        "      receivers: [otlp]\n      processors: [genai, cost, batch]\n"
        f"      exporters: [{backend}]\n"
        f"  telemetry:\n    logs:\n      level: warn\n    metrics:\n      endpoint: 127.0.0.1:{telemetry}\n"
    )


def one_run(args, backend):
    workdir = tempfile.mkdtemp(prefix="lookout-bench-store-")
    postgres = Postgres(workdir, args.pg_settings) if backend == "postgres" else None
    http, telemetry = free_port(), free_port()
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as f:
        f.write(config(backend, workdir, http, telemetry, postgres and postgres.url))
    log = open(os.path.join(workdir, "daemon.log"), "wb")
    daemon = subprocess.Popen([os.path.join(args.bin_dir, "lookout"), "run", "--config", path],
                              stdout=log, stderr=log)
    try:
        wait_for_port(http)
        telemetry_url = f"http://127.0.0.1:{telemetry}"
        series = f'lookout_store_spans_total{{exporter="{backend}",result="stored"}}'
        load = subprocess.Popen([
            os.path.join(args.bin_dir, "lookout-loadgen"), "--endpoint", f"http://127.0.0.1:{http}",
            "--concurrency", str(args.concurrency), "--duration", f"{args.warmup + args.duration + 2}s",
            "--unique-trace-ids", "--json", os.path.join(workdir, "load.json"),
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.warmup)
        stored0, clock0 = metric(telemetry_url, series), time.monotonic()
        daemon_cpu0 = cpu_seconds([daemon.pid])
        pg_cpu0 = postgres.cpu_seconds() if postgres else 0.0
        time.sleep(args.duration)
        stored1, clock1 = metric(telemetry_url, series), time.monotonic()
        daemon_cpu = cpu_seconds([daemon.pid]) - daemon_cpu0
        pg_cpu = (postgres.cpu_seconds() - pg_cpu0) if postgres else 0.0
        load.wait(timeout=120)
        with open(os.path.join(workdir, "load.json")) as f:
            report = json.load(f)
        stored = stored1 - stored0
        return {
            "backend": backend,
            "stored_spans_per_s": stored / (clock1 - clock0),
            "accepted_spans_per_s": report["accepted_spans_per_sec"],
            "daemon_cpu_s_per_m_spans": daemon_cpu / stored * 1e6 if stored else None,
            "postgres_cpu_s_per_m_spans": pg_cpu / stored * 1e6 if stored and postgres else None,
        }
    finally:
        stop(daemon, log)
        if postgres:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def write_path(args):
    workdir = tempfile.mkdtemp(prefix="lookout-bench-store-")
    postgres = Postgres(workdir, args.pg_settings)
    try:
        env = dict(os.environ, LOOKOUT_BENCH_POSTGRES_URL=postgres.url)
        command = ["cargo", "bench", "--locked", "-p", "lookout-exporters", "--bench", "store", "--", *args.filter]
        subprocess.run(command, env=env, check=True)
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pg-settings", choices=["default", "tuned"], default="default")
    parser.add_argument("--write-path", action="store_true")
    parser.add_argument("filter", nargs="*", help="criterion filter for --write-path: postgres or sqlite")
    args = parser.parse_args()
    if args.write_path:
        write_path(args)
        return
    results = []
    for backend in args.backends.split(","):
        runs = [one_run(args, backend) for _ in range(args.runs)]
        for run in runs:
            print(json.dumps(run))
        runs.sort(key=lambda r: r["stored_spans_per_s"])
        results.append(runs[len(runs) // 2])
    print("\n| backend | stored spans/s (median) | daemon CPU s / M spans | PostgreSQL CPU s / M spans |")
    print("|---|---|---|---|")
    for r in results:
        pg = f"{r['postgres_cpu_s_per_m_spans']:.2f}" if r["postgres_cpu_s_per_m_spans"] else "—"
        daemon = f"{r['daemon_cpu_s_per_m_spans']:.2f}" if r["daemon_cpu_s_per_m_spans"] else "—"
        print(f"| {r['backend']} | {r['stored_spans_per_s']:,.0f} | {daemon} | {pg} |")


if __name__ == "__main__":
    main()
