#!/usr/bin/env python3
"""Chaos test for Warren: a mixed pika workload while the broker is kill -9'd,
its disk filled and freed, and (optionally) SIGSTOP'd; then a drain and a check
that every confirmed message was delivered or dead-lettered at least once.

Not run in CI.  See tests/chaos/README.md for the checker's rules and
docs/reliability.md for results.

    tests/chaos/.venv/bin/python tests/chaos/chaos.py \
        --warren-bin $CARGO_TARGET_DIR/release/warren --duration 240 --kills 3

Everything a run produces goes to --out (default tests/chaos/out/<seed>-<time>):
the broker's log, a fault log, one TSV per publisher/consumer thread, and the
checker's report.  `checker.py OUTDIR` re-checks a finished run.
"""

import argparse
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pika
import pika.exceptions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checker  # noqa: E402
from common import (  # noqa: E402
    BODY_SIZE, DEAD_QUEUE, DLX, QUEUES, Recorder, body_for, body_ok, death_info,
)

log = logging.getLogger("chaos")

# Errors that mean "the connection or channel is gone": the worker reconnects.
# A channel closed by the broker (e.g. a 404 after a durable queue went missing)
# is treated the same way; the loss then shows up in the check.
CONNECTION_ERRORS = (
    pika.exceptions.AMQPError,
    OSError,
    AssertionError,  # pika asserts on some states after the socket died
)


# --------------------------------------------------------------------------
# The broker under test
# --------------------------------------------------------------------------

class Broker:
    """Starts, kills and restarts one Warren process on a fixed data dir.

    `epoch` counts starts; `kills` keeps the wall-clock time of every kill -9
    (the checker uses them to excuse lost transient messages).
    """

    def __init__(self, args, data_dir, out_dir, faults):
        self.bin = args.warren_bin
        self.port = args.port
        self.store = args.store
        self.data_dir = data_dir
        self.log_path = os.path.join(out_dir, "broker.log")
        self.faults = faults
        self.proc = None
        self.epoch = 0
        self.stopped = False  # SIGSTOP'd
        self.lock = threading.Lock()

    def start(self, timeout=60):
        """Start the broker and wait until it accepts TCP connections."""
        with self.lock:
            self.epoch += 1
            logf = open(self.log_path, "ab")
            logf.write(f"\n===== start epoch {self.epoch} at {time.time():.3f} =====\n".encode())
            logf.flush()
            cmd = [self.bin, "--port", str(self.port), "--data-dir", self.data_dir,
                   "--store", self.store, "--no-management"]
            env = dict(os.environ, NO_COLOR="1")  # a readable broker.log
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
            logf.close()
            self.faults.record("start", f"epoch={self.epoch} pid={self.proc.pid}")
        if wait_for_port(self.port, timeout, self.proc):
            return True
        self.faults.record("start-failed", f"epoch={self.epoch} rc={self.proc.poll()}")
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        with self.lock:
            if not self.alive():
                return
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
                self.stopped = False
            self.proc.kill()
            self.proc.wait()
            self.faults.record("kill", f"epoch={self.epoch}")

    def sigstop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGSTOP)
            self.stopped = True
            self.faults.record("sigstop", "")

    def sigcont(self):
        if self.alive() and self.stopped:
            self.proc.send_signal(signal.SIGCONT)
            self.stopped = False
            self.faults.record("sigcont", "")

    def ensure_running(self, attempts=3):
        """Restart the broker if it is down (after a kill, or a crash we did
        not cause, which is recorded as such)."""
        if self.stopped:
            self.sigcont()
        if self.alive():
            return True
        if self.proc is not None and self.proc.returncode not in (None, -signal.SIGKILL):
            self.faults.record("unexpected-exit", f"epoch={self.epoch} rc={self.proc.returncode}")
        for _ in range(attempts):
            if self.start():
                return True
            self.kill9()
        return False

    def shutdown(self):
        """Graceful stop at the very end (SIGTERM, then SIGKILL)."""
        if not self.alive():
            return
        self.sigcont()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.faults.record("shutdown-timeout", "")


def wait_for_port(port, timeout, proc=None):
    """True once 127.0.0.1:port accepts a connection; False on timeout or if
    proc exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class FaultLog:
    """faults.tsv: wall time, event, detail.  Thread-safe."""

    def __init__(self, path):
        self.rec = Recorder(path)

    def record(self, event, detail):
        log.info("fault: %s %s", event, detail)
        self.rec.write("fault", event, detail, f"{time.time():.3f}")


# --------------------------------------------------------------------------
# The data directory on a small tmpfs, and the disk filler
# --------------------------------------------------------------------------

class DataDisk:
    """A tmpfs of --tmpfs-mb mounted at <out>/mnt, with the broker's data dir
    inside it and a filler file next to it.  Without --disk-fill (or when the
    mount fails) it is a plain directory and fill()/free() do nothing."""

    def __init__(self, out_dir, size_mb, use_tmpfs):
        self.mount = os.path.join(out_dir, "mnt")
        self.data_dir = os.path.join(self.mount, "warren")
        self.filler = os.path.join(self.mount, "filler")
        os.makedirs(self.mount, exist_ok=True)
        self.mounted = False
        if use_tmpfs:
            rc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                                 self.mount]).returncode
            self.mounted = rc == 0
            if not self.mounted:
                log.warning("could not mount a tmpfs at %s: disk faults disabled", self.mount)
        os.makedirs(self.data_dir, exist_ok=True)

    def fill(self):
        """Write zeros until the filesystem is full; returns bytes written."""
        if not self.mounted:
            return 0
        chunk = b"\0" * (1 << 20)
        written = 0
        with open(self.filler, "wb", buffering=0) as f:
            try:
                while True:
                    written += f.write(chunk)
            except OSError:
                pass
            # Top up the last partial block so not even a small write fits.
            try:
                while True:
                    written += f.write(b"\0" * 4096)
            except OSError:
                pass
        return written

    def free(self):
        try:
            os.unlink(self.filler)
        except FileNotFoundError:
            pass

    def usage(self):
        st = os.statvfs(self.mount)
        return (st.f_blocks - st.f_bavail) * st.f_frsize, st.f_blocks * st.f_frsize

    def unmount(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.mount])
            self.mounted = False


# --------------------------------------------------------------------------
# The fault schedule
# --------------------------------------------------------------------------

def fault_schedule(rng, args):
    """[(offset_seconds, action)] sorted by offset, derived from the seed only.

    Kills fall in the middle 10%..85% of the run; the disk fill starts in
    30%..60% and is freed --fill-secs later; SIGSTOPs are anywhere."""
    d = args.duration
    events = [(rng.uniform(0.10 * d, 0.85 * d), "kill") for _ in range(args.kills)]
    if args.disk_fill == "on":
        t = rng.uniform(0.30 * d, 0.60 * d)
        events += [(t, "fill"), (t + args.fill_secs, "free")]
    for _ in range(args.sigstops):
        t = rng.uniform(0.10 * d, 0.85 * d)
        events += [(t, "sigstop"), (t + rng.uniform(2, 6), "sigcont")]
    return sorted(events)


def run_faults(broker, disk, schedule, t0, stop, faults, rng):
    """Executes the schedule.  Between events it watches the broker: an exit
    we did not cause is recorded and the broker restarted."""
    for offset, action in schedule:
        while not stop.is_set() and time.time() < t0 + offset:
            if not broker.alive() and not broker.stopped:
                broker.ensure_running()
            stop.wait(0.5)
        if stop.is_set():
            return
        if action == "kill":
            broker.kill9()
            # Restart at once or after a short pause: clients see both a fast
            # bounce and a longer outage.
            stop.wait(rng.uniform(0, 3))
            if not broker.ensure_running():
                faults.record("restart-failed", f"epoch={broker.epoch}")
        elif action == "fill":
            n = disk.fill()
            faults.record("fill", f"bytes={n}")
        elif action == "free":
            disk.free()
            faults.record("free", "")
        elif action == "sigstop":
            broker.sigstop()
        elif action == "sigcont":
            broker.sigcont()
    while not stop.is_set():
        if not broker.alive() and not broker.stopped:
            broker.ensure_running()
        stop.wait(0.5)


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

def connect(port):
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=port,
        heartbeat=10,                 # notice a dead (or SIGSTOP'd) broker
        blocked_connection_timeout=30,  # don't wait forever on connection.blocked
        socket_timeout=5, stack_timeout=15, connection_attempts=1)
    return pika.BlockingConnection(params)


def declare_topology(ch, args):
    """The DLX, the dead-letter queue and every workload queue (idempotent)."""
    ch.exchange_declare(DLX, "fanout", durable=True)
    ch.queue_declare(DEAD_QUEUE, durable=True)
    ch.queue_bind(DEAD_QUEUE, DLX)
    for name, spec in QUEUES.items():
        ch.queue_declare(name, durable=True, arguments=spec["args"](args))


def close_quietly(conn):
    try:
        if conn is not None and conn.is_open:
            conn.close()
    except Exception:
        pass


def reconnect_pause(stop, rng):
    stop.wait(rng.uniform(0.2, 1.0))


class Counters:
    """Live totals for the progress line (the check uses the TSV files)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def snapshot(self):
        with self.lock:
            return dict(self.c)


def publisher(idx, args, stop, out_dir, counters, queues, weights, until_bytes=None):
    """Publishes with confirms, one message at a time, until stop (or until
    until_bytes of confirmed bodies for the backlog publisher).

    Each id is recorded as `sent` before basic_publish and then as exactly one
    of confirmed / nacked / unknown (the connection died before the answer)."""
    rng = random.Random(f"{args.seed}-pub-{idx}")
    rec = Recorder(os.path.join(out_dir, f"pub-{idx}.tsv"))
    seq = 0
    confirmed_bytes = 0
    conn = None
    while not stop.is_set():
        if until_bytes is not None and confirmed_bytes >= until_bytes:
            stop.wait(1)
            continue
        try:
            conn = connect(args.port)
            ch = conn.channel()
            declare_topology(ch, args)
            ch.confirm_delivery()
            while not stop.is_set():
                if until_bytes is not None and confirmed_bytes >= until_bytes:
                    break
                queue = rng.choices(queues, weights)[0]
                persistent = rng.random() < args.persistent_ratio
                seq += 1
                mid = f"p{idx}-{seq}"
                props = pika.BasicProperties(
                    message_id=mid, delivery_mode=2 if persistent else 1,
                    priority=rng.randint(0, 9) if QUEUES[queue].get("priority") else None,
                    headers={"q": queue})
                rec.write("sent", mid, queue, int(persistent), f"{time.time():.3f}")
                try:
                    ch.basic_publish("", queue, body_for(mid, queue), props)
                except pika.exceptions.NackError:
                    rec.write("nacked", mid, queue, int(persistent), f"{time.time():.3f}")
                    counters.add("nacked")
                    continue
                except CONNECTION_ERRORS as e:
                    rec.write("unknown", mid, queue, int(persistent), f"{time.time():.3f}")
                    counters.add("unknown")
                    raise e
                rec.write("confirmed", mid, queue, int(persistent), f"{time.time():.3f}")
                counters.add("confirmed")
                confirmed_bytes += BODY_SIZE
                if args.publish_pause:
                    stop.wait(rng.uniform(0, args.publish_pause))
        except CONNECTION_ERRORS as e:
            log.debug("publisher %s: %r", idx, e)
            counters.add("pub-reconnects")
            reconnect_pause(stop, rng)
        finally:
            close_quietly(conn)
    rec.close()


def record_delivery(rec, action, queue, method, props, body):
    """One consumer TSV line: action, id, queue consumed from, redelivered,
    body intact, and (for dead-lettered copies) the first death's queue/reason."""
    mid = props.message_id or "?"
    dq, reason = death_info(props)
    rec.write(action, mid, queue, int(method.redelivered), int(body_ok(mid, body)),
              dq, reason, f"{time.time():.3f}")


def consumer(name, queue, args, stop, out_dir, counters, mix, start_at=0.0):
    """A consumer that comes and goes: it consumes for a random spell with a
    random prefetch, acks most messages, nacks some back onto the queue,
    rejects some (to the DLX), then cancels, sometimes drops its connection,
    and pauses before the next spell.

    mix = (p_requeue, p_reject, p_away, max_away): chances per message of
    nack-requeue and reject-to-DLX, the chance of a pause after a spell, and
    how long that pause may be (seconds).  Every delivery is
    recorded before it is acked, so a kill of the broker between the two only
    causes a duplicate."""
    p_requeue, p_reject, p_away, max_away = mix
    rng = random.Random(f"{args.seed}-con-{name}")
    rec = Recorder(os.path.join(out_dir, f"con-{name}.tsv"))
    stop.wait(start_at)
    conn = None
    while not stop.is_set():
        try:
            if conn is None or not conn.is_open:
                conn = connect(args.port)
            ch = conn.channel()
            declare_topology(ch, args)
            ch.basic_qos(prefetch_count=rng.choice([1, 10, 50, 200]))
            spell_end = time.time() + rng.uniform(2, 12)
            for method, props, body in ch.consume(queue, inactivity_timeout=0.5):
                if stop.is_set() or time.time() > spell_end:
                    break
                if method is None:
                    continue
                r = rng.random()
                if r < p_requeue:
                    record_delivery(rec, "requeue", queue, method, props, body)
                    ch.basic_nack(method.delivery_tag, requeue=True)
                elif r < p_requeue + p_reject:
                    record_delivery(rec, "reject", queue, method, props, body)
                    ch.basic_reject(method.delivery_tag, requeue=False)
                else:
                    record_delivery(rec, "ack", queue, method, props, body)
                    ch.basic_ack(method.delivery_tag)
                    counters.add("acked")
            ch.cancel()  # requeues whatever was prefetched but not handled
            if rng.random() < 0.5:
                close_quietly(conn)
                conn = None
            else:
                ch.close()
            if rng.random() < p_away:
                stop.wait(rng.uniform(1, max_away))
        except CONNECTION_ERRORS as e:
            log.debug("consumer %s: %r", name, e)
            counters.add("con-reconnects")
            close_quietly(conn)
            conn = None
            reconnect_pause(stop, rng)
    close_quietly(conn)
    rec.close()


# --------------------------------------------------------------------------
# Drain
# --------------------------------------------------------------------------

class Drainer:
    """After the faults: consume every queue (acking everything) until all are
    empty, with deadlines, so a wedged broker is reported instead of hanging.

    Phase 1 leaves the TTL queue alone and waits for it to empty by expiry
    (each message dead-lettered to the DLX), within TTL + --expiry-grace.
    Phase 2 also consumes whatever is left in it.  A phase ends when every
    queue is empty and stayed so for a few seconds.  No delivery and no change
    in queue depths for --stall-secs while something is queued is a stall."""

    def __init__(self, args, out_dir, faults):
        self.args = args
        self.rec = Recorder(os.path.join(out_dir, "con-drain.tsv"))
        self.faults = faults
        self.result = {"finished": False}
        self.last_progress = time.time()
        self.delivered = 0

    def on_message(self, queue):
        def cb(ch, method, props, body):
            record_delivery(self.rec, "ack", queue, method, props, body)
            ch.basic_ack(method.delivery_tag)
            self.delivered += 1
            self.last_progress = time.time()
        return cb

    def depths(self, ch):
        out = {}
        for q in list(QUEUES) + [DEAD_QUEUE]:
            out[q] = ch.queue_declare(q, passive=True).method.message_count
        return out

    def run_phase(self, conn, skip, deadline, label):
        """Consume all queues but `skip`; return (empty, depths, stalled)."""
        ch = conn.channel()
        ch.basic_qos(prefetch_count=100)
        for q in list(QUEUES) + [DEAD_QUEUE]:
            if q not in skip:
                ch.basic_consume(q, self.on_message(q))
        probe = conn.channel()
        empty_since, prev = None, None
        while True:
            conn.process_data_events(time_limit=0.5)
            d = self.depths(probe)
            if d != prev:
                self.last_progress = time.time()
                prev = d
            now = time.time()
            if sum(d.values()) == 0:
                empty_since = empty_since or now
                if now - empty_since >= 3:
                    ch.close()
                    return True, d, False
            else:
                empty_since = None
            if now - self.last_progress > self.args.stall_secs:
                self.faults.record("drain-stall", f"{label} depths={d}")
                ch.close()
                return False, d, True
            if now > deadline:
                self.faults.record("drain-deadline", f"{label} depths={d}")
                ch.close()
                return False, d, False

    def run(self):
        a = self.args
        try:
            conn = connect(a.port)
            start = time.time()
            ttl_q = "chaos.ttl"
            ok1, d1, stall1 = self.run_phase(
                conn, {ttl_q}, start + a.ttl_ms / 1000 + a.expiry_grace, "expiry")
            self.result["expiry_phase"] = {"empty": ok1, "depths": d1, "stalled": stall1}
            ok2, d2, stall2 = self.run_phase(conn, set(), start + a.drain_timeout, "drain")
            self.result.update(finished=ok2, depths=d2, stalled=stall2,
                               delivered=self.delivered, secs=round(time.time() - start, 1))
            close_quietly(conn)
        except Exception as e:  # the broker died or misbehaved during the drain
            self.result.update(error=repr(e), delivered=self.delivered)
            self.faults.record("drain-error", repr(e))
        finally:
            self.rec.close()


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warren-bin", required=True)
    p.add_argument("--duration", type=float, default=240, help="seconds of workload + faults")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--kills", type=int, default=3, help="kill -9 + restart this many times")
    p.add_argument("--disk-fill", choices=["on", "off"], default="on")
    p.add_argument("--fill-secs", type=float, default=20, help="how long the disk stays full")
    p.add_argument("--sigstops", type=int, default=0, help="SIGSTOP/SIGCONT this many times")
    p.add_argument("--store", choices=["redb", "sled"], default="redb")
    p.add_argument("--port", type=int, default=5699)
    p.add_argument("--tmpfs-mb", type=int, default=128)
    p.add_argument("--out", default=None)
    p.add_argument("--publishers", type=int, default=3)
    p.add_argument("--persistent-ratio", type=float, default=0.8)
    p.add_argument("--publish-pause", type=float, default=0.0,
                   help="max random pause between publishes (pacing), seconds")
    p.add_argument("--backlog-mb", type=float, default=24,
                   help="confirmed MiB the backlog publisher puts on chaos.backlog")
    p.add_argument("--weights", type=parse_weights, default={},
                   help="publish mix, e.g. chaos.ttl=60,chaos.plain=10 (others keep their "
                        "defaults: plain 30, prio 20, ttl 20, maxlen.* 15)")
    p.add_argument("--ttl-ms", type=int, default=5000)
    p.add_argument("--max-length", type=int, default=500)
    p.add_argument("--expiry-grace", type=float, default=60)
    p.add_argument("--drain-timeout", type=float, default=300)
    p.add_argument("--stall-secs", type=float, default=60)
    p.add_argument("--keep-data", action="store_true", help="leave the tmpfs mounted")
    a = p.parse_args(argv)
    if a.seed is None:
        a.seed = random.randrange(1 << 31)
    return a


def parse_weights(text):
    """"chaos.ttl=60,chaos.plain=10" -> {"chaos.ttl": 60, "chaos.plain": 10}"""
    out = {}
    for item in filter(None, text.split(",")):
        name, _, w = item.partition("=")
        if name not in QUEUES or name == "chaos.backlog":
            raise argparse.ArgumentTypeError(f"not a mixed workload queue: {name}")
        out[name] = float(w)
    return out


def start_workers(args, stop, out_dir, counters):
    """Publishers spread over the mixed queues, one backlog publisher, and
    come-and-go consumers.  Returns the threads."""
    mixed = [q for q in QUEUES if q != "chaos.backlog"]
    weights = [args.weights.get(q, QUEUES[q]["weight"]) for q in mixed]
    threads = []

    def spawn(name, fn, *fargs):
        t = threading.Thread(target=fn, args=fargs, name=name, daemon=True)
        t.start()
        threads.append(t)

    for i in range(args.publishers):
        spawn(f"pub-{i}", publisher, i, args, stop, out_dir, counters, mixed, weights)
    spawn("pub-backlog", publisher, "backlog", args, stop, out_dir, counters,
          ["chaos.backlog"], [1], int(args.backlog_mb * (1 << 20)))
    for q, spec in QUEUES.items():
        for j, mix in enumerate(spec["consumers"]):
            # The backlog consumer starts late so the backlog builds up first.
            start_at = args.duration * 0.5 if q == "chaos.backlog" else 0.0
            spawn(f"con-{q}-{j}", consumer, f"{q}-{j}", q, args, stop, out_dir, counters,
                  mix, start_at)
    # The dead-letter queue's consumer never rejects (it has no DLX itself).
    spawn("con-dead", consumer, "dead-0", DEAD_QUEUE, args, stop, out_dir, counters,
          (0.02, 0.0, 0.3, 8))
    return threads


def progress(counters, broker, disk, t0):
    c = counters.snapshot()
    used, total = disk.usage() if disk.mounted else (0, 0)
    log.info("t=%4.0fs epoch=%d confirmed=%d nacked=%d unknown=%d acked=%d reconnects=%d/%d disk=%.0f/%.0fMiB",
             time.time() - t0, broker.epoch, c.get("confirmed", 0), c.get("nacked", 0),
             c.get("unknown", 0), c.get("acked", 0), c.get("pub-reconnects", 0),
             c.get("con-reconnects", 0), used / 2**20, total / 2**20)


def main(argv=None):
    args = parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = args.out or os.path.join(here, "out", f"{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(out_dir, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=[
        logging.StreamHandler(), logging.FileHandler(os.path.join(out_dir, "chaos.log"))])
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # reconnects are expected
    log.info("seed=%d out=%s", args.seed, out_dir)

    faults = FaultLog(os.path.join(out_dir, "faults.tsv"))
    disk = DataDisk(out_dir, args.tmpfs_mb, use_tmpfs=args.disk_fill == "on")
    broker = Broker(args, disk.data_dir, out_dir, faults)
    run = {"args": vars(args), "seed": args.seed, "warren_bin": os.path.abspath(args.warren_bin)}
    try:
        if not broker.ensure_running():
            raise SystemExit("the broker does not start")
        rng = random.Random(f"{args.seed}-faults")
        schedule = fault_schedule(rng, args)
        run["schedule"] = schedule
        log.info("fault schedule: %s", [(round(t), a) for t, a in schedule])

        stop_faults, stop_work = threading.Event(), threading.Event()
        counters = Counters()
        t0 = time.time()
        run["t_start"] = t0
        fault_thread = threading.Thread(target=run_faults, daemon=True, args=(
            broker, disk, schedule, t0, stop_faults, faults, rng))
        fault_thread.start()
        workers = start_workers(args, stop_work, out_dir, counters)
        while time.time() < t0 + args.duration:
            time.sleep(10)
            progress(counters, broker, disk, t0)

        # Faults off, disk freed, broker up: from here on it must behave.
        stop_faults.set()
        fault_thread.join(timeout=60)
        disk.free()
        broker.sigcont()
        faults.record("faults-stopped", "")
        run["broker_up_for_drain"] = broker.ensure_running()
        stop_work.set()
        stuck, join_deadline = [], time.time() + 30
        for t in workers:
            t.join(timeout=max(0.0, join_deadline - time.time()))
            if t.is_alive():
                stuck.append(t.name)
        run["stuck_workers"] = stuck
        if stuck:
            faults.record("workers-stuck", ",".join(stuck))
        run["t_publish_end"] = time.time()
        progress(counters, broker, disk, t0)

        drainer = Drainer(args, out_dir, faults)
        dt = threading.Thread(target=drainer.run, daemon=True)
        dt.start()
        dt.join(timeout=args.drain_timeout + args.expiry_grace + args.ttl_ms / 1000 + 60)
        if dt.is_alive():
            drainer.result["hung"] = True
            faults.record("drain-hung", "")
        run["drain"] = drainer.result
        run["final_epoch"] = broker.epoch
        log.info("drain: %s", drainer.result)
    finally:
        broker.shutdown()
        if not args.keep_data:
            disk.unmount()
        with open(os.path.join(out_dir, "run.json"), "w") as f:
            json.dump(run, f, indent=1, default=str)

    report = checker.check(out_dir)
    print(report["text"])
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
