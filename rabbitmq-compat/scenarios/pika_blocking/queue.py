"""Queue scenarios: declare variants, server-named, exclusive, auto-delete,
argument validation, purge/delete counts, the "last queue" shortcut."""
import time

from scenarios.context import counts
from scenarios.framework import scenario


def _counts(ch, q):
    return counts(ch, q)


@scenario("queue")
def declare_variants(ctx):
    """queue.declare with each flag combination and valid arguments; the
    declare-ok fields; redeclaring the same is fine."""
    c = ctx.connect()
    ch = c.channel()
    variants = {
        "plain": {},
        "durable": dict(durable=True),
        "exclusive": dict(exclusive=True),
        "auto_delete": dict(auto_delete=True),
        "durable+auto_delete": dict(durable=True, auto_delete=True),
        "exclusive+auto_delete": dict(exclusive=True, auto_delete=True),
        "valid arguments": dict(arguments={"x-message-ttl": 60000, "x-expires": 600000,
                                           "x-max-length": 100, "x-max-length-bytes": 1 << 20,
                                           "x-overflow": "reject-publish",
                                           "x-dead-letter-exchange": "dlx",
                                           "x-dead-letter-routing-key": "dl",
                                           "x-queue-mode": "lazy", "x-compat-unknown": "kept"}),
        "classic queue type": dict(arguments={"x-queue-type": "classic"}),
    }
    for label, kw in variants.items():
        q = ctx.queue(label.replace(" ", "-").replace("+", "-"))
        ctx.attempt(label, ch.queue_declare, q, **kw)
        ctx.attempt(label + ", again", ch.queue_declare, q, **kw)
    q = ctx.queue("plain")
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    time.sleep(0.15)  # see scenarios.context.counts
    ctx.attempt("plain with 2 messages, passive", ch.queue_declare, q, passive=True)
    ctx.attempt("passive with other flags (ignored)", ch.queue_declare, q, passive=True, durable=True,
                exclusive=True, arguments={"x-max-length": 1})


@scenario("queue")
def server_named(ctx):
    """queue.declare '' makes amq.gen-... names: distinct each time, usable
    with passive declare, publish and get."""
    c = ctx.connect()
    ch = c.channel()
    a = ch.queue_declare("", exclusive=True).method.queue
    b = ch.queue_declare("", exclusive=True).method.queue
    n = ch.queue_declare("").method.queue  # non-exclusive server-named
    ctx.record("names", [a, b, n])
    ctx.record("distinct", len({a, b, n}) == 3)
    ctx.attempt("passive", ch.queue_declare, a, passive=True)
    ch.basic_publish("", a, b"to a server-named queue")
    ctx.record("get", ctx.msg(*ch.basic_get(a, auto_ack=True)))
    ch.queue_delete(n)
    c2 = ctx.connect()
    ctx.attempt("another connection: passive on the exclusive one", c2.channel().queue_declare, a,
                passive=True)


@scenario("queue")
def exclusive_other_connection(ctx):
    """An exclusive queue is usable from every channel of its connection and
    locked (405) for other connections; it disappears with its connection."""
    owner = ctx.connect()
    ch = owner.channel()
    q = ctx.queue("q")
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"mine")
    ctx.attempt("same connection, other channel: get", lambda: ctx.msg(*owner.channel().basic_get(q)))
    other = ctx.connect()
    ops = {
        "passive declare": lambda c: c.queue_declare(q, passive=True),
        "declare": lambda c: c.queue_declare(q, exclusive=True),
        "get": lambda c: c.basic_get(q),
        "consume": lambda c: c.basic_consume(q, lambda *a: None),
        "bind": lambda c: c.queue_bind(q, "amq.fanout"),
        "purge": lambda c: c.queue_purge(q),
        "delete": lambda c: c.queue_delete(q),
        "publish (allowed)": lambda c: (c.basic_publish("", q, b"from other"), c.basic_qos())[1],
    }
    for label, op in ops.items():
        ctx.attempt("other connection: " + label, op, other.channel())
    ctx.record("owner counts", _counts(owner.channel(), q))
    owner.close()
    time.sleep(0.2)
    ctx.attempt("after the owner closed: passive", other.channel().queue_declare, q, passive=True)


@scenario("queue")
def auto_delete_lifecycle(ctx):
    """auto_delete: kept while never consumed, kept while one of two consumers
    remains, deleted when the last consumer cancels or its channel closes."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"m")
    ctx.attempt("never consumed", _counts, ch, q)
    t1 = ch.basic_consume(q, lambda *a: None, consumer_tag="t1")
    t2 = ch.basic_consume(q, lambda *a: None, consumer_tag="t2")
    ctx.settle(c, 0.2)
    ch.basic_cancel(t1)
    ctx.attempt("one of two consumers cancelled", _counts, ch, q)
    ch.basic_cancel(t2)
    ctx.attempt("last consumer cancelled", _counts, c.channel(), q)
    ch = c.channel()
    # last consumer's channel closes
    ch = c.channel()
    q2 = ctx.queue("q2")
    ch.queue_declare(q2, auto_delete=True)
    cch = c.channel()
    cch.basic_consume(q2, lambda *a: None, consumer_tag="t")
    cch.close()
    ctx.attempt("consumer's channel closed", _counts, ch, q2)
    ch = c.channel()
    # basic.get does not count as a consumer
    q3 = ctx.queue("q3")
    ch.queue_declare(q3, auto_delete=True)
    ch.basic_publish("", q3, b"x")
    ch.basic_get(q3, auto_ack=True)
    ctx.attempt("after basic.get only", _counts, ch, q3)


@scenario("queue")
def args_validation(ctx):
    """Invalid x-arguments are 406 PRECONDITION_FAILED with RabbitMQ's texts."""
    c = ctx.connect()
    cases = {
        "x-message-ttl=-1": {"x-message-ttl": -1},
        "x-message-ttl='60' (string)": {"x-message-ttl": "60"},
        "x-max-length=2**40 (long long, valid)": {"x-max-length": 2 ** 40},
        "x-expires=0": {"x-expires": 0},
        "x-max-length=-2": {"x-max-length": -2},
        "x-max-length-bytes='big'": {"x-max-length-bytes": "big"},
        "x-max-priority=256": {"x-max-priority": 256},
        "x-max-priority=true (bool)": {"x-max-priority": True},
        "x-overflow=drop-tail": {"x-overflow": "drop-tail"},
        "x-queue-type=nope": {"x-queue-type": "nope"},
        "x-queue-mode=eager": {"x-queue-mode": "eager"},
        "x-dead-letter-routing-key only": {"x-dead-letter-routing-key": "k"},
        "x-dead-letter-exchange=[] (array)": {"x-dead-letter-exchange": []},
        "x-single-active-consumer=1 (int)": {"x-single-active-consumer": 1},
        "x-max-in-memory-length on classic (ignored)": {"x-max-in-memory-length": 5},
    }
    for label, args in cases.items():
        ch = c.channel() if c.is_open else ctx.connect().channel()
        q = ctx.queue("args")
        ctx.attempt(label, ch.queue_declare, q, arguments=args)
        if ch.is_open:
            ch.queue_delete(q)


@scenario("queue")
def redeclare_inequivalent(ctx):
    """Redeclaring with different durable/auto_delete/exclusive/arguments."""
    c = ctx.connect()
    q = ctx.queue("q")
    c.channel().queue_declare(q, arguments={"x-max-length": 10, "x-compat": "a"})
    cases = {
        "durable": dict(durable=True, arguments={"x-max-length": 10}),
        "auto_delete": dict(auto_delete=True, arguments={"x-max-length": 10}),
        "exclusive": dict(exclusive=True, arguments={"x-max-length": 10}),
        "x-max-length 11": dict(arguments={"x-max-length": 11}),
        "x-max-length missing": dict(),
        "x-max-length as string": dict(arguments={"x-max-length": "10"}),
        "x-message-ttl added": dict(arguments={"x-max-length": 10, "x-message-ttl": 5}),
        "unknown arg changed (ignored)": dict(arguments={"x-max-length": 10, "x-compat": "b"}),
    }
    for label, kw in cases.items():
        ctx.attempt(label, c.channel().queue_declare, q, **kw)


@scenario("queue")
def purge_delete_counts(ctx):
    """purge-ok / delete-ok message counts; unacked messages are not purged;
    if_empty / if_unused checks."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    m, _p, _b = ch.basic_get(q, auto_ack=False)  # one unacked
    ctx.attempt("purge with 4 ready + 1 unacked", ch.queue_purge, q)
    ctx.attempt("purge empty", ch.queue_purge, q)
    ch.basic_nack(m.delivery_tag, requeue=True)
    ctx.attempt("counts after the nack", _counts, ch, q)
    ctx.attempt("delete if_empty with 1 message", ch.queue_delete, q, if_empty=True)
    ch = c.channel()
    ch.basic_consume(q, lambda *a: None, auto_ack=False, consumer_tag="holder")
    ctx.settle(c, 0.2)
    ctx.attempt("delete if_unused with a consumer", ch.queue_delete, q, if_unused=True)
    ch = c.channel()
    for i in range(3):
        ch.basic_publish("", q, b"more")
    ctx.attempt("delete (1 unacked by the consumer + 3 ready)", ch.queue_delete, q)
    ctx.attempt("delete again (missing)", ch.queue_delete, q)
    ctx.attempt("purge missing", ch.queue_purge, q)


@scenario("queue")
def last_queue_shortcut(ctx):
    """An empty queue name means "the last queue declared on this channel"
    for bind, consume, get, purge and delete."""
    c = ctx.connect()
    ch = c.channel()
    ctx.attempt("bind '' before any declare", ch.queue_bind, "", "amq.direct", "k")
    ch = c.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ctx.record("declared", q)
    ctx.attempt("bind ''", ch.queue_bind, "", "amq.direct", ctx.name)
    ch.basic_publish("amq.direct", ctx.name, b"via the last queue")
    ctx.attempt("get ''", lambda: ctx.msg(*ch.basic_get("", auto_ack=True)))
    ch.basic_publish("", q, b"purge me")
    ctx.attempt("purge ''", ch.queue_purge, "")
    ctx.attempt("unbind ''", ch.queue_unbind, "", "amq.direct", ctx.name)
    other = c.channel()
    ctx.attempt("get '' on another channel", lambda: other.basic_get("", auto_ack=True))
    ctx.attempt("delete ''", ch.queue_delete, "")
    ctx.attempt("passive declare of it", c.channel().queue_declare, q, passive=True)


@scenario("queue")
def reserved_and_missing(ctx):
    """amq.* names are reserved; passive / bind / consume / get on a missing
    queue are 404; delete / unbind of missing things are ok."""
    c = ctx.connect()
    ops = {
        "declare amq.compat": lambda ch: ch.queue_declare("amq.compat"),
        "passive declare amq.compat": lambda ch: ch.queue_declare("amq.compat", passive=True),
        "passive declare missing": lambda ch: ch.queue_declare(ctx.queue("missing"), passive=True),
        "bind missing queue": lambda ch: ch.queue_bind(ctx.queue("missing"), "amq.direct"),
        "bind to missing exchange": lambda ch: (ch.queue_declare(ctx.queue("q")),
                                                ch.queue_bind(ctx.queue("q"), ctx.exchange("missing")))[1],
        "consume missing": lambda ch: ch.basic_consume(ctx.queue("missing"), lambda *a: None),
        "get missing": lambda ch: ch.basic_get(ctx.queue("missing")),
        "delete missing": lambda ch: ch.queue_delete(ctx.queue("missing")),
        "unbind missing": lambda ch: ch.queue_unbind(ctx.queue("missing"), "amq.direct", "k"),
        "name of 255 chars": lambda ch: ch.queue_declare(ctx.queue("L" * (255 - len(ctx.prefix) - 1))),
    }
    for label, op in ops.items():
        ctx.attempt(label, op, c.channel())


@scenario("queue")
def declare_ok_counts(ctx):
    """message_count counts ready messages only; consumer_count counts consumers
    on all connections."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.confirm_delivery()
    for i in range(6):
        ch.basic_publish("", q, str(i).encode())
    ctx.record("6 ready", _counts(ch, q))
    c2 = ctx.connect()
    ch2 = c2.channel()
    ch2.basic_qos(prefetch_count=2)
    got = []
    ch2.basic_consume(q, lambda c_, m, p, b: got.append(b), consumer_tag="a")
    ch2.basic_consume(q, lambda c_, m, p, b: got.append(b), consumer_tag="b")
    ctx.wait(c2, lambda: len(got) >= 4)
    ctx.settle(c2, 0.2)
    ctx.record("delivered", len(got))
    ctx.record("2 consumers x prefetch 2", _counts(ch, q))
    time.sleep(0.15)
    d = ch.queue_declare(q)
    ctx.record("non-passive redeclare", [d.method.message_count, d.method.consumer_count])
