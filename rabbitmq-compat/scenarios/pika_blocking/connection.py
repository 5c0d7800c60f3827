"""Connection-level scenarios: handshake, tuning, heartbeats, login, vhosts."""
import time
import urllib.parse

import pika

from scenarios.context import counts
from scenarios.framework import scenario
from scenarios.pikautil import FRAMES, LAST, record_frames

# values that describe the server's identity, not its behaviour
IDENTITY = ("cluster_name", "copyright", "information", "platform", "product", "version")


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


def _url_with(url, user=None, password=None, vhost=None):
    u = urllib.parse.urlparse(url)
    netloc = u.hostname + (f":{u.port}" if u.port else "")
    user = user if user is not None else urllib.parse.unquote(u.username or "guest")
    password = password if password is not None else urllib.parse.unquote(u.password or "guest")
    path = u.path if vhost is None else "/" + urllib.parse.quote(vhost, safe="")
    return urllib.parse.urlunparse((u.scheme, f"{urllib.parse.quote(user)}:{urllib.parse.quote(password)}@{netloc}",
                                    path, "", u.query, ""))


@scenario("connection")
def handshake_facts(ctx):
    """connection.start (version, server property keys, capabilities, mechanisms,
    locales) and connection.tune as the client sees them."""
    c = ctx.connect()
    st, tu = c._impl._compat_start, c._impl._compat_tune  # pylint: disable=protected-access
    ctx.record("version", f"{st.version_major}-{st.version_minor}")
    props = dict(st.server_properties)
    caps = props.pop("capabilities", None)
    ctx.record("server_properties keys", sorted(list(props) + (["capabilities"] if caps is not None else [])))
    ctx.record("server_properties types", {k: type(v).__name__ for k, v in sorted(props.items())})
    ctx.record("non-identity server_properties",
               {k: v for k, v in sorted(props.items()) if k not in IDENTITY})
    ctx.record("capabilities", dict(sorted((caps or {}).items())))
    ctx.record("mechanisms", st.mechanisms)
    ctx.record("locales", st.locales)
    ctx.record("tune", {"channel_max": tu.channel_max, "frame_max": tu.frame_max, "heartbeat": tu.heartbeat})
    ctx.record("negotiated", {"channel_max": c._impl.params.channel_max,  # pylint: disable=protected-access
                              "frame_max": c._impl.params.frame_max,
                              "heartbeat": c._impl.params.heartbeat})
    ctx.record("known_hosts", c._impl.known_hosts)  # pylint: disable=protected-access
    ch = c.channel()
    ctx.record("first channel number", ch.channel_number)


@scenario("connection")
def capabilities_blocked(ctx):
    """The capabilities clients test before relying on a feature (connection.blocked,
    basic.nack, confirms, cancel notifications, e2e bindings) and pika's view of them."""
    c = ctx.connect()
    caps = c._impl.server_properties.get("capabilities", {})  # pylint: disable=protected-access
    for k in ("connection.blocked", "authentication_failure_close", "basic.nack",
              "publisher_confirms", "consumer_cancel_notify", "exchange_exchange_bindings",
              "per_consumer_qos", "consumer_priorities", "direct_reply_to"):
        ctx.record(k, caps.get(k, "(absent)"))
    ctx.record("pika view", {"basic_nack": c.basic_nack_supported,
                             "consumer_cancel_notify": c.consumer_cancel_notify_supported,
                             "exchange_exchange_bindings": c.exchange_exchange_bindings_supported,
                             "publisher_confirms": c.publisher_confirms_supported})
    blocked = []
    c.add_on_connection_blocked_callback(lambda *a: blocked.append("blocked"))
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x")
    ctx.settle(c, 0.2)
    ctx.record("blocked notifications without a resource alarm", blocked)


@scenario("connection")
def tune_client_limits(ctx):
    """Client asks for lower channel_max/frame_max/heartbeat than the server
    offers; a message bigger than frame_max still round-trips."""
    c = ctx.connect(channel_max=10, frame_max=8192, heartbeat=7)
    p = c._impl.params  # pylint: disable=protected-access
    ctx.record("negotiated", {"channel_max": p.channel_max, "frame_max": p.frame_max,
                              "heartbeat": p.heartbeat})
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    body = bytes(range(256)) * 100  # 25600 bytes: 4 body frames at frame_max 8192
    ch.basic_publish("", q, body)
    m, _p, b = ch.basic_get(q, auto_ack=True)
    ctx.record("got", {"len": len(b), "equal": b == body, "message_count": m.message_count})
    chans = [c.channel() for _ in range(9)]
    ctx.record("channels opened", [x.channel_number for x in chans])
    ctx.attempt("11th channel (pika)", c.channel)


@scenario("connection")
def heartbeat_disabled(ctx):
    """heartbeat=0: the server proposes its value, the client disables
    heartbeats, and the server sends no heartbeat frames for 2.5 s."""
    c = ctx.connect(heartbeat=0)
    ctx.record("server proposed", c._impl._compat_tune.heartbeat)  # pylint: disable=protected-access
    ctx.record("negotiated", c._impl.params.heartbeat)  # pylint: disable=protected-access
    record_frames()
    ctx.settle(c, 2.5)
    ctx.record("heartbeat frames received", sum(1 for f in FRAMES if f[0] == 8))
    record_frames(False)
    ch = c.channel()
    ctx.record("channel usable", ch.is_open)


@scenario("connection")
def heartbeat_one_second(ctx):
    """heartbeat=1: the server sends heartbeat frames on an idle connection
    (at least one within 2.5 s) and the connection stays open."""
    c = ctx.connect(heartbeat=1)
    ctx.record("negotiated", c._impl.params.heartbeat)  # pylint: disable=protected-access
    record_frames()
    ctx.settle(c, 2.5)
    hb = [f for f in FRAMES if f[0] == 8]
    ctx.record("at least one heartbeat frame", len(hb) >= 1)
    ctx.record("heartbeat frames on channel 0 with empty payload",
               all(f[1] == 0 and f[2] == b"" for f in hb))
    record_frames(False)
    ctx.record("still open", c.is_open)
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"after idle")
    ctx.record("get after idle", ctx.msg(*ch.basic_get(q, auto_ack=True)))


@scenario("connection")
def heartbeat_server_default(ctx):
    """heartbeat=None: the client accepts the server's proposal."""
    c = ctx.connect(heartbeat=None)
    ctx.record("negotiated", c._impl.params.heartbeat)  # pylint: disable=protected-access


def _login(ctx, key, url):
    LAST["close"] = None
    p = pika.URLParameters(url)
    p.connection_attempts = 1
    p.socket_timeout = 5
    try:
        c = pika.BlockingConnection(p)
    except Exception as e:  # noqa: BLE001
        d = ctx.describe_exception(e)
        cl = LAST["close"]
        if cl is not None:
            from scenarios.pikautil import method_name
            d["close frame"] = {"on": cl[0], "code": cl[1].reply_code, "text": cl[1].reply_text,
                                "method": method_name(cl[1].class_id, cl[1].method_id)}
        ctx.record(key, d)
        return
    ctx.record(key, "connected")
    c.close()


@scenario("connection")
def wrong_password(ctx):
    """Login with the wrong password: connection.close 403 (authentication_failure_close)."""
    _login(ctx, "login", _url_with(ctx.url, password="not-the-password"))
    # the broker keeps serving other connections
    c = ctx.connect()
    ctx.record("next connection", c.is_open)


@scenario("connection")
def unknown_user(ctx):
    """Login as a user that does not exist."""
    _login(ctx, "login", _url_with(ctx.url, user="compat-nobody", password="x"))


@scenario("connection")
def bad_vhost(ctx):
    """connection.open to a vhost that does not exist: 530 NOT_ALLOWED."""
    _login(ctx, "open", _url_with(ctx.url, vhost="compat-no-such-vhost"))
    _login(ctx, "open default vhost explicitly", _url_with(ctx.url, vhost="/"))


@scenario("connection")
def connection_name(ctx):
    """client_properties with connection_name and custom keys are accepted and
    the connection works normally."""
    c = ctx.connect(client_properties={"connection_name": ctx.name, "product": "compat-suite",
                                       "x-custom": {"nested": [1, "two", True]}})
    ch = c.channel()
    q = ctx.queue("q")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"named")
    ctx.record("get", ctx.msg(*ch.basic_get(q, auto_ack=True)))


@scenario("connection")
def close_releases_consumers(ctx):
    """Closing a connection cancels its consumers and requeues its unacked
    messages; another connection sees the counts change."""
    q = ctx.queue("q")
    obs = ctx.connect().channel()
    obs.queue_declare(q)
    for i in range(3):
        obs.basic_publish("", q, f"m{i}".encode())
    c = ctx.connect()
    chans = [c.channel() for _ in range(3)]
    got = []
    for i, ch in enumerate(chans):
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(q, lambda ch_, m, p, b: got.append(b), consumer_tag=f"c{i}")
    ctx.wait(c, lambda: len(got) >= 3)
    ctx.record("while consuming", counts(obs, q))
    c.close()
    time.sleep(0.3)
    ctx.record("after close", counts(obs, q))
    ctx.record("redelivered", [ctx.msg(*obs.basic_get(q, auto_ack=True)) for _ in range(3)])


@scenario("connection")
def many_connections(ctx):
    """20 connections open at once, each with a channel; all work; closing
    them leaves the broker serving."""
    q = ctx.queue("q")
    conns = [ctx.connect() for _ in range(20)]
    chans = [c.channel() for c in conns]
    chans[0].queue_declare(q)
    for i, ch in enumerate(chans):
        ch.confirm_delivery()  # publishes from 20 connections: wait for each to land
        ch.basic_publish("", q, f"from {i}".encode())
    ctx.record("message_count", counts(chans[-1], q)[0])
    for c in conns[1:]:
        c.close()
    ctx.record("drained", len(ctx.get_all(chans[0], q)))
