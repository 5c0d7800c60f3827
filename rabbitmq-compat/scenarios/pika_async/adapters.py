"""pika AsyncioConnection / SelectConnection: connect, declare, publish,
consume, close -- every callback logged in order."""
import asyncio

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

from scenarios.context import error_dict
from scenarios.framework import scenario
from scenarios.pikautil import amqp_name


def _flow(ctx, make_conn, stop_loop, confirms=False):
    """Callback chain: open -> channel -> [confirm] -> declare -> publish 3
    -> consume 3 (ack) -> cancel -> close."""
    log = []
    q = ctx.queue("q")
    st = {"got": 0, "acks": []}
    params = ctx.params(heartbeat=30)

    def on_open(conn):
        log.append("connection open")
        conn.channel(on_open_callback=on_channel)

    def on_open_error(conn, err):
        log.append(["open error", type(err).__name__])
        stop_loop(conn)

    def on_closed(conn, reason):
        log.append(["connection closed", error_dict(reason)])
        stop_loop(conn)

    def on_channel(ch):
        st["ch"] = ch
        log.append(["channel open", ch.channel_number])
        ch.add_on_close_callback(lambda c, reason: log.append(["channel closed", error_dict(reason)]))
        if confirms:
            ch.confirm_delivery(lambda fr: st["acks"].append(
                [amqp_name(fr.method), fr.method.delivery_tag, fr.method.multiple]),
                callback=lambda fr: (log.append(amqp_name(fr.method)), declare(ch)))
        else:
            declare(ch)

    def declare(ch):
        ch.queue_declare(q, callback=on_declared)

    def on_declared(fr):
        ch = st["ch"]
        log.append([amqp_name(fr.method), fr.method.message_count, fr.method.consumer_count])
        for i in range(3):
            ch.basic_publish("", q, b"m%d" % i, pika.BasicProperties(headers={"i": i}))
        ch.basic_qos(prefetch_count=2, callback=lambda f: (
            log.append(amqp_name(f.method)),
            ch.basic_consume(q, on_message, consumer_tag="c1",
                             callback=lambda f2: log.append([amqp_name(f2.method), f2.method.consumer_tag]))))

    def on_message(ch, m, p, body):
        log.append(["deliver", m.delivery_tag, m.redelivered, body, p.headers])
        ch.basic_ack(m.delivery_tag)
        st["got"] += 1
        if st["got"] == 3:
            ch.basic_cancel("c1", callback=lambda f: (
                log.append([amqp_name(f.method), f.method.consumer_tag]),
                ch.close()))
            ch.add_on_close_callback(lambda c, r: st["conn"].close())

    conn = make_conn(params, on_open, on_open_error, on_closed)
    st["conn"] = conn
    return conn, log, st


def _run_asyncio(ctx, **kw):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    def make(params, on_open, on_err, on_closed):
        return AsyncioConnection(params, on_open_callback=on_open, on_open_error_callback=on_err,
                                 on_close_callback=on_closed, custom_ioloop=loop)

    conn, log, st = _flow(ctx, make, lambda c: loop.stop(), **kw)
    loop.call_later(8, loop.stop)
    loop.run_forever()
    loop.close()
    return log, st


def _run_select(ctx, **kw):
    def make(params, on_open, on_err, on_closed):
        return pika.SelectConnection(params, on_open_callback=on_open,
                                     on_open_error_callback=on_err, on_close_callback=on_closed)

    conn, log, st = _flow(ctx, make, lambda c: c.ioloop.stop(), **kw)
    conn.ioloop.call_later(8, conn.ioloop.stop)
    conn.ioloop.start()
    return log, st


@scenario("basic")
def asyncio_connection_flow(ctx):
    """AsyncioConnection: open, channel, queue.declare, 3 publishes,
    basic.qos(2), basic.consume with callback, acks, basic.cancel, channel
    and connection close -- the callback sequence."""
    log, _st = _run_asyncio(ctx)
    ctx.record("callbacks", log)


@scenario("basic")
def select_connection_flow(ctx):
    """SelectConnection: the same callback flow as the asyncio scenario."""
    log, _st = _run_select(ctx)
    ctx.record("callbacks", log)


@scenario("confirms")
def select_connection_confirms(ctx):
    """SelectConnection with confirm_delivery: every publish acked (the set
    of acked tags, not the frames), then consume and close."""
    log, st = _run_select(ctx, confirms=True)
    ctx.record("callbacks", log)
    acked = set()
    for kind, tag, multiple in st["acks"]:
        acked |= set(range(1, tag + 1)) if multiple else {tag}
    ctx.record("acked tags", sorted(acked))


@scenario("channel")
def asyncio_channel_error(ctx):
    """AsyncioConnection: a passive declare of a missing queue inside a
    consume callback closes the channel (404, the on_close callback gets
    ChannelClosedByBroker); the application then closes the connection."""
    log = []
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    q = ctx.queue("q")

    def on_open(conn):
        log.append("connection open")
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch):
        log.append(["channel open", ch.channel_number])
        ch.add_on_close_callback(lambda c, reason: (log.append(["channel closed", error_dict(reason)]),
                                                    c.connection.close()))
        ch.queue_declare(q, callback=lambda f: (
            log.append(amqp_name(f.method)),
            ch.queue_declare(ctx.queue("missing"), passive=True,
                             callback=lambda f2: log.append("unexpected declare-ok"))))

    def on_closed(conn, reason):
        log.append(["connection closed", error_dict(reason)])
        loop.stop()

    AsyncioConnection(ctx.params(), on_open_callback=on_open,
                      on_open_error_callback=lambda c, e: (log.append(["open error", repr(e)]), loop.stop()),
                      on_close_callback=on_closed, custom_ioloop=loop)
    loop.call_later(8, loop.stop)
    loop.run_forever()
    loop.close()
    ctx.record("callbacks", log)
