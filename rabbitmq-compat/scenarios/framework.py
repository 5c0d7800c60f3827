"""Scenario framework for the RabbitMQ/Warren differential suite.

A *scenario* is a small client program that talks to one broker and records
what the client observes (returned values, delivered messages, errors with
reply code/text, which channel or connection was closed ...).  The same
scenario runs against RabbitMQ (the oracle) and Warren; the recorded
*observations* must be equal.

Writing a Python scenario (see README.md for the full story)::

    from scenarios.framework import scenario

    @scenario("queue")                      # area; name = function name
    def purge_counts(ctx):
        ch = ctx.connect().channel()
        q = ctx.queue("q")                  # "<scenario name>.q", deleted afterwards
        ch.queue_declare(q)
        ctx.record("declare", ch.queue_declare(q, passive=True))
        ctx.attempt("purge missing", ch.queue_purge, ctx.queue("nope"))

The function runs in a forked child process with a timeout; the runner
deletes every queue/exchange the scenario registered with ctx.queue() /
ctx.exchange() when the child has finished (even after a timeout or crash).

External programs (Node, Rust, ...) are registered with ``external()``; they
get the URL and the name prefix and print one JSON object (the observation)
on stdout.
"""
import datetime
import decimal
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import traceback

# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------
REGISTRY = {}          # name -> Scenario, in registration order
DEFAULT_TIMEOUT = float(os.environ.get("COMPAT_SCENARIO_TIMEOUT", "10"))


class Scenario:
    def __init__(self, name, area, client, func=None, argv=None, cwd=None,
                 timeout=DEFAULT_TIMEOUT, queues=(), exchanges=(), doc="", restart=False):
        self.name = name
        self.restart = restart  # restarts the broker (needs the restart hook)
        self.area = area
        self.client = client
        self.func = func
        self.argv = argv
        self.cwd = cwd
        self.timeout = timeout
        self.queues = list(queues)
        self.exchanges = list(exchanges)
        self.doc = doc

    @property
    def prefix(self):
        """Prefix for every queue/exchange name the scenario uses."""
        return "compat." + self.name


def _client_of(module_name):
    # scenarios.pika_blocking.queue -> "pika"; scenarios.raw.frames -> "raw"
    parts = module_name.split(".")
    pkg = parts[1] if len(parts) > 1 and parts[0] == "scenarios" else parts[0]
    return CLIENT_NAMES.get(pkg, pkg)


CLIENT_NAMES = {"pika_blocking": "pika", "raw": "raw", "pika_async": "pika-async",
                "kombu_client": "kombu", "aio_pika_client": "aio-pika", "amqplib": "amqplib"}


def _register(s):
    if s.name in REGISTRY:
        raise ValueError(f"duplicate scenario name {s.name}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", s.name):
        raise ValueError(f"bad scenario name {s.name!r} (use a-z 0-9 . _ -)")
    REGISTRY[s.name] = s
    return s


def scenario(area, name=None, timeout=DEFAULT_TIMEOUT, client=None, restart=False):
    """Decorator: register ``func(ctx)`` as scenario ``<client>.<area>.<name>``.

    The client is derived from the package (scenarios/pika_blocking -> pika,
    scenarios/raw -> raw) unless given; the name defaults to the function
    name with '_' replaced by '-'.  ``restart=True`` marks a scenario that
    restarts the broker with ``ctx.restart_broker()`` (see restart_broker()).
    """
    def deco(func):
        cl = client or _client_of(func.__module__)
        nm = name or func.__name__.strip("_").replace("_", "-")
        _register(Scenario(f"{cl}.{area}.{nm}", area, cl, func=func, timeout=timeout,
                           doc=(func.__doc__ or "").strip(), restart=restart))
        return func
    return deco


def external(area, name, argv, client, cwd=None, timeout=DEFAULT_TIMEOUT,
             queues=(), exchanges=(), doc="", restart=False):
    """Register an external program as scenario ``<client>.<area>.<name>``.

    The program is run as ``argv + [URL, PREFIX]`` with the environment
    variables COMPAT_URL and COMPAT_PREFIX set as well.  It must use names
    starting with PREFIX for everything it declares, and print one JSON
    object (its observation) as the last line of stdout.  An optional
    top-level key "_resources": {"queues": [...], "exchanges": [...]} in that
    object names what the runner should delete afterwards (it is removed from
    the observation); ``queues``/``exchanges`` given here (suffixes, joined to
    PREFIX with '.') are deleted too.  A non-zero exit status is recorded in
    the observation as "exit status".  ``restart=True``: the program restarts
    the broker by running the shell command in COMPAT_RESTART_CMD (see
    restart_broker()).
    """
    return _register(Scenario(f"{client}.{area}.{name}", area, client, argv=list(argv),
                              cwd=cwd, timeout=timeout, queues=queues, exchanges=exchanges,
                              doc=doc, restart=restart))


# Report order of areas; areas not listed come after these, alphabetically.
AREA_ORDER = ["connection", "handshake", "channel", "exchange", "queue", "queue-features", "basic",
              "confirms", "tx", "reply-to", "patterns", "celery", "large", "frames", "tables", "restart",
              "access"]
CLIENT_ORDER = ["pika", "pika-async", "kombu", "aio-pika", "amqplib", "raw", "http"]


def load_all():
    """Import every module under scenarios/ so that they register; return
    the registry ordered by area (AREA_ORDER), then client, then definition
    order."""
    import importlib
    import pkgutil
    import scenarios
    for mod in pkgutil.walk_packages(scenarios.__path__, "scenarios."):
        if mod.name.split(".")[-1].startswith("_"):
            continue
        importlib.import_module(mod.name)
    pos = {n: i for i, n in enumerate(REGISTRY)}

    def key(s):
        a = AREA_ORDER.index(s.area) if s.area in AREA_ORDER else len(AREA_ORDER)
        c = CLIENT_ORDER.index(s.client) if s.client in CLIENT_ORDER else len(CLIENT_ORDER)
        return (a, s.area, c, s.client, pos[s.name])
    ordered = sorted(REGISTRY.values(), key=key)
    REGISTRY.clear()
    REGISTRY.update((s.name, s) for s in ordered)
    return REGISTRY


# ---------------------------------------------------------------------------
# the broker restart hook
# ---------------------------------------------------------------------------
# run_scenarios.py --restart-cmd CMD puts CMD here (and external programs get
# it in their environment).  For RabbitMQ it is `rabbitmq.sh restart`, for
# Warren `warren.sh restart` (run.sh passes both); it must return only when
# the broker accepts AMQP connections again.
RESTART_ENV = "COMPAT_RESTART_CMD"
RESTART_TIMEOUT = float(os.environ.get("COMPAT_RESTART_TIMEOUT", "90"))


class RestartError(RuntimeError):
    pass


def restart_broker():
    """Restart the broker under test with the shell command in
    $COMPAT_RESTART_CMD and wait for it to finish (the command returns when
    the broker is back).  The command runs in its own session, so a scenario
    timeout does not kill it half-way, and its output goes to stderr (the
    runner's log).  Raises RestartError when there is no hook or it fails."""
    cmd = os.environ.get(RESTART_ENV)
    if not cmd:
        raise RestartError(f"no restart hook: {RESTART_ENV} is not set (run_scenarios.py --restart-cmd)")
    sys.stderr.flush()
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, shell=True, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                           stderr=sys.stderr.fileno(), start_new_session=True,
                           timeout=RESTART_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as e:
        raise RestartError(f"restart command did not finish within {RESTART_TIMEOUT:g}s") from e
    if r.returncode != 0:
        raise RestartError(f"restart command exited with {r.returncode}")
    sys.stderr.write(f"[restart] broker restarted in {time.monotonic() - t0:.1f}s\n")
    return time.monotonic() - t0


def wait_for_broker(url, timeout=60.0):
    """Wait until the broker at url completes an AMQP handshake (after a
    scenario that restarted it).  Returns True when it does."""
    import pika
    deadline = time.monotonic() + timeout
    while True:
        try:
            p = pika.URLParameters(url)
            p.connection_attempts = 1
            p.socket_timeout = 2
            c = pika.BlockingConnection(p)
            c.close()
            return True
        except Exception:  # noqa: BLE001
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


# ---------------------------------------------------------------------------
# JSON conversion and normalisation
# ---------------------------------------------------------------------------
def jsonable(v):
    """Turn client values into JSON values, keeping type information that
    matters for AMQP (bytes vs str, Decimal, timestamps)."""
    from .pikautil import describe  # late import: pika objects
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        return "b" + repr(b)[1:] if len(b) <= 200 else f"<{len(b)} bytes>"
    if isinstance(v, decimal.Decimal):
        return f"Decimal({str(v)!r})"
    if isinstance(v, datetime.datetime):
        return f"timestamp({v.isoformat()})"
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    d = describe(v)
    if d is not v:
        return jsonable(d)
    return repr(v)


_NAME_PATTERNS = [
    # (regex, label)  -- label gets a per-observation sequence number
    (re.compile(r"amq\.rabbitmq\.reply-to\.[A-Za-z0-9_\-.=+/]+"), "amq.rabbitmq.reply-to."),
    (re.compile(r"amq\.gen-[A-Za-z0-9_\-]+"), "amq.gen-"),
    (re.compile(r"amq\.ctag-[A-Za-z0-9_\-]+"), "amq.ctag-"),
    (re.compile(r"\bctag\d+\.[0-9a-f]{32}\b"), "pika-ctag"),
]
_ADDR = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}:\d+\b")
_OBJ_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")


class Normaliser:
    """Replaces server-generated names with stable placeholders.  Within one
    observation the same name always gets the same placeholder, so equality
    between names (e.g. reply_to == the queue declared) is kept."""

    def __init__(self):
        self.seen = {}

    def name(self, label, text):
        key = (label, text)
        if key not in self.seen:
            n = sum(1 for (l, _t) in self.seen if l == label) + 1
            if label in ("amq.gen-", "amq.ctag-"):
                self.seen[key] = f"{label}<#{n},{len(text) - len(label)} chars>"
            elif label == "pika-ctag":
                self.seen[key] = f"ctag<#{n}>"
            else:
                self.seen[key] = f"{label}<#{n}>"
        return self.seen[key]

    def text(self, s):
        for rx, label in _NAME_PATTERNS:
            s = rx.sub(lambda m, label=label: self.name(label, m.group(0)), s)
        return _OBJ_ADDR.sub(" at 0x...", _ADDR.sub("<addr>", s))

    def __call__(self, v):
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {self.text(k): self(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self(x) for x in v]
        return v


def normalise(obs):
    return Normaliser()(obs)


# ---------------------------------------------------------------------------
# running one scenario (parent side)
# ---------------------------------------------------------------------------
class _Sink:
    """Child side of the pipe: streams observations and resources."""

    def __init__(self, conn):
        self.conn = conn

    def send(self, *msg):
        try:
            self.conn.send(msg)
        except (BrokenPipeError, OSError):
            pass


def _child(sc, url, conn):
    # new process group: a timeout kills everything the scenario started
    os.setpgrp()
    sink = _Sink(conn)
    from .context import Ctx
    ctx = Ctx(sc, url, sink)
    try:
        ret = sc.func(ctx)
        if ret is not None:
            ctx.record("return", ret)
    except Exception as e:  # noqa: BLE001
        ctx.record("uncaught", ctx.describe_exception(e))
        sys.stderr.write(f"[{sc.name}] uncaught exception:\n{traceback.format_exc()}")
    finally:
        try:
            ctx.close_all()
        except Exception:  # noqa: BLE001
            pass
    sink.send("done")
    conn.close()
    os._exit(0)


def _run_python(sc, url, log):
    mp = multiprocessing.get_context("fork")
    parent, child = mp.Pipe(duplex=False)
    p = mp.Process(target=_child, args=(sc, url, child), daemon=True)
    p.start()
    child.close()
    obs, queues, exchanges = {}, set(), set()
    deadline = time.monotonic() + sc.timeout
    done = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            if not parent.poll(min(left, 0.5)):
                if not p.is_alive() and not parent.poll(0):
                    break
                continue
            msg = parent.recv()
        except (EOFError, OSError):
            break
        kind = msg[0]
        if kind == "obs":
            obs[msg[1]] = msg[2]
        elif kind == "res":
            (queues if msg[1] == "queue" else exchanges).add(msg[2])
        elif kind == "done":
            done = True
            break
    if not done:
        if p.is_alive():
            obs["timeout"] = f"no result within {sc.timeout:g}s"
            log(f"[{sc.name}] TIMEOUT after {sc.timeout:g}s")
        else:
            obs["crashed"] = f"child exited with {p.exitcode}"
    _kill_group(p.pid)
    p.join(5)
    parent.close()
    return obs, queues, exchanges


def _kill_group(pid):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _run_external(sc, url, log):
    env = dict(os.environ, COMPAT_URL=url, COMPAT_PREFIX=sc.prefix)
    obs = {}
    queues = {f"{sc.prefix}.{q}" for q in sc.queues}
    exchanges = {f"{sc.prefix}.{x}" for x in sc.exchanges}
    try:
        p = subprocess.Popen(sc.argv + [url, sc.prefix], cwd=sc.cwd, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        return {"crashed": f"cannot start {sc.argv[0]}: {e}"}, queues, exchanges
    try:
        out, err = p.communicate(timeout=sc.timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p.pid)
        out, err = p.communicate()
        obs["timeout"] = f"no result within {sc.timeout:g}s"
        log(f"[{sc.name}] TIMEOUT after {sc.timeout:g}s")
    if err.strip():
        log(f"[{sc.name}] stderr:\n{err.decode('utf-8', 'replace').rstrip()}")
    lines = [l for l in out.decode("utf-8", "replace").splitlines() if l.strip()]
    if lines:
        try:
            res = json.loads(lines[-1])
            if isinstance(res, dict):
                r = res.pop("_resources", {}) or {}
                queues |= set(r.get("queues", []))
                exchanges |= set(r.get("exchanges", []))
                res.update(obs)
                obs = res
            else:
                obs["output"] = res
        except ValueError:
            obs["unparsable output"] = lines[-1][:500]
    elif "timeout" not in obs:
        obs["no output"] = True
    if p.returncode not in (0, None) and "timeout" not in obs:
        obs["exit status"] = p.returncode
    return obs, queues, exchanges


def cleanup(url, queues, exchanges, log):
    """Delete what a scenario declared (ignores every error)."""
    if not queues and not exchanges:
        return
    import pika
    try:
        p = pika.URLParameters(url)
        p.connection_attempts = 1
        p.socket_timeout = 5
        c = pika.BlockingConnection(p)
    except Exception as e:  # noqa: BLE001
        log(f"  cleanup: cannot connect: {e!r}")
        return
    ch = None
    try:
        for kind, names in (("queue", sorted(queues)), ("exchange", sorted(exchanges))):
            for n in names:
                try:
                    if ch is None or not ch.is_open:
                        ch = c.channel()
                    if kind == "queue":
                        ch.queue_delete(queue=n)
                    else:
                        ch.exchange_delete(exchange=n)
                except Exception:  # noqa: BLE001
                    ch = None
                    if not c.is_open:
                        return
    finally:
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass


def run_one(sc, url, log=lambda s: None):
    t0 = time.monotonic()
    if sc.restart and not os.environ.get(RESTART_ENV):
        # without the hook the scenario cannot run; recorded, so it fails the comparison
        return {"skipped": "needs the broker restart hook (run_scenarios.py --restart-cmd)"}, 0.0
    if sc.func is not None:
        obs, queues, exchanges = _run_python(sc, url, log)
    else:
        obs, queues, exchanges = _run_external(sc, url, log)
    if sc.restart and not wait_for_broker(url):
        log(f"[{sc.name}] the broker did not come back after the restart")
        obs["broker down after the scenario"] = True
    cleanup(url, queues, exchanges, log)
    return normalise(obs), time.monotonic() - t0
