"""kombu across a broker restart: a ConsumerMixin worker (what Celery-style
consumers are built on) that reconnects by itself, a producer whose publish
is wrapped in Connection.ensure() (autoretry) on a connection that died with
the restart, and the error an idle connection reports."""
from kombu import Exchange, Queue
from kombu.mixins import ConsumerMixin

from scenarios.framework import scenario

from ._util import connection, kerr


def lost(conn, e):
    """How kombu classifies a lost-connection error (what decides whether
    ensure()/ConsumerMixin reconnect).  The exception itself differs between
    the brokers at the socket level (see idle_connection_error), so the
    scenarios that go on after it record only this."""
    return {"recoverable connection error": isinstance(e, conn.recoverable_connection_errors)}


@scenario("restart", timeout=60, restart=True)
def consumer_mixin_and_ensure(ctx):
    """Durable direct exchange + durable queue; t0..t3 published with
    confirm_publish; a ConsumerMixin worker (prefetch 1) acks t0, and while
    it handles t1 (unacked) the broker restarts; then a Connection.ensure()
    publish of t4 on the stale producer connection (errback records the
    error, the producer is revived on a new connection); the worker's loop
    sees the connection error, reconnects, re-declares and consumes t1
    (redelivered), t2, t3, t4."""
    x = Exchange(ctx.exchange("tasks"), "direct", durable=True)
    q = Queue(ctx.queue("tasks"), x, routing_key="task", durable=True)
    pconn = connection(ctx, transport_options={"confirm_publish": True})
    producer = pconn.Producer(serializer="json")
    for i in range(4):
        producer.publish({"task": f"t{i}"}, exchange=x, routing_key="task", declare=[q],
                         retry=False, delivery_mode=2)

    deliveries, events, errbacks = [], [], []
    state = {"connections": 0, "restarted": False}

    def publish_errback(exc, interval):
        errbacks.append({"error": lost(pconn, exc), "interval": interval})

    class Worker(ConsumerMixin):
        def __init__(self, conn):
            self.connection = conn

        def get_consumers(self, Consumer, channel):  # noqa: N803 (kombu's signature)
            return [Consumer(queues=[q], callbacks=[self.on_task], accept=["json"],
                             prefetch_count=1)]

        def on_connection_revived(self):
            state["connections"] += 1
            events.append(f"connected (#{state['connections']})")

        def on_connection_error(self, exc, interval):
            events.append({"on_connection_error": kerr(exc)})

        def consume(self, *a, **kw):
            try:
                yield from super().consume(*a, **kw)
            except self.connection.connection_errors + self.connection.channel_errors as e:
                events.append({"consume loop error": lost(self.connection, e)})
                raise

        def on_task(self, body, message):
            deliveries.append([state["connections"], body.get("task"),
                               message.delivery_info.get("redelivered"), message.delivery_tag])
            if body.get("task") == "t1" and not state["restarted"]:
                state["restarted"] = True
                events.append("restart while handling t1 (not acked)")
                ctx.restart_broker()
                publish = pconn.ensure(producer, producer.publish, errback=publish_errback,
                                       max_retries=5, interval_start=0.1, interval_step=0.2)
                try:
                    publish({"task": "t4"}, exchange=x, routing_key="task", declare=[q],
                            retry=False, delivery_mode=2)
                    events.append("ensure(publish t4) returned")
                except Exception as e:  # noqa: BLE001
                    events.append({"ensure(publish t4)": kerr(e)})
                return
            message.ack()
            if body.get("task") == "t4":
                self.should_stop = True

    wconn = connection(ctx)
    worker = Worker(wconn)
    worker.run()
    ctx.record("events", events)
    ctx.record("publish errback calls", errbacks)
    ctx.record("deliveries [connection, task, redelivered, tag]", deliveries)
    ch = pconn.channel()
    ctx.record("queue at the end [messages, consumers]",
               list(q(ch).queue_declare(passive=True))[1:])
    pconn.release()
    wconn.release()


@scenario("restart", timeout=60, restart=True)
def idle_connection_error(ctx):
    """An idle kombu (py-amqp) connection across a broker restart: the error
    drain_events() raises afterwards (class, reply code and text), whether
    kombu counts it as recoverable, Connection.connected, then
    ensure_connection().  (Kept to this: it is a known difference, and what
    survives the restart is checked by the other restart scenarios.)"""
    conn = connection(ctx)
    q = Queue(ctx.queue("q"), durable=True)
    ch = conn.channel()
    q(ch).declare()
    ctx.restart_broker()
    try:
        conn.drain_events(timeout=2)
        ctx.record("drain_events after the restart", "no error")
    except Exception as e:  # noqa: BLE001
        ctx.record("drain_events after the restart", kerr(e))
        ctx.record("classified", lost(conn, e))
    ctx.record("connected", bool(conn.connected))
    conn.ensure_connection(max_retries=5, interval_start=0.1, interval_step=0.2)
    ctx.record("connected after ensure_connection", bool(conn.connected))
    conn.release()
