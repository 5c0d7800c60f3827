"""Streams over AMQP 0-9-1: x-stream-offset, the x-stream-offset header,
retention, and what a stream refuses."""
import datetime
import time

import pika
from pika import BasicProperties

from scenarios.framework import scenario

STREAM = {"x-queue-type": "stream"}


def _publish(ch, q, bodies):
    """One confirmed publish at a time (so RabbitMQ writes one per chunk)."""
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", q, b.encode(), properties=BasicProperties(headers={"n": b}))


def _read(ctx, q, offset, seconds=1.0):
    """Consume from `offset` (prefetch 100, acking) for a while."""
    c = ctx.connect()
    ch = c.channel()
    ch.basic_qos(prefetch_count=100)
    got = []

    def on_message(chan, m, p, body):
        got.append({"body": body, "offset": p.headers.get("x-stream-offset"),
                    "redelivered": m.redelivered, "n": p.headers.get("n")})
        chan.basic_ack(m.delivery_tag)

    args = None if offset is None else {"x-stream-offset": offset}
    ch.basic_consume(q, on_message, arguments=args)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c.process_data_events(time_limit=0.1)
    c.close()
    return got


@scenario("stream", timeout=30)
def stream_offsets(ctx):
    """Every consumer reads from its own x-stream-offset; acks remove nothing."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("st")
    ch.queue_declare(q, durable=True, arguments=STREAM)
    _publish(ch, q, [f"m{i}" for i in range(10)])
    hour_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    for key, offset in [("default", None), ("first", "first"), ("first again", "first"),
                        ("last", "last"), ("next", "next"), ("5", 5), ("500", 500),
                        ("-1", -1), ("1h", "1h"), ("7D", "7D"),
                        ("timestamp an hour ago", hour_ago)]:
        ctx.record(f"from {key}", _read(ctx, q, offset, seconds=0.6))
    # A consumer at next gets what comes after it.
    c2 = ctx.connect()
    ch2 = c2.channel()
    ch2.basic_qos(prefetch_count=10)
    live = []
    ch2.basic_consume(q, lambda chan, m, p, b: (live.append(b), chan.basic_ack(m.delivery_tag)))
    c2.process_data_events(time_limit=0.3)
    _publish(ch, q, ["later"])
    end = time.monotonic() + 2
    while not live and time.monotonic() < end:
        c2.process_data_events(time_limit=0.1)
    ctx.record("live consumer", live)
    ch.queue_delete(q)


def _attempt(ctx, key, fn):
    c = ctx.connect()
    ch = c.channel()
    ctx.attempt(key, fn, ch)


@scenario("stream", timeout=30)
def stream_refusals(ctx):
    """What a stream refuses: basic.get, purge, consuming without a prefetch
    or with automatic acks, nack/reject, a bad offset, and arguments of
    other queue types."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("st")
    ch.queue_declare(q, durable=True, arguments=STREAM)
    _publish(ch, q, ["m"])
    _attempt(ctx, "basic.get", lambda ch: ch.basic_get(q) and "got")
    _attempt(ctx, "queue.purge", lambda ch: ch.queue_purge(q).method.message_count)
    _attempt(ctx, "consume without qos", lambda ch: ch.basic_consume(q, lambda *a: None) and "ok")

    def auto_ack(ch):
        ch.basic_qos(prefetch_count=10)
        return ch.basic_consume(q, lambda *a: None, auto_ack=True) and "ok"

    _attempt(ctx, "consume with auto-ack", auto_ack)

    def global_qos(ch):
        ch.basic_qos(prefetch_count=10, global_qos=True)
        return ch.basic_consume(q, lambda *a: None) and "ok"

    _attempt(ctx, "consume with only a global prefetch", global_qos)

    def bogus(ch):
        ch.basic_qos(prefetch_count=10)
        ch.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": "bogus"})
        return "ok"

    _attempt(ctx, "bad x-stream-offset", bogus)

    def nack(ch):
        ch.basic_qos(prefetch_count=10)
        tags = []
        ch.basic_consume(q, lambda chan, m, p, b: tags.append(m.delivery_tag),
                         arguments={"x-stream-offset": "first"})
        end = time.monotonic() + 2
        while not tags and time.monotonic() < end:
            ch.connection.process_data_events(time_limit=0.1)
        ch.basic_nack(tags[0], requeue=True)
        ch.connection.process_data_events(time_limit=0.5)
        return "no error"

    _attempt(ctx, "nack", nack)
    for key, args, durable in [("non-durable", {}, False),
                               ("x-message-ttl", {"x-message-ttl": 1000}, True),
                               ("x-dead-letter-exchange", {"x-dead-letter-exchange": "x"}, True),
                               ("x-max-age bad", {"x-max-age": "1X"}, True),
                               ("x-max-age ok", {"x-max-age": "7D"}, True)]:
        name = ctx.queue("st-args")
        _attempt(ctx, f"declare {key}", lambda ch: ch.queue_declare(
            name, durable=durable, arguments={**STREAM, **args}).method.queue)
        c2 = ctx.connect()
        c2.channel().queue_delete(name)
    _attempt(ctx, "server-named", lambda ch: ch.queue_declare("", durable=True, arguments=STREAM))
    ch = ctx.connect().channel()
    ctx.record("deleted", ch.queue_delete(q).method.message_count)


@scenario("stream", timeout=30)
def stream_retention(ctx):
    """x-max-length-bytes with small segments drops the oldest records a whole
    segment at a time; the newest stay."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("st-retention")
    ch.queue_declare(q, durable=True, arguments={
        **STREAM, "x-stream-max-segment-size-bytes": 2000, "x-max-length-bytes": 6000})
    n = 300
    _publish(ch, q, [f"record {i:04} " + "x" * 60 for i in range(n)])
    got = _read(ctx, q, "first", seconds=1.0)
    # Offsets themselves differ: RabbitMQ's log gives offsets to its own
    # chunks too, so they are neither dense nor equal to Warren's.
    bodies = [g["body"] for g in got]
    ctx.record("retention", {
        "something kept": bool(got),
        "old records dropped": bool(got) and len(got) < n,
        "the newest kept": bool(got) and bodies[-1].startswith(f"record {n - 1:04}".encode()),
        "in order": bodies == sorted(bodies),
    })
    ch.queue_delete(q)
