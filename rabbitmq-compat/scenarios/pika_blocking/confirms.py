"""Publisher confirms and transactions."""
from pika import BasicProperties, spec

from scenarios.context import counts
from scenarios.framework import scenario
from scenarios.pikautil import FRAMES, amqp_name, record_frames


def _frame_log():
    """Received frames after record_frames(): methods by name (with the
    fields that matter for ordering), content headers / bodies by type."""
    out = []
    for ftype, chan, _payload, fr in FRAMES:
        if ftype == 1:
            m = fr.method
            d = amqp_name(m)
            if isinstance(m, (spec.Basic.Ack, spec.Basic.Nack)):
                d += f" tag={m.delivery_tag} multiple={m.multiple}"
            elif isinstance(m, spec.Basic.Return):
                d += f" {m.reply_code} {m.reply_text}"
            out.append(f"ch{chan} {d}")
        elif ftype == 2:
            out.append(f"ch{chan} content-header")
        elif ftype == 3:
            out.append(f"ch{chan} content-body")
    return out


def _acked(acks, n):
    """Expand acks/nacks (multiple=true covers every outstanding tag up to
    its tag) for n publishes: (acked tags, nacked tags, problems)."""
    outstanding = set(range(1, n + 1))
    acked, nacked, problems = set(), set(), []
    for kind, tag, multiple in acks:
        tags = sorted(t for t in outstanding if t <= tag) if multiple else [tag]
        if not multiple and tag not in outstanding:
            problems.append(f"{kind} for tag {tag} which is not outstanding")
        for t in tags:
            outstanding.discard(t)
            (acked if kind == "ack" else nacked).add(t)
    return sorted(acked), sorted(nacked), problems


@scenario("confirms")
def routable_and_unroutable(ctx):
    """confirm.select; routable, unroutable (default exchange, no queue) and
    fanout-without-bindings publishes are all acked, one tag each."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ctx.attempt("confirm.select", ch.confirm_delivery)
    record_frames()
    ctx.attempt("routable", ch.basic_publish, "", q, b"a")
    ctx.attempt("unroutable", ch.basic_publish, "", ctx.queue("missing"), b"b")
    ctx.attempt("persistent to a transient queue", ch.basic_publish, "", q, b"c",
                properties=BasicProperties(delivery_mode=2))
    ctx.attempt("fanout without bindings", ch.basic_publish, "amq.fanout", "", b"d")
    ctx.record("frames", _frame_log())
    record_frames(False)
    ctx.record("queue", [m["body"] for m in ctx.get_all(ch, q)])


@scenario("confirms")
def mandatory_return_before_ack(ctx):
    """A mandatory unroutable publish on a confirm channel: basic.return
    (with content) arrives before the basic.ack for it."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.confirm_delivery()
    record_frames()
    ctx.attempt("mandatory unroutable", ch.basic_publish, "amq.direct", "nowhere", b"x", mandatory=True)
    ctx.attempt("mandatory routable", ch.basic_publish, "", q, b"y", mandatory=True)
    ctx.record("frames", _frame_log())
    record_frames(False)


@scenario("confirms")
def many_in_flight(ctx):
    """200 publishes without waiting: every sequence number is acked exactly
    once (the broker may coalesce with multiple=true), none nacked."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    acks, selected = [], []
    impl = ch._impl  # pylint: disable=protected-access
    impl.confirm_delivery(lambda f: acks.append(("ack" if isinstance(f.method, spec.Basic.Ack) else "nack",
                                                 f.method.delivery_tag, f.method.multiple)),
                          callback=selected.append)
    ctx.wait(c, lambda: selected)
    for i in range(200):
        impl.basic_publish("", q if i % 2 == 0 else ctx.queue("missing"), str(i).encode())
    ctx.wait(c, lambda: acks and max(a[1] for a in acks) >= 200, timeout=8)
    acked, nacked, problems = _acked(acks, 200)
    ctx.record("acked 1..200", acked == list(range(1, 201)))
    ctx.record("problems", problems)
    ctx.record("nacked", nacked)
    ctx.record("highest tag", max(a[1] for a in acks) if acks else None)
    ctx.record("queue length", counts(ch, q)[0])


@scenario("confirms")
def mode_conflicts(ctx):
    """confirm.select on a tx channel and tx.select on a confirm channel are
    406; confirm.select twice is fine."""
    c = ctx.connect()
    ch = c.channel()
    ch.tx_select()
    ctx.attempt("confirm.select on a tx channel", ch.confirm_delivery)
    ch = c.channel()
    ch.confirm_delivery()
    got = []
    ch._impl._rpc(spec.Confirm.Select(), got.append, [spec.Confirm.SelectOk])  # pylint: disable=protected-access
    ctx.wait(c, lambda: got or ch.is_closed)
    ctx.record("confirm.select again (raw)", got[0] if got else "channel closed")
    ctx.attempt("tx.select on a confirm channel", ch.tx_select)


@scenario("confirms")
def missing_exchange(ctx):
    """Publishing to a missing exchange on a confirm channel closes the
    channel (404) instead of nacking."""
    c = ctx.connect()
    ch = c.channel()
    ch.confirm_delivery()
    ctx.attempt("publish to missing exchange", ch.basic_publish, ctx.exchange("missing"), "k", b"x")
    ctx.record("channel closed", ch.is_closed)
    ctx.record("connection open", c.is_open)


@scenario("confirms")
def tags_per_channel(ctx):
    """Confirm sequence numbers are per channel and start at 1 on each."""
    c = ctx.connect()
    a, b = c.channel(), c.channel()
    q = ctx.queue("q")
    a.queue_declare(q)
    a.confirm_delivery()
    b.confirm_delivery()
    record_frames()
    a.basic_publish("", q, b"a1")
    a.basic_publish("", q, b"a2")
    b.basic_publish("", q, b"b1")
    a.basic_publish("", q, b"a3")
    ctx.record("frames", _frame_log())
    record_frames(False)


# ---------------------------------------------------------------------------
# transactions
# ---------------------------------------------------------------------------
@scenario("tx")
def commit_publish(ctx):
    """Publishes in a transaction are invisible until tx.commit."""
    c = ctx.connect()
    ch, obs = c.channel(), c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ctx.attempt("tx.select", ch.tx_select)
    ch.basic_publish("", q, b"t1")
    ch.basic_publish("", q, b"t2")
    ctx.record("count before commit", counts(obs, q)[0])
    ctx.attempt("tx.commit", ch.tx_commit)
    ctx.record("count after commit", counts(obs, q)[0])
    ctx.attempt("empty commit", ch.tx_commit)
    ctx.record("got", [m["body"] for m in ctx.get_all(obs, q)])


@scenario("tx")
def rollback_publish(ctx):
    """tx.rollback discards the transaction's publishes; the channel stays
    transactional."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.tx_select()
    ch.basic_publish("", q, b"discard me")
    ctx.attempt("tx.rollback", ch.tx_rollback)
    ctx.record("count after rollback", counts(ch, q)[0])
    ch.basic_publish("", q, b"keep me")
    ch.tx_commit()
    ctx.record("got", [m["body"] for m in ctx.get_all(ch, q)])


@scenario("tx")
def commit_and_rollback_acks(ctx):
    """Acks in a transaction take effect at commit; rolled-back acks leave the
    messages unacked (requeued when the channel closes)."""
    c = ctx.connect()
    setup = c.channel()
    q = ctx.queue("q")
    setup.queue_declare(q)
    for i in range(4):
        setup.basic_publish("", q, f"m{i}".encode())
    ch = c.channel()
    ch.tx_select()
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(4)]
    ch.basic_ack(tags[0])
    ch.basic_ack(tags[1])
    ch.tx_commit()
    ch.basic_ack(tags[2])
    ch.basic_reject(tags[3], requeue=True)
    ctx.attempt("rollback the ack and the reject", ch.tx_rollback)
    ctx.record("counts before close", counts(setup, q)[0])
    ch.close()
    ctx.record("left after close", ctx.get_all(setup, q))


@scenario("tx")
def mandatory_return_in_tx(ctx):
    """In a transaction, the basic.return for an unroutable mandatory publish
    is sent when the transaction commits."""
    c = ctx.connect()
    ch = c.channel()
    returned = []
    ch.add_on_return_callback(lambda c_, m, p, b: returned.append(ctx.msg(m, p, b)))
    ch.tx_select()
    record_frames()
    ch.basic_publish("amq.direct", "nowhere", b"unroutable", mandatory=True)
    ctx.settle(c, 0.3)
    ctx.record("returns before commit", list(returned))
    ch.tx_commit()
    ctx.settle(c, 0.3)
    ctx.record("frames", _frame_log())
    ctx.record("returns after commit", returned)
    record_frames(False)


@scenario("tx")
def not_transactional(ctx):
    """tx.commit / tx.rollback without tx.select: 406; tx.select twice is fine."""
    c = ctx.connect()
    ctx.attempt("tx.commit without select", c.channel().tx_commit)
    ctx.attempt("tx.rollback without select", c.channel().tx_rollback)
    ch = c.channel()
    ch.tx_select()
    ctx.attempt("tx.select twice", ch.tx_select)
