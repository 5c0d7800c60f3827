"""aio-pika used as asyncio applications use it."""
import asyncio

import aio_pika
import aiormq
from aio_pika.patterns import RPC

from scenarios.framework import jsonable, scenario


def aerr(e):
    """An aio-pika/aiormq exception: class (aiormq maps the reply code to the
    class) and its arguments (the broker's reply text)."""
    return {"exc": f"{type(e).__module__.split('.')[0]}.{type(e).__name__}",
            "args": [a if isinstance(a, (str, int, type(None))) else repr(a) for a in e.args]}


def amsg(m):
    """Describe an aio_pika IncomingMessage."""
    d = {"body": m.body, "routing_key": m.routing_key, "exchange": m.exchange,
         "redelivered": m.redelivered, "delivery_tag": m.delivery_tag}
    info = m.info()
    for k in ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
              "correlation_id", "reply_to", "expiration", "type", "app_id"):
        v = info.get(k)
        if v not in (None, {}):
            d[k] = v.value if hasattr(v, "value") else v
    return d


def run(ctx, coro_fn):
    async def main():
        conn = await aio_pika.connect_robust(ctx.url, timeout=5)
        try:
            await coro_fn(conn)
        finally:
            await conn.close()
    asyncio.run(asyncio.wait_for(main(), 9))


@scenario("connection")
def aio_connect_robust(ctx):
    """connect_robust: connection/channel state, negotiated heartbeat,
    frame_max and channel_max as aiormq saw them, default publisher
    confirms on a new channel, is_closed after close()."""
    async def body(conn):
        ch = await conn.channel()
        c = conn.transport.connection
        ctx.record("state", {"is_closed": conn.is_closed, "channel is_closed": ch.is_closed,
                             "publisher_confirms": ch.publisher_confirms,
                             "heartbeat": c.connection_tune.heartbeat,
                             "frame_max": c.connection_tune.frame_max,
                             "channel_max": c.connection_tune.channel_max,
                             "channel number": ch.number})
        await ch.close()
        ctx.record("channel closed", ch.is_closed)
    conn_holder = {}

    async def main():
        conn = await aio_pika.connect_robust(ctx.url, timeout=5)
        conn_holder["c"] = conn
        await body(conn)
        await conn.close()
        ctx.record("connection closed", conn.is_closed)
    asyncio.run(asyncio.wait_for(main(), 9))


@scenario("basic")
def aio_queue_iterator(ctx):
    """declare exchange/queue/bind, publish 3 messages with properties, consume
    them with `async with queue.iterator()` and message.process(); nack one
    with requeue inside process(requeue=True) and see it come back."""
    async def body(conn):
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=5)
        x = await ch.declare_exchange(ctx.exchange("x"), aio_pika.ExchangeType.DIRECT)
        q = await ch.declare_queue(ctx.queue("q"), durable=True)
        ctx.record("declaration_result", [q.declaration_result.message_count,
                                          q.declaration_result.consumer_count])
        await q.bind(x, routing_key="k")
        for i in range(3):
            r = await x.publish(aio_pika.Message(f"m{i}".encode(), headers={"i": i},
                                                 content_type="text/plain", correlation_id=f"c{i}",
                                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                routing_key="k")
            ctx.record(f"publish {i}", type(r).__name__)
        got = []
        failed = False
        async with q.iterator() as it:
            async for m in it:
                try:
                    async with m.process(requeue=True):
                        got.append(amsg(m))
                        if m.body == b"m1" and not failed:
                            failed = True
                            raise RuntimeError("fail once")
                except RuntimeError:
                    pass
                if len(got) == 4:
                    break
        ctx.record("got", got)
        await asyncio.sleep(0.2)
        q2 = await ch.declare_queue(ctx.queue("q"), passive=True)
        ctx.record("after", [q2.declaration_result.message_count,
                             q2.declaration_result.consumer_count])
    run(ctx, body)


@scenario("patterns")
def aio_rpc_pattern(ctx):
    """aio_pika.patterns.RPC: a registered method called through the same
    connection (server and client), a remote exception, and a manual RPC
    over an exclusive server-named reply queue with correlation ids."""
    async def body(conn):
        ch = await conn.channel()
        rpc = await RPC.create(ch)

        async def mul(*, x, y):
            return x * y

        async def boom():
            raise ValueError("no")

        name = ctx.prefix + ".mul"
        await rpc.register(name, mul, auto_delete=True)
        await rpc.register(ctx.prefix + ".boom", boom, auto_delete=True)
        ctx.record("call", await rpc.call(name, kwargs=dict(x=6, y=7)))
        try:
            await rpc.call(ctx.prefix + ".boom")
            ctx.record("remote error", "no error")
        except Exception as e:  # noqa: BLE001
            ctx.record("remote error", [type(e).__name__, str(e)])
        await rpc.close()
        # manual RPC with an exclusive reply queue
        sch = await conn.channel()
        sq = await sch.declare_queue(ctx.queue("rpc"), auto_delete=True)

        async def serve(m):
            async with m.process():
                await sch.default_exchange.publish(
                    aio_pika.Message(m.body.upper(), correlation_id=m.correlation_id),
                    routing_key=m.reply_to)
        await sq.consume(serve)
        cch = await conn.channel()
        rq = await cch.declare_queue("", exclusive=True)
        fut = asyncio.get_running_loop().create_future()

        async def on_reply(m):
            async with m.process():
                fut.set_result(amsg(m))
        await rq.consume(on_reply)
        await cch.default_exchange.publish(
            aio_pika.Message(b"hello", correlation_id="corr-1", reply_to=rq.name),
            routing_key=sq.name)
        reply = await asyncio.wait_for(fut, 3)
        reply["routing_key == reply queue"] = reply.pop("routing_key") == rq.name
        ctx.record("manual reply", reply)
        ctx.record("reply queue name", [rq.name[:4], len(rq.name)])
    run(ctx, body)


@scenario("confirms")
def aio_publisher_confirms(ctx):
    """Publisher confirms are on by default: publish returns Basic.Ack for a
    routable, an unroutable (non-mandatory) and a persistent message;
    concurrent publishes are all acked; a channel without confirms returns
    None."""
    async def body(conn):
        ch = await conn.channel()
        q = await ch.declare_queue(ctx.queue("q"))
        ex = ch.default_exchange
        ctx.record("routable", type(await ex.publish(aio_pika.Message(b"a"), q.name)).__name__)
        ctx.record("unroutable (aio-pika publishes mandatory by default)", type(await ex.publish(aio_pika.Message(b"b"), ctx.queue("none"))).__name__)
        ctx.record("persistent", type(await ex.publish(
            aio_pika.Message(b"c", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), q.name)).__name__)
        rs = await asyncio.gather(*[ex.publish(aio_pika.Message(b"%d" % i), q.name) for i in range(20)])
        ctx.record("20 concurrent", sorted({type(r).__name__ for r in rs}))
        nch = await conn.channel(publisher_confirms=False)
        ctx.record("no confirms", jsonable(await nch.default_exchange.publish(aio_pika.Message(b"d"), q.name)))
        await asyncio.sleep(0.2)
        qq = await ch.declare_queue(q.name, passive=True)
        ctx.record("count", qq.declaration_result.message_count)
    run(ctx, body)


@scenario("confirms")
def aio_mandatory_return(ctx):
    """mandatory=True unroutable publish on a confirm channel raises
    DeliveryError carrying the returned message (reply code/text); with
    on_return_raises=False it returns the ack and the return goes to the
    return callback."""
    async def body(conn):
        ch = await conn.channel(on_return_raises=True)
        x = await ch.declare_exchange(ctx.exchange("x"), aio_pika.ExchangeType.DIRECT)
        try:
            r = await x.publish(aio_pika.Message(b"lost", message_id="m-1"), routing_key="nowhere",
                                mandatory=True)
            ctx.record("raises", {"no error": type(r).__name__})
        except aio_pika.exceptions.DeliveryError as e:
            m = e.message
            fr = e.frame
            ctx.record("raises", {"exc": type(e).__name__, "frame": type(fr).__name__,
                                  "reply_code": getattr(fr, "reply_code", None),
                                  "reply_text": getattr(fr, "reply_text", None),
                                  "body": m.body if m else None,
                                  "message_id": m.header.properties.message_id if m else None})
        ch2 = await conn.channel(on_return_raises=False)
        returned = []
        ch2.return_callbacks.add(lambda _ch, m: returned.append(
            {"body": m.body, "routing_key": m.routing_key, "exchange": m.exchange}))
        x2 = await ch2.get_exchange(x.name)
        r = await x2.publish(aio_pika.Message(b"lost2"), routing_key="nowhere", mandatory=True)
        await asyncio.sleep(0.2)
        ctx.record("no raise", {"result": type(r).__name__, "returned": returned})
    run(ctx, body)


@scenario("channel")
def aio_channel_close_errors(ctx):
    """Channel-level errors as aiormq exceptions: passive declare of a missing
    queue (404), exchange redeclare with another type (406), queue.bind to a
    missing exchange (404), reserved amq. name (403); after each the
    channel is closed and a fresh channel works."""
    async def body(conn):
        async def one(key, fn):
            ch = await conn.channel()
            try:
                await fn(ch)
                ctx.record(key, "no error")
            except Exception as e:  # noqa: BLE001
                ctx.record(key, dict(aerr(e), channel_closed=ch.is_closed))

        await one("passive missing queue",
                  lambda ch: ch.declare_queue(ctx.queue("missing"), passive=True))
        setup = await conn.channel()
        await setup.declare_exchange(ctx.exchange("x"), aio_pika.ExchangeType.DIRECT)
        q = await setup.declare_queue(ctx.queue("q"))
        await one("exchange type mismatch",
                  lambda ch: ch.declare_exchange(ctx.exchange("x"), aio_pika.ExchangeType.FANOUT))

        async def bind_missing(ch):
            qq = await ch.get_queue(q.name)
            await qq.bind(ctx.exchange("missing"), routing_key="k")
        await one("bind to missing exchange", bind_missing)
        await one("reserved amq. exchange",
                  lambda ch: ch.declare_exchange("amq.compat-nope", aio_pika.ExchangeType.DIRECT))
        await one("queue args mismatch",
                  lambda ch: ch.declare_queue(q.name, arguments={"x-max-length": 3}))
        ch = await conn.channel()
        ok = await ch.declare_queue(q.name, passive=True)
        ctx.record("fresh channel", ok.declaration_result.message_count)
    run(ctx, body)


async def _counts(ch, name):
    """[messages, consumers] from a passive queue.declare on the channel's
    current aiormq channel (aio-pika's declare_queue(passive=True) on a
    robust channel can hand back an earlier declaration result)."""
    await asyncio.sleep(0.15)
    ok = await (await ch.get_underlay_channel()).queue_declare(name, passive=True)
    return [ok.message_count, ok.consumer_count]


@scenario("restart", timeout=60, restart=True)
def robust_consumer_resumes(ctx):
    """connect_robust (reconnect_interval 0.3 s): durable exchange + durable
    queue and a transient queue bound to it, a consumer (prefetch 10) that
    acks m0 and holds m1, m2 and a non-persistent message unacked; the broker
    restarts; the close callback's exception, the reconnect callback; the
    robust channel re-declares exchange, queues, bindings, QoS and the
    consumer by itself: held persistent messages come back redelivered, the
    non-persistent one is gone, and m3 published after the reconnect reaches
    both queues."""
    async def main():
        conn = await aio_pika.connect_robust(ctx.url, timeout=5, reconnect_interval=0.3)
        events = []
        reconnected = asyncio.Event()
        refused = []

        def on_close(_sender, exc):
            # reconnect attempts while the broker is down fail with ECONNREFUSED
            # (how many depends on how long the restart takes): counted apart
            if isinstance(exc, aiormq.exceptions.AMQPConnectionError) and \
                    "Connect call failed" in str(exc):
                refused.append(exc)
            else:
                events.append({"close callback": aerr(exc) if exc else None})
        conn.close_callbacks.add(on_close)

        def on_reconnect(_sender):
            events.append("reconnect callback")
            reconnected.set()
        conn.reconnect_callbacks.add(on_reconnect)
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=10)
        x = await ch.declare_exchange(ctx.exchange("x"), aio_pika.ExchangeType.DIRECT, durable=True)
        q = await ch.declare_queue(ctx.queue("durable"), durable=True)
        tq = await ch.declare_queue(ctx.queue("transient"), durable=False)
        await q.bind(x, routing_key="k")
        await tq.bind(x, routing_key="k")
        for i in range(3):
            await x.publish(aio_pika.Message(f"m{i}".encode(), headers={"i": i},
                                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                            routing_key="k")
        await x.publish(aio_pika.Message(b"not-persistent",
                                         delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT),
                        routing_key="k")
        phase = {"n": 1}
        got = {1: [], 2: []}

        async def on_message(m):
            got[phase["n"]].append(amsg(m))
            if phase["n"] == 2 or m.body == b"m0":
                await m.ack()
        await q.consume(on_message)

        async def wait_for(pred, seconds):
            deadline = asyncio.get_running_loop().time() + seconds
            while not pred() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
        await wait_for(lambda: len(got[1]) >= 4, 5)
        await asyncio.sleep(0.3)
        ctx.record("delivered before the restart", got[1])
        ctx.record("transient queue before the restart [messages, consumers]",
                   await _counts(ch, ctx.queue("transient")))
        phase["n"] = 2
        await asyncio.to_thread(ctx.restart_broker)
        try:
            await asyncio.wait_for(reconnected.wait(), 20)
        except asyncio.TimeoutError:
            events.append("no reconnect within 20 s")
        await wait_for(lambda: len(got[2]) >= 2, 5)
        ctx.record("connection state after the reconnect",
                   {"is_closed": conn.is_closed, "channel is_closed": ch.is_closed})
        await x.publish(aio_pika.Message(b"m3", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key="k")
        await wait_for(lambda: len(got[2]) >= 3, 5)
        await asyncio.sleep(0.3)
        ctx.record("events", events)
        ctx.record("delivered after the restart", got[2])
        ctx.record("transient queue (re-declared by the robust channel) [messages, consumers]",
                   await _counts(ch, ctx.queue("transient")))
        ctx.record("durable queue at the end [messages, consumers]",
                   await _counts(ch, ctx.queue("durable")))
        await conn.close()
    asyncio.run(asyncio.wait_for(main(), 50))
