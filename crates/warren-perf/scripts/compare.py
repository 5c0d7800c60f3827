#!/usr/bin/env python3
"""Run warren-perf scenarios against RabbitMQ and Warren, interleaved, and
write medians and ratios to docs/benchmarks.md.

    crates/warren-perf/scripts/compare.py [--rounds 3] [--quick] [--out docs/benchmarks.md]

Starts a private RabbitMQ (Debian's package, via rabbitmq-compat/rabbitmq.sh,
installed if missing) and a Warren built from this tree, both on loopback,
then runs each scenario RabbitMQ, Warren, RabbitMQ, Warren, ... and reports
the median of each broker's runs and their ratio. Standard library only.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PERF = os.path.join(ROOT, "target", "release", "warren-perf")
WARREN = os.path.join(ROOT, "target", "release", "warren")
RABBIT_SH = os.path.join(ROOT, "rabbitmq-compat", "rabbitmq.sh")
RABBIT_PORT = 5676
WARREN_PORT = 5694
RABBIT_ENV = {
    "COMPAT_RABBITMQ_DIR": "/tmp/warren-bench-rabbitmq",
    "COMPAT_RABBITMQ_NODENAME": "bench-rabbit@localhost",
    "COMPAT_RABBITMQ_DIST_PORT": "25677",
    "COMPAT_RABBITMQ_EPMD_PORT": "4375",
}


# Scenarios measured on a freshly started broker (their memory figures would
# otherwise include what earlier runs left behind).
FRESH = {"backlog_100b", "connections_1000"}
NOTES_MARKER = "<!-- notes: kept when the script regenerates the tables above -->"


def log(*a):
    print("[compare]", *a, file=sys.stderr, flush=True)


def pid_on_port(port):
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    for part in out.split("pid=")[1:]:
        return int(part.split(",")[0])
    return None


def wait_port(port, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Rabbit:
    name = "RabbitMQ"

    def start(self):
        env = dict(os.environ, **RABBIT_ENV)
        t = time.time()
        subprocess.run([RABBIT_SH, "start", str(RABBIT_PORT)], env=env, check=True, stdout=sys.stderr)
        self.start_s = time.time() - t
        self.pid = pid_on_port(RABBIT_PORT)
        self.url = f"amqp://guest:guest@127.0.0.1:{RABBIT_PORT}/%2f"
        self.version = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"], capture_output=True, text=True
        ).stdout.strip()

    def stop(self):
        env = dict(os.environ, **RABBIT_ENV)
        subprocess.run([RABBIT_SH, "stop"], env=env, stdout=sys.stderr, stderr=sys.stderr)


class Warren:
    name = "Warren"

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="warren-bench-")
        self.log = open(os.path.join(self.dir, "warren.log"), "w")
        self.proc = subprocess.Popen(
            [WARREN, "--port", str(WARREN_PORT), "--bind", "127.0.0.1", "--no-management", "--data-dir", os.path.join(self.dir, "data")],
            stdout=self.log, stderr=self.log,
        )
        if not wait_port(WARREN_PORT):
            raise SystemExit("warren did not start")
        self.pid = self.proc.pid
        self.url = f"amqp://guest:guest@127.0.0.1:{WARREN_PORT}/%2f"
        self.version = subprocess.run([WARREN, "--version"], capture_output=True, text=True).stdout.strip()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def perf(broker, args, timeout=600):
    cmd = [PERF, "--url", broker.url, "--broker-pid", str(broker.pid)] + args + ["--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:]), " ".join(cmd[1:])
    raise RuntimeError(f"no RESULT from {' '.join(cmd)}:\n{r.stderr[-2000:]}")


def g(d, *path):
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


# (key, title, warren-perf args, [(metric name, extractor, unit, higher is better)])
def scenarios(quick):
    dur = ["-d", "5" if quick else "10"]
    n_backlog = "200000" if quick else "1000000"
    return [
        ("transient_16b", "16 B transient, 1 producer / 1 consumer, auto-ack",
         ["throughput", "--auto-ack", "-s", "16"] + dur,
         [("received msg/s", lambda r: r["deliver_rate"], "msg/s", True),
          ("broker CPU µs/msg", lambda r: r["broker_cpu_us_per_msg"], "µs", False)]),
        ("ack_1k", "1 KiB, manual ack, prefetch 100",
         ["throughput", "-s", "1024", "--prefetch", "100"] + dur,
         [("received msg/s", lambda r: r["deliver_rate"], "msg/s", True),
          ("broker CPU µs/msg", lambda r: r["broker_cpu_us_per_msg"], "µs", False)]),
        ("persistent_16b", "16 B persistent, confirms, window 1000",
         ["throughput", "--persistent", "--confirm", "1000", "-s", "16"] + dur,
         [("confirmed msg/s", lambda r: r["confirm_rate"], "msg/s", True)]),
        ("persistent_1k", "1 KiB persistent, confirms, window 1000",
         ["throughput", "--persistent", "--confirm", "1000", "-s", "1024"] + dur,
         [("confirmed msg/s", lambda r: r["confirm_rate"], "msg/s", True)]),
        ("fanout_10", "fanout to 10 queues",
         ["fanout", "-q", "10", "-s", "16"] + dur,
         [("delivered msg/s", lambda r: r["deliver_rate"], "msg/s", True)]),
        ("latency_1000", "latency at 1,000 msg/s",
         ["latency", "-r", "1000"] + dur,
         [("p50 µs", lambda r: r["latency_us"]["p50"], "µs", False),
          ("p99 µs", lambda r: r["latency_us"]["p99"], "µs", False)]),
        ("backlog_100b", f"backlog of {int(n_backlog):,} × 100 B",
         ["backlog", "-n", n_backlog, "-s", "100", "--confirm", "1000"],
         [("publish msg/s", lambda r: r["publish_rate"], "msg/s", True),
          ("drain msg/s", lambda r: r["drain_rate"], "msg/s", True),
          ("RSS with backlog queued (MB)", lambda r: g(r, "phases", "publish", "broker", "rss_end_kb") / 1024, "MB", False)]),
        ("connections_1000", "1,000 idle connections",
         ["connections", "-n", "1000"],
         [("RSS per connection (KiB)", lambda r: r["broker_rss_per_conn_kb"], "KiB", False)]),
    ]


def fmt(v):
    if v is None:
        return "–"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="shorter runs, smaller backlog")
    ap.add_argument("--only", help="run only scenarios whose key contains this")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    a = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "-p", "warren", "-p", "warren-perf"], cwd=ROOT, check=True)
    rabbit, warren = Rabbit(), Warren()
    rabbit.start()
    warren.start()
    results = {}  # key -> broker -> list of result dicts
    commands = {}
    try:
        todo = [s for s in scenarios(a.quick) if not a.only or a.only in s[0]]
        for rnd in range(a.rounds):
            for key, title, args, metrics in todo:
                for b in (rabbit, warren):
                    if key in FRESH:
                        # Memory figures need a broker that has not served other runs.
                        log(f"restarting {b.name} for {key}")
                        b.stop()
                        b.start()
                    log(f"round {rnd + 1}/{a.rounds}: {key} on {b.name}")
                    try:
                        r, cmd = perf(b, args)
                    except Exception as e:  # keep going: one failed run is reported, not fatal
                        log(f"  failed: {e}")
                        continue
                    results.setdefault(key, {}).setdefault(b.name, []).append(r)
                    commands[key] = "warren-perf " + " ".join(args)
        # Cold start of Warren (absolute target: <= 50 ms to connection.open-ok).
        startup = None
        if not a.only or "startup" in a.only:
            tmp = tempfile.mkdtemp(prefix="warren-start-")
            cmd = f"{WARREN} --port 5695 --bind 127.0.0.1 --data-dir {tmp}/d"
            r = subprocess.run([PERF, "--url", "amqp://guest:guest@127.0.0.1:5695/%2f", "startup", "--cmd", cmd, "-k", "5", "--quiet"],
                               capture_output=True, text=True)
            for line in r.stdout.splitlines():
                if line.startswith("RESULT "):
                    startup = json.loads(line[7:])
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        warren.stop()
        rabbit.stop()

    write_report(a, rabbit, warren, results, commands, startup)


def write_report(a, rabbit, warren, results, commands, startup):
    lines = []
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = ""
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines += [
        "# Benchmarks: Warren and RabbitMQ side by side",
        "",
        "Generated by `crates/warren-perf/scripts/compare.py` — rerun it to refresh this file.",
        "",
        f"- Date: {now}; rounds: {a.rounds}{' (quick mode)' if a.quick else ''}, interleaved (RabbitMQ, Warren, RabbitMQ, Warren, …); figures are medians.",
        f"- Machine: {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, {platform.platform()}.",
        f"- RabbitMQ {rabbit.version} (Debian package, private node, default settings, classic queues); {warren.version} (release build, redb store on local disk).",
        "- Load generator: `warren-perf` on the same machine (its own CPU cost per message is in its JSON output and stays far below the brokers').",
        "",
        "| scenario | metric | RabbitMQ | Warren | Warren / RabbitMQ |",
        "|---|---|---|---|---|",
    ]
    for key, title, args, metrics in scenarios(a.quick):
        if key not in results:
            continue
        for name, fn, unit, higher in metrics:
            vals = {}
            for b in ("RabbitMQ", "Warren"):
                xs = []
                for r in results[key].get(b, []):
                    try:
                        v = fn(r)
                        if v is not None:
                            xs.append(float(v))
                    except (KeyError, TypeError):
                        pass
                vals[b] = statistics.median(xs) if xs else None
            ratio = None
            if vals["RabbitMQ"] and vals["Warren"]:
                ratio = vals["Warren"] / vals["RabbitMQ"]
            lines.append(f"| {title} | {name} | {fmt(vals['RabbitMQ'])} | {fmt(vals['Warren'])} | {'–' if ratio is None else f'{ratio:.2f}×'} |")
    if startup:
        lines.append(f"| cold start to connection.open-ok | median ms | (node start: {rabbit.start_s:.1f} s incl. readiness checks) | {fmt(startup.get('median_ms'))} | – |")
    lines += ["", "## Commands", ""]
    for key, cmd in commands.items():
        lines.append(f"- `{key}`: `{cmd} --url <broker> --broker-pid <pid>`")
    lines.append("")
    # Keep the hand-written analysis that follows the marker in the old file.
    notes = ""
    try:
        old = open(a.out).read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    except OSError:
        pass
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
        if notes:
            f.write("\n" + notes)
    log(f"wrote {a.out}")


if __name__ == "__main__":
    main()
