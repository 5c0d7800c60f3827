"""A real Celery worker with native delayed delivery (quorum queues).

The worker runs as a subprocess (``celery -A scenarios.kombu_client._celery_app
worker -P solo``, see _celery_app.py); the scenario process sends tasks with
Celery's client API and reads their results through the rpc:// backend.

Debugging knobs: COMPAT_CELERY_KEEP=1 keeps the worker's directory (log,
declares.jsonl, received.jsonl) under /tmp/compat-celery-*,
COMPAT_CELERY_LOGLEVEL=DEBUG, COMPAT_CELERY_TIMES=1 (times in declares.jsonl;
the observation then differs from run to run).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from scenarios.framework import scenario

from ._util import extra_resource

HERE = os.path.dirname(os.path.abspath(__file__))
COMPAT_DIR = os.path.dirname(os.path.dirname(HERE))  # rabbitmq-compat: cwd of the worker

# Celery's native delayed delivery topology: global names (kombu uses no prefix
# unless asked to, and Celery 5.7 does not ask)
LEVELS = 28
DELAYED = [f"celery_delayed_{n}" for n in range(LEVELS)]
DELIVERY_EXCHANGE = "celery_delayed_delivery"

SLACK = 5.0          # a delayed task must reach the worker within countdown + SLACK s
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _delete_delayed_topology(ctx):
    """Delete the celery_delayed_* queues/exchanges (a previous run's, or
    another scenario's) so that every run starts from nothing."""
    import pika
    conn = ctx.connect()
    for kind, names in (("queue", DELAYED), ("exchange", DELAYED + [DELIVERY_EXCHANGE])):
        for n in names:
            ch = conn.channel()
            try:
                if kind == "queue":
                    ch.queue_delete(n)
                else:
                    ch.exchange_delete(n)
                ch.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass
    conn.close()


def _where(ctx, names):
    """Which of the delayed queues hold messages: {name: message_count}."""
    conn = ctx.connect()
    ch = conn.channel()
    out = {}
    for n in names:
        c = ch.queue_declare(n, passive=True).method.message_count
        if c:
            out[n] = c
    conn.close()
    return out


def _read_lines(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return [l.rstrip("\n") for l in fh if l.strip()]
    except FileNotFoundError:
        return []


def _wait_file(path, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def _stop_worker(proc):
    """SIGTERM (Celery's warm shutdown), then SIGKILL; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return "killed after 15 s"
    return proc.returncode


def _no_death_time(headers):
    """x-death entries without their 'time' (a timestamp of the death)."""
    for e in headers.get("x-death") or []:
        if isinstance(e, dict) and "time" in e:
            e["time"] = "<time>"
    return headers


def _uuid(text):
    return _UUID.sub("<uuid>", text)


def _log_lines(path, levels=("WARNING", "ERROR", "CRITICAL")):
    """The worker's log lines at these levels (format: 'LEVEL logger: msg')."""
    out = []
    for l in _read_lines(path):
        if l.split(" ", 1)[0] in levels:
            out.append(_uuid(l))
    return out


@scenario("celery", timeout=120)
def native_delayed_delivery(ctx):
    """Celery 5.7 worker (-P solo, no gossip/mingle/heartbeat/remote control)
    on quorum queues with native delayed delivery: the worker declares the
    celery_delayed_0..27 topic exchanges + quorum queues (x-message-ttl
    2^level s, x-overflow reject-publish, at-least-once dead-lettering to the
    next level) and celery_delayed_delivery, binds the topic task exchange to
    it and consumes with per-consumer QoS; tasks sent with no countdown, 1 s
    and 30 s (publisher confirms) run once each, not before the countdown and
    within it + 5 s; the 30 s message sits in level 4 (16 s) at ~8 s and in
    level 3 (8 s) at ~20 s; results come back over rpc://."""
    _delete_delayed_topology(ctx)
    ctx.queue("tasks")
    ctx.exchange("tasks")
    for n in DELAYED:
        extra_resource(ctx, "queue", n)
        extra_resource(ctx, "exchange", n)
    extra_resource(ctx, "exchange", DELIVERY_EXCHANGE)

    workdir = tempfile.mkdtemp(prefix="compat-celery-")
    logfile = os.path.join(workdir, "worker.log")
    env = dict(os.environ, COMPAT_CELERY_BROKER=ctx.url, COMPAT_CELERY_PREFIX=ctx.prefix,
               COMPAT_CELERY_DIR=workdir, PYTHONUNBUFFERED="1")
    # the worker stays in the scenario's process group: a scenario timeout kills it too
    argv = [sys.executable, "-m", "celery", "-A", "scenarios.kombu_client._celery_app", "worker",
            "-P", "solo", "-c", "1", "-n", "compat@localhost", "--without-gossip",
            "--without-mingle", "--without-heartbeat",
            "--loglevel", os.environ.get("COMPAT_CELERY_LOGLEVEL", "INFO"), "--logfile", logfile]
    with open(os.path.join(workdir, "stdout"), "wb") as out:
        proc = subprocess.Popen(argv, cwd=COMPAT_DIR, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        _scenario_body(ctx, proc, workdir)
    finally:
        ctx.record("worker exit status", _stop_worker(proc))
        ctx.record("worker warnings and errors", _log_lines(logfile))
        _record_worker_calls(ctx, _read_lines(os.path.join(workdir, "declares.jsonl")))
        with open(os.path.join(workdir, "stdout"), "rb") as fh:
            tail = fh.read()[-3000:].decode("utf-8", "replace")
        if tail.strip():
            sys.stderr.write(f"[{ctx.name}] worker stdout/stderr:\n{tail}\n")
        if not os.environ.get("COMPAT_CELERY_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


def _record_worker_calls(ctx, lines):
    """What the worker sent, with the broker's answers: its declares, binds
    and consumes in order; its acks in order; its basic.qos values as a set
    (it sends one more once its loop runs, after it reported ready, and an
    ETA task raises the prefetch by one until it runs: when the lowered value
    goes out -- before or after the ack, or not before the shutdown -- is
    timing)."""
    qos = ("basic.qos",)
    acks = ("basic.ack", "basic.reject")
    ctx.record("worker declares", [l for l in lines if not l.startswith(qos + acks)])
    ctx.record("worker acks", [l for l in lines if l.startswith(acks)])
    ctx.record("worker basic.qos values", sorted({l for l in lines if l.startswith(qos)}))


def _scenario_body(ctx, proc, workdir):
    os.environ["COMPAT_CELERY_BROKER"] = ctx.url
    os.environ["COMPAT_CELERY_PREFIX"] = ctx.prefix
    os.environ.pop("COMPAT_CELERY_DIR", None)
    from ._celery_app import add, app, install_declare_log

    ready = _wait_file(os.path.join(workdir, "ready"), 30, proc)
    ctx.record("worker ready", ready)
    if not ready:
        ctx.record("worker exited", proc.poll())
        return

    client_log = []
    install_declare_log(client_log.append)
    sent = {}
    results = {}
    for label, countdown, args in (("no countdown", None, (1, 2)), ("countdown 1", 1, (3, 4)),
                                   ("countdown 30", 30, (5, 6))):
        t = time.time()
        kw = {"countdown": countdown} if countdown else {}
        results[label] = add.apply_async(args, **kw)
        sent[label] = (t, countdown or 0)
    # the rpc:// reply queue (named by a uuid) is declared again when results are
    # fetched: its message count depends on how far the worker has got
    ctx.record("client declares", [re.sub(r"message_count=\d+", "message_count=<n>", l)
                                   if "<uuid>" in l else l for l in map(_uuid, client_log)])
    t0 = sent["no countdown"][0]

    def outcome(label, timeout):
        try:
            r = results[label].get(timeout=timeout)
        except Exception as e:  # noqa: BLE001
            return {"error": f"{type(e).__name__}: {e}"[:300]}
        return {"sum": r["sum"], "state": results[label].state}

    ctx.record("result no countdown", outcome("no countdown", 10))
    ctx.record("result countdown 1", outcome("countdown 1", 10))
    time.sleep(max(0.0, t0 + 8 - time.time()))
    ctx.record("delayed queues holding messages at 8 s", _where(ctx, DELAYED))
    time.sleep(max(0.0, t0 + 20 - time.time()))
    ctx.record("delayed queues holding messages at 20 s", _where(ctx, DELAYED))
    ctx.record("result countdown 30", outcome("countdown 30", 25))
    time.sleep(0.5)
    ctx.record("delayed queues holding messages at the end", _where(ctx, DELAYED))

    # when the worker received each task (task_received), against when it was sent
    received = {}
    for l in _read_lines(os.path.join(workdir, "received.jsonl")):
        e = json.loads(l)
        received.setdefault(e["id"], []).append(e)
    for label, r in results.items():
        t, countdown = sent[label]
        got = received.get(r.id, [])
        d = {"received": len(got)}
        if got:
            at = got[0]["at"]
            sys.stderr.write(f"[{ctx.name}] {label}: received {at - t:.3f} s after sending\n")
            d["not before the countdown"] = at - t >= countdown
            d[f"within countdown + {SLACK:g} s"] = at - t < countdown + SLACK
            d["delivery_info"] = got[0]["delivery_info"]
            d["broker headers"] = _no_death_time(got[0]["broker headers"])
            # the comparison ignores the order of keys; the wire order of the
            # fields in each x-death entry is recorded explicitly
            d["x-death field order"] = [list(e) if isinstance(e, dict) else None
                                        for e in d["broker headers"].get("x-death") or []]
            d["properties"] = got[0]["properties"]
        ctx.record(f"worker received {label}", json.loads(_uuid(json.dumps(d))))
    app.close()
