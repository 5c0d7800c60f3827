"""Helpers for the kombu scenarios."""
import kombu


def connection(ctx, **kw):
    """A kombu Connection (py-amqp transport) to the broker under test."""
    kw.setdefault("connect_timeout", 5)
    c = kombu.Connection(ctx.url, **kw)
    ctx.kombu_conns = getattr(ctx, "kombu_conns", []) + [c]
    return c


def extra_resource(ctx, kind, name):
    """Register a queue/exchange whose name does not start with ctx.prefix
    (kombu builds some names itself) for deletion by the runner."""
    ctx._sink.send("res", kind, name)  # pylint: disable=protected-access
    return name


def kmsg(message, body=None):
    """Describe a kombu Message as a dict."""
    di = dict(message.delivery_info)
    d = {
        "payload": message.payload if body is None else body,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "headers": message.headers,
        "properties": {k: v for k, v in sorted(message.properties.items())
                       if k not in ("application_headers",)},
        "delivery_info": {k: di[k] for k in sorted(di) if k not in ("delivery_tag",)},
        "delivery_tag": message.delivery_tag,
    }
    return d


def kerr(e):
    """A kombu/py-amqp exception as class name, code, text, method."""
    d = {"exc": f"{type(e).__module__.split('.')[0]}.{type(e).__name__}"}
    for a in ("code", "reply_text", "method_name"):
        v = getattr(e, a, None)
        if v is not None:
            d[a] = v
    if "reply_text" not in d:
        d["detail"] = str(e)[:300]
    return d


def attempt(ctx, key, fn, *a, **kw):
    try:
        r = fn(*a, **kw)
    except Exception as e:  # noqa: BLE001
        ctx.record(key, kerr(e))
        return None
    ctx.record(key, {"ok": r})
    return r


def drain(conn, seconds):
    """Drain events for about `seconds` (stops early on nothing)."""
    import socket
    import time
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            conn.drain_events(timeout=left)
        except socket.timeout:
            return
