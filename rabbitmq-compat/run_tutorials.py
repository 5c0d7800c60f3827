#!/usr/bin/env python3
"""Run the six RabbitMQ tutorials (Python/pika and JavaScript/amqplib) against
an AMQP broker and record what each program prints, or compare two recordings.

    run_tutorials.py --url amqp://guest:guest@127.0.0.1:5673/ --out actual.json
    run_tutorials.py --compare expected.json actual.json

The tutorial programs under tutorials/ are the official ones with one change:
the broker address comes from $AMQP_URL.  They never exit on their own when
they are consumers, so this driver owns their lifetime: it starts the
consumers in the background, waits until they are subscribed, runs the
producers one after another, waits until the expected output has appeared
(or a timeout passes) and then kills the consumers.

Output normalisation (so that two correct brokers give identical JSON):
  * server-named queues "amq.gen-<random>" become "amq.gen-<N chars>" (the
    length is kept, so a differently shaped name still shows up);
  * output of processes that run in parallel on the same queue (the two work
    queue workers) is merged and sorted, and summarised as "how many workers
    got at least one message";
  * everything else is compared verbatim, line by line, per process.

Only the standard library and pika are used.
"""
import argparse
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TUT = os.path.join(HERE, "tutorials")
DEFAULT_TIMEOUT = float(os.environ.get("COMPAT_SCENARIO_TIMEOUT", "30"))


# --------------------------------------------------------------------------
# process handling
# --------------------------------------------------------------------------
class Proc:
    """A tutorial program with its stdout/stderr collected line by line."""

    def __init__(self, name, argv, cwd, env, log):
        self.name = name
        self.argv = argv
        self.lines = []
        self.err = []
        self.lock = threading.Lock()
        self.log = log
        log(f"  start {name}: {' '.join(argv)}")
        self.p = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        self.t_out = threading.Thread(target=self._pump, args=(self.p.stdout, self.lines), daemon=True)
        self.t_err = threading.Thread(target=self._pump, args=(self.p.stderr, self.err), daemon=True)
        self.t_out.start()
        self.t_err.start()
        self.killed = False

    def _pump(self, stream, sink):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self.lock:
                sink.append(line)
        stream.close()

    def snapshot(self):
        with self.lock:
            return list(self.lines)

    def count(self, regex):
        r = re.compile(regex)
        return sum(1 for l in self.snapshot() if r.search(l))

    def wait_exit(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.p.poll() is None:
            self.killed = True
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait_exit(3) is None:
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait()
        self.t_out.join(5)
        self.t_err.join(5)

    def result_lines(self, is_consumer):
        out = self.snapshot()
        rc = self.p.returncode
        if is_consumer:
            if not self.killed:
                out.append(f"<consumer exited on its own with status {rc}>")
        elif rc != 0:
            out.append(f"<exit status {rc}>")
        return out


def wait_until(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# --------------------------------------------------------------------------
# broker helpers (pika) -- used only for hygiene and readiness checks
# --------------------------------------------------------------------------
TUTORIAL_QUEUES = ["hello", "task_queue", "rpc_queue"]
TUTORIAL_EXCHANGES = ["logs", "direct_logs", "topic_logs"]


def _connect(url, attempts=3):
    import pika
    params = pika.URLParameters(url)
    params.connection_attempts = attempts
    params.retry_delay = 1
    params.socket_timeout = 5
    return pika.BlockingConnection(params)


def reset_broker_state(url, log):
    """Delete the tutorial queues/exchanges so that every scenario starts from
    the same state (left-over messages from an earlier run would change what
    the consumers print)."""
    import pika
    try:
        conn = _connect(url)
    except Exception as e:  # noqa: BLE001
        log(f"  reset: cannot connect: {e!r}")
        return
    try:
        for kind, names in (("queue", TUTORIAL_QUEUES), ("exchange", TUTORIAL_EXCHANGES)):
            for name in names:
                ch = conn.channel()
                try:
                    if kind == "queue":
                        ch.queue_delete(queue=name)
                    else:
                        ch.exchange_delete(exchange=name)
                    ch.close()
                except pika.exceptions.AMQPChannelError as e:
                    log(f"  reset: delete {kind} {name}: {e!r}")
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


def consumer_count(url, queue):
    import pika
    try:
        conn = _connect(url, attempts=1)
    except Exception:  # noqa: BLE001
        return -1
    try:
        ch = conn.channel()
        ok = ch.queue_declare(queue=queue, passive=True)
        return ok.method.consumer_count
    except pika.exceptions.AMQPError:
        return -1
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------
# A scenario is: consumers (started in the background, in order), producers
# (run one after the other, each must exit), and "done" conditions: regex
# counts that the consumers' output must reach before they are killed.
#
# Program names are given without extension; the client decides .py / .js.
WORK_MESSAGES = ["First message.", "Second message..", "Third message.", "Fourth message."]

SCENARIOS = [
    {
        "name": "1-hello-world",
        "consumers": [("receive", "receive", [])],
        "queue": "hello",
        "producers": [("send", "send", [])],
        "done": [("receive", r"\[x\] Received", 1)],
    },
    {
        "name": "2-work-queues",
        "consumers": [("worker1", "worker", []), ("worker2", "worker", [])],
        "queue": "task_queue",
        "producers": [("new_task", "new_task", [m]) for m in WORK_MESSAGES],
        "done": [(("worker1", "worker2"), r"\[x\] Done", len(WORK_MESSAGES))],
        "merge": {"workers (merged, sorted)": ("worker1", "worker2")},
    },
    {
        "name": "3-publish-subscribe",
        "consumers": [("receive_logs_1", "receive_logs", []), ("receive_logs_2", "receive_logs", [])],
        "producers": [("emit_log", "emit_log", ["info: Hello World!"]),
                      ("emit_log", "emit_log", ["warning: Second log line"])],
        "done": [("receive_logs_1", r"\[x\] .*(Hello World|Second log)", 2),
                 ("receive_logs_2", r"\[x\] .*(Hello World|Second log)", 2)],
    },
    {
        "name": "4-routing",
        "consumers": [("receive_logs_direct_warning_error", "receive_logs_direct", ["warning", "error"]),
                      ("receive_logs_direct_info", "receive_logs_direct", ["info"])],
        "producers": [("emit_log_direct", "emit_log_direct", ["error", "Run. Run. Or it will explode."]),
                      ("emit_log_direct", "emit_log_direct", ["info", "Just some info."]),
                      ("emit_log_direct", "emit_log_direct", ["debug", "Nobody listens to debug."]),
                      ("emit_log_direct", "emit_log_direct", ["warning", "Watch out."])],
        "done": [("receive_logs_direct_warning_error", r"\[x\] (error|warning)", 2),
                 ("receive_logs_direct_info", r"\[x\] info", 1)],
    },
    {
        "name": "5-topics",
        "consumers": [("receive_logs_topic_all", "receive_logs_topic", ["#"]),
                      ("receive_logs_topic_kern", "receive_logs_topic", ["kern.*"]),
                      ("receive_logs_topic_critical", "receive_logs_topic", ["*.critical"]),
                      ("receive_logs_topic_kern_critical", "receive_logs_topic", ["kern.*", "*.critical"]),
                      ("receive_logs_topic_lazy", "receive_logs_topic", ["lazy.#", "*.*.rabbit"])],
        "producers": [("emit_log_topic", "emit_log_topic", ["kern.critical", "A critical kernel error"]),
                      ("emit_log_topic", "emit_log_topic", ["cron.info", "Cron ran"]),
                      ("emit_log_topic", "emit_log_topic", ["kern.info", "Kernel info"]),
                      ("emit_log_topic", "emit_log_topic", ["lazy.orange.elephant", "Lazy orange elephant"]),
                      ("emit_log_topic", "emit_log_topic", ["quick.brown.rabbit", "Quick brown rabbit"]),
                      ("emit_log_topic", "emit_log_topic", ["auth.critical", "Auth failure"])],
        "done": [("receive_logs_topic_all", r"\[x\] ", 6),
                 ("receive_logs_topic_kern", r"\[x\] ", 2),
                 ("receive_logs_topic_critical", r"\[x\] ", 2),
                 ("receive_logs_topic_kern_critical", r"\[x\] ", 3),
                 ("receive_logs_topic_lazy", r"\[x\] ", 2)],
    },
    {
        "name": "6-rpc",
        "consumers": [("rpc_server", "rpc_server", [])],
        "queue": "rpc_queue",
        # the Python client always asks for fib(30); the JS one takes it as argument
        "producers": [("rpc_client", "rpc_client", ["30"])],
        "done": [("rpc_server", r"\[\.\] fib\(", 1)],
    },
]

READY_RE = r"Waiting for|Awaiting RPC"
GEN_RE = re.compile(r"amq\.gen-[A-Za-z0-9_\-]+")


def normalize_line(line):
    return GEN_RE.sub(lambda m: f"amq.gen-<{len(m.group(0)) - len('amq.gen-')} chars>", line)


def client_cmd(client, program, args, node_bin):
    if client == "python":
        return [sys.executable, "-u", os.path.join(TUT, "python", program + ".py")] + \
            ([] if program == "rpc_client" else args)
    return [node_bin, os.path.join(TUT, "javascript", program + ".js")] + args


def run_scenario(client, sc, url, timeout, node_bin, log):
    cwd = os.path.join(TUT, client)
    env = dict(os.environ, AMQP_URL=url, PYTHONUNBUFFERED="1")
    reset_broker_state(url, log)
    consumers = {}
    result = {}
    notes = []
    try:
        for pname, prog, args in sc["consumers"]:
            p = Proc(pname, client_cmd(client, prog, args, node_bin), cwd, env, log)
            consumers[pname] = p
            if not wait_until(lambda: p.count(READY_RE) >= 1 or p.p.poll() is not None, timeout):
                notes.append(f"{pname} never printed its ready line")
        # named queues: make sure the broker really has the consumers
        def all_alive():
            return all(p.p.poll() is None for p in consumers.values())

        if sc.get("queue") and all_alive():
            want = len(sc["consumers"])
            if not wait_until(lambda: consumer_count(url, sc["queue"]) >= want or not all_alive(),
                              timeout, 0.2):
                notes.append(f"queue {sc['queue']} never reached {want} consumers")
        # server-named queues: the ready line is printed right around the
        # bind/consume calls; give them a moment to land.
        time.sleep(0.5)

        producer_out = {}
        for pname, prog, args in sc["producers"]:
            p = Proc(pname, client_cmd(client, prog, args, node_bin), cwd, env, log)
            if p.wait_exit(timeout) is None:
                notes.append(f"producer {pname} {args} timed out")
                p.kill()
            p.t_out.join(5)
            p.t_err.join(5)
            if p.err:
                log(f"  {pname} stderr: " + " | ".join(p.err[-5:]))
            producer_out.setdefault(pname, []).extend(p.result_lines(is_consumer=False))

        def done():
            for who, regex, n in sc["done"]:
                names = who if isinstance(who, tuple) else (who,)
                if sum(consumers[x].count(regex) for x in names) < n:
                    return False
            return True

        if not wait_until(lambda: done() or not any(p.p.poll() is None for p in consumers.values()),
                          timeout) or not done():
            notes.append("timed out waiting for the consumers' expected output")
        # a short grace period lets any unexpected extra deliveries show up
        time.sleep(0.3)
    finally:
        for p in consumers.values():
            p.kill()
            if p.err:
                log(f"  {p.name} stderr: " + " | ".join(p.err[-5:]))

    merged = set()
    for label, names in sc.get("merge", {}).items():
        lines = []
        for x in names:
            lines.extend(consumers[x].result_lines(is_consumer=True))
            merged.add(x)
        result[label] = sorted(normalize_line(l) for l in lines)
        got = sum(1 for x in names if consumers[x].count(r"\[x\] Received") > 0)
        result[label.split(" ")[0] + " that got at least one message"] = [str(got)]
    for pname, p in consumers.items():
        if pname not in merged:
            result[pname] = [normalize_line(l) for l in p.result_lines(is_consumer=True)]
    for pname, lines in producer_out.items():
        result[pname] = [normalize_line(l) for l in lines]
    if notes:
        result["driver notes"] = notes
    return result


def run_all(url, out, clients, only, timeout, log):
    node_bin = shutil.which("node") or "node"
    if "javascript" in clients:
        js_dir = os.path.join(TUT, "javascript")
        if not os.path.isdir(os.path.join(js_dir, "node_modules", "amqplib")):
            log("installing amqplib (npm ci)")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=js_dir, check=True,
                           stdout=sys.stderr)
    results = {}
    for client in clients:
        for sc in SCENARIOS:
            key = f"{client}/{sc['name']}"
            if only and not any(o in key for o in only):
                continue
            log(f"== {key}")
            t0 = time.monotonic()
            results[key] = run_scenario(client, sc, url, timeout, node_bin, log)
            log(f"   ({time.monotonic() - t0:.1f}s)")
    reset_broker_state(url, log)
    with open(out, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    log(f"wrote {out}")
    return results


# --------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------
def compare(expected_path, actual_path):
    with open(expected_path) as f:
        expected = json.load(f)
    with open(actual_path) as f:
        actual = json.load(f)
    names = list(expected) + [k for k in actual if k not in expected]
    width = max([len(n) for n in names] + [8])
    passed = failed = 0
    details = []
    print(f"{'scenario'.ljust(width)}  result")
    print(f"{'-' * width}  ------")
    for name in names:
        if name not in expected:
            status = "FAIL (not in expected)"
        elif name not in actual:
            status = "FAIL (missing)"
        elif expected[name] == actual[name]:
            status = "PASS"
        else:
            status = "FAIL"
        if status == "PASS":
            passed += 1
        else:
            failed += 1
            e = json.dumps(expected.get(name), indent=2, sort_keys=True).splitlines()
            a = json.dumps(actual.get(name), indent=2, sort_keys=True).splitlines()
            details.append((name, list(difflib.unified_diff(
                e, a, f"expected {name}", f"actual {name}", lineterm=""))))
        print(f"{name.ljust(width)}  {status}")
    for name, diff in details:
        print()
        print(f"--- diff for {name} ---")
        print("\n".join(diff))
    print()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="AMQP URL of the broker to run the tutorials against")
    ap.add_argument("--out", default="tutorials-output.json", help="where to write the JSON (with --url)")
    ap.add_argument("--clients", default="python,javascript", help="comma separated: python,javascript")
    ap.add_argument("--only", action="append", default=[], help="run only scenarios whose key contains this")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="per-step timeout in seconds")
    ap.add_argument("--quiet", action="store_true", help="no progress log on stderr")
    ap.add_argument("--compare", nargs=2, metavar=("EXPECTED", "ACTUAL"),
                    help="compare two JSON recordings and print a PASS/FAIL table")
    a = ap.parse_args()

    if a.compare:
        sys.exit(compare(*a.compare))
    if not a.url:
        ap.error("give --url URL (record) or --compare EXPECTED ACTUAL")

    def log(msg):
        if not a.quiet:
            print(msg, file=sys.stderr, flush=True)

    clients = [c.strip() for c in a.clients.split(",") if c.strip()]
    for c in clients:
        if c not in ("python", "javascript"):
            ap.error(f"unknown client {c}")
    run_all(a.url, a.out, clients, a.only, a.timeout, log)


if __name__ == "__main__":
    main()
