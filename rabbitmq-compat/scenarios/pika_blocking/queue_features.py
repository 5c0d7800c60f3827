"""Queue features driven by x-arguments and message properties: TTL,
dead-lettering, length limits, priorities, queue expiry, single active
consumer."""
import time

from pika import BasicProperties

from scenarios.framework import scenario


def _strip_death_times(headers):
    """x-death entries carry a 'time' timestamp: replace it."""
    if not headers:
        return headers
    h = dict(headers)
    if "x-death" in h:
        h["x-death"] = [dict(d, time="<time>") if isinstance(d, dict) and "time" in d else d
                        for d in h["x-death"]]
    return h


def _msgs(ctx, ch, q):
    out = []
    for m in ctx.get_all(ch, q):
        if "props" in m and "headers" in m["props"]:
            m["props"]["headers"] = _strip_death_times(m["props"]["headers"])
        out.append(m)
    return out


@scenario("queue-features")
def message_ttl(ctx):
    """Per-queue x-message-ttl and per-message expiration: expired messages
    are not delivered; expiration is kept on delivered messages."""
    c = ctx.connect()
    ch = c.channel()
    q, q2 = ctx.queue("ttl"), ctx.queue("plain")
    ch.queue_declare(q, arguments={"x-message-ttl": 200})
    ch.queue_declare(q2)
    ch.basic_publish("", q, b"expires with the queue ttl")
    ch.basic_publish("", q2, b"expires by itself", properties=BasicProperties(expiration="200"))
    ch.basic_publish("", q2, b"long expiration", properties=BasicProperties(expiration="60000"))
    ch.basic_publish("", q2, b"no expiration")
    time.sleep(0.6)
    ctx.record("queue ttl", _msgs(ctx, ch, q))
    ctx.record("message expiration", _msgs(ctx, ch, q2))
    ch.basic_publish("", q, b"expiration 0 on a ttl queue", properties=BasicProperties(expiration="0"))
    time.sleep(0.05)
    ctx.record("expiration 0", _msgs(ctx, ch, q))


@scenario("queue-features")
def dead_letter_on_reject(ctx):
    """x-dead-letter-exchange: rejected (requeue=false) and expired messages
    are republished to the DLX with x-death headers."""
    c = ctx.connect()
    ch = c.channel()
    dlx, q, dlq = ctx.exchange("dlx"), ctx.queue("work"), ctx.queue("dead")
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx, "x-message-ttl": 300})
    ch.basic_publish("", q, b"rejected", properties=BasicProperties(message_id="r"))
    m = ch.basic_get(q)[0]
    ch.basic_reject(m.delivery_tag, requeue=False)
    ch.basic_publish("", q, b"expired", properties=BasicProperties(message_id="e"))
    time.sleep(0.8)
    ctx.record("dead-lettered", _msgs(ctx, ch, dlq))
    ctx.record("work queue", _msgs(ctx, ch, q))


@scenario("queue-features")
def max_length(ctx):
    """x-max-length 2: drop-head (default) keeps the newest; reject-publish
    refuses new messages (nack on a confirm channel)."""
    c = ctx.connect()
    ch = c.channel()
    q1, q2 = ctx.queue("drop-head"), ctx.queue("reject")
    ch.queue_declare(q1, arguments={"x-max-length": 2})
    ch.queue_declare(q2, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    for i in range(4):
        ch.basic_publish("", q1, f"m{i}".encode())
    ctx.record("drop-head", [m["body"] for m in ctx.get_all(ch, q1)])
    cch = c.channel()
    cch.confirm_delivery()
    for i in range(4):
        ctx.attempt(f"publish m{i} to reject-publish", cch.basic_publish, "", q2, f"m{i}".encode())
    ctx.record("reject-publish", [m["body"] for m in ctx.get_all(ch, q2)])


@scenario("queue-features")
def priority_queue(ctx):
    """x-max-priority: higher-priority messages are delivered first; priority
    above the maximum counts as the maximum."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q, arguments={"x-max-priority": 5})
    for body, prio in (("p0", None), ("p3", 3), ("p1", 1), ("p9", 9), ("p5", 5), ("p3b", 3)):
        ch.basic_publish("", q, body.encode(), properties=BasicProperties(priority=prio))
    ctx.record("order", [m["body"] for m in ctx.get_all(ch, q)])


@scenario("queue-features")
def queue_expires(ctx):
    """x-expires: an unused queue is deleted after the timeout."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q, arguments={"x-expires": 300})
    ctx.attempt("right away", ch.queue_declare, q, passive=True)
    time.sleep(0.9)
    ctx.attempt("after 0.9 s", ch.queue_declare, q, passive=True)


@scenario("queue-features")
def single_active_consumer(ctx):
    """x-single-active-consumer: only the first consumer gets messages; when
    it cancels, the next one takes over."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q, arguments={"x-single-active-consumer": True})
    got = {"first": [], "second": []}
    for t in got:
        ch.basic_consume(q, lambda c_, m, p, b, t=t: got[t].append(b.decode()), auto_ack=True,
                         consumer_tag=t)
    for i in range(4):
        ch.basic_publish("", q, f"m{i}".encode())
    ctx.wait(c, lambda: len(got["first"]) + len(got["second"]) >= 4)
    ctx.settle(c, 0.2)
    ch.basic_cancel("first")
    for i in range(4, 6):
        ch.basic_publish("", q, f"m{i}".encode())
    ctx.wait(c, lambda: len(got["first"]) + len(got["second"]) >= 6)
    ctx.settle(c, 0.2)
    ctx.record("delivered", got)
