"""Exchange scenarios: types, passive/redeclare, e2e bindings, alternate
exchanges, auto-delete, internal, routing."""
from pika import BasicProperties

from scenarios.framework import scenario


def _fresh(c, ch):
    return ch if ch.is_open else c.channel()


@scenario("exchange")
def declare_each_type(ctx):
    """Declare direct/fanout/topic/headers (plain, durable, auto-delete); an
    unknown type is a connection error (503 COMMAND_INVALID)."""
    c = ctx.connect()
    ch = c.channel()
    for t in ("direct", "fanout", "topic", "headers"):
        ctx.attempt(f"{t}", ch.exchange_declare, ctx.exchange(t), t)
        ctx.attempt(f"{t} durable", ch.exchange_declare, ctx.exchange(t + "-d"), t, durable=True)
        ctx.attempt(f"{t} auto-delete", ch.exchange_declare, ctx.exchange(t + "-ad"), t, auto_delete=True)
        ctx.attempt(f"{t} passive", ch.exchange_declare, ctx.exchange(t), t, passive=True)
    ctx.attempt("x-consistent-hash (plugin type, not enabled)", ch.exchange_declare,
                ctx.exchange("hash"), "x-consistent-hash")
    ch = ctx.connect().channel()
    ctx.attempt("unknown type", ch.exchange_declare, ctx.exchange("bad"), "x-compat-unknown")


@scenario("exchange")
def passive(ctx):
    """Passive declare of existing / missing / pre-declared exchanges."""
    c = ctx.connect()
    ch = c.channel()
    x = ctx.exchange("x")
    ch.exchange_declare(x, "topic")
    ctx.attempt("existing, same type", ch.exchange_declare, x, "topic", passive=True)
    ctx.attempt("existing, other type (passive ignores it)", ch.exchange_declare, x, "fanout", passive=True)
    for pre in ("amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"):
        ch = _fresh(c, ch)
        ctx.attempt(pre, ch.exchange_declare, pre, passive=True)
    ch = _fresh(c, ch)
    ctx.attempt("missing", ch.exchange_declare, ctx.exchange("missing"), passive=True)
    ctx.record("channel closed by the 404", ch.is_closed)


@scenario("exchange")
def redeclare_errors(ctx):
    """Redeclaring with different type/durable/auto_delete/internal/arguments
    is 406 PRECONDITION_FAILED; the same declaration is fine."""
    c = ctx.connect()
    ch = c.channel()
    x = ctx.exchange("x")
    ch.exchange_declare(x, "direct")
    ctx.attempt("same", ch.exchange_declare, x, "direct")
    cases = [("type", dict(exchange_type="fanout")), ("durable", dict(durable=True)),
             ("auto_delete", dict(auto_delete=True)), ("internal", dict(internal=True)),
             ("alternate-exchange", dict(arguments={"alternate-exchange": "ae"})),
             ("unknown argument (ignored)", dict(arguments={"x-compat": 1}))]
    for label, kw in cases:
        ch = _fresh(c, ch)
        kw.setdefault("exchange_type", "direct")
        ctx.attempt(label, ch.exchange_declare, x, **kw)
    ch = _fresh(c, ch)
    ctx.attempt("redeclare amq.topic as direct", ch.exchange_declare, "amq.topic", "direct")
    ch = _fresh(c, ch)
    ctx.attempt("declare amq.compat (reserved prefix)", ch.exchange_declare, "amq.compat", "direct")


@scenario("exchange")
def e2e_bindings(ctx):
    """Exchange-to-exchange bindings: a chain topic -> fanout -> queue, a
    direct source with two destination exchanges, unbind, and a binding
    cycle (each message still reaches the queue once)."""
    c = ctx.connect()
    ch = c.channel()
    src, mid, q = ctx.exchange("src"), ctx.exchange("mid"), ctx.queue("q")
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(mid, "fanout")
    ch.queue_declare(q)
    ch.queue_bind(q, mid)
    ctx.attempt("exchange.bind", ch.exchange_bind, destination=mid, source=src, routing_key="a.*")
    ch.confirm_delivery()
    ch.basic_publish(src, "a.b", b"via chain")
    ch.basic_publish(src, "x.y", b"not matching")
    ctx.record("after two publishes", ctx.get_all(ch, q))
    # cycle: mid -> src as well
    ctx.attempt("exchange.bind back (cycle)", ch.exchange_bind, destination=src, source=mid, routing_key="#")
    ch.basic_publish(src, "a.c", b"cycle")
    ch.basic_publish(mid, "", b"into mid")
    ctx.record("with a cycle", ctx.get_all(ch, q))
    ctx.attempt("exchange.unbind", ch.exchange_unbind, destination=mid, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.b", b"after unbind")
    ctx.record("after unbind", ctx.get_all(ch, q))
    ctx.attempt("exchange.unbind again (missing binding)", ch.exchange_unbind,
                destination=mid, source=src, routing_key="a.*")
    ctx.attempt("exchange.delete mid if_unused (still a source)", ch.exchange_delete, mid, if_unused=True)


@scenario("exchange")
def alternate_exchange(ctx):
    """alternate-exchange: unroutable messages go to the AE (and a mandatory
    publish is then not returned); routable ones do not; a missing AE drops."""
    c = ctx.connect()
    ch = c.channel()
    x, ae, q, qae = ctx.exchange("x"), ctx.exchange("ae"), ctx.queue("q"), ctx.queue("qae")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae})
    ch.queue_declare(q)
    ch.queue_declare(qae)
    ch.queue_bind(q, x, "known")
    ch.queue_bind(qae, ae)
    returned = []
    ch.add_on_return_callback(lambda c_, m, p, b: returned.append(ctx.msg(m, p, b)))
    ch.basic_publish(x, "known", b"routable", properties=BasicProperties(message_id="1"))
    ch.basic_publish(x, "unknown", b"to the AE", properties=BasicProperties(message_id="2"))
    ch.basic_publish(x, "unknown", b"mandatory to the AE", mandatory=True)
    ctx.settle(c, 0.3)
    ctx.record("q", ctx.get_all(ch, q))
    ctx.record("qae", ctx.get_all(ch, qae))
    ctx.record("returned", returned)
    x2 = ctx.exchange("x2")
    ch.exchange_declare(x2, "direct", arguments={"alternate-exchange": ctx.exchange("missing-ae")})
    ch.basic_publish(x2, "nothing", b"dropped", mandatory=True)
    ctx.settle(c, 0.3)
    ctx.record("returned, after a mandatory publish with a missing AE", returned)


@scenario("exchange")
def auto_delete(ctx):
    """An auto-delete exchange survives until it has had a binding and lost
    its last one; then it is gone (404 on passive declare)."""
    c = ctx.connect()
    ch = c.channel()
    x, q = ctx.exchange("x"), ctx.queue("q")
    ch.exchange_declare(x, "direct", auto_delete=True)
    ch.queue_declare(q)
    ctx.attempt("never bound: still there", ch.exchange_declare, x, "direct", passive=True)
    ch.queue_bind(q, x, "a")
    ch.queue_bind(q, x, "b")
    ch.queue_unbind(q, x, "a")
    ctx.attempt("one binding left", ch.exchange_declare, x, "direct", passive=True)
    ch.queue_unbind(q, x, "b")
    ctx.attempt("last binding removed", ch.exchange_declare, x, "direct", passive=True)
    # deleting the bound queue also removes the last binding
    ch = c.channel()
    x2, q2 = ctx.exchange("x2"), ctx.queue("q2")
    ch.exchange_declare(x2, "fanout", auto_delete=True)
    ch.queue_declare(q2)
    ch.queue_bind(q2, x2)
    ch.queue_delete(q2)
    ctx.attempt("queue deleted", ch.exchange_declare, x2, "fanout", passive=True)
    # as the source of an e2e binding
    ch = c.channel()
    x3, d3 = ctx.exchange("x3"), ctx.exchange("d3")
    ch.exchange_declare(x3, "fanout", auto_delete=True)
    ch.exchange_declare(d3, "fanout")
    ch.exchange_bind(destination=d3, source=x3)
    ch.exchange_unbind(destination=d3, source=x3)
    ctx.attempt("e2e source after unbind", ch.exchange_declare, x3, "fanout", passive=True)


@scenario("exchange")
def internal(ctx):
    """An internal exchange refuses direct publishes (403, channel closed)
    but routes what arrives through an e2e binding."""
    c = ctx.connect()
    ch = c.channel()
    front, inner, q = ctx.exchange("front"), ctx.exchange("inner"), ctx.queue("q")
    ch.exchange_declare(front, "fanout")
    ch.exchange_declare(inner, "fanout", internal=True)
    ch.queue_declare(q)
    ch.queue_bind(q, inner)
    ch.exchange_bind(destination=inner, source=front)
    ch.basic_publish(front, "", b"through the front")
    ctx.record("got", ctx.get_all(ch, q))
    with ctx.error("publish to the internal exchange"):
        ch.basic_publish(inner, "", b"direct")
        ch.basic_qos(prefetch_count=0)
    ctx.record("channel closed", ch.is_closed)


@scenario("exchange")
def delete(ctx):
    """exchange.delete: if_unused with bindings (406), missing exchange (ok),
    bindings removed with the exchange."""
    c = ctx.connect()
    ch = c.channel()
    x, q = ctx.exchange("x"), ctx.queue("q")
    ch.exchange_declare(x, "fanout")
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    ctx.attempt("if_unused with a binding", ch.exchange_delete, x, if_unused=True)
    ch = c.channel()
    ctx.attempt("delete", ch.exchange_delete, x)
    ctx.attempt("delete again (missing)", ch.exchange_delete, x)
    ch.exchange_declare(x, "fanout")
    ch.basic_publish(x, "", b"after re-create")
    ctx.record("old binding gone", ctx.msg(*ch.basic_get(q, auto_ack=True)))
    ctx.attempt("delete amq.fanout", ch.exchange_delete, "amq.fanout")


@scenario("exchange")
def routing_direct_fanout(ctx):
    """direct: one queue bound with two keys gets each message once; two
    queues on one key both get it; fanout ignores the key."""
    c = ctx.connect()
    ch = c.channel()
    d, f = ctx.exchange("d"), ctx.exchange("f")
    q1, q2 = ctx.queue("q1"), ctx.queue("q2")
    ch.exchange_declare(d, "direct")
    ch.exchange_declare(f, "fanout")
    for q in (q1, q2):
        ch.queue_declare(q)
    ch.queue_bind(q1, d, "k1")
    ch.queue_bind(q1, d, "k2")
    ch.queue_bind(q2, d, "k2")
    ch.queue_bind(q1, f, "ignored")
    ch.queue_bind(q2, f)
    ch.queue_bind(q1, d, "k1")  # duplicate binding is idempotent
    for rk in ("k1", "k2", "k3", ""):
        ch.basic_publish(d, rk, f"direct {rk!r}".encode())
    ch.basic_publish(f, "anything", b"fanout")
    ctx.record("q1", [m["body"] for m in ctx.get_all(ch, q1)])
    ctx.record("q2", [m["body"] for m in ctx.get_all(ch, q2)])


@scenario("exchange")
def routing_topic(ctx):
    """Topic patterns: *, #, '#' alone, empty words, '#.#', key ''."""
    c = ctx.connect()
    ch = c.channel()
    x = ctx.exchange("t")
    ch.exchange_declare(x, "topic")
    patterns = ["*.orange.*", "*.*.rabbit", "lazy.#", "#", "a.#.b", "#.#", "*", "", "a..b", "#.z"]
    qs = {}
    for i, p in enumerate(patterns):
        q = ctx.queue(f"q{i}")
        ch.queue_declare(q)
        ch.queue_bind(q, x, p)
        qs[p] = q
    keys = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
            "lazy", "quick.orange.new.rabbit", "a.b", "a.x.y.b", "a..b", "", "z", "y.z", "orange"]
    for k in keys:
        ch.basic_publish(x, k, k.encode() or b"<empty>")
    ctx.record("matches", {p: [m["body"] for m in ctx.get_all(ch, q)] for p, q in qs.items()})


@scenario("exchange")
def routing_headers(ctx):
    """Headers exchange: x-match all/any, typed values, missing headers,
    x-* keys ignored for all/any, void values."""
    c = ctx.connect()
    ch = c.channel()
    x = ctx.exchange("h")
    ch.exchange_declare(x, "headers")
    binds = {
        "all": {"x-match": "all", "format": "pdf", "type": "report"},
        "any": {"x-match": "any", "format": "pdf", "type": "log"},
        "default-all": {"format": "zip"},
        "int": {"x-match": "all", "n": 42},
        "bool": {"x-match": "any", "flag": True},
        "any-with-x": {"x-match": "any-with-x", "x-tag": "t"},
        "empty": {},
    }
    qs = {}
    for label, args in binds.items():
        q = ctx.queue(label)
        ch.queue_declare(q)
        ch.queue_bind(q, x, "", arguments=args)
        qs[label] = q
    msgs = [
        ("pdf report", {"format": "pdf", "type": "report"}),
        ("pdf log", {"format": "pdf", "type": "log"}),
        ("only type log", {"type": "log"}),
        ("zip", {"format": "zip"}),
        ("n=42", {"n": 42}),
        ("n='42' (string)", {"n": "42"}),
        ("flag true", {"flag": True}),
        ("x-tag", {"x-tag": "t"}),
        ("no headers", None),
    ]
    for label, headers in msgs:
        ch.basic_publish(x, "", label.encode(), properties=BasicProperties(headers=headers))
    ctx.record("matches", {label: [m["body"] for m in ctx.get_all(ch, q)] for label, q in qs.items()})
    ch2 = c.channel()
    ctx.attempt("bind with x-match 'bogus'", ch2.queue_bind, qs["all"], x, "",
                arguments={"x-match": "bogus"})


@scenario("exchange")
def default_exchange(ctx):
    """The default exchange: routes by queue name, can't be bound, declared
    (non-passive) or deleted."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"by name")
    ctx.record("publish by queue name", ctx.msg(*ch.basic_get(q, auto_ack=True)))
    ctx.attempt("bind to ''", ch.queue_bind, q, "", "k")
    ch = c.channel()
    ctx.attempt("declare ''", ch.exchange_declare, "", "direct")
    ch = c.channel()
    ctx.attempt("passive declare amq.default", ch.exchange_declare, "amq.default", passive=True)
    ch = c.channel()
    ctx.attempt("delete ''", ch.exchange_delete, "")
