"""Heartbeats with short intervals (pika BlockingConnection)."""
import time

from scenarios.framework import scenario
from scenarios.pikautil import FRAMES, LAST, record_frames


def _idle(conn, seconds):
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        conn.process_data_events(time_limit=min(left, 0.25))


@scenario("connection", timeout=15)
def heartbeat_1s_idle(ctx):
    """heartbeat=1 over 3.5 s of idling (more than 3 intervals, longer than
    pika.connection.heartbeat-one-second): connection.tune proposes the
    server's interval, pika negotiates 1 s; the broker sends heartbeats,
    accepts pika's, keeps the connection open; publish/get and a clean
    close afterwards."""
    c = ctx.connect(heartbeat=1)
    tune = LAST["tune"]
    ctx.record("server proposed heartbeat", tune.heartbeat if tune else None)
    ctx.record("negotiated heartbeat", c._impl.params.heartbeat)  # pylint: disable=protected-access
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    record_frames()
    _idle(c, 3.5)
    hb = sum(1 for f in FRAMES if f[0] == 8)
    record_frames(False)
    ctx.record("at least 2 heartbeat frames received in 3.5 s", hb >= 2)
    ctx.record("open after idling", [c.is_open, ch.is_open])
    ch.basic_publish("", q, b"still alive")
    m, _p, body = ch.basic_get(q, auto_ack=True)
    ctx.record("get after idling", body)
    c.close()
    ctx.record("closed cleanly", c.is_closed)
