"""Channel scenarios: many channels, error isolation, flow, reuse of numbers."""
from scenarios.context import counts
from scenarios.framework import scenario


@scenario("channel")
def many_channels_50(ctx):
    """50 channels on one connection: each publishes one message to its own
    queue and gets it back; then all are closed and the connection stays up."""
    c = ctx.connect()
    chans = [c.channel() for _ in range(50)]
    ctx.record("channel numbers", [chans[0].channel_number, chans[-1].channel_number, len(chans)])
    results = []
    for i, ch in enumerate(chans):
        q = ctx.queue(f"q{i}")
        ch.queue_declare(q, auto_delete=False)
        ch.basic_publish("", q, f"on channel {ch.channel_number}".encode())
    for i, ch in enumerate(chans):
        m, _p, b = ch.basic_get(ctx.queue(f"q{i}"), auto_ack=True)
        results.append((m.delivery_tag, b.decode()))
    ctx.record("all 50 got their own message",
               results == [(1, f"on channel {ch.channel_number}") for ch in chans])
    for ch in chans:
        ch.close()
    ctx.record("all closed", all(ch.is_closed for ch in chans))
    ch = c.channel()
    ctx.record("reopened channel number", ch.channel_number)
    ctx.record("connection open", c.is_open)


@scenario("channel")
def open_close_churn(ctx):
    """Open and close 200 channels in sequence on one connection (same number
    reused every time); the last one still works."""
    c = ctx.connect()
    nums = set()
    for _ in range(200):
        ch = c.channel()
        nums.add(ch.channel_number)
        ch.close()
    ctx.record("distinct channel numbers used", sorted(nums))
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x")
    ctx.record("get", ctx.msg(*ch.basic_get(q, auto_ack=True)))


@scenario("channel")
def error_isolation(ctx):
    """A channel error closes only that channel: other channels of the same
    connection keep their consumers, unacked messages and state."""
    c = ctx.connect()
    good = c.channel()
    bad = c.channel()
    q = ctx.queue("q")
    good.queue_declare(q)
    good.basic_qos(prefetch_count=5)
    for i in range(3):
        good.basic_publish("", q, f"m{i}".encode())
    got = []
    good.basic_consume(q, lambda ch, m, p, b: got.append(m.delivery_tag), consumer_tag="keep")
    ctx.wait(c, lambda: len(got) >= 3)
    with ctx.error("bad channel: passive declare of a missing queue"):
        bad.queue_declare(ctx.queue("missing"), passive=True)
    ctx.record("bad channel closed", bad.is_closed)
    ctx.record("good channel open", good.is_open)
    ctx.record("connection open", c.is_open)
    good.basic_ack(delivery_tag=0, multiple=True)
    good.basic_publish("", q, b"after")
    ctx.wait(c, lambda: len(got) >= 4)
    ctx.record("delivery tags on the good channel", got)
    good.basic_cancel("keep")
    ctx.record("counts", counts(good, q))
    again = c.channel()
    ctx.record("new channel reuses the closed number", again.channel_number == bad.channel_number)
    ctx.attempt("declare on the new channel", again.queue_declare, q, passive=True)


@scenario("channel")
def connection_error_closes_all_channels(ctx):
    """A connection-level error (basic.qos prefetch_size != 0 is 540
    NOT_IMPLEMENTED) closes every channel of the connection."""
    c = ctx.connect()
    chans = [c.channel() for _ in range(3)]
    with ctx.error("basic.qos prefetch_size=1000"):
        chans[1].basic_qos(prefetch_size=1000)
    ctx.record("channels closed", [ch.is_closed for ch in chans])
    ctx.record("connection closed", c.is_closed)
    c2 = ctx.connect()
    ctx.record("new connection works", c2.channel().is_open)


@scenario("channel")
def flow(ctx):
    """channel.flow active=true is acknowledged; active=false is refused by
    RabbitMQ 3.x (540 NOT_IMPLEMENTED, connection error)."""
    c = ctx.connect()
    ch = c.channel()
    ctx.attempt("flow active=true", ch.flow, True)
    ctx.attempt("flow active=false", ch.flow, False)
    ctx.record("connection open afterwards", c.is_open)


@scenario("channel")
def close_with_unacked_and_consumers(ctx):
    """Closing a channel requeues its unacked messages in their original order
    (redelivered=true) and removes its consumers; another channel is unaffected."""
    c = ctx.connect()
    a, b = c.channel(), c.channel()
    q = ctx.queue("q")
    b.queue_declare(q)
    for i in range(4):
        b.basic_publish("", q, f"m{i}".encode())
    got = []
    a.basic_qos(prefetch_count=2)
    a.basic_consume(q, lambda ch, m, p, body: got.append(body), consumer_tag="a")
    ctx.wait(c, lambda: len(got) >= 2)
    ctx.settle(c, 0.2)
    ctx.record("delivered to a", got)
    ctx.record("before close", counts(b, q))
    a.close()
    ctx.record("after close", counts(b, q))
    ctx.record("queue order after requeue", ctx.get_all(b, q))
