"""kombu SimpleQueue, Message ack/reject/requeue, connection handling and
broker errors as kombu/py-amqp exceptions."""
import time

import kombu
from kombu import Consumer, Exchange, Producer, Queue
from kombu.exceptions import MessageStateError, OperationalError

from scenarios.framework import scenario

from ._util import attempt, connection, drain, kerr, kmsg


@scenario("basic")
def simple_queue_put_get(ctx):
    """kombu SimpleQueue: put dicts/strings, qsize, get (block), get_nowait
    on an empty queue raises Empty, clear() returns the purge count."""
    conn = connection(ctx)
    name = ctx.queue("simple")
    sq = conn.SimpleQueue(name)
    sq.put({"n": 1})
    sq.put("two", serializer="json")
    sq.put(b"three", content_type="application/data", content_encoding="binary")
    sq.put({"n": 4}, headers={"h": "v"}, priority=3)
    time.sleep(0.2)
    ctx.record("qsize", sq.qsize())
    sq.consumer.qos(prefetch_count=1)
    out = []
    for _ in range(4):
        m = sq.get(block=True, timeout=2)
        out.append(kmsg(m))
        m.ack()
    ctx.record("got", out)
    sq.close()
    sq = conn.SimpleQueue(name)
    for i in range(3):
        sq.put({"again": i})
    time.sleep(0.2)
    ctx.record("qsize before clear", sq.qsize())
    ctx.record("clear", sq.clear())
    try:
        sq.get_nowait()
        ctx.record("get_nowait on empty", "no error")
    except sq.Empty as e:
        ctx.record("get_nowait on empty", type(e).__name__)
    try:
        sq.get(block=True, timeout=0.3)
        ctx.record("get(timeout) on empty", "no error")
    except sq.Empty as e:
        ctx.record("get(timeout) on empty", type(e).__name__)
    sq.close()
    conn.release()


@scenario("basic")
def message_ack_reject_requeue(ctx):
    """kombu Message states through a Consumer with prefetch 10: ack,
    reject (dropped), requeue (redelivered=True later), double ack raises
    MessageStateError; counts at the end."""
    conn = connection(ctx)
    ch = conn.channel()
    q = Queue(ctx.queue("q"), routing_key=ctx.queue("q"))
    q(ch).declare()
    prod = Producer(ch)
    for i in range(4):
        prod.publish({"i": i}, routing_key=q.name, retry=False)
    time.sleep(0.2)
    log, msgs = [], []

    def on_message(body, message):
        msgs.append(message)
        log.append({"i": body["i"], "redelivered": message.delivery_info["redelivered"],
                    "delivery_tag": message.delivery_tag})

    cons = Consumer(ch, queues=[q], callbacks=[on_message], accept=["json"], prefetch_count=10)
    cons.consume()
    deadline = time.monotonic() + 2
    while len(msgs) < 4 and time.monotonic() < deadline:
        drain(conn, 0.2)
    by_i = {m.payload["i"]: m for m in msgs}
    by_i[0].ack()
    by_i[1].reject()
    by_i[2].requeue()
    states = {i: by_i[i]._state for i in (0, 1, 2, 3)}
    try:
        by_i[0].ack()
        states["double ack"] = "no error"
    except MessageStateError as e:
        states["double ack"] = f"MessageStateError: {e}"
    ctx.record("states", states)
    deadline = time.monotonic() + 2
    while len(msgs) < 5 and time.monotonic() < deadline:
        drain(conn, 0.2)
    drain(conn, 0.3)
    ctx.record("deliveries", log)
    for m in msgs[4:]:
        m.ack()
    cons.cancel()
    by_i[3].reject(requeue=True)
    time.sleep(0.2)
    m = q(ch).get(no_ack=True)
    ctx.record("left in queue", kmsg(m) if m else None)
    ctx.record("count after", q(ch).queue_declare(passive=True).message_count)
    conn.release()


@scenario("connection")
def kombu_ensure_connection(ctx):
    """Connection.ensure_connection against the broker (connected,
    transport, qos semantics, channel_max/frame_max as py-amqp negotiated)
    and against a closed port (max_retries=1: kombu OperationalError)."""
    conn = connection(ctx)
    errs = []
    conn.ensure_connection(max_retries=3, errback=lambda e, i: errs.append(type(e).__name__))
    c = conn.connection
    ctx.record("connected", {"connected": conn.connected, "transport": conn.transport_cls,
                             "errors before": errs,
                             "qos_semantics_matches_spec": conn.qos_semantics_matches_spec,
                             "channel_max": c.channel_max, "frame_max": c.frame_max,
                             "heartbeat": c.heartbeat,
                             "version": [c.version_major, c.version_minor],
                             "mechanisms": sorted(m.decode() if isinstance(m, bytes) else m
                                                  for m in (c.mechanisms or [])),
                             "locales": c.locales})
    caps = c.server_properties.get("capabilities", {})
    ctx.record("server capabilities", {k: caps[k] for k in sorted(caps)})
    ch = conn.default_channel
    ctx.record("default_channel id", ch.channel_id)
    conn.release()
    ctx.record("after release", conn.connected)
    bad = kombu.Connection("amqp://guest:guest@127.0.0.1:1//", connect_timeout=1)
    calls = []
    try:
        bad.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0,
                              errback=lambda e, i: calls.append(type(e).__name__))
        ctx.record("closed port", "no error")
    except OperationalError as e:
        ctx.record("closed port", {"exc": f"{type(e).__module__}.{type(e).__name__}",
                                   "errback calls": calls,
                                   "is connection error": isinstance(e, bad.connection_errors)})
    wrong = kombu.Connection(ctx.url.replace("guest:guest", "guest:wrong"), connect_timeout=3)
    try:
        wrong.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0)
        ctx.record("wrong password", "no error")
    except Exception as e:  # noqa: BLE001
        ctx.record("wrong password", kerr(e))


@scenario("queue")
def kombu_declare_errors(ctx):
    """Declare errors as kombu surfaces them (py-amqp exception classes via
    kombu): passive declare of a missing queue / exchange, exchange type
    mismatch, queue argument mismatch, reserved amq. name, then the
    channel is unusable and a new one works."""
    conn = connection(ctx)
    ch = conn.channel()
    attempt(ctx, "passive missing queue",
            Queue(ctx.queue("missing"), no_declare=False)(ch).queue_declare, passive=True)
    ch = conn.channel()
    attempt(ctx, "passive missing exchange",
            Exchange(ctx.exchange("missing"), "direct", passive=True)(ch).declare)
    ch = conn.channel()
    x = ctx.exchange("x")
    Exchange(x, "direct")(ch).declare()
    attempt(ctx, "exchange type mismatch", Exchange(x, "fanout")(ch).declare)
    ch2 = conn.channel()
    q = ctx.queue("q")
    Queue(q, queue_arguments={"x-max-priority": 10})(ch2).declare()
    attempt(ctx, "queue args mismatch",
            Queue(q, queue_arguments={"x-max-priority": 5})(ch2).declare)
    ch3 = conn.channel()
    attempt(ctx, "reserved amq. exchange", ch3.exchange_declare, "amq.compat-nope", "direct")
    ch4 = conn.channel()
    attempt(ctx, "queue_declare on a new channel",
            lambda: list(Queue(q, queue_arguments={"x-max-priority": 10})(ch4).queue_declare(passive=True)))
    ex_types = [n for n in ("ChannelError", "NotFound", "PreconditionFailed", "AccessRefused")
                if hasattr(kombu.exceptions, n) or hasattr(__import__("amqp").exceptions, n)]
    ctx.record("py-amqp classes known", ex_types)
    conn.release()


@scenario("basic")
def kombu_publish_missing_exchange(ctx):
    """Producer.publish (retry=False) to an exchange that does not exist:
    the broker closes the channel asynchronously; the next synchronous call
    on that channel raises NotFound (404) naming basic.publish."""
    conn = connection(ctx)
    ch = conn.channel()
    prod = Producer(ch, exchange=Exchange(ctx.exchange("nope"), "direct"), auto_declare=False)
    attempt(ctx, "publish", lambda: prod.publish({"a": 1}, routing_key="k", retry=False,
                                                 declare=[]) and None)
    q = Queue(ctx.queue("q"))
    attempt(ctx, "next declare", q(ch).declare)
    attempt(ctx, "declare on a fresh channel", q(conn.channel()).declare)
    conn.release()


@scenario("queue-features")
def kombu_priority_topic(ctx):
    """Celery task routing with a topic exchange and priority queues
    (queue_arguments x-max-priority=10): messages published with priorities
    0..9 come out highest first; routing keys match per binding."""
    conn = connection(ctx)
    ch = conn.channel()
    ex = Exchange(ctx.exchange("tasks"), "topic", durable=True)
    hi = Queue(ctx.queue("hi"), ex, routing_key="tasks.#", queue_arguments={"x-max-priority": 10})
    lo = Queue(ctx.queue("lo"), ex, routing_key="*.low")
    for qq in (hi, lo):
        qq(ch).declare()
    prod = Producer(ch, exchange=ex)
    for i, (rk, prio) in enumerate([("tasks.a", 1), ("tasks.low", 9), ("x.low", 5), ("tasks.b", 5),
                                    ("tasks.c.d", 0), ("y.z", 9)]):
        prod.publish({"i": i}, routing_key=rk, priority=prio, retry=False)
    time.sleep(0.3)
    for qq in (hi, lo):
        out = []
        while True:
            m = qq(ch).get(no_ack=True)
            if m is None:
                break
            out.append([m.payload["i"], m.delivery_info["routing_key"], m.properties.get("priority")])
        ctx.record(qq.name.rsplit(".", 1)[1], out)
    conn.release()
