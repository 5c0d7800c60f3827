"""kombu used the way Celery uses it."""
import time

from kombu import Consumer, Exchange, Producer, Queue
from kombu.common import QoS
from kombu.pidbox import Mailbox

from scenarios.framework import scenario

from ._util import attempt, connection, drain, extra_resource, kmsg

TASK_ID = "5ea4d4b8-8c93-4c83-b1b6-1e4d3b0b6e0a"


def _task_message(task_id, name, args):
    """Celery task message protocol 2: (headers, properties, body)."""
    headers = {"lang": "py", "task": name, "id": task_id, "shadow": None, "eta": None,
               "expires": None, "group": None, "group_index": None, "retries": 0,
               "timelimit": [None, None], "root_id": task_id, "parent_id": None,
               "argsrepr": repr(tuple(args)), "kwargsrepr": "{}", "origin": "gen1@compat",
               "ignore_result": False}
    props = {"correlation_id": task_id, "reply_to": "3a1a0c1e-reply"}
    body = (list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    return headers, props, body


@scenario("patterns")
def celery_task_publish_consume(ctx):
    """Celery-style task: direct exchange + durable queue declared through
    kombu, Producer.publish with protocol-2 headers (json, persistent,
    priority 0), Consumer callback, message.ack(); queue empty afterwards."""
    conn = connection(ctx)
    ch = conn.channel()
    ex = Exchange(ctx.exchange("celery"), "direct", durable=True)
    q = Queue(ctx.queue("celery"), ex, routing_key="celery", durable=True)
    ctx.record("declare", q(ch).declare())
    prod = Producer(ch, exchange=ex, routing_key="celery", serializer="json")
    headers, props, body = _task_message(TASK_ID, "tasks.add", [2, 3])
    attempt(ctx, "publish", lambda: prod.publish(body, headers=headers, delivery_mode=2, priority=0,
                                                 content_encoding="utf-8", retry=False, declare=[q],
                                                 **props) and None)
    got = []

    def on_message(body, message):
        got.append(kmsg(message, body))
        message.ack()
        got.append({"acknowledged": message.acknowledged})

    with Consumer(ch, queues=[q], callbacks=[on_message], accept=["json"]):
        drain(conn, 1.0)
    ctx.record("received", got)
    ctx.record("declare after", q(ch).queue_declare(passive=True))
    conn.release()


@scenario("basic")
def celery_global_qos(ctx):
    """Celery's worker prefetch: Consumer.qos(prefetch_count=N,
    apply_global=True) via kombu.common.QoS; two queues on one channel, 4
    messages each; deliveries before/after acks and after QoS.increment."""
    conn = connection(ctx)
    ch = conn.channel()
    ctx.record("qos_semantics_matches_spec", conn.qos_semantics_matches_spec)
    qs = [Queue(ctx.queue(n), routing_key=ctx.queue(n)) for n in ("a", "b")]
    prod = Producer(ch)
    for qq in qs:
        qq(ch).declare()
        for i in range(4):
            prod.publish({"i": i}, routing_key=qq.name, retry=False)
    time.sleep(0.2)
    pending = []
    cons = Consumer(ch, queues=qs, callbacks=[lambda b, m: pending.append(m)], accept=["json"])
    qos = QoS(lambda prefetch_count: cons.qos(prefetch_count=prefetch_count, apply_global=True), 2)
    qos.update()
    cons.consume()
    drain(conn, 0.5)
    ctx.record("delivered with global prefetch 2", len(pending))
    pending.pop(0).ack()
    drain(conn, 0.5)
    ctx.record("after one ack", len(pending))
    qos.increment_eventually(2)
    qos.update()
    drain(conn, 0.5)
    ctx.record("after increment to 4", len(pending))
    ctx.record("qos value", qos.value)
    acked, deadline = 1, time.monotonic() + 3
    while time.monotonic() < deadline and acked < 8:
        while pending:
            pending.pop(0).ack()
            acked += 1
        drain(conn, 0.2)
    ctx.record("acked in total", acked)
    cons.cancel()
    ctx.record("ready left", sorted(qq(ch).queue_declare(passive=True).message_count for qq in qs))
    conn.release()


class _FixedOidMailbox(Mailbox):
    def __init__(self, *a, oid=None, **kw):
        super().__init__(*a, **kw)
        self._fixed_oid = oid

    @property
    def oid(self):
        return self._fixed_oid


@scenario("patterns")
def pidbox_reply_queue(ctx):
    """Celery's pidbox reply queue: '<oid>.reply.celery.pidbox' bound to the
    transient direct exchange 'reply.celery.pidbox' with routing key oid,
    auto_delete, x-expires 10 s (kombu: expires=10) and x-message-ttl 300 s;
    declare-ok, a reply published to it, redeclare with other args."""
    conn = connection(ctx)
    ch = conn.channel()
    oid = ctx.prefix + ".oid"
    rx = Exchange(ctx.exchange("reply.celery.pidbox"), "direct", durable=False,
                  delivery_mode="transient")
    rq = Queue(f"{oid}.reply.celery.pidbox", exchange=rx, routing_key=oid, durable=False,
               auto_delete=True, expires=10, message_ttl=300)
    extra_resource(ctx, "queue", rq.name)
    attempt(ctx, "declare", rq(ch).declare)
    Producer(ch, exchange=rx).publish({"gen1@compat": {"ok": "pong"}}, routing_key=oid,
                                      serializer="json", retry=False,
                                      headers={"ticket": "t-1"})
    time.sleep(0.2)
    m = rq(ch).get(no_ack=True, accept=["json"])
    ctx.record("reply", kmsg(m) if m else None)
    ctx.record("empty after", rq(ch).get(no_ack=True) is None)
    other = Queue(rq.name, exchange=rx, routing_key=oid, durable=False, auto_delete=True,
                  expires=20, message_ttl=300)
    attempt(ctx, "redeclare with expires 20", other(conn.channel()).declare)
    conn.release()


@scenario("patterns")
def pidbox_broadcast_mailbox(ctx):
    """Celery's broadcast control (celery inspect ping): kombu pidbox
    Mailbox(type='fanout') with a Node listening on the same connection;
    _broadcast('ping', reply=True, limit=1) collects the reply through the
    reply exchange/queue; then a cast with no reply."""
    conn = connection(ctx)
    ns = ctx.prefix
    mb = _FixedOidMailbox(ns, type="fanout", accept=["json"], oid=ctx.prefix + ".oid")
    extra_resource(ctx, "exchange", mb.exchange.name)
    extra_resource(ctx, "exchange", mb.reply_exchange.name)
    extra_resource(ctx, "queue", mb.reply_queue.name)
    mailbox = mb(conn)
    calls = []

    def ping(state, **kw):
        calls.append(["ping", kw])
        return {"ok": "pong"}

    def shutdown(state, **kw):
        calls.append(["cast", kw])

    node = mailbox.Node("worker1@compat", handlers={"ping": ping, "cast_me": shutdown},
                        channel=conn.channel())
    extra_resource(ctx, "queue", f"worker1@compat.{ns}.pidbox")
    cons = node.listen()
    ctx.record("node queue", {"name": cons.queues[0].name.replace(ns, "<ns>"),
                              "exclusive": cons.queues[0].exclusive,
                              "auto_delete": cons.queues[0].auto_delete,
                              "exchange": [cons.queues[0].exchange.name.replace(ns, "<ns>"),
                                           cons.queues[0].exchange.type]})
    replies = mailbox._broadcast("ping", arguments={"x": 1}, reply=True, timeout=3, limit=1)
    ctx.record("replies", replies)
    mailbox._broadcast("cast_me", arguments={"y": 2}, reply=False)
    drain(conn, 0.5)
    ctx.record("handler calls", calls)
    cons.cancel()
    conn.release()
