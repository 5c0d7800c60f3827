"""Users, vhosts and permissions: made through the HTTP management API (as
operators and test harnesses do on RabbitMQ), then exercised over AMQP with
pika. Needs COMPAT_MGMT_URL (the broker's management API, e.g.
http://127.0.0.1:15672), set by run.sh for each broker.

Every scenario creates users and vhosts named after its prefix and deletes
them at the end."""
import contextlib
import os
import re
import time
import urllib.parse

import pika
import requests

from scenarios.framework import scenario

ALL = {"configure": ".*", "write": ".*", "read": ".*"}


class Api:
    def __init__(self, user="guest", password="guest"):
        self.base = os.environ["COMPAT_MGMT_URL"].rstrip("/") + "/api"
        self.auth = (user, password) if user is not None else None

    def call(self, method, path, body=None, raw=None):
        kw = {"auth": self.auth, "timeout": 10}
        if raw is not None:
            kw["data"] = raw
            kw["headers"] = {"content-type": "application/json"}
        elif body is not None:
            kw["json"] = body
        r = requests.request(method, self.base + path, **kw)
        try:
            data = r.json() if r.text else None
        except ValueError:
            data = r.text
        return r.status_code, data

    def status(self, method, path, body=None):
        return self.call(method, path, body)[0]


def q(name):
    return urllib.parse.quote(name, safe="")


def pick(d, keys):
    return {k: d.get(k) for k in keys} if isinstance(d, dict) else d


@contextlib.contextmanager
def tenant(ctx, perms=None, tags=""):
    """A vhost and a user (password 'secret') with `perms` in it; removed afterwards."""
    api = Api()
    vhost, user = ctx.prefix + ".v", ctx.prefix + ".u"
    api.status("DELETE", f"/vhosts/{q(vhost)}")
    api.status("DELETE", f"/users/{q(user)}")
    ctx.record("put vhost", api.status("PUT", f"/vhosts/{q(vhost)}", {}))
    ctx.record("put user", api.status("PUT", f"/users/{q(user)}", {"password": "secret", "tags": tags}))
    if perms is not None:
        ctx.record("put permissions", api.status("PUT", f"/permissions/{q(vhost)}/{q(user)}", perms))
    try:
        yield api, vhost, user
    finally:
        ctx.close_all()
        api.status("DELETE", f"/vhosts/{q(vhost)}")
        api.status("DELETE", f"/users/{q(user)}")


def connect_as(ctx, user, vhost, password="secret"):
    return ctx.connect(credentials=pika.PlainCredentials(user, password), virtual_host=vhost)


def normalised(err, ctx):
    """Error records with the scenario's prefix and generated names replaced."""
    text = repr(err).replace(ctx.prefix, "<prefix>")
    return re.sub(r"amq\.gen-[A-Za-z0-9_-]{22}", "amq.gen-<random>", text)


def attempt(ctx, key, fn, *a, **kw):
    try:
        r = fn(*a, **kw)
        ctx.record(key, {"ok": True})
        return r
    except Exception as e:  # noqa: BLE001
        ctx.record(key, normalised(ctx.describe_exception(e), ctx))
        return None


# ----- HTTP API ------------------------------------------------------------------

@scenario("access", client="http")
def vhost_lifecycle(ctx):
    """PUT a vhost twice (201 then 204), read it, delete it twice (204 then 404)."""
    api, v = Api(), ctx.prefix + ".vh"
    api.status("DELETE", f"/vhosts/{q(v)}")
    ctx.record("create", api.status("PUT", f"/vhosts/{q(v)}", {"description": "d", "tags": "a,b"}))
    ctx.record("again", api.status("PUT", f"/vhosts/{q(v)}", {"description": "d", "tags": "a,b"}))
    st, body = api.call("GET", f"/vhosts/{q(v)}")
    ctx.record("get", [st, pick(body, ["description", "tags", "default_queue_type", "tracing"])])
    st, body = api.call("GET", f"/vhosts/{q(v)}/permissions")
    ctx.record("creator's permissions", [st, [pick(p, ["user", "configure", "write", "read"]) for p in body or []]])
    ctx.record("missing", api.call("GET", "/vhosts/" + q(ctx.prefix + ".nope")))
    ctx.record("not json", api.call("PUT", f"/vhosts/{q(v)}", raw="nope"))
    ctx.record("delete", api.status("DELETE", f"/vhosts/{q(v)}"))
    ctx.record("delete again", api.call("DELETE", f"/vhosts/{q(v)}"))


@scenario("access", client="http")
def user_lifecycle(ctx):
    """PUT a user (201, 204), read it, the tags rule, delete twice."""
    api, u = Api(), ctx.prefix + ".user"
    api.status("DELETE", f"/users/{q(u)}")
    ctx.record("create", api.status("PUT", f"/users/{q(u)}", {"password": "pw", "tags": "monitoring"}))
    ctx.record("update", api.status("PUT", f"/users/{q(u)}", {"password": "pw", "tags": "management,monitoring"}))
    st, body = api.call("GET", f"/users/{q(u)}")
    ctx.record("get", [st, pick(body, ["name", "tags", "hashing_algorithm", "limits"])])
    ctx.record("hash shape", len(body.get("password_hash", "")) if isinstance(body, dict) else None)
    ctx.record("without tags", api.call("PUT", f"/users/{q(u)}", {"password": "pw"}))
    ctx.record("whoami as the user", Api(u, "pw").call("GET", "/whoami"))
    ctx.record("delete", api.status("DELETE", f"/users/{q(u)}"))
    ctx.record("delete again", api.call("DELETE", f"/users/{q(u)}"))
    ctx.record("get deleted", api.call("GET", f"/users/{q(u)}"))


@scenario("access", client="http")
def imported_password_hash(ctx):
    """A password_hash in RabbitMQ's format (made by RabbitMQ 3.10.8 for 'secret')."""
    api, u = Api(), ctx.prefix + ".imp"
    h = "9kFsVtxGAF73ZCHla9LIEIB+MuNBbamTyfZDivRWOI7OSHNV"
    ctx.record("create", api.status("PUT", f"/users/{q(u)}", {
        "password_hash": h, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "management"}))
    ctx.record("stored hash kept", api.call("GET", f"/users/{q(u)}")[1].get("password_hash") == h)
    ctx.record("right password", Api(u, "secret").call("GET", "/whoami"))
    ctx.record("wrong password", Api(u, "other").call("GET", "/whoami"))
    api.status("DELETE", f"/users/{q(u)}")


@scenario("access", client="http")
def permissions_crud(ctx):
    """PUT/GET/DELETE permissions and the refusals for missing keys, vhosts and users."""
    with tenant(ctx) as (api, v, u):
        path = f"/permissions/{q(v)}/{q(u)}"
        perms = {"configure": "^x", "write": ".*", "read": ""}
        ctx.record("create", api.status("PUT", path, perms))
        ctx.record("again", api.status("PUT", path, perms))
        st, body = api.call("GET", path)
        ctx.record("get", [st, pick(body, ["configure", "write", "read"])])
        st, body = api.call("GET", f"/users/{q(u)}/permissions")
        ctx.record("user's", [st, [pick(p, ["configure", "write", "read"]) for p in body or []]])
        ctx.record("missing keys", api.call("PUT", path, {"write": ".*"}))
        ctx.record("unknown vhost", api.call("PUT", f"/permissions/{q(v + 'x')}/{q(u)}", ALL))
        ctx.record("unknown user", api.call("PUT", f"/permissions/{q(v)}/{q(u + 'x')}", ALL))
        ctx.record("bad regex status", api.status("PUT", path, {"configure": "(", "write": "", "read": ""}))
        ctx.record("delete", api.status("DELETE", path))
        ctx.record("delete again", api.call("DELETE", path))


@scenario("access", client="http")
def api_authentication(ctx):
    """No credentials, a wrong password, a user without management tags, a
    monitoring user changing things."""
    with tenant(ctx, ALL, tags="") as (api, v, u):
        st, _ = Api(None).call("GET", "/vhosts")
        ctx.record("anonymous", st)
        ctx.record("wrong password", Api("guest", "nope").call("GET", "/users"))
        ctx.record("no tags", Api(u, "secret").call("GET", "/whoami"))
        api.status("PUT", f"/users/{q(u)}", {"password": "secret", "tags": "monitoring"})
        ctx.record("monitoring whoami", Api(u, "secret").call("GET", "/whoami"))
        ctx.record("monitoring creates a vhost", Api(u, "secret").call("PUT", f"/vhosts/{q(v + '.2')}", {}))
        ctx.record("monitoring lists users", Api(u, "secret").call("GET", "/users"))


@scenario("access", client="http")
def queue_exchange_binding_http(ctx):
    """Declare an exchange, a queue and a binding over HTTP; use them over AMQP;
    refusals for a reserved name, an inequivalent redeclare, a missing source."""
    api = Api()
    x, qn = ctx.exchange("hx"), ctx.queue("hq")
    ctx.record("put exchange", api.status("PUT", f"/exchanges/%2F/{q(x)}", {"type": "topic", "durable": True}))
    ctx.record("put exchange again", api.status("PUT", f"/exchanges/%2F/{q(x)}", {"type": "topic", "durable": True}))
    ctx.record("put queue", api.status("PUT", f"/queues/%2F/{q(qn)}", {"durable": True, "arguments": {"x-max-length": 10}}))
    st, body = api.call("PUT", f"/queues/%2F/{q(qn)}", {"durable": False})
    ctx.record("inequivalent queue", [st, normalised(body, ctx)])
    ctx.record("reserved queue name", api.call("PUT", "/queues/%2F/amq.compat", {}))
    r = requests.post(api.base + f"/bindings/%2F/e/{q(x)}/q/{q(qn)}", json={"routing_key": "a.*"},
                      auth=api.auth, timeout=10)
    ctx.record("post binding", [r.status_code, r.headers.get("location")])
    st, body = api.call("POST", f"/bindings/%2F/e/{q(x + '.nope')}/q/{q(qn)}", {})
    ctx.record("binding from a missing exchange", [st, normalised(body, ctx)])
    st, body = api.call("GET", f"/bindings/%2F/e/{q(x)}/q/{q(qn)}")
    ctx.record("bindings between", [st, [pick(b, ["routing_key", "destination_type", "properties_key", "arguments"])
                                         for b in body or []]])
    st, body = api.call("GET", f"/queues/%2F/{q(qn)}")
    ctx.record("get queue", [st, pick(body, ["durable", "auto_delete", "exclusive", "arguments"])])
    ch = ctx.connect().channel()
    ch.confirm_delivery()
    ch.basic_publish(x, "a.b", b"via http topology")
    time.sleep(0.2)
    ctx.record("routed", ch.queue_declare(qn, passive=True).method.message_count)
    ctx.record("purge", api.status("DELETE", f"/queues/%2F/{q(qn)}/contents"))
    time.sleep(0.2)
    ctx.record("after purge", ch.queue_declare(qn, passive=True).method.message_count)
    ctx.record("unbind", api.status("DELETE", f"/bindings/%2F/e/{q(x)}/q/{q(qn)}/a.%2A"))
    ctx.record("delete queue", api.status("DELETE", f"/queues/%2F/{q(qn)}"))
    ctx.record("delete queue again", api.status("DELETE", f"/queues/%2F/{q(qn)}"))
    ctx.record("delete amq.direct", api.call("DELETE", "/exchanges/%2F/amq.direct"))
    ctx.record("delete exchange", api.status("DELETE", f"/exchanges/%2F/{q(x)}"))


@scenario("access", client="http")
def definitions_import(ctx):
    """POST definitions (user, vhost, permissions, exchange, queue, binding);
    the user works over AMQP; the vhost's export lists them; garbage is refused."""
    api = Api()
    v, u = ctx.prefix + ".dv", ctx.prefix + ".du"
    api.status("DELETE", f"/vhosts/{q(v)}")
    defs = {
        "users": [{"name": u, "password_hash": "9kFsVtxGAF73ZCHla9LIEIB+MuNBbamTyfZDivRWOI7OSHNV",
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}],
        "vhosts": [{"name": v}],
        "permissions": [{"user": u, "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": [{"name": "orders", "vhost": v, "type": "fanout", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "queues": [{"name": "audit", "vhost": v, "durable": True, "auto_delete": False,
                    "arguments": {"x-message-ttl": 60000}}],
        "bindings": [{"source": "orders", "vhost": v, "destination": "audit",
                      "destination_type": "queue", "routing_key": "", "arguments": {}}],
    }
    try:
        ctx.record("import", api.status("POST", "/definitions", defs))
        ctx.record("import again", api.status("POST", "/definitions", defs))
        ctx.record("garbage", api.call("POST", "/definitions", raw="{nope"))
        ch = connect_as(ctx, u, v).channel()
        ch.confirm_delivery()
        ch.basic_publish("orders", "", b"order")
        time.sleep(0.2)
        ctx.record("routed", ch.queue_declare("audit", passive=True).method.message_count)
        st, body = api.call("GET", f"/definitions/{q(v)}")
        ctx.record("export", [st, {k: (body or {}).get(k) for k in ("queues", "exchanges", "bindings")}])
    finally:
        ctx.close_all()
        api.status("DELETE", f"/vhosts/{q(v)}")
        api.status("DELETE", f"/users/{q(u)}")


# ----- AMQP under permissions ----------------------------------------------------------

@scenario("access", client="pika")
def vhost_access_at_open(ctx):
    """A user with permissions in one vhost opens another, a missing one, and its own."""
    with tenant(ctx, ALL) as (api, v, u):
        attempt(ctx, "open /", connect_as, ctx, u, "/")
        attempt(ctx, "open missing vhost", connect_as, ctx, u, v + ".missing")
        attempt(ctx, "wrong password", connect_as, ctx, u, v, "wrong")
        attempt(ctx, "open own vhost", connect_as, ctx, u, v)


@scenario("access", client="pika")
def configure_permission(ctx):
    """Declares and deletes inside and outside the configure pattern."""
    with tenant(ctx, {"configure": "^mine", "write": "^mine|amq.default", "read": "^mine"}) as (api, v, u):
        c = connect_as(ctx, u, v)
        attempt(ctx, "declare mine", lambda: c.channel().queue_declare("mine.q"))
        attempt(ctx, "declare other", lambda: c.channel().queue_declare("other"))
        attempt(ctx, "server-named", lambda: c.channel().queue_declare("", exclusive=True))
        attempt(ctx, "passive amq.direct", lambda: c.channel().exchange_declare("amq.direct", "direct", passive=True))
        attempt(ctx, "declare exchange", lambda: c.channel().exchange_declare("x", "direct"))
        attempt(ctx, "dead-letter exchange without write",
                lambda: c.channel().queue_declare("mine.dl", arguments={"x-dead-letter-exchange": "amq.fanout"}))
        attempt(ctx, "alternate exchange without write",
                lambda: c.channel().exchange_declare("mine.x", "direct", arguments={"alternate-exchange": "amq.fanout"}))
        attempt(ctx, "delete other exchange", lambda: c.channel().exchange_delete("other.x"))
        attempt(ctx, "delete amq.direct", lambda: c.channel().exchange_delete("amq.direct"))
        attempt(ctx, "delete mine", lambda: c.channel().queue_delete("mine.q"))


@scenario("access", client="pika")
def write_and_read_permissions(ctx):
    """Publish, bind, consume, get and purge inside and outside the patterns."""
    with tenant(ctx, {"configure": "^mine", "write": "^mine|amq.default", "read": "^mine"}) as (api, v, u):
        c = connect_as(ctx, u, v)
        c.channel().queue_declare("mine.q")

        def publish(exchange, key):
            ch = c.channel()
            ch.confirm_delivery()
            ch.basic_publish(exchange, key, b"x")
        attempt(ctx, "publish via default exchange", publish, "", "mine.q")
        attempt(ctx, "publish to amq.direct", publish, "amq.direct", "k")
        attempt(ctx, "publish to a missing exchange", publish, "nope", "k")
        attempt(ctx, "bind from amq.direct", lambda: c.channel().queue_bind("mine.q", "amq.direct", "k"))
        attempt(ctx, "get mine", lambda: c.channel().basic_get("mine.q", auto_ack=True)[2])
        attempt(ctx, "get other", lambda: c.channel().basic_get("other", auto_ack=True))
        attempt(ctx, "consume missing", lambda: c.channel().basic_consume("nonexistent", lambda *a: None))
        attempt(ctx, "purge other", lambda: c.channel().queue_purge("other"))
        # Widen the permissions: the open connection follows.
        api.status("PUT", f"/permissions/{q(v)}/{q(u)}", ALL)
        attempt(ctx, "declare other after widening", lambda: c.channel().queue_declare("other").method.queue)


@scenario("access", client="pika")
def deleting_a_user_closes_its_connections(ctx):
    """DELETE the user of an open connection: the client sees the broker close it."""
    with tenant(ctx, ALL) as (api, v, u):
        c = connect_as(ctx, u, v)
        ch = c.channel()
        ctx.record("delete user", api.status("DELETE", f"/users/{q(u)}"))
        time.sleep(0.5)
        attempt(ctx, "use the connection", lambda: ch.queue_declare("after"))
        ctx.record("connection open", c.is_open)


@scenario("access", client="pika")
def deleting_a_vhost_closes_its_connections(ctx):
    """DELETE the vhost of an open connection: it is closed, its queues are gone."""
    with tenant(ctx, ALL) as (api, v, u):
        c = connect_as(ctx, u, v)
        ch = c.channel()
        ch.queue_declare("doomed", durable=True)
        ctx.record("delete vhost", api.status("DELETE", f"/vhosts/{q(v)}"))
        time.sleep(0.5)
        try:
            ch.queue_declare("after")
            ctx.record("use the connection", "no error")
        except Exception:  # noqa: BLE001  (RabbitMQ resets the socket, Warren sends 320 first)
            ctx.record("use the connection", "closed")
        ctx.record("connection open", c.is_open)
        ctx.record("recreate", api.status("PUT", f"/vhosts/{q(v)}", {}))
        api.status("PUT", f"/permissions/{q(v)}/{q(u)}", ALL)
        c2 = connect_as(ctx, u, v)
        attempt(ctx, "old queue", lambda: c2.channel().queue_declare("doomed", passive=True))
