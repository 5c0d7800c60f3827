"""basic.* scenarios: publish/get/consume, properties and headers, mandatory,
QoS, ack/nack/reject, requeue order, recover, cancel notification,
consumer priorities, round-robin."""
import datetime
import decimal

from pika import BasicProperties, spec

from scenarios.context import counts
from scenarios.framework import scenario
from scenarios.pikautil import FRAMES, record_frames


def _counts(ch, q):
    return counts(ch, q)


def _publish_n(ch, q, n, prefix="m"):
    for i in range(n):
        ch.basic_publish("", q, f"{prefix}{i}".encode())


def _bodies(msgs):
    return [m["body"] if isinstance(m, dict) else m for m in msgs]


@scenario("basic")
def publish_get(ctx):
    """basic.get: get-empty, get-ok fields (delivery tag, redelivered,
    exchange, routing key, message_count), auto-ack vs manual ack."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ctx.record("get on empty", ctx.msg(*ch.basic_get(q)))
    ch.queue_bind(q, "amq.direct", "rk")
    ch.basic_publish("", q, b"one")
    ch.basic_publish("amq.direct", "rk", b"two")
    ch.basic_publish("", q, b"three")
    ctx.record("get auto_ack", ctx.msg(*ch.basic_get(q, auto_ack=True)))
    m, p, b = ch.basic_get(q, auto_ack=False)
    ctx.record("get manual", ctx.msg(m, p, b))
    ctx.record("counts with one unacked", _counts(ch, q))
    ch.basic_ack(m.delivery_tag)
    ctx.record("get last", ctx.msg(*ch.basic_get(q, auto_ack=True)))
    ctx.record("get on empty again", ctx.msg(*ch.basic_get(q)))


FULL_PROPS = dict(
    content_type="application/json", content_encoding="gzip",
    headers={"h-str": "v", "h-int": 7}, delivery_mode=2, priority=5,
    correlation_id="corr-1", reply_to="reply-here", expiration="600000",
    message_id="msg-1", timestamp=1700000000, type="compat.type", user_id="guest",
    app_id="compat-app", cluster_id="cluster-x")


def _header_frames():
    return [f[2].hex() for f in FRAMES if f[0] == 2]


@scenario("basic")
def properties_roundtrip(ctx):
    """Every basic property survives publish -> get and publish -> consume,
    byte-exact in the content header frame; a message without properties
    has property flags 0."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    record_frames()
    ch.basic_publish("", q, b"full", properties=BasicProperties(**FULL_PROPS))
    ch.basic_publish("", q, b"none")
    ch.basic_publish("", q, b"some", properties=BasicProperties(delivery_mode=1, priority=0,
                                                                 content_type=""))
    ctx.record("get", ctx.get_all(ch, q))
    ctx.record("get: content header payloads (hex)", _header_frames())
    record_frames()
    ch.basic_publish("", q, b"full", properties=BasicProperties(**FULL_PROPS))
    ctx.record("consume", ctx.consume_n(c, ch, q, 1))
    ctx.record("consume: content header payloads (hex)", _header_frames())
    record_frames(False)


HEADERS = {
    "str": "text", "unicode": "h\u00e9llo \u2603", "empty-str": "",
    "int": 42, "negative": -7, "big": 2 ** 40, "min-long": -2 ** 63,
    "true": True, "false": False, "void": None,
    "decimal": decimal.Decimal("3.14"), "decimal-neg": decimal.Decimal("-0.001"),
    "timestamp": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "bytes": b"\x00\x01\xfe\xff",
    "array": [1, "two", decimal.Decimal("3.0"), None, True, [4, [5]], {"in": "array"}],
    "empty-array": [], "empty-table": {},
    "table": {"a": 1, "b": {"c": {"d": ["deep", {"e": decimal.Decimal("1.0")}]}}},
}


@scenario("basic")
def headers_field_types(ctx):
    """Headers with every field type pika can encode (nested tables and
    arrays, decimals, timestamps, byte arrays, void, 64-bit ints)
    round-trip; compared decoded and as raw header-frame bytes."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    record_frames()
    ch.basic_publish("", q, b"typed", properties=BasicProperties(headers=HEADERS))
    m, p, b = ch.basic_get(q, auto_ack=True)
    ctx.record("headers", p.headers)
    ctx.record("equal to what was sent", p.headers == HEADERS)
    ctx.record("content header payload (hex)", _header_frames())
    # and through a headers exchange, which has to parse them
    x = ctx.exchange("h")
    ch.exchange_declare(x, "headers")
    ch.queue_bind(q, x, "", arguments={"x-match": "all", "int": 42, "str": "text"})
    record_frames()
    ch.basic_publish(x, "", b"routed", properties=BasicProperties(headers=HEADERS))
    m, p, b = ch.basic_get(q, auto_ack=True)
    ctx.record("via headers exchange: equal", p is not None and p.headers == HEADERS)
    ctx.record("via headers exchange: content header payload (hex)", _header_frames())
    record_frames(False)


@scenario("basic")
def mandatory_return(ctx):
    """mandatory: an unroutable message comes back as basic.return 312
    NO_ROUTE with its properties and body; routable or non-mandatory ones
    do not."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    returned = []
    ch.add_on_return_callback(lambda c_, m, p, b: returned.append(ctx.msg(m, p, b)))
    props = BasicProperties(message_id="r1", headers={"k": "v"})
    ch.basic_publish("amq.direct", "nowhere", b"unroutable mandatory", properties=props, mandatory=True)
    ch.basic_publish("amq.direct", "nowhere", b"unroutable, not mandatory")
    ch.basic_publish("", q, b"routable mandatory", mandatory=True)
    ch.basic_publish("", ctx.queue("missing"), b"default exchange, no queue", mandatory=True)
    ctx.settle(c, 0.4)
    ctx.record("returned", returned)
    ctx.record("queue", _bodies(ctx.get_all(ch, q)))


@scenario("basic")
def immediate_flag(ctx):
    """immediate=true is not implemented by RabbitMQ 3: connection error 540."""
    c = ctx.connect()
    ch = c.channel()
    with ctx.error("publish immediate=true, then basic.qos"):
        ch._impl._send_method(  # pylint: disable=protected-access
            spec.Basic.Publish(exchange="", routing_key=ctx.queue("q"), immediate=True),
            (BasicProperties(), b"x"))
        ch.basic_qos()
    ctx.record("connection closed", c.is_closed)


@scenario("basic")
def qos_per_consumer(ctx):
    """basic.qos prefetch_count=2 (global=false) limits each consumer of the
    channel separately; an ack lets one more through."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=2)
    got = {"a": [], "b": []}
    for t in ("a", "b"):
        ch.basic_consume(q, lambda c_, m, p, b, t=t: got[t].append((m.delivery_tag, b.decode())),
                         consumer_tag=t)
    _publish_n(ch, q, 10)
    ctx.wait(c, lambda: len(got["a"]) + len(got["b"]) >= 4)
    ctx.settle(c, 0.3)
    ctx.record("delivered", {t: list(v) for t, v in got.items()})
    ctx.record("counts", _counts(ch, q))
    ch.basic_ack(got["a"][0][0])
    ctx.wait(c, lambda: len(got["a"]) >= 3)
    ctx.settle(c, 0.3)
    ctx.record("after acking one of a's", {t: list(v) for t, v in got.items()})


@scenario("basic")
def qos_global(ctx):
    """basic.qos global=true prefetch 3, then global=false prefetch 2: in
    RabbitMQ 3.10 the second (per-consumer) qos clears the channel-wide
    limit, so only the per-consumer limit of 2 applies."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    ch.basic_qos(prefetch_count=2, global_qos=False)
    got = {"a": [], "b": []}
    for t in ("a", "b"):
        ch.basic_consume(q, lambda c_, m, p, b, t=t: got[t].append((m.delivery_tag, b.decode())),
                         consumer_tag=t)
    ctx.settle(c, 0.1)
    _publish_n(ch, q, 10)
    ctx.wait(c, lambda: len(got["a"]) + len(got["b"]) >= 3)
    ctx.settle(c, 0.3)
    ctx.record("delivered", {t: list(v) for t, v in got.items()})
    ctx.record("counts", _counts(ch, q))
    ch.basic_ack(0, multiple=True)
    ctx.wait(c, lambda: len(got["a"]) + len(got["b"]) >= 6)
    ctx.settle(c, 0.3)
    ctx.record("after ack multiple", {t: len(v) for t, v in got.items()})
    ctx.record("total delivered", len(got["a"]) + len(got["b"]))


@scenario("basic")
def qos_per_consumer_then_global(ctx):
    """basic.qos global=false prefetch 2, then global=true prefetch 3 (the
    order RabbitMQ's documentation uses): both limits apply, 3 in total."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=2, global_qos=False)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got = {"a": [], "b": []}
    for t in ("a", "b"):
        ch.basic_consume(q, lambda c_, m, p, b, t=t: got[t].append((m.delivery_tag, b.decode())),
                         consumer_tag=t)
    _publish_n(ch, q, 10)
    ctx.wait(c, lambda: len(got["a"]) + len(got["b"]) >= 3)
    ctx.settle(c, 0.3)
    ctx.record("delivered", {t: list(v) for t, v in got.items()})
    ctx.record("counts", _counts(ch, q))
    ch.basic_ack(got["a"][0][0])
    ctx.wait(c, lambda: len(got["a"]) + len(got["b"]) >= 4)
    ctx.settle(c, 0.3)
    ctx.record("after acking one", {t: len(v) for t, v in got.items()})


@scenario("basic")
def qos_global_only(ctx):
    """global=true alone: one channel-wide limit of 3 across two consumers."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got = []
    for t in ("a", "b"):
        ch.basic_consume(q, lambda c_, m, p, b: got.append(b), consumer_tag=t)
    _publish_n(ch, q, 6)
    ctx.wait(c, lambda: len(got) >= 3)
    ctx.settle(c, 0.3)
    ctx.record("delivered", len(got))
    ctx.record("counts", _counts(ch, q))


@scenario("basic")
def ack_multiple(ctx):
    """ack multiple=true acknowledges everything up to the tag; the rest is
    requeued (redelivered=true, original order) when the channel closes."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    _publish_n(ch, q, 5)
    got = []
    ch.basic_consume(q, lambda c_, m, p, b: got.append(m.delivery_tag), consumer_tag="c")
    ctx.wait(c, lambda: len(got) >= 5)
    ctx.record("tags", got)
    ch.basic_ack(3, multiple=True)
    ch.basic_cancel("c")
    ctx.record("counts", _counts(ch, q))
    ch.close()
    ch = c.channel()
    ctx.record("requeued", ctx.get_all(ch, q))


@scenario("basic")
def nack_multiple_requeue(ctx):
    """nack multiple=true requeue=true puts the messages back at their
    original positions with redelivered=true."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    _publish_n(ch, q, 6)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(4)]
    ctx.record("tags", tags)
    ch.basic_nack(3, multiple=True, requeue=True)
    ctx.record("counts", _counts(ch, q))
    ctx.record("order", ctx.get_all(ch, q, auto_ack=False))


@scenario("basic")
def reject_requeue_position(ctx):
    """reject requeue=true: the message goes back to its original position
    (the head), not the tail."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    _publish_n(ch, q, 4)
    m0 = ch.basic_get(q)[0]
    m1 = ch.basic_get(q)[0]
    ch.basic_reject(m1.delivery_tag, requeue=True)
    ctx.record("after rejecting m1", ctx.msg(*ch.basic_get(q)))
    ch.basic_reject(m0.delivery_tag, requeue=True)
    ctx.record("rest after rejecting m0", ctx.get_all(ch, q))


@scenario("basic")
def reject_nack_discard(ctx):
    """reject / nack with requeue=false drop the message (no DLX)."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    _publish_n(ch, q, 4)
    a, b_ = ch.basic_get(q)[0], ch.basic_get(q)[0]
    ch.basic_reject(a.delivery_tag, requeue=False)
    ch.basic_nack(b_.delivery_tag, requeue=False)
    ctx.record("counts", _counts(ch, q))
    c_, d = ch.basic_get(q)[0], ch.basic_get(q)[0]
    ch.basic_nack(d.delivery_tag, multiple=True, requeue=False)
    ctx.record("after nack multiple, no requeue", _counts(ch, q))


@scenario("basic")
def recover(ctx):
    """basic.recover requeue=true redelivers the channel's unacked messages
    (redelivered=true, new delivery tags); requeue=false is 540."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    _publish_n(ch, q, 3)
    got = []
    ch.basic_consume(q, lambda c_, m, p, b: got.append(ctx.msg(m, p, b)), consumer_tag="c")
    ctx.wait(c, lambda: len(got) >= 3)
    ctx.attempt("recover requeue=true", ch.basic_recover, requeue=True)
    ctx.wait(c, lambda: len(got) >= 6)
    ctx.settle(c, 0.2)
    ctx.record("deliveries", got)
    ch.basic_ack(0, multiple=True)
    ctx.attempt("recover requeue=false", ch.basic_recover, requeue=False)
    ctx.record("connection closed", c.is_closed)


@scenario("basic")
def ack_errors(ctx):
    """Unknown / double / auto-ack delivery tags are 406 PRECONDITION_FAILED
    channel errors."""
    c = ctx.connect()
    q = ctx.queue("q")
    ch = c.channel()
    ch.queue_declare(q)
    _publish_n(ch, q, 3)
    with ctx.error("ack unknown tag 99"):
        ch.basic_ack(99)
        ch.basic_qos()
    ch = c.channel()
    m = ch.basic_get(q)[0]
    with ctx.error("ack twice"):
        ch.basic_ack(m.delivery_tag)
        ch.basic_ack(m.delivery_tag)
        ch.basic_qos()
    ch = c.channel()
    m = ch.basic_get(q, auto_ack=True)[0]
    with ctx.error("ack of an auto-ack get"):
        ch.basic_ack(m.delivery_tag)
        ch.basic_qos()
    ch = c.channel()
    with ctx.error("ack 0 multiple with nothing outstanding"):
        ch.basic_ack(0, multiple=True)
        ch.basic_qos()
    with ctx.error("nack unknown tag 5"):
        ch.basic_nack(5)
        ch.basic_qos()
    ctx.record("counts (unacked of closed channels requeued)", _counts(c.channel(), q))


@scenario("basic")
def consumer_cancel_notification(ctx):
    """Deleting a queue sends basic.cancel to its consumers (consumer_cancel_notify);
    the channel stays open."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    cancels = []
    ch.add_on_cancel_callback(lambda f: cancels.append({"method": "basic.cancel",
                                                        "consumer_tag": f.method.consumer_tag,
                                                        "nowait": f.method.nowait}))
    ch.basic_consume(q, lambda *a: None, consumer_tag="watched")
    other = ctx.connect().channel()
    ctx.attempt("delete from another connection", other.queue_delete, q)
    ctx.wait(c, lambda: cancels)
    ctx.record("cancel received", cancels)
    ctx.record("channel open", ch.is_open)
    ctx.record("consumer tags left", ch.consumer_tags)
    ctx.attempt("declare again on the same channel", ch.queue_declare, q)


@scenario("basic")
def consumer_priorities(ctx):
    """x-priority: the higher-priority consumer gets messages while it has
    prefetch room; lower ones only when it is full; invalid x-priority is 406."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=2)
    got = {"low": [], "high": [], "default": []}

    def cb(t):
        return lambda c_, m, p, b: got[t].append(b.decode())
    ch.basic_consume(q, cb("low"), consumer_tag="low", arguments={"x-priority": 1})
    ch.basic_consume(q, cb("default"), consumer_tag="default")
    ch.basic_consume(q, cb("high"), consumer_tag="high", arguments={"x-priority": 10})
    _publish_n(ch, q, 8)
    ctx.wait(c, lambda: sum(map(len, got.values())) >= 6)
    ctx.settle(c, 0.3)
    ctx.record("delivered", {k: list(v) for k, v in got.items()})
    ch2 = c.channel()
    ctx.attempt("x-priority='high'", ch2.basic_consume, q, lambda *a: None,
                arguments={"x-priority": "high"})


@scenario("basic")
def round_robin(ctx):
    """Three consumers on one queue share it round-robin in subscription order."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    got = {t: [] for t in ("c1", "c2", "c3")}
    for t in got:
        ch.basic_consume(q, lambda c_, m, p, b, t=t: got[t].append(b.decode()), consumer_tag=t,
                         auto_ack=True)
    _publish_n(ch, q, 9)
    ctx.wait(c, lambda: sum(map(len, got.values())) >= 9)
    ctx.settle(c, 0.2)
    ctx.record("delivered", got)


@scenario("basic")
def exclusive_consumer(ctx):
    """An exclusive consumer blocks other consumers (403) and vice versa."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None, exclusive=True, consumer_tag="excl")
    ctx.attempt("second consumer", c.channel().basic_consume, q, lambda *a: None)
    ch.basic_cancel("excl")
    ch.basic_consume(q, lambda *a: None, consumer_tag="plain")
    ctx.attempt("exclusive while another exists", c.channel().basic_consume, q, lambda *a: None,
                exclusive=True)
    ctx.record("counts", _counts(ch, q))


@scenario("basic")
def consumer_tags(ctx):
    """Server-generated consumer tags (amq.ctag-...), reusing a tag on the
    channel (530), cancelling an unknown tag (ok)."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    tags = []
    ch._impl._rpc(spec.Basic.Consume(queue=q, consumer_tag=""),  # pylint: disable=protected-access
                  lambda f: tags.append(f.method.consumer_tag), [spec.Basic.ConsumeOk])
    ctx.wait(c, lambda: tags)
    ctx.record("server-generated tag", tags)
    ctx.record("counts", _counts(ch, q))
    ch2 = c.channel()
    ctx.attempt("cancel unknown tag", ch2.basic_cancel, "nope")
    ch2.basic_consume(q, lambda *a: None, consumer_tag="same")
    with ctx.error("reuse tag 'same' on the channel (raw consume)"):
        ch2._impl._send_method(spec.Basic.Consume(queue=q, consumer_tag="same"))  # pylint: disable=protected-access
        ch2.basic_qos()
    ctx.record("connection closed", c.is_closed)


@scenario("basic")
def delivery_tags_sequence(ctx):
    """Delivery tags count up per channel across basic.get and basic.deliver,
    independently on each channel."""
    c = ctx.connect()
    a, b = c.channel(), c.channel()
    q = ctx.queue("q")
    a.queue_declare(q)
    _publish_n(a, q, 6)
    seq = [("a get", a.basic_get(q)[0].delivery_tag), ("b get", b.basic_get(q)[0].delivery_tag),
           ("a get", a.basic_get(q)[0].delivery_tag)]
    got = []
    a.basic_consume(q, lambda c_, m, p, body: got.append(("a deliver", m.delivery_tag)), consumer_tag="t")
    ctx.wait(c, lambda: len(got) >= 3)
    ctx.record("tags", seq + got)


@scenario("basic")
def body_edge_cases(ctx):
    """Empty body, all 256 byte values, a body of exactly frame_max - 8 bytes
    and one byte more, through consume."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    fm = c._impl.params.frame_max  # pylint: disable=protected-access
    bodies = [b"", bytes(range(256)), b"\x00" * (fm - 8), b"\x01" * (fm - 7),
              "utf-8 \u2603".encode()]
    for bd in bodies:
        ch.basic_publish("", q, bd)
    got = []
    ch.basic_consume(q, lambda c_, m, p, b: got.append(b), auto_ack=True, consumer_tag="t")
    ctx.wait(c, lambda: len(got) >= len(bodies))
    ctx.record("lengths", [len(x) for x in got])
    ctx.record("equal", got == bodies)


@scenario("basic")
def publish_errors(ctx):
    """Publish to a missing exchange (404), with a user_id that is not the
    login (406), with an invalid expiration (406)."""
    c = ctx.connect()
    q = ctx.queue("q")
    c.channel().queue_declare(q)
    cases = {
        "missing exchange": ("compat.missing-x", BasicProperties()),
        "user_id mismatch": ("", BasicProperties(user_id="someone-else")),
        "expiration 'abc'": ("", BasicProperties(expiration="abc")),
        "expiration '-1'": ("", BasicProperties(expiration="-1")),
        "user_id = login": ("", BasicProperties(user_id="guest")),
    }
    for label, (x, props) in cases.items():
        ch = c.channel() if c.is_open else ctx.connect().channel()
        with ctx.error(label):
            ch.basic_publish(x, q, b"x", properties=props)
            ch.basic_qos()
    ctx.record("counts", _counts(ctx.connect().channel(), q))


@scenario("basic")
def nack_redelivery_to_consumer(ctx):
    """A consumer that nacks with requeue gets the message again,
    redelivered=true; with prefetch 1 nothing else overtakes it."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=1)
    seen = []

    def cb(c_, m, p, b):
        seen.append(ctx.msg(m, None, b))
        if len(seen) == 1:
            c_.basic_nack(m.delivery_tag, requeue=True)
        else:
            c_.basic_ack(m.delivery_tag)
    ch.basic_consume(q, cb, consumer_tag="t")
    _publish_n(ch, q, 3)
    ctx.wait(c, lambda: len(seen) >= 4)
    ctx.settle(c, 0.2)
    ctx.record("deliveries", seen)


@scenario("basic")
def cancel_keeps_unacked(ctx):
    """basic.cancel does not requeue the consumer's unacked messages; they
    can still be acked after the cancel."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    _publish_n(ch, q, 3)
    got = []
    ch.basic_consume(q, lambda c_, m, p, b: got.append(m.delivery_tag), consumer_tag="t")
    ctx.wait(c, lambda: len(got) >= 3)
    ctx.attempt("cancel", ch.basic_cancel, "t")
    ctx.record("counts after cancel", _counts(ch, q))
    ch.basic_ack(got[0])
    ch.basic_nack(got[1], requeue=True)
    ctx.record("after ack 1 + nack 1", _counts(ch, q))
    ctx.record("get", ctx.get_all(ch, q))
