#!/usr/bin/env python3
"""Storage benchmarks for docs/storage.md: per engine (redb, sled) and for
RabbitMQ, in the same run on the same machine:

- confirmed persistent msg/s (1 producer, window 1000; 16 B and 1 KiB),
- publishing 1,000,000 persistent 100 B messages, then the time to recover
  them after a clean restart (to connection.open-ok) and the broker's RSS
  once recovered.

    crates/warren-perf/scripts/storage.py [--count 1000000] [--out docs/storage-bench.md]

Standard library only; uses rabbitmq-compat/rabbitmq.sh for RabbitMQ.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from compare import PERF, WARREN, RABBIT_SH, RABBIT_ENV, ROOT, log, pid_on_port, wait_port  # noqa: E402

PORT_W = 5699
PORT_R = 5676
URL = "amqp://guest:guest@127.0.0.1:{}/%2f"


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return None


def perf(url, pid, args):
    cmd = [PERF, "--url", url, "--broker-pid", str(pid)] + args + ["--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"no result from {' '.join(cmd)}: {r.stderr[-1500:]}")


def open_ok_time(url, deadline_s=600):
    """Seconds until an AMQP connection opens (polls with warren-perf connections -n 1)."""
    t = time.time()
    while time.time() - t < deadline_s:
        r = subprocess.run([PERF, "--url", url, "connections", "-n", "1", "--hold", "0", "--quiet"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return time.time() - t
        time.sleep(0.01)
    return None


def bench_warren(engine, count):
    d = tempfile.mkdtemp(prefix=f"warren-store-{engine}-")
    url = URL.format(PORT_W)

    def start():
        p = subprocess.Popen([WARREN, "--port", str(PORT_W), "--bind", "127.0.0.1", "--no-management", "--data-dir", d, "--store", engine],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return p

    out = {}
    p = start()
    wait_port(PORT_W)
    out["confirm_16"] = perf(url, p.pid, ["throughput", "--persistent", "--confirm", "1000", "-s", "16", "-d", "10"])["confirm_rate"]
    out["confirm_1k"] = perf(url, p.pid, ["throughput", "--persistent", "--confirm", "1000", "-s", "1024", "-d", "10"])["confirm_rate"]
    r = perf(url, p.pid, ["throughput", "--persistent", "--confirm", "1000", "-s", "100", "-n", str(count), "-y", "0",
                          "--keep-queues", "--queue-prefix", "backlog"])
    out["publish_rate"] = r["confirm_rate"]
    out["rss_published"] = rss_mb(p.pid)
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    t = time.time()
    p = start()
    out["recovery_s"] = open_ok_time(url)
    time.sleep(1)
    out["rss_recovered"] = rss_mb(p.pid)
    out["disk_mb"] = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(d) for f in fs) / 2**20
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    shutil.rmtree(d, ignore_errors=True)
    return out


def bench_rabbit(count):
    env = dict(os.environ, **RABBIT_ENV)
    url = URL.format(PORT_R)
    subprocess.run([RABBIT_SH, "start", str(PORT_R)], env=env, check=True, stdout=sys.stderr)
    pid = pid_on_port(PORT_R)
    out = {}
    try:
        out["confirm_16"] = perf(url, pid, ["throughput", "--persistent", "--confirm", "1000", "-s", "16", "-d", "10"])["confirm_rate"]
        out["confirm_1k"] = perf(url, pid, ["throughput", "--persistent", "--confirm", "1000", "-s", "1024", "-d", "10"])["confirm_rate"]
        r = perf(url, pid, ["throughput", "--persistent", "--confirm", "1000", "-s", "100", "-n", str(count), "-y", "0",
                            "--keep-queues", "--queue-prefix", "backlog"])
        out["publish_rate"] = r["confirm_rate"]
        out["rss_published"] = rss_mb(pid)
        # Restart the RabbitMQ application in its VM (keeps the data directory).
        ctl = ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", RABBIT_ENV["COMPAT_RABBITMQ_NODENAME"]]
        node_env = dict(env, HOME=os.path.join(RABBIT_ENV["COMPAT_RABBITMQ_DIR"], "home"),
                        ERL_EPMD_PORT=RABBIT_ENV["COMPAT_RABBITMQ_EPMD_PORT"])
        subprocess.run(ctl + ["stop_app"], env=node_env, check=True, stdout=subprocess.DEVNULL)
        t = time.time()
        subprocess.Popen(ctl + ["start_app"], env=node_env, stdout=subprocess.DEVNULL)
        wait_port(PORT_R, 600)
        out["recovery_s"] = (time.time() - t) + (open_ok_time(url) or 0)
        time.sleep(1)
        out["rss_recovered"] = rss_mb(pid)
    finally:
        subprocess.run([RABBIT_SH, "stop"], env=env, stdout=sys.stderr, stderr=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "storage-bench.md"))
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "warren", "-p", "warren-perf"], cwd=ROOT, check=True)
    res = {}
    for engine in ("redb", "sled"):
        log(f"warren/{engine}")
        res[f"Warren ({engine})"] = bench_warren(engine, a.count)
    log("rabbitmq")
    res["RabbitMQ 3.10.8"] = bench_rabbit(a.count)
    rows = [
        ("confirmed msg/s, 16 B persistent, window 1000", "confirm_16", "{:,.0f}"),
        ("confirmed msg/s, 1 KiB persistent, window 1000", "confirm_1k", "{:,.0f}"),
        (f"publish {a.count:,} × 100 B persistent (confirmed msg/s)", "publish_rate", "{:,.0f}"),
        ("RSS with them queued (MB)", "rss_published", "{:,.0f}"),
        ("recovery after a clean restart, to connection.open-ok (s)", "recovery_s", "{:.2f}"),
        ("RSS once recovered (MB)", "rss_recovered", "{:,.0f}"),
        ("data on disk (MB)", "disk_mb", "{:,.0f}"),
    ]
    names = list(res)
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for title, key, f in rows:
        cells = []
        for n in names:
            v = res[n].get(key)
            cells.append("–" if v is None else f.format(v))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(a.out, "w") as fh:
        fh.write(f"<!-- generated by crates/warren-perf/scripts/storage.py on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} -->\n")
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
