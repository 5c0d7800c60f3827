"""consumer_timeout: a delivery left unacknowledged too long closes its channel."""
import time

from scenarios.framework import scenario


@scenario("consumer-timeout", timeout=30)
def consumer_timeout(ctx):
    """A delivery left unacknowledged past consumer_timeout (5 s in this
    suite, on both brokers) closes its channel with 406; the message goes back
    to the queue, redelivered. A quorum queue counts the return."""
    for kind in ["classic", "quorum"]:
        c = ctx.connect()
        ch = c.channel()
        q = ctx.queue(kind)
        ch.queue_declare(q, durable=True, arguments={"x-queue-type": kind})
        ch.basic_publish("", q, b"slow")
        ch2 = c.channel()
        ch2.basic_qos(prefetch_count=1)
        got = []
        ch2.basic_consume(q, lambda chan, m, p, b: got.append(b))
        with ctx.error(f"{kind}: unacked past the timeout"):
            c.call_later(12, lambda: None)
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline and ch2.is_open:
                c.process_data_events(time_limit=0.2)
            if ch2.is_open:
                raise RuntimeError("channel still open")
            # The close reason, as pika saw it.
            raise ch2._closing_reason
        ctx.record(f"{kind}: delivered before", got)
        # RabbitMQ requeues into a quorum queue asynchronously: wait for it.
        end = time.monotonic() + 3
        m, p, body = ch.basic_get(q, auto_ack=True)
        while m is None and time.monotonic() < end:
            time.sleep(0.1)
            m, p, body = ch.basic_get(q, auto_ack=True)
        ctx.record(f"{kind}: back in the queue", None if m is None else {
            "body": body, "redelivered": m.redelivered, "headers": p.headers})
        ch.queue_delete(q)
        c.close()
