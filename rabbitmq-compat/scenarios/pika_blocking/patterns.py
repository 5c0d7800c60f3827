"""Application patterns: direct reply-to, RPC with a server-named reply
queue, work queues with redelivery, large messages."""
import hashlib
import socket
import time

from pika import BasicProperties

from scenarios.context import counts
from scenarios.framework import scenario

REPLY_TO = "amq.rabbitmq.reply-to"


def _pump(conns, pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        for c in conns:
            c.process_data_events(time_limit=0.02)
    return pred()


def _rpc_server(ctx, conn, q, seen):
    ch = conn.channel()
    ch.queue_declare(q)

    def on_request(c_, m, p, b):
        seen.append({"reply_to": p.reply_to, "correlation_id": p.correlation_id, "body": b})
        c_.basic_publish("", p.reply_to, b"reply to " + b,
                         properties=BasicProperties(correlation_id=p.correlation_id))
        c_.basic_ack(m.delivery_tag)
    ch.basic_consume(q, on_request, consumer_tag="server")
    return ch


# ---------------------------------------------------------------------------
# direct reply-to
# ---------------------------------------------------------------------------
@scenario("reply-to")
def direct_reply_to_rpc(ctx):
    """RPC over amq.rabbitmq.reply-to: the server sees a generated reply
    address, the reply arrives on the pseudo-queue consumer (no queue)."""
    q = ctx.queue("rpc")
    srv_conn, cli_conn = ctx.connect(), ctx.connect()
    seen = []
    _rpc_server(ctx, srv_conn, q, seen)
    cli = cli_conn.channel()
    replies = []
    tag = cli.basic_consume(REPLY_TO, lambda c_, m, p, b: replies.append(ctx.msg(m, p, b)),
                            auto_ack=True, consumer_tag="client")
    ctx.record("consumer tag", tag)
    for i in range(2):
        cli.basic_publish("", q, f"req{i}".encode(),
                          properties=BasicProperties(reply_to=REPLY_TO, correlation_id=f"c{i}"))
    _pump([srv_conn, cli_conn], lambda: len(replies) >= 2)
    ctx.record("server saw", seen)
    ctx.record("same reply address for both requests", len({s["reply_to"] for s in seen}) == 1)
    ctx.record("client got", replies)
    ctx.attempt("passive declare of the reply address from the server connection",
                srv_conn.channel().queue_declare, seen[0]["reply_to"] if seen else "x", passive=True)


@scenario("reply-to")
def direct_reply_to_declare(ctx):
    """Passive declare of amq.rabbitmq.reply-to (ok, 0/0) and of a reply
    address whose consumer is gone; a non-passive declare is refused."""
    c = ctx.connect()
    ch = c.channel()
    ctx.attempt("passive amq.rabbitmq.reply-to", ch.queue_declare, REPLY_TO, passive=True)
    ctx.attempt("non-passive amq.rabbitmq.reply-to", c.channel().queue_declare, REPLY_TO)
    ch = c.channel()
    ctx.attempt("passive of a made-up reply address", ch.queue_declare, REPLY_TO + ".compat-made-up",
                passive=True)


@scenario("reply-to")
def direct_reply_to_errors(ctx):
    """reply_to=amq.rabbitmq.reply-to without consuming from it first is 406;
    consuming from it with manual ack is 406; the reply consumer is per channel."""
    c = ctx.connect()
    q = ctx.queue("q")
    c.channel().queue_declare(q)
    ch = c.channel()
    with ctx.error("publish with reply_to but no reply consumer"):
        ch.basic_publish("", q, b"x", properties=BasicProperties(reply_to=REPLY_TO))
        ch.basic_qos()
    ctx.attempt("consume with manual ack", c.channel().basic_consume, REPLY_TO, lambda *a: None,
                auto_ack=False)
    ch = c.channel()
    ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True, consumer_tag="r")
    other = c.channel()
    with ctx.error("publish with reply_to on another channel of the same connection"):
        other.basic_publish("", q, b"y", properties=BasicProperties(reply_to=REPLY_TO))
        other.basic_qos()
    with ctx.error("publish with reply_to on the consuming channel"):
        ch.basic_publish("", q, b"z", properties=BasicProperties(reply_to=REPLY_TO))
        ch.basic_qos()
    ctx.record("queue", [m["body"] for m in ctx.get_all(c.channel(), q)])


@scenario("reply-to")
def direct_reply_to_stale_address(ctx):
    """Replying to the address of a requester whose channel closed: the
    reply is dropped and the replying channel stays open."""
    q = ctx.queue("q")
    c = ctx.connect()
    req = c.channel()
    req.queue_declare(q)
    req.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True, consumer_tag="r")
    req.basic_publish("", q, b"req", properties=BasicProperties(reply_to=REPLY_TO))
    m, p, b = req.basic_get(q, auto_ack=True)
    addr = p.reply_to
    req.close()
    rep = c.channel()
    with ctx.error("reply to the stale address"):
        rep.basic_publish("", addr, b"late reply")
        rep.basic_qos()
    ctx.record("replying channel open", rep.is_open)
    ctx.attempt("passive declare of the stale address", rep.queue_declare, addr, passive=True)


# ---------------------------------------------------------------------------
# RPC with a server-named exclusive reply queue
# ---------------------------------------------------------------------------
@scenario("patterns")
def rpc_exclusive_reply_queue(ctx):
    """Classic RPC: exclusive server-named callback queue, correlation ids,
    replies routed back through the default exchange."""
    q = ctx.queue("rpc")
    srv_conn, cli_conn = ctx.connect(), ctx.connect()
    seen = []
    _rpc_server(ctx, srv_conn, q, seen)
    cli = cli_conn.channel()
    cb_q = cli.queue_declare("", exclusive=True).method.queue
    replies = []
    cli.basic_consume(cb_q, lambda c_, m, p, b: replies.append(ctx.msg(m, p, b)), auto_ack=True,
                      consumer_tag="client")
    for i in range(3):
        cli.basic_publish("", q, f"n={i}".encode(),
                          properties=BasicProperties(reply_to=cb_q, correlation_id=f"id-{i}"))
    _pump([srv_conn, cli_conn], lambda: len(replies) >= 3)
    ctx.record("callback queue", cb_q)
    ctx.record("server saw", seen)
    ctx.record("client got", replies)


# ---------------------------------------------------------------------------
# work queues
# ---------------------------------------------------------------------------
@scenario("patterns")
def work_queue_redelivery_after_crash(ctx):
    """Two workers with prefetch 1; one worker's TCP connection dies with a
    message unacked; the message goes back to the head of the queue and the
    other worker gets it next, redelivered=true."""
    q = ctx.queue("tasks")
    prod = ctx.connect().channel()
    prod.queue_declare(q, durable=True)
    wa, wb = ctx.connect(), ctx.connect()
    got = {"a": [], "b": []}
    chans = {}
    for name, conn in (("a", wa), ("b", wb)):
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(q, lambda c_, m, p, b, n=name: got[n].append(
            {"body": b.decode(), "redelivered": m.redelivered, "tag": m.delivery_tag}), consumer_tag=name)
        chans[name] = ch
        _pump([wa, wb], lambda: False, 0.1)
    prod.confirm_delivery()
    for i in range(4):
        prod.basic_publish("", q, f"task{i}".encode(), properties=BasicProperties(delivery_mode=2))
    _pump([wa, wb], lambda: got["a"] and got["b"])
    _pump([wa, wb], lambda: False, 0.2)
    ctx.record("first deliveries", {k: list(v) for k, v in got.items()})
    # worker a dies without closing the connection properly
    sock = wa._impl._transport._sock  # pylint: disable=protected-access
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    time.sleep(0.5)
    ctx.record("counts after the crash", counts(prod, q))
    chans["b"].basic_ack(got["b"][-1]["tag"])
    _pump([wb], lambda: len(got["b"]) >= 2)
    chans["b"].basic_ack(got["b"][-1]["tag"])
    _pump([wb], lambda: len(got["b"]) >= 3)
    chans["b"].basic_ack(got["b"][-1]["tag"])
    _pump([wb], lambda: len(got["b"]) >= 4)
    chans["b"].basic_ack(got["b"][-1]["tag"])
    _pump([wb], lambda: False, 0.2)
    ctx.record("worker b", got["b"])
    ctx.record("left", counts(prod, q)[0])
    ctx.conns.remove(wa)


@scenario("patterns")
def work_queue_fair_dispatch(ctx):
    """prefetch 1 fair dispatch: a busy worker (not acking) gets nothing more;
    the other worker gets the rest one at a time."""
    q = ctx.queue("tasks")
    c = ctx.connect()
    ch = c.channel()
    ch.queue_declare(q)
    slow, fast = c.channel(), c.channel()
    got = {"slow": [], "fast": []}
    for name, wch in (("slow", slow), ("fast", fast)):
        wch.basic_qos(prefetch_count=1)

        def cb(c_, m, p, b, name=name):
            got[name].append(b.decode())
            if name == "fast":
                c_.basic_ack(m.delivery_tag)
        wch.basic_consume(q, cb, consumer_tag=name)
    for i in range(6):
        ch.basic_publish("", q, f"t{i}".encode())
    ctx.wait(c, lambda: len(got["slow"]) + len(got["fast"]) >= 6)
    ctx.settle(c, 0.2)
    ctx.record("delivered", got)


# ---------------------------------------------------------------------------
# large messages
# ---------------------------------------------------------------------------
def _big(n, seed=b"compat"):
    out = bytearray()
    h = seed
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:n])


@scenario("large", timeout=20)
def one_mib(ctx):
    """A 1 MiB message (many body frames at frame_max 131072) via get and
    consume, with headers; body compared by hash."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    body = _big(1 << 20)
    ch.basic_publish("", q, body, properties=BasicProperties(headers={"size": len(body)}))
    m, p, b = ch.basic_get(q, auto_ack=True)
    ctx.record("get", {"len": len(b), "sha256 equal": b == body, "headers": p.headers})
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", q, body[i:] + body[:i])
    got = []
    ch.basic_consume(q, lambda c_, m, p, b: got.append(b), auto_ack=True, consumer_tag="t")
    ctx.wait(c, lambda: len(got) >= 3, timeout=10)
    ctx.record("consume", [{"len": len(x), "equal": x == body[i:] + body[:i]} for i, x in enumerate(got)])


@scenario("large", timeout=20)
def small_frame_max(ctx):
    """frame_max 4096 (the minimum): a 300 KB message is split into ~75
    body frames each way and arrives intact; an 8 KB header table too."""
    c = ctx.connect(frame_max=4096)
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    body = _big(300_000)
    ch.basic_publish("", q, body)
    m, p, b = ch.basic_get(q, auto_ack=True)
    ctx.record("get", {"len": len(b), "equal": b == body})
    headers = {f"h{i}": "v" * 100 for i in range(30)}  # content header > 3000 bytes
    ch.basic_publish("", q, b"x", properties=BasicProperties(headers=headers))
    m, p, b = ch.basic_get(q, auto_ack=True)
    ctx.record("large header", p.headers == headers)


@scenario("large", timeout=20)
def cross_frame_max_boundaries(ctx):
    """Messages of frame_max-9 .. frame_max+1 bytes and 2*frame_max round-trip."""
    c = ctx.connect()
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    fm = c._impl.params.frame_max  # pylint: disable=protected-access
    sizes = [fm - 9, fm - 8, fm - 7, fm, fm + 1, 2 * fm - 16, 2 * fm]
    for n in sizes:
        ch.basic_publish("", q, _big(n))
    ctx.record("round trips", [(n, (lambda r: len(r[2]) == n and r[2] == _big(n))(ch.basic_get(q, auto_ack=True)))
                               for n in sizes])
