"""Reconnecting after the broker restarts (pika BlockingConnection).

These scenarios restart the broker under test in the middle
(ctx.restart_broker(): `rabbitmq.sh restart` / `warren.sh restart`) and
record what the client sees: how the open connection ends, what is left
after reconnecting (durable vs transient queues, exchanges and bindings,
persistent vs transient messages, queue arguments) and how deliveries that
were unacknowledged at the restart come back."""
import pika
from pika import BasicProperties

from scenarios.context import counts, error_dict
from scenarios.framework import scenario

RESTART_TIMEOUT = 60


def _props(i, persistent=True):
    return BasicProperties(delivery_mode=2 if persistent else 1, content_type="text/plain",
                           content_encoding="utf-8", headers={"i": i, "s": "x", "nested": {"a": [1, "b"]}},
                           correlation_id=f"c{i}", message_id=f"m{i}", priority=i % 3,
                           app_id="compat", type="t", timestamp=1700000000 + i, reply_to="r")


def _on_new_channel(ctx, conn, key, method, *a, **kw):
    """ctx.attempt(key, ch.<method>(...)) on a fresh channel (the error may
    close it)."""
    ch = conn.channel()
    ctx.attempt(key, getattr(ch, method), *a, **kw)


@scenario("restart", timeout=RESTART_TIMEOUT, restart=True)
def durable_state_after_restart(ctx):
    """Durable/transient queues, exchanges, bindings and persistent/transient
    messages published with confirms (one persistent message fetched and
    left unacked); the broker restarts; the old connection's error and
    channel state; after reconnecting: what survived (counts, passive
    declares, queue arguments, bindings), message bodies, properties and
    redelivered flags."""
    c = ctx.connect()
    ch = c.channel()
    ch.confirm_delivery()
    dq, tq, lq = ctx.queue("durable"), ctx.queue("transient"), ctx.queue("limited")
    dx, tx = ctx.exchange("dx"), ctx.exchange("tx")
    largs = {"x-max-length": 2, "x-message-ttl": 3600000}
    ch.exchange_declare(dx, "direct", durable=True)
    ch.exchange_declare(tx, "fanout", durable=False)
    ch.queue_declare(dq, durable=True)
    ch.queue_declare(tq, durable=False)
    ch.queue_declare(lq, durable=True, arguments=largs)
    ch.queue_bind(dq, dx, "k")
    ch.queue_bind(tq, dx, "k")
    ch.queue_bind(dq, tx)
    for i in range(4):
        ch.basic_publish(dx, "k", f"p{i}".encode(), _props(i))
    ch.basic_publish(dx, "k", b"transient-message", _props(9, persistent=False))
    ch.basic_publish(tx, "", b"via-transient-exchange", _props(10))
    for i in range(3):
        ch.basic_publish("", lq, f"l{i}".encode(), _props(20 + i))
    m, _p, b = ch.basic_get(dq, auto_ack=False)
    ctx.record("held unacked", [b, m.delivery_tag, m.redelivered])
    ctx.record("before restart", {"durable": counts(ch, dq), "transient": counts(ch, tq),
                                  "limited": counts(ch, lq)})

    ctx.restart_broker()

    with ctx.error("old connection: process_data_events"):
        c.process_data_events(time_limit=1)
    ctx.record("old connection state", {"is_open": c.is_open, "is_closed": c.is_closed,
                                        "channel is_open": ch.is_open})
    with ctx.error("old channel: basic_publish"):
        ch.basic_publish("", dq, b"late")
    with ctx.error("old channel: basic_ack of the held message"):
        ch.basic_ack(m.delivery_tag)
    try:
        c.channel()
        ctx.record("old connection: channel()", "no error")
    except Exception as e:  # noqa: BLE001  (the detail names the broker's port)
        ctx.record("old connection: channel()", {"exc": type(e).__name__,
                                                 "detail": str(e).split(":")[0]})

    c2 = ctx.connect()
    ch2 = c2.channel()
    ctx.record("durable queue after restart", counts(ch2, dq))
    ctx.record("limited queue after restart", counts(ch2, lq))
    _on_new_channel(ctx, c2, "transient queue (passive)", "queue_declare",
                    tq, passive=True)
    _on_new_channel(ctx, c2, "durable exchange (passive)", "exchange_declare",
                    dx, passive=True)
    _on_new_channel(ctx, c2, "transient exchange (passive)", "exchange_declare",
                    tx, passive=True)
    _on_new_channel(ctx, c2, "re-declare limited queue with the same arguments", "queue_declare",
                    lq, durable=True, arguments=largs)
    _on_new_channel(ctx, c2, "re-declare limited queue without arguments", "queue_declare",
                    lq, durable=True)
    ch2 = c2.channel()
    ch2.confirm_delivery()
    # the durable binding dq <- dx "k" survived, tq's binding went with tq
    ctx.attempt("publish through the durable exchange (mandatory)", ch2.basic_publish,
                dx, "k", b"after", BasicProperties(delivery_mode=2), mandatory=True)
    ctx.record("durable queue messages", ctx.get_all(ch2, dq))
    ctx.record("limited queue messages", ctx.get_all(ch2, lq))
    ctx.record("counts at the end", {"durable": counts(ch2, dq), "limited": counts(ch2, lq)})


@scenario("restart", timeout=RESTART_TIMEOUT, restart=True)
def consumer_reconnect_loop(ctx):
    """The usual pika consumer loop: prefetch 1, manual acks, catch
    AMQPConnectionError, reconnect (connection_attempts/retry_delay),
    re-declare and consume again.  w0 is acked, the broker restarts while w1
    is being handled (unacked); after reconnecting w1 comes back redelivered,
    then w2..w4."""
    q = ctx.queue("work")
    pub = ctx.connect()
    pch = pub.channel()
    pch.confirm_delivery()
    pch.queue_declare(q, durable=True)
    for i in range(5):
        pch.basic_publish("", q, f"w{i}".encode(), BasicProperties(delivery_mode=2))
    pub.close()

    deliveries, events, declares = [], [], []
    state = {"restarted": False, "conn": 0}

    def on_message(ch, method, _props, body):
        deliveries.append([state["conn"], body, method.delivery_tag, method.redelivered])
        if body == b"w1" and not state["restarted"]:
            state["restarted"] = True
            events.append("restart while handling w1 (not acked)")
            ctx.restart_broker()
            return
        ch.basic_ack(method.delivery_tag)

    done = lambda: sum(1 for d in deliveries if d[1] == b"w4") >= 1  # noqa: E731
    for _attempt in range(4):
        try:
            conn = ctx.connect(connection_attempts=40, retry_delay=0.25)
            state["conn"] += 1
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1)
            d = ch.queue_declare(q, durable=True)
            declares.append([d.method.message_count, d.method.consumer_count])
            ch.basic_consume(q, on_message)
            ctx.wait(conn, done, timeout=10)
            ctx.settle(conn, 0.3)
            ctx.record("counts at the end", counts(ch, q))
            conn.close()
            break
        except pika.exceptions.AMQPConnectionError as e:
            events.append(error_dict(e))
    ctx.record("events", events)
    ctx.record("queue.declare-ok on each connection [messages, consumers]", declares)
    ctx.record("deliveries [connection, body, tag, redelivered]", deliveries)
