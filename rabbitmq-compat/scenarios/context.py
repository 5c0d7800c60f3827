"""The ``ctx`` object every Python scenario receives.

    ctx.url                     broker URL
    ctx.name / ctx.prefix       scenario name / prefix for resource names
    ctx.queue("q")              -> "<prefix>.q"; deleted by the runner afterwards
    ctx.exchange("x")           -> "<prefix>.x"; deleted by the runner afterwards
    ctx.connect(**params)       pika BlockingConnection (URL parameters overridden
                                by keyword, e.g. heartbeat=0, frame_max=4096);
                                closed at the end of the scenario
    ctx.record(key, value)      add one entry to the observation (pika frames,
                                properties, bytes, Decimal ... are described)
    ctx.attempt(key, fn, *a, **kw)
                                call fn and record either {"ok": result} or the
                                error (see error_dict); returns the result or None
    with ctx.error(key): ...    run a block that is expected to fail; records the
                                error (or "no error")
    ctx.msg(method, props, body)
                                a delivered / got / returned message as a dict
    ctx.wait(conn, pred, timeout)
                                process pika events until pred() is true
    ctx.settle(conn, seconds)   process events for a fixed short time (lets
                                stray deliveries arrive before counting)
    ctx.restart_broker()        restart the broker under test (only in scenarios
                                registered with restart=True); returns when it
                                accepts connections again
"""
import contextlib
import time

import pika
from pika import exceptions as pex

from . import pikautil
from . import framework
from .framework import jsonable
from .pikautil import LAST, method_name


class Ctx:
    def __init__(self, sc, url, sink):
        self.sc = sc
        self.url = url
        self.name = sc.name
        self.prefix = sc.prefix
        self._sink = sink
        self._keys = set()
        self.conns = []

    # ---- resources -------------------------------------------------------
    def queue(self, suffix):
        n = f"{self.prefix}.{suffix}"
        self._sink.send("res", "queue", n)
        return n

    def exchange(self, suffix):
        n = f"{self.prefix}.{suffix}"
        self._sink.send("res", "exchange", n)
        return n

    # ---- connections -----------------------------------------------------
    def params(self, **over):
        p = pika.URLParameters(self.url)
        p.connection_attempts = 1
        p.socket_timeout = 5
        p.blocked_connection_timeout = 10
        for k, v in over.items():
            setattr(p, k, v)
        return p

    def connect(self, **over):
        c = pika.BlockingConnection(self.params(**over))
        self.conns.append(c)
        return c

    def close_all(self):
        for c in self.conns:
            try:
                if c.is_open:
                    c.close()
            except Exception:  # noqa: BLE001
                pass
        self.conns = []

    def restart_broker(self):
        """Restart the broker (the runner's restart hook, see
        framework.restart_broker()); raises RestartError without a hook."""
        if not self.sc.restart:
            raise framework.RestartError(f"{self.name} is not registered with restart=True")
        return framework.restart_broker()

    # ---- observations ----------------------------------------------------
    def record(self, key, value):
        k, i = key, 2
        while k in self._keys:
            k = f"{key} #{i}"
            i += 1
        self._keys.add(k)
        self._sink.send("obs", k, jsonable(value))
        return value

    def describe_exception(self, e):
        return error_dict(e)

    def attempt(self, key, fn, *args, **kwargs):
        LAST["close"] = None
        try:
            r = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self.record(key, error_dict(e))
            return None
        self.record(key, {"ok": r})
        return r

    @contextlib.contextmanager
    def error(self, key):
        LAST["close"] = None
        try:
            yield
        except Exception as e:  # noqa: BLE001
            self.record(key, error_dict(e))
        else:
            self.record(key, "no error")

    # ---- messages --------------------------------------------------------
    @staticmethod
    def msg(method, props=None, body=None):
        """Describe a basic.deliver / basic.get-ok / basic.return + content."""
        if method is None:
            return "basic.get-empty"
        m = method.method if isinstance(method, pika.frame.Method) else method
        d = {"method": pikautil.amqp_name(m)}
        for k in ("consumer_tag", "delivery_tag", "redelivered", "reply_code", "reply_text",
                  "exchange", "routing_key", "message_count"):
            if hasattr(m, k):
                d[k] = getattr(m, k)
        if props is not None:
            pd = pikautil.props_dict(props)
            if pd:
                d["props"] = pd
        if body is not None:
            d["body"] = body
        return d

    @staticmethod
    def wait(conn, pred, timeout=5.0, step=0.05):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            conn.process_data_events(time_limit=min(step, left))
        return True

    @staticmethod
    def settle(conn, seconds=0.3):
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            conn.process_data_events(time_limit=left)

    def consume_n(self, conn, ch, queue, n, timeout=5.0, settle=0.3, **kw):
        """basic.consume on queue, collect n deliveries (described), wait
        `settle` s more for extras, cancel.  Extra kwargs go to basic_consume."""
        got = []
        kw.setdefault("auto_ack", True)
        tag = ch.basic_consume(queue=queue,
                               on_message_callback=lambda c, m, p, b: got.append(self.msg(m, p, b)),
                               **kw)
        self.wait(conn, lambda: len(got) >= n, timeout)
        self.settle(conn, settle)
        if ch.is_open:
            ch.basic_cancel(tag)
        return got

    def get_all(self, ch, queue, auto_ack=True, limit=100):
        """basic.get until get-empty; returns the described messages."""
        out = []
        for _ in range(limit):
            m, p, b = ch.basic_get(queue=queue, auto_ack=auto_ack)
            if m is None:
                break
            out.append(self.msg(m, p, b))
        return out


def counts(ch, queue, settle=0.15):
    """[message_count, consumer_count] from a passive queue.declare, after a
    short pause.  RabbitMQ answers queue.declare from the queue process with
    priority over messages still in its mailbox (publishes, acks, requeues),
    so without the pause its counts race with what was just sent."""
    time.sleep(settle)
    d = ch.queue_declare(queue, passive=True)
    return [d.method.message_count, d.method.consumer_count]


def error_dict(e):
    """What the client observed when something failed: who closed what, with
    which reply code/text and which method the close frame names."""
    d = {"exc": type(e).__name__}
    close = LAST.get("close")
    if isinstance(e, pex.ChannelClosedByBroker):
        d.update(closed="channel", code=e.reply_code, text=e.reply_text)
    elif isinstance(e, pex.ConnectionClosedByBroker):
        d.update(closed="connection", code=e.reply_code, text=e.reply_text)
    elif isinstance(e, (pex.ChannelClosedByClient, pex.ConnectionClosedByClient)):
        d.update(closed="by-client", code=e.reply_code, text=e.reply_text)
    elif isinstance(e, pex.AMQPConnectionError) and e.args and isinstance(
            e.args[0], pex.ConnectionClosedByBroker):
        inner = e.args[0]
        d.update(closed="connection", code=inner.reply_code, text=inner.reply_text)
    else:
        d["detail"] = str(e)[:300]
    if close is not None and "code" in d and d.get("closed") in ("channel", "connection"):
        d["method"] = method_name(close[1].class_id, close[1].method_id)
    return d
