"""A minimal AMQP 0-9-1 socket client for raw-frame scenarios.

It sends exactly the bytes it is told to (well-formed methods are encoded
with pika.spec, malformed things are built by hand) and describes every
frame it receives.  Field tables can be built with exact wire types with
``table()``.
"""
import socket
import struct
import time
import urllib.parse

from pika import spec

from .pikautil import amqp_name, method_name

FRAME_END = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


# ---------------------------------------------------------------------------
# field tables with explicit wire types
# ---------------------------------------------------------------------------
def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">B", len(b)) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def value(v):
    """Encode one field value.  v is (type char, python value), or a plain
    python value (str -> S, bool -> t, int -> I or l, dict -> F, list -> A,
    None -> V, bytes -> x)."""
    if not isinstance(v, tuple):
        if isinstance(v, bool):
            v = ("t", v)
        elif isinstance(v, int):
            v = ("I", v) if -2 ** 31 <= v < 2 ** 31 else ("l", v)
        elif isinstance(v, str):
            v = ("S", v)
        elif isinstance(v, bytes):
            v = ("x", v)
        elif isinstance(v, dict):
            v = ("F", v)
        elif isinstance(v, list):
            v = ("A", v)
        elif v is None:
            v = ("V", None)
        else:
            raise TypeError(v)
    t, x = v
    tb = t.encode()
    if t == "t":
        return tb + struct.pack(">B", 1 if x else 0)
    if t in "bBsuIilLfd":
        fmt = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I", "l": ">q",
               "L": ">Q", "f": ">f", "d": ">d"}[t]
        return tb + struct.pack(fmt, x)
    if t == "D":
        scale, unscaled = x
        return tb + struct.pack(">Bi", scale, unscaled)
    if t in "Sx":
        return tb + longstr(x)
    if t == "T":
        return tb + struct.pack(">Q", x)
    if t == "F":
        return tb + table(x)
    if t == "A":
        body = b"".join(value(i) for i in x)
        return tb + struct.pack(">I", len(body)) + body
    if t == "V":
        return tb
    if t == "raw":  # (type char + payload) given verbatim
        return x
    raise ValueError(t)


def table(d):
    """dict or list of (key, value) -> field table bytes (with length)."""
    items = d.items() if isinstance(d, dict) else d
    body = b"".join(shortstr(k) + value(v) for k, v in items)
    return struct.pack(">I", len(body)) + body


def nested_array_value(depth, leaf=b"I\x00\x00\x00\x01"):
    """An 'A' value nested `depth` levels deep (built iteratively)."""
    v = leaf
    for _ in range(depth):
        v = b"A" + struct.pack(">I", len(v)) + v
    return v


def nested_table_value(depth):
    v = b"I\x00\x00\x00\x01"
    for _ in range(depth):
        inner = shortstr("k") + v
        v = b"F" + struct.pack(">I", len(inner)) + inner
    return v


# ---------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------
def frame(ftype, chan, payload, end=FRAME_END):
    return struct.pack(">BHI", ftype, chan, len(payload)) + payload + end


def method_payload(method):
    return struct.pack(">HH", method.INDEX >> 16, method.INDEX & 0xFFFF) + b"".join(method.encode())


def method_frame(chan, method):
    return frame(1, chan, method_payload(method))


def header_frame(chan, body_size, props=None, class_id=60):
    props = props or spec.BasicProperties()
    return frame(2, chan, struct.pack(">HHQ", class_id, 0, body_size) + b"".join(props.encode()))


def body_frame(chan, body):
    return frame(3, chan, body)


def queue_declare_payload(queue, arguments_table_bytes, passive=False, durable=False,
                          exclusive=False, auto_delete=False):
    """queue.declare with a hand-built arguments table."""
    bits = (passive << 0) | (durable << 1) | (exclusive << 2) | (auto_delete << 3)
    return struct.pack(">HHH", 50, 10, 0) + shortstr(queue) + struct.pack(">B", bits) + arguments_table_bytes


def describe_frame(fr):
    """A received frame -> a JSON-able description."""
    if fr is None:
        return None
    ftype, chan, payload, end_ok = fr
    if ftype == 1 and len(payload) >= 4:
        cid, mid = struct.unpack(">HH", payload[:4])
        cls = spec.methods.get((cid << 16) | mid)
        d = {"frame": "method", "channel": chan}
        if cls is None:
            d["method"] = f"unknown ({cid},{mid})"
            return d
        m = cls()
        try:
            m.decode(payload, 4)
        except Exception as e:  # noqa: BLE001
            d["method"] = amqp_name(cls)
            d["decode error"] = repr(e)
            return d
        d["method"] = amqp_name(m)
        if isinstance(m, (spec.Connection.Close, spec.Channel.Close)):
            d.update(code=m.reply_code, text=m.reply_text,
                     failing=method_name(m.class_id, m.method_id))
        elif isinstance(m, spec.Connection.Start):
            d.update(version=f"{m.version_major}-{m.version_minor}", mechanisms=m.mechanisms,
                     locales=m.locales)
        elif isinstance(m, spec.Connection.Tune):
            d.update(channel_max=m.channel_max, frame_max=m.frame_max, heartbeat=m.heartbeat)
        else:
            for k, v in vars(m).items():
                if not k.startswith("_") and k not in ("server_properties",):
                    d[k] = v
        return d
    names = {2: "header", 3: "body", 8: "heartbeat"}
    d = {"frame": names.get(ftype, f"type {ftype}"), "channel": chan, "size": len(payload)}
    if ftype == 2:
        d["payload"] = payload.hex()
    elif ftype == 3:
        d["body"] = payload if len(payload) <= 64 else f"<{len(payload)} bytes>"
    if not end_ok:
        d["bad frame end"] = True
    return d


def closed_desc(eof, elapsed, timeout):
    if not eof:
        return f"still open after {timeout:g} s"
    if elapsed < 1.0:
        return "closed by server within 1 s"
    if elapsed < 5.0:
        return "closed by server after 1-5 s"
    return "closed by server after more than 5 s"


class RawConn:
    """One TCP connection speaking raw AMQP."""

    def __init__(self, url, timeout=5.0):
        u = urllib.parse.urlparse(url)
        self.host = u.hostname or "localhost"
        self.port = u.port or 5672
        self.user = urllib.parse.unquote(u.username or "guest")
        self.password = urllib.parse.unquote(u.password or "guest")
        path = u.path[1:] if u.path.startswith("/") else u.path
        self.vhost = urllib.parse.unquote(path) if path else "/"
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.eof_at = None
        self.tune = None
        self.pending = []
        self.last_send = time.monotonic()

    def unread(self, fr):
        """Put a frame back: the next read_frame() returns it."""
        if fr is not None:
            self.pending.insert(0, fr)

    # ---- io ----------------------------------------------------------------
    def send(self, data):
        self.last_send = time.monotonic()
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _set_eof(self):
        if not self.eof:
            self.eof = True
            self.eof_at = time.monotonic()

    def _fill(self, deadline):
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            self._set_eof()
            return False
        if not chunk:
            self._set_eof()
            return False
        self.buf += chunk
        return True

    def read_bytes(self, timeout=2.0):
        """Everything the server sends until EOF or timeout."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        out, self.buf = self.buf, b""
        return out

    def read_frame(self, timeout=2.0):
        """(type, channel, payload, frame_end_ok) or None (timeout / EOF)."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 7:
                ftype, chan, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= 8 + size:
                    payload = self.buf[7:7 + size]
                    end_ok = self.buf[7 + size:8 + size] == FRAME_END
                    self.buf = self.buf[8 + size:]
                    return (ftype, chan, payload, end_ok)
            if not self._fill(deadline):
                return None

    def read_method(self, timeout=2.0, skip_heartbeats=True):
        while True:
            fr = self.read_frame(timeout)
            if fr is None or not (skip_heartbeats and fr[0] == 8):
                return fr

    def send_method(self, chan, method):
        return self.send(method_frame(chan, method))

    # ---- handshake -----------------------------------------------------------
    def start_ok_payload(self, client_properties_table=None):
        cp = client_properties_table if client_properties_table is not None else table(
            {"product": "compat-raw", "capabilities": {"authentication_failure_close": True}})
        return (struct.pack(">HH", 10, 11) + cp + shortstr("PLAIN")
                + longstr(b"\0" + self.user.encode() + b"\0" + self.password.encode())
                + shortstr("en_US"))

    def handshake(self, client_properties_table=None, channel_max=None, frame_max=None,
                  heartbeat=0, open_vhost=True):
        """Protocol header, start-ok, tune-ok, open.  Returns the description
        of the last frame received if something unexpected came, else None."""
        self.send(PROTOCOL_HEADER)
        fr = self.read_method(5)
        if fr is None or describe_frame(fr).get("method") != "connection.start":
            return describe_frame(fr) or "no connection.start"
        self.send(frame(1, 0, self.start_ok_payload(client_properties_table)))
        fr = self.read_method(5)
        d = describe_frame(fr)
        if not d or d.get("method") != "connection.tune":
            return d or "no connection.tune"
        self.tune = d
        cm = d["channel_max"] if channel_max is None else channel_max
        fm = d["frame_max"] if frame_max is None else frame_max
        self.send_method(0, spec.Connection.TuneOk(channel_max=cm, frame_max=fm, heartbeat=heartbeat))
        if not open_vhost:
            return None
        self.send_method(0, spec.Connection.Open(virtual_host=self.vhost))
        fr = self.read_method(5)
        d = describe_frame(fr)
        if not d or d.get("method") != "connection.open-ok":
            return d or "no connection.open-ok"
        return None

    def open_channel(self, chan):
        self.send_method(chan, spec.Channel.Open())
        d = describe_frame(self.read_method(5))
        return None if d and d.get("method") == "channel.open-ok" else (d or "no channel.open-ok")

    # ---- after a bad action ----------------------------------------------------
    def outcome(self, timeout=6.0, close_ok=True):
        """Read what the server does next: frames until connection.close or
        EOF/timeout; answer connection.close with close-ok and then see
        whether (and how soon) the server closes the socket.

        Times are bucketed (within 1 s / after 1-5 s / still open): RabbitMQ
        closes some connections only after a deliberate delay (3 s for
        errors before the connection is open), which a single cut-off would
        make flaky."""
        frames = []
        result = {"frames": frames}
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            fr = self.read_frame(max(0.0, deadline - time.monotonic()))
            if fr is None:
                break
            if fr[0] == 8:  # heartbeats are timing noise
                continue
            d = describe_frame(fr)
            frames.append(d)
            if d.get("method") == "connection.close":
                if close_ok:
                    self.send_method(0, spec.Connection.CloseOk())
                more = self.read_bytes(timeout)
                result["after close-ok"] = closed_desc(self.eof, (self.eof_at or self.last_send) - self.last_send, timeout)
                if more:
                    result["bytes after close"] = more.hex()
                return result
            if d.get("method") == "channel.close":
                # a well-behaved client answers and goes on
                self.send_method(fr[1], spec.Channel.CloseOk())
        # measured from the client's last write (the bad input, usually)
        result["socket"] = closed_desc(self.eof, (self.eof_at or self.last_send) - self.last_send, timeout)
        if self.eof and not any(f.get("method") == "connection.close" for f in frames):
            result["socket"] += ", without connection.close"
        return result

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
