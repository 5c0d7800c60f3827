"""Raw-frame scenarios: malformed or out-of-order input on one connection.

Every scenario records what the misbehaving connection received (frames,
close code/text/method, whether the socket was closed) and checks that a
healthy pika connection opened *before* the bad one keeps working: it
publishes and gets a message before and after the bad connection died.
"""
import struct
import time

from pika import spec

from scenarios.framework import scenario
from scenarios.rawamqp import (PROTOCOL_HEADER, closed_desc, RawConn, body_frame, describe_frame, frame,
                               header_frame, method_frame, method_payload, nested_array_value,
                               nested_table_value, queue_declare_payload, shortstr, table)


class Healthy:
    """A pika connection that must keep working while another connection
    misbehaves."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.conn = ctx.connect()
        self.ch = self.conn.channel()
        self.q = ctx.queue("healthy")
        self.ch.queue_declare(self.q)
        # raw connections publish to the sink queue, never to the healthy one
        self.sink = ctx.queue("sink")
        self.ch.queue_declare(self.sink)
        self.n = 0

    def sink_count(self):
        try:
            return self.ch.queue_declare(self.sink, passive=True).method.message_count
        except Exception as e:  # noqa: BLE001
            return self.ctx.describe_exception(e)

    def check(self):
        self.n += 1
        body = f"healthy {self.n}".encode()
        try:
            self.ch.basic_publish("", self.q, body)
            m, _p, b = self.ch.basic_get(self.q, auto_ack=True)
            return "ok" if b == body else f"got {b!r}"
        except Exception as e:  # noqa: BLE001
            return self.ctx.describe_exception(e)


def raw_get(raw, q):
    """basic.get no-ack on channel 1: the described frames of the reply
    (get-ok + header + body frames, or get-empty)."""
    raw.send_method(1, spec.Basic.Get(queue=q, no_ack=True))
    fr = raw.read_method()
    out = [describe_frame(fr)]
    if not fr or out[0].get("method") != "basic.get-ok":
        return out
    hdr = raw.read_method()
    out.append(describe_frame(hdr))
    if not hdr or hdr[0] != 2:
        return out
    size = struct.unpack(">HHQ", hdr[2][:12])[2]
    got = 0
    while got < size:
        b = raw.read_method()
        if not b:
            break
        out.append(describe_frame(b))
        got += len(b[2])
    return out


def bad_connection(ctx, action, handshake=True, channel=1, outcome_timeout=6.0, **hs):
    """Open a healthy pika connection, then a raw connection (handshake and
    channel `channel` unless told otherwise), run action(raw) -- which sends
    the bad input and may record things -- and record the outcome."""
    healthy = Healthy(ctx)
    ctx.record("healthy before", healthy.check())
    raw = RawConn(ctx.url)
    try:
        if handshake:
            err = raw.handshake(**hs)
            if err:
                ctx.record("handshake", err)
            elif channel:
                err = raw.open_channel(channel)
                if err:
                    ctx.record("channel.open", err)
        res = action(raw)
        if res is not False:
            ctx.record("outcome", raw.outcome(outcome_timeout))
    finally:
        raw.close()
    time.sleep(0.1)
    ctx.record("healthy after", healthy.check())
    ctx.record("messages that reached the sink queue", healthy.sink_count())


# ---------------------------------------------------------------------------
# protocol header
# ---------------------------------------------------------------------------
def _header_case(ctx, data):
    def act(raw):
        raw.send(data)
        t0 = time.monotonic()
        got = raw.read_bytes(6.0)
        d = {"server sent": repr(got[:8]) if got.startswith(b"AMQP") else None}
        if got and not got.startswith(b"AMQP"):
            # a frame (e.g. connection.start for a protocol the server accepts)
            if len(got) >= 7:
                ftype, chan, size = struct.unpack(">BHI", got[:7])
                d["server sent"] = describe_frame((ftype, chan, got[7:7 + size], got[7 + size:8 + size] == b"\xce"))
            else:
                d["server sent"] = got.hex()
        elif got.startswith(b"AMQP") and len(got) > 8:
            d["then"] = f"{len(got) - 8} more bytes"
        d["socket"] = closed_desc(raw.eof, (raw.eof_at or 0) - t0, 6.0)
        ctx.record("response", d)
        return False
    bad_connection(ctx, act, handshake=False)


@scenario("handshake", timeout=25)
def protocol_header_0_8(ctx):
    """AMQP 0-8 header (AMQP 0 0 8 0)."""
    _header_case(ctx, b"AMQP\x00\x00\x08\x00")


@scenario("handshake", timeout=25)
def protocol_header_0_9_old_style(ctx):
    """Pre-0-9-1 style header for 0-9 (AMQP 1 1 0 9)."""
    _header_case(ctx, b"AMQP\x01\x01\x00\x09")


@scenario("handshake", timeout=25)
def protocol_header_1_0(ctx):
    """AMQP 1.0 header (AMQP 0 1 0 0)."""
    _header_case(ctx, b"AMQP\x00\x01\x00\x00")


@scenario("handshake", timeout=25)
def protocol_header_wrong_revision(ctx):
    """0-9-2 (AMQP 0 0 9 2)."""
    _header_case(ctx, b"AMQP\x00\x00\x09\x02")


@scenario("handshake", timeout=25)
def protocol_header_http(ctx):
    """An HTTP request instead of a protocol header."""
    _header_case(ctx, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")


@scenario("handshake", timeout=25)
def protocol_header_short(ctx):
    """Only 'AMQP' and then silence: the server waits (or times out)."""
    _header_case(ctx, b"AMQP")


# ---------------------------------------------------------------------------
# handshake order and tuning
# ---------------------------------------------------------------------------
@scenario("handshake", timeout=25)
def open_before_start_ok(ctx):
    """connection.open right after connection.start, skipping start-ok/tune-ok."""
    def act(raw):
        raw.send(PROTOCOL_HEADER)
        ctx.record("first frame", (describe_frame(raw.read_method()) or {}).get("method"))
        raw.send_method(0, spec.Connection.Open(virtual_host="/"))
    bad_connection(ctx, act, handshake=False)


@scenario("handshake", timeout=25)
def tune_ok_frame_max_too_small(ctx):
    """tune-ok with frame_max 1024 (< 4096 minimum)."""
    bad_connection(ctx, lambda raw: raw.send_method(0, spec.Connection.Open(virtual_host="/")),
                   channel=0, frame_max=1024, open_vhost=False)


@scenario("handshake", timeout=25)
def tune_ok_frame_max_too_large(ctx):
    """tune-ok with frame_max larger than the server offered."""
    bad_connection(ctx, lambda raw: raw.send_method(0, spec.Connection.Open(virtual_host="/")),
                   channel=0, frame_max=1 << 20, open_vhost=False)


@scenario("handshake", timeout=25)
def tune_ok_channel_max_enforced(ctx):
    """tune-ok channel_max=5: channel 5 opens, channel 6 is refused."""
    def act(raw):
        ctx.record("open channel 5", raw.open_channel(5) or "ok")
        raw.send_method(6, spec.Channel.Open())
    bad_connection(ctx, act, channel=0, channel_max=5)


@scenario("handshake", timeout=25)
def channel_open_on_channel_0(ctx):
    """channel.open on channel 0 (the connection's channel)."""
    bad_connection(ctx, lambda raw: raw.send_method(0, spec.Channel.Open()), channel=0)


@scenario("handshake", timeout=25)
def heartbeat_timeout(ctx):
    """heartbeat=1 negotiated and the client then sends nothing: the server
    gives up on the connection after missing heartbeats."""
    def act(raw):
        ctx.record("outcome", raw.outcome(8.0))
        return False
    bad_connection(ctx, act, heartbeat=1)


# ---------------------------------------------------------------------------
# frame-level errors
# ---------------------------------------------------------------------------
@scenario("frames", timeout=25)
def oversize_frame(ctx):
    """A body frame larger than the negotiated frame_max."""
    def act(raw):
        fm = raw.tune["frame_max"]
        raw.send_method(1, spec.Basic.Publish(exchange="", routing_key=ctx.queue("sink")))
        raw.send(header_frame(1, fm + 100))
        raw.send(body_frame(1, b"x" * (fm + 100)))
    bad_connection(ctx, act)


@scenario("frames", timeout=25)
def bad_frame_end(ctx):
    """A method frame whose frame-end octet is 0x00 instead of 0xCE."""
    bad_connection(ctx, lambda raw: raw.send(frame(1, 1, method_payload(spec.Basic.Qos(prefetch_count=1)),
                                                   end=b"\x00")))


@scenario("frames", timeout=25)
def unknown_frame_type(ctx):
    """A frame of type 9 (not method/header/body/heartbeat)."""
    bad_connection(ctx, lambda raw: raw.send(frame(9, 1, b"\x00\x00")))


@scenario("frames", timeout=25)
def heartbeat_on_channel_1(ctx):
    """A heartbeat frame on channel 1 (heartbeats belong on channel 0)."""
    bad_connection(ctx, lambda raw: raw.send(frame(8, 1, b"")))


@scenario("frames", timeout=25)
def heartbeat_with_payload(ctx):
    """A heartbeat frame on channel 0 that carries a payload."""
    bad_connection(ctx, lambda raw: raw.send(frame(8, 0, b"xx")))


@scenario("frames", timeout=25)
def method_on_unopened_channel(ctx):
    """queue.declare on channel 7, which was never opened."""
    bad_connection(ctx, lambda raw: raw.send_method(7, spec.Queue.Declare(queue=ctx.queue("q7"))))


@scenario("frames", timeout=25)
def method_on_closed_channel(ctx):
    """Channel 1 opened and closed (close / close-ok), then a method on it."""
    def act(raw):
        raw.send_method(1, spec.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        ctx.record("close reply", (describe_frame(raw.read_method()) or {}).get("method"))
        raw.send_method(1, spec.Basic.Qos(prefetch_count=1))
    bad_connection(ctx, act)


@scenario("frames", timeout=25)
def methods_while_channel_closing(ctx):
    """After the server sent channel.close, methods other than close-ok are
    ignored until the client answers; then the channel can be reopened."""
    def act(raw):
        raw.send_method(1, spec.Queue.Declare(queue=ctx.queue("missing"), passive=True))
        ctx.record("server", describe_frame(raw.read_method()))
        raw.send_method(1, spec.Queue.Declare(queue=ctx.queue("other-missing"), passive=True))
        raw.send_method(1, spec.Basic.Qos(prefetch_count=1))
        raw.send_method(1, spec.Channel.CloseOk())
        ctx.record("reopen channel 1", raw.open_channel(1) or "ok")
        raw.send_method(1, spec.Basic.Qos(prefetch_count=1))
        ctx.record("basic.qos on the reopened channel", describe_frame(raw.read_method()))
        raw.send_method(0, spec.Connection.Close(reply_code=200, reply_text="done", class_id=0, method_id=0))
        ctx.record("connection.close", describe_frame(raw.read_method()))
        return False
    bad_connection(ctx, act)


@scenario("frames", timeout=25)
def second_channel_open(ctx):
    """channel.open on a channel that is already open."""
    bad_connection(ctx, lambda raw: raw.send_method(1, spec.Channel.Open()))


@scenario("frames", timeout=25)
def content_header_without_publish(ctx):
    """A content header frame with no basic.publish before it."""
    bad_connection(ctx, lambda raw: raw.send(header_frame(1, 5)))


@scenario("frames", timeout=25)
def body_without_header(ctx):
    """basic.publish followed directly by a body frame (no content header)."""
    def act(raw):
        raw.send_method(1, spec.Basic.Publish(exchange="", routing_key=ctx.queue("sink")))
        raw.send(body_frame(1, b"hello"))
    bad_connection(ctx, act)


@scenario("frames", timeout=25)
def body_longer_than_declared(ctx):
    """Content header says 5 bytes, body frame carries 10."""
    def act(raw):
        raw.send_method(1, spec.Basic.Publish(exchange="", routing_key=ctx.queue("sink")))
        raw.send(header_frame(1, 5))
        raw.send(body_frame(1, b"0123456789"))
    bad_connection(ctx, act)


@scenario("frames", timeout=25)
def method_interrupts_content(ctx):
    """basic.publish + header (10 bytes) + 5 body bytes, then a method frame
    before the rest of the body."""
    def act(raw):
        raw.send_method(1, spec.Basic.Publish(exchange="", routing_key=ctx.queue("sink")))
        raw.send(header_frame(1, 10))
        raw.send(body_frame(1, b"01234"))
        raw.send_method(1, spec.Basic.Qos(prefetch_count=1))
    bad_connection(ctx, act)


@scenario("frames", timeout=25)
def header_with_wrong_class(ctx):
    """basic.publish followed by a content header whose class id is 50."""
    def act(raw):
        raw.send_method(1, spec.Basic.Publish(exchange="", routing_key=ctx.queue("sink")))
        raw.send(header_frame(1, 1, class_id=50))
        raw.send(body_frame(1, b"x"))
    bad_connection(ctx, act)


@scenario("frames", timeout=25)
def empty_body_frames(ctx):
    """A 5-byte message sent as header + empty body frame + 5-byte body frame;
    a 0-byte message sent as header only.  Both arrive."""
    def act(raw):
        q = ctx.queue("sink")
        raw.send_method(1, spec.Basic.Publish(exchange="", routing_key=q))
        raw.send(header_frame(1, 5))
        raw.send(body_frame(1, b""))
        raw.send(body_frame(1, b"hello"))
        raw.send_method(1, spec.Basic.Publish(exchange="", routing_key=q))
        raw.send(header_frame(1, 0))
        for _ in range(2):
            ctx.record("get", raw_get(raw, q))
        raw.send_method(0, spec.Connection.Close(reply_code=200, reply_text="done", class_id=0, method_id=0))
        ctx.record("connection.close", describe_frame(raw.read_method()))
        return False
    bad_connection(ctx, act)


@scenario("frames", timeout=25)
def unknown_class(ctx):
    """A method frame with class id 999."""
    bad_connection(ctx, lambda raw: raw.send(frame(1, 1, struct.pack(">HH", 999, 10))))


@scenario("frames", timeout=25)
def unknown_method(ctx):
    """A method frame with a known class (queue) and unknown method id 99."""
    bad_connection(ctx, lambda raw: raw.send(frame(1, 1, struct.pack(">HH", 50, 99))))


@scenario("frames", timeout=25)
def truncated_method(ctx):
    """queue.declare whose arguments are cut short (frame size is right,
    the method inside is incomplete)."""
    bad_connection(ctx, lambda raw: raw.send(frame(1, 1, struct.pack(">HHH", 50, 10, 0) + b"\x05ab")))


@scenario("frames", timeout=25)
def connection_method_on_channel_1(ctx):
    """connection.close sent on channel 1 instead of 0."""
    bad_connection(ctx, lambda raw: raw.send_method(1, spec.Connection.Close(
        reply_code=200, reply_text="", class_id=0, method_id=0)))


@scenario("frames", timeout=25)
def channel_method_on_channel_0(ctx):
    """basic.qos sent on channel 0."""
    bad_connection(ctx, lambda raw: raw.send_method(0, spec.Basic.Qos(prefetch_count=1)), channel=0)


# ---------------------------------------------------------------------------
# field tables
# ---------------------------------------------------------------------------
def _declare_with_table(ctx, tbl):
    def act(raw):
        raw.send(frame(1, 1, queue_declare_payload(ctx.queue("deep"), tbl)))
        fr = raw.read_method(5)
        d = describe_frame(fr)
        if d and d.get("method") == "queue.declare-ok":
            ctx.record("reply", d)
            raw.send_method(0, spec.Connection.Close(reply_code=200, reply_text="done", class_id=0, method_id=0))
            ctx.record("connection.close", describe_frame(raw.read_method()))
            return False
        raw.unread(fr)  # let outcome() describe it (and answer a connection.close)
        return True
    return act


def _args_table(v):
    body = shortstr("x-compat-deep") + v
    return struct.pack(">I", len(body)) + body


@scenario("tables", timeout=25)
def nested_array_depth_50_in_arguments(ctx):
    """queue.declare with an unknown argument holding arrays nested 50 deep."""
    bad_connection(ctx, _declare_with_table(ctx, _args_table(nested_array_value(50))))


@scenario("tables", timeout=25)
def nested_array_depth_5000_in_arguments(ctx):
    """queue.declare with an unknown argument holding arrays nested 5000 deep."""
    bad_connection(ctx, _declare_with_table(ctx, _args_table(nested_array_value(5000))))


@scenario("tables", timeout=25)
def nested_table_depth_5000_in_arguments(ctx):
    """queue.declare with an unknown argument holding tables nested 5000 deep."""
    bad_connection(ctx, _declare_with_table(ctx, _args_table(nested_table_value(5000))))


def _client_props_case(ctx, v):
    def act(raw):
        raw.send(PROTOCOL_HEADER)
        ctx.record("first frame", (describe_frame(raw.read_method()) or {}).get("method"))
        body = shortstr("product") + b"S" + struct.pack(">I", 10) + b"compat-raw" + shortstr("x-deep") + v
        raw.send(frame(1, 0, raw.start_ok_payload(struct.pack(">I", len(body)) + body)))
        fr = raw.read_method(5)
        d = describe_frame(fr)
        if d and d.get("method") == "connection.tune":
            ctx.record("after start-ok", d)
            raw.send_method(0, spec.Connection.TuneOk(channel_max=d["channel_max"],
                                                      frame_max=d["frame_max"], heartbeat=0))
            raw.send_method(0, spec.Connection.Open(virtual_host="/"))
            ctx.record("open", describe_frame(raw.read_method()))
            raw.send_method(0, spec.Connection.Close(reply_code=200, reply_text="done", class_id=0, method_id=0))
            ctx.record("close", describe_frame(raw.read_method()))
            return False
        raw.unread(fr)
        return True
    bad_connection(ctx, act, handshake=False)


@scenario("tables", timeout=25)
def nested_array_depth_5000_in_client_properties(ctx):
    """connection.start-ok whose client_properties hold arrays nested 5000
    deep (before authentication)."""
    _client_props_case(ctx, nested_array_value(5000))


@scenario("tables", timeout=25)
def nested_array_depth_700_in_client_properties(ctx):
    """connection.start-ok whose client_properties hold arrays nested 700
    deep (3.5 KB: fits the pre-tune frame size limit)."""
    _client_props_case(ctx, nested_array_value(700))


@scenario("tables", timeout=25)
def nested_array_depth_50_in_client_properties(ctx):
    """connection.start-ok whose client_properties hold arrays nested 50 deep."""
    _client_props_case(ctx, nested_array_value(50))


@scenario("tables", timeout=25)
def unknown_field_type_in_arguments(ctx):
    """queue.declare arguments with a field of unknown type 'Z'."""
    tbl = _args_table(b"Z\x00\x00\x00\x01")
    bad_connection(ctx, _declare_with_table(ctx, tbl))


@scenario("tables", timeout=25)
def table_length_overruns_frame(ctx):
    """queue.declare arguments whose table length is larger than the frame."""
    bad_connection(ctx, _declare_with_table(ctx, struct.pack(">I", 1000) + shortstr("k") + b"I\x00\x00\x00\x01"))


ALL_TYPES = [
    ("bool", ("t", True)), ("int8", ("b", -5)), ("uint8", ("B", 250)), ("int16", ("s", -300)),
    ("uint16", ("u", 65000)), ("int32", ("I", -70000)), ("uint32", ("i", 4000000000)),
    ("int64", ("l", -(2 ** 40))), ("float", ("f", 1.5)), ("double", ("d", -2.25)),
    ("decimal", ("D", (2, 31415))), ("longstr", ("S", "text")), ("bytes", ("x", b"\x00\xff")),
    ("timestamp", ("T", 1700000000)), ("void", ("V", None)),
    ("array", ("A", [("b", 1), ("S", "s"), ("A", [("V", None)]), ("F", {"k": ("u", 7)})])),
    ("table", ("F", [("n", ("F", [("m", ("d", 0.5))]))])),
]


@scenario("tables", timeout=25)
def header_all_field_types_byte_exact(ctx):
    """A message whose headers use every RabbitMQ field type (b B s u I i l
    f d D S x T V A F t) comes back byte-identical (basic.get), also when
    routed through a headers exchange that must parse the table."""
    def act(raw):
        q = ctx.queue("sink")
        x = ctx.exchange("hx")
        raw.send_method(1, spec.Exchange.Declare(exchange=x, type="headers"))
        ctx.record("exchange.declare", describe_frame(raw.read_method()).get("method"))
        raw.send_method(1, spec.Queue.Bind(queue=q, exchange=x, routing_key="",
                                           arguments={"x-match": "any", "longstr": "text"}))
        ctx.record("queue.bind", describe_frame(raw.read_method()).get("method"))
        hdr_table = table(ALL_TYPES)
        # property flags: only headers (bit 13)
        payload = struct.pack(">HHQH", 60, 0, 3, 0x2000) + hdr_table
        for via in ("", x):
            raw.send_method(1, spec.Basic.Publish(exchange=via, routing_key=q))
            raw.send(frame(2, 1, payload))
            raw.send(body_frame(1, b"abc"))
            raw.send_method(1, spec.Basic.Get(queue=q, no_ack=True))
            ok = describe_frame(raw.read_method())
            hdr = raw.read_method()
            body = raw.read_method()
            label = "default exchange" if not via else "headers exchange"
            ctx.record(f"{label}: get", ok.get("method") if ok else None)
            ctx.record(f"{label}: header payload identical", bool(hdr) and hdr[2] == payload)
            if hdr and hdr[2] != payload:
                ctx.record(f"{label}: header payload", hdr[2].hex())
            ctx.record(f"{label}: body", describe_frame(body))
        raw.send_method(0, spec.Connection.Close(reply_code=200, reply_text="done", class_id=0, method_id=0))
        ctx.record("connection.close", describe_frame(raw.read_method()))
        return False
    bad_connection(ctx, act)


@scenario("tables", timeout=25)
def method_frame_spanning_two_frames(ctx):
    """The bytes of one method frame sent in two TCP writes with a pause
    (the server must reassemble), then a frame split 1 byte at a time."""
    def act(raw):
        data = method_frame(1, spec.Queue.Declare(queue=ctx.queue("split")))
        raw.send(data[:5])
        time.sleep(0.2)
        raw.send(data[5:])
        ctx.record("split in two", describe_frame(raw.read_method()).get("method"))
        data = method_frame(1, spec.Queue.Delete(queue=ctx.queue("split")))
        for i in range(len(data)):
            raw.send(data[i:i + 1])
        ctx.record("byte by byte", describe_frame(raw.read_method()))
        raw.send_method(0, spec.Connection.Close(reply_code=200, reply_text="done", class_id=0, method_id=0))
        ctx.record("connection.close", describe_frame(raw.read_method()))
        return False
    bad_connection(ctx, act)
