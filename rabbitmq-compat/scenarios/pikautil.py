"""pika instrumentation and value description for scenarios.

Importing this module patches pika (in the scenario's own child process) so
that scenarios can see the raw close frames (with class/method ids), the
connection.start / connection.tune the server sent, and every frame received
(including heartbeats and the raw bytes of content headers).
"""
import re
import struct

import pika
import pika.channel
import pika.connection
import pika.frame
from pika import spec

LAST = {"close": None, "start": None, "tune": None}
FRAMES = []          # (frame type, channel, summary/bytes) of every frame received
_RECORD_FRAMES = [False]

_orig_ch_close = pika.channel.Channel._on_close_from_broker
_orig_conn_close = pika.connection.Connection._on_connection_close_from_broker
_orig_start = pika.connection.Connection._on_connection_start
_orig_tune = pika.connection.Connection._on_connection_tune
_orig_decode = pika.frame.decode_frame


def _ch_close(self, method_frame):
    LAST["close"] = ("channel", method_frame.method)
    return _orig_ch_close(self, method_frame)


def _conn_close(self, method_frame):
    LAST["close"] = ("connection", method_frame.method)
    return _orig_conn_close(self, method_frame)


def _start(self, method_frame):
    LAST["start"] = method_frame.method
    self._compat_start = method_frame.method  # pylint: disable=protected-access
    return _orig_start(self, method_frame)


def _tune(self, method_frame):
    LAST["tune"] = method_frame.method
    self._compat_tune = method_frame.method  # pylint: disable=protected-access
    return _orig_tune(self, method_frame)


def _decode(data_in):
    n, fr = _orig_decode(data_in)
    if _RECORD_FRAMES[0] and fr is not None and n >= 8 and data_in[:4] != b"AMQP":
        ftype, chan, size = struct.unpack(">BHL", data_in[:7])
        payload = bytes(data_in[7:7 + size])
        FRAMES.append((ftype, chan, payload, fr))
    return n, fr


pika.channel.Channel._on_close_from_broker = _ch_close
pika.connection.Connection._on_connection_close_from_broker = _conn_close
pika.connection.Connection._on_connection_start = _start
pika.connection.Connection._on_connection_tune = _tune
pika.frame.decode_frame = _decode


def record_frames(on=True):
    """Start (or stop) keeping every received frame in FRAMES."""
    _RECORD_FRAMES[0] = on
    if on:
        del FRAMES[:]


def amqp_name(method):
    """'Exchange.DeclareOk' -> 'exchange.declare-ok' (the spec's spelling)."""
    cls, meth = method.NAME.split(".")
    return cls.lower() + "." + re.sub(r"(?<!^)([A-Z])", r"-\1", meth).lower()


def method_name(class_id, method_id):
    if not class_id and not method_id:
        return "none (0,0)"
    m = spec.methods.get((class_id << 16) | method_id)
    name = amqp_name(m) if m else "unknown"
    return f"{name} ({class_id},{method_id})"


_PROPS = ["content_type", "content_encoding", "headers", "delivery_mode", "priority",
          "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
          "user_id", "app_id", "cluster_id"]


def props_dict(p):
    if p is None:
        return None
    return {k: getattr(p, k) for k in _PROPS if getattr(p, k, None) is not None}


def method_dict(m):
    """A pika.spec method object -> {"method": "queue.declare-ok", fields...}."""
    d = {"method": amqp_name(m)}
    for k, v in vars(m).items():
        if not k.startswith("_"):
            d[k] = v
    return d


def describe(v):
    """Describe pika objects as plain values; returns v itself when it has no
    special description."""
    if isinstance(v, pika.frame.Method):
        return method_dict(v.method)
    if isinstance(v, spec.BasicProperties):
        return props_dict(v)
    if isinstance(v, pika.amqp_object.Method):
        return method_dict(v)
    return v
