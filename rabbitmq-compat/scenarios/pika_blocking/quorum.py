"""Quorum queues on one node: their own argument rules, x-delivery-count,
x-delivery-limit, no global QoS, FIFO order and kept transient messages."""
import time

from pika import BasicProperties

from scenarios.framework import scenario


def _declare(ctx, key, name, args, **flags):
    """Declare on a fresh connection (an error closes the channel)."""
    c = ctx.connect()
    ch = c.channel()
    opts = {"durable": True, **flags}
    r = ctx.attempt(key, lambda: ch.queue_declare(name, arguments=args, **opts).method.queue)
    if r is not None:
        ch.queue_delete(name)
    c.close()


@scenario("quorum")
def quorum_arguments(ctx):
    """What a quorum declare accepts, refuses and ignores (RabbitMQ 3.10.8's
    per-type argument lists), and the property checks' order."""
    q = ctx.queue("qq")
    base = {"x-queue-type": "quorum"}
    cases = [
        ("plain", {}, {}),
        ("celery delayed", {"x-message-ttl": 134217728000, "x-dead-letter-exchange": "x",
                            "x-dead-letter-strategy": "at-least-once",
                            "x-overflow": "reject-publish"}, {}),
        ("ttl negative", {"x-message-ttl": -1}, {}),
        ("ttl string", {"x-message-ttl": "abc"}, {}),
        ("ttl too large", {"x-message-ttl": 315360000001}, {}),
        ("max-priority", {"x-max-priority": 10}, {}),
        ("queue-mode", {"x-queue-mode": "lazy"}, {}),
        ("queue-version", {"x-queue-version": 2}, {}),
        ("max-age", {"x-max-age": "1D"}, {}),
        ("overflow reject-publish-dlx", {"x-overflow": "reject-publish-dlx"}, {}),
        ("lengths", {"x-max-length": 10, "x-max-length-bytes": 1000}, {}),
        ("single active", {"x-single-active-consumer": True}, {}),
        ("delivery-limit", {"x-delivery-limit": 3}, {}),
        ("delivery-limit string", {"x-delivery-limit": "x"}, {}),
        ("dlx strategy bogus", {"x-dead-letter-strategy": "bogus"}, {}),
        ("expires", {"x-expires": 134217728000}, {}),
        ("in-memory length", {"x-max-in-memory-length": 5}, {}),
        ("group size 0", {"x-quorum-initial-group-size": 0}, {}),
        ("leader locator bogus", {"x-queue-leader-locator": "bogus"}, {}),
        ("unknown arg", {"x-random-thing": 1}, {}),
        ("non-durable", {}, {"durable": False}),
        ("exclusive", {}, {"exclusive": True}),
        ("auto-delete", {}, {"auto_delete": True}),
        ("non-durable auto-delete", {}, {"durable": False, "auto_delete": True}),
        ("non-durable exclusive", {}, {"durable": False, "exclusive": True}),
        ("non-durable max-priority", {"x-max-priority": 5}, {"durable": False}),
    ]
    for key, args, flags in cases:
        _declare(ctx, key, q, {**base, **args}, **flags)
    _declare(ctx, "server-named", "", base)
    _declare(ctx, "classic delivery-limit", q, {"x-delivery-limit": 3})
    _declare(ctx, "classic dlx strategy", q, {"x-dead-letter-strategy": "at-least-once"})
    _declare(ctx, "classic ttl beyond 2^32", q, {"x-message-ttl": 134217728000})


@scenario("quorum")
def quorum_redeclare(ctx):
    """A redeclare compares the arguments quorum queues take, in their order,
    and does not validate the others."""
    q = ctx.queue("qq-redeclare")
    c = ctx.connect()
    ch = c.channel()
    args = {"x-queue-type": "quorum", "x-message-ttl": 134217728000,
            "x-dead-letter-exchange": "x", "x-overflow": "reject-publish"}
    ch.queue_declare(q, durable=True, arguments=args)
    for key, new in [("same", args),
                     ("same plus max-priority", {**args, "x-max-priority": 3}),
                     ("other delivery-limit", {**args, "x-delivery-limit": 3}),
                     ("only the type", {"x-queue-type": "quorum"}),
                     ("no type", {k: v for k, v in args.items() if k != "x-queue-type"}),
                     ("classic", {**args, "x-queue-type": "classic"})]:
        c2 = ctx.connect()
        ctx.attempt(key, lambda: c2.channel().queue_declare(
            q, durable=True, arguments=new).method.message_count)
    c3 = ctx.connect()
    ctx.attempt("passive", lambda: c3.channel().queue_declare(q, passive=True).method.queue)
    ch.queue_delete(q)


@scenario("quorum")
def quorum_delivery_limit(ctx):
    """x-delivery-count on every delivery, counting returns (nack, channel
    close); past x-delivery-limit the message is dead-lettered with reason
    delivery_limit."""
    c = ctx.connect()
    ch = c.channel()
    q, dlx, dlq = ctx.queue("qq-limit"), ctx.exchange("dlx"), ctx.queue("dead")
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(q, durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 2, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"m1", properties=BasicProperties(headers={"a": 1}))
    # One return through a closed channel, then nacks.
    c2 = ctx.connect()
    ch2 = c2.channel()
    m, p, _ = ch2.basic_get(q)
    ctx.record("first get", {"redelivered": m.redelivered, "headers": p.headers})
    ch2.close()
    for i in range(4):
        m, p, _ = ch.basic_get(q)
        if m is None:
            ctx.record(f"get {i}", "empty")
            break
        ctx.record(f"get {i}", {"redelivered": m.redelivered, "headers": p.headers})
        ch.basic_nack(m.delivery_tag, requeue=True)
        time.sleep(0.1)
    time.sleep(0.3)
    dead = []
    for _ in range(3):
        m, p, body = ch.basic_get(dlq, auto_ack=True)
        if m is None:
            break
        h = dict(p.headers or {})
        h["x-death"] = [dict(d, time="<time>") for d in h.get("x-death", [])]
        dead.append({"body": body, "headers": h})
    ctx.record("dead-lettered", dead)


@scenario("quorum")
def quorum_consumers(ctx):
    """A consumer gets x-delivery-count 0; priorities are ignored (FIFO); a
    transient message keeps its delivery mode; global QoS is refused."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("qq-consume")
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    for p in [1, 9, 5]:
        ch.basic_publish("", q, str(p).encode(),
                         properties=BasicProperties(priority=p, delivery_mode=1))
    got = []

    def on_message(chan, method, props, body):
        got.append({"body": body, "redelivered": method.redelivered,
                    "delivery_mode": props.delivery_mode, "headers": props.headers})
        chan.basic_ack(method.delivery_tag)
        if len(got) == 3:
            chan.stop_consuming()

    ch.basic_qos(prefetch_count=10)
    ch.basic_consume(q, on_message)
    c.call_later(5, ch.stop_consuming)
    ch.start_consuming()
    ctx.record("consumed", got)
    c2 = ctx.connect()
    ch2 = c2.channel()
    ch2.basic_qos(prefetch_count=10, global_qos=True)
    with ctx.error("consume with global qos"):
        ch2.basic_consume(q, lambda *a: None)
    ch.queue_delete(q)

