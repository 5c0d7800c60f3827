#!/usr/bin/env python3
"""Probe how an AMQP 0-9-1 broker reports errors (and a few success-path
facts), using pika's raw API.

    probe_errors.py [--url amqp://guest:guest@127.0.0.1:5673/] [--only SUBSTR]

Every error case runs on a fresh connection.  One line per case:

    <case> | <closed> | <reply code> | <reply text> | <method the close names>

where <closed> is
    channel         the broker sent channel.close
    connection      the broker sent connection.close
    ok              no error; the last column then holds what the broker replied
    client-refused  pika refused to send it (the text says why)
    client-error    something else went wrong on the client side
and the last column is the class/method id carried by the close frame, by
name, e.g. "queue.declare (50,10)".

The second section ("facts") records success-path values, one per line:
    <fact> | <value>

The output of a run against RabbitMQ 3.10.8 is kept in
expected/errors-rabbitmq-3.10.8.txt; the broker engineers match those
texts exactly.
"""
import argparse
import os
import re
import sys
import threading
import time

import pika
import pika.channel
import pika.connection
from pika import spec
from pika.exceptions import (AMQPChannelError, AMQPConnectionError, ChannelClosedByBroker,
                             ConnectionClosedByBroker)

# ---------------------------------------------------------------------------
# instrumentation: remember the raw close / start / tune frames pika sees
# ---------------------------------------------------------------------------
LAST = {"close": None, "start": None, "tune": None}

_orig_ch_close = pika.channel.Channel._on_close_from_broker
_orig_conn_close = pika.connection.Connection._on_connection_close_from_broker
_orig_start = pika.connection.Connection._on_connection_start
_orig_tune = pika.connection.Connection._on_connection_tune


def _ch_close(self, method_frame):
    LAST["close"] = ("channel", method_frame.method)
    return _orig_ch_close(self, method_frame)


def _conn_close(self, method_frame):
    LAST["close"] = ("connection", method_frame.method)
    return _orig_conn_close(self, method_frame)


def _start(self, method_frame):
    LAST["start"] = method_frame.method
    return _orig_start(self, method_frame)


def _tune(self, method_frame):
    LAST["tune"] = method_frame.method
    return _orig_tune(self, method_frame)


pika.channel.Channel._on_close_from_broker = _ch_close
pika.connection.Connection._on_connection_close_from_broker = _conn_close
pika.connection.Connection._on_connection_start = _start
pika.connection.Connection._on_connection_tune = _tune


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


class ClientRefused(Exception):
    """pika would not send what the case needs."""


class Ok(Exception):
    """Raised by a case to report success with a detail string."""


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
class Ctx:
    def __init__(self, url):
        self.url = url
        self.conns = []

    def params(self, **over):
        p = pika.URLParameters(self.url)
        p.connection_attempts = 1
        p.socket_timeout = 5
        p.blocked_connection_timeout = 10
        for k, v in over.items():
            setattr(p, k, v)
        return p

    def conn(self, **over):
        c = pika.BlockingConnection(self.params(**over))
        self.conns.append(c)
        return c

    def ch(self, conn=None):
        return (conn or self.conn()).channel()

    def close_all(self):
        for c in self.conns:
            try:
                if c.is_open:
                    c.close()
            except Exception:  # noqa: BLE001
                pass
        self.conns = []


def sync(ch):
    """A harmless synchronous method: makes an asynchronous error (one that
    the broker reports by closing the channel after a method without a reply)
    surface as an exception."""
    ch.basic_qos(prefetch_count=0)


def publish_confirmed(ch, queue, n, body=b"m"):
    """Publish n messages to the default exchange and wait for the confirms."""
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish(exchange="", routing_key=queue, body=body + str(i).encode())


def raw(ch, method, content=None):
    """Send a method frame on a BlockingChannel bypassing pika's checks."""
    ch._impl._send_method(method, content)  # pylint: disable=protected-access


class Admin:
    """Cleans up the probe's own queues/exchanges before and after each case."""

    def __init__(self, url):
        self.url = url
        self.c = None
        self.chan = None

    def _channel(self):
        if self.c is None or not self.c.is_open:
            p = pika.URLParameters(self.url)
            p.connection_attempts = 1
            self.c = pika.BlockingConnection(p)
            self.chan = None
        if self.chan is None or not self.chan.is_open:
            self.chan = self.c.channel()
        return self.chan

    def delete(self, queues=(), exchanges=()):
        try:
            self._delete(queues, exchanges)
        except AMQPConnectionError:
            self.c = None

    def _delete(self, queues, exchanges):
        for q in queues:
            try:
                self._channel().queue_delete(queue=q)
            except AMQPChannelError:
                pass
        for x in exchanges:
            try:
                self._channel().exchange_delete(exchange=x)
            except AMQPChannelError:
                pass

    def close(self):
        try:
            if self.c and self.c.is_open:
                self.c.close()
        except Exception:  # noqa: BLE001
            pass


# ---------------------------------------------------------------------------
# error cases
# ---------------------------------------------------------------------------
CASES = []


def case(name, queues=(), exchanges=()):
    """Register a case; queues/exchanges are deleted before and after it."""
    def deco(f):
        CASES.append((name, f, tuple(queues), tuple(exchanges)))
        return f
    return deco


# -- passive declares --------------------------------------------------------
@case("queue.declare passive, missing queue")
def _(c):
    c.ch().queue_declare(queue="probe.missing-q", passive=True)


@case("exchange.declare passive, missing exchange")
def _(c):
    c.ch().exchange_declare(exchange="probe.missing-x", passive=True)


# -- queue redeclare ----------------------------------------------------------
@case("queue.declare redeclare, durable false -> true", queues=["probe.q.redeclare"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.redeclare", durable=False)
    ch.queue_declare(queue="probe.q.redeclare", durable=True)


@case("queue.declare redeclare, durable true -> false", queues=["probe.q.redeclare"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.redeclare", durable=True)
    ch.queue_declare(queue="probe.q.redeclare", durable=False)


@case("queue.declare redeclare, auto_delete false -> true", queues=["probe.q.redeclare"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.redeclare", auto_delete=False)
    ch.queue_declare(queue="probe.q.redeclare", auto_delete=True)


@case("queue.declare redeclare, exclusive false -> true (same connection)", queues=["probe.q.redeclare"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.redeclare", exclusive=False)
    ch.queue_declare(queue="probe.q.redeclare", exclusive=True)


@case("queue.declare redeclare, exclusive true -> false (same connection)", queues=["probe.q.redeclare"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.redeclare", exclusive=True)
    ch.queue_declare(queue="probe.q.redeclare", exclusive=False)


@case("queue.declare redeclare, args none -> x-message-ttl=1000", queues=["probe.q.redeclare"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.redeclare")
    ch.queue_declare(queue="probe.q.redeclare", arguments={"x-message-ttl": 1000})


@case("queue.declare redeclare, args x-message-ttl=1000 -> none", queues=["probe.q.redeclare"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.redeclare", arguments={"x-message-ttl": 1000})
    ch.queue_declare(queue="probe.q.redeclare")


@case("queue.declare redeclare, args x-max-length=10 -> 20", queues=["probe.q.redeclare"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.redeclare", arguments={"x-max-length": 10})
    ch.queue_declare(queue="probe.q.redeclare", arguments={"x-max-length": 20})


@case("queue.declare redeclare, args x-foo=1 -> x-foo=2 (unknown arg)", queues=["probe.q.redeclare"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.redeclare", arguments={"x-foo": 1})
    r = ch.queue_declare(queue="probe.q.redeclare", arguments={"x-foo": 2})
    raise Ok(f"queue.declare-ok queue={r.method.queue!r}")


@case("queue.declare passive with different flags (durable=True on non-durable)", queues=["probe.q.redeclare"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.redeclare", durable=False)
    r = ch.queue_declare(queue="probe.q.redeclare", durable=True, passive=True)
    raise Ok(f"queue.declare-ok queue={r.method.queue!r}")


# -- exchange redeclare ---------------------------------------------------------
@case("exchange.declare redeclare, type direct -> fanout", exchanges=["probe.x.redeclare"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="direct")
    ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="fanout")


@case("exchange.declare redeclare, durable false -> true", exchanges=["probe.x.redeclare"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="direct", durable=False)
    ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="direct", durable=True)


@case("exchange.declare redeclare, auto_delete false -> true", exchanges=["probe.x.redeclare"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="direct", auto_delete=False)
    ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="direct", auto_delete=True)


@case("exchange.declare redeclare, internal false -> true", exchanges=["probe.x.redeclare"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="direct", internal=False)
    ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="direct", internal=True)


@case("exchange.declare redeclare, args none -> alternate-exchange=ae", exchanges=["probe.x.redeclare"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="direct")
    r = ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="direct",
                            arguments={"alternate-exchange": "ae"})
    raise Ok(f"{amqp_name(r.method)}")


@case("exchange.declare passive with different type (fanout on direct)", exchanges=["probe.x.redeclare"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="direct")
    r = ch.exchange_declare(exchange="probe.x.redeclare", exchange_type="fanout", passive=True)
    raise Ok(f"{amqp_name(r.method)}")


# -- reserved names / unknown types ---------------------------------------------
@case("exchange.declare name 'amq.foo'", exchanges=["amq.foo"])
def _(c):
    c.ch().exchange_declare(exchange="amq.foo", exchange_type="direct")


@case("exchange.declare passive name 'amq.foo' (missing)")
def _(c):
    c.ch().exchange_declare(exchange="amq.foo", passive=True)


@case("exchange.declare type 'foo'", exchanges=["probe.x.type"])
def _(c):
    c.ch().exchange_declare(exchange="probe.x.type", exchange_type="foo")


@case("exchange.declare name '' (default exchange)")
def _(c):
    r = c.ch().exchange_declare(exchange="", exchange_type="direct")
    raise Ok(f"{amqp_name(r.method)}")


@case("exchange.declare passive name '' (default exchange)")
def _(c):
    r = c.ch().exchange_declare(exchange="", passive=True)
    raise Ok(f"{amqp_name(r.method)}")


@case("exchange.declare redeclare 'amq.direct' as fanout")
def _(c):
    c.ch().exchange_declare(exchange="amq.direct", exchange_type="fanout", durable=True)


@case("exchange.declare redeclare 'amq.direct' with the same properties")
def _(c):
    r = c.ch().exchange_declare(exchange="amq.direct", exchange_type="direct", durable=True)
    raise Ok(f"{amqp_name(r.method)}")


@case("queue.declare name 'amq.foo'", queues=["amq.foo"])
def _(c):
    c.ch().queue_declare(queue="amq.foo")


@case("queue.declare passive name 'amq.foo' (missing)")
def _(c):
    c.ch().queue_declare(queue="amq.foo", passive=True)


# -- deletes ------------------------------------------------------------------
@case("exchange.delete 'amq.direct'")
def _(c):
    c.ch().exchange_delete(exchange="amq.direct")


@case("exchange.delete '' (default exchange)")
def _(c):
    r = c.ch().exchange_delete(exchange="")
    raise Ok(f"{amqp_name(r.method)}")


@case("exchange.delete missing exchange")
def _(c):
    r = c.ch().exchange_delete(exchange="probe.missing-x")
    raise Ok(f"{amqp_name(r.method)}")


@case("exchange.delete if_unused, exchange with a queue binding",
      queues=["probe.q.bound"], exchanges=["probe.x.bound"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.bound", exchange_type="direct")
    ch.queue_declare(queue="probe.q.bound")
    ch.queue_bind(queue="probe.q.bound", exchange="probe.x.bound", routing_key="k")
    ch.exchange_delete(exchange="probe.x.bound", if_unused=True)


@case("exchange.delete if_unused, exchange only a destination of an e2e binding",
      exchanges=["probe.x.src", "probe.x.dst"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.src", exchange_type="direct")
    ch.exchange_declare(exchange="probe.x.dst", exchange_type="direct")
    ch.exchange_bind(destination="probe.x.dst", source="probe.x.src", routing_key="k")
    r = ch.exchange_delete(exchange="probe.x.dst", if_unused=True)
    raise Ok(f"{amqp_name(r.method)}")


@case("exchange.delete if_unused, exchange without bindings", exchanges=["probe.x.unbound"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.unbound", exchange_type="direct")
    r = ch.exchange_delete(exchange="probe.x.unbound", if_unused=True)
    raise Ok(f"{amqp_name(r.method)}")


@case("queue.delete if_unused, queue with a consumer", queues=["probe.q.del"])
def _(c):
    conn = c.conn()
    ch1 = conn.channel()
    ch1.queue_declare(queue="probe.q.del")
    ch1.basic_consume(queue="probe.q.del", on_message_callback=lambda *a: None)
    ch2 = conn.channel()
    ch2.queue_delete(queue="probe.q.del", if_unused=True)


@case("queue.delete if_empty, queue with messages", queues=["probe.q.del"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.del")
    publish_confirmed(ch, "probe.q.del", 2)
    ch.queue_delete(queue="probe.q.del", if_empty=True)


@case("queue.delete missing queue")
def _(c):
    r = c.ch().queue_delete(queue="probe.missing-q")
    raise Ok(f"{amqp_name(r.method)} message_count={r.method.message_count}")


@case("queue.delete if_unused+if_empty, missing queue")
def _(c):
    r = c.ch().queue_delete(queue="probe.missing-q", if_unused=True, if_empty=True)
    raise Ok(f"{amqp_name(r.method)} message_count={r.method.message_count}")


@case("queue.delete empty queue name, no queue declared on channel")
def _(c):
    r = c.ch().queue_delete(queue="")
    raise Ok(f"{amqp_name(r.method)} message_count={r.method.message_count}")


# -- bindings --------------------------------------------------------------------
@case("queue.bind to missing exchange", queues=["probe.q.bind"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.bind")
    ch.queue_bind(queue="probe.q.bind", exchange="probe.missing-x", routing_key="k")


@case("queue.bind missing queue")
def _(c):
    c.ch().queue_bind(queue="probe.missing-q", exchange="amq.direct", routing_key="k")


@case("queue.bind missing queue and missing exchange")
def _(c):
    c.ch().queue_bind(queue="probe.missing-q", exchange="probe.missing-x", routing_key="k")


@case("queue.bind empty queue name, no queue declared on channel")
def _(c):
    c.ch().queue_bind(queue="", exchange="amq.direct", routing_key="k")


@case("queue.bind empty queue name after server-named declare on channel")
def _(c):
    ch = c.ch()
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    r = ch.queue_bind(queue="", exchange="amq.direct", routing_key="probe.k")
    # check that the binding went to the last declared queue
    ch.confirm_delivery()
    ch.basic_publish(exchange="amq.direct", routing_key="probe.k", body=b"x")
    n = ch.queue_declare(queue=q, passive=True).method.message_count
    raise Ok(f"{amqp_name(r.method)}; a publish to amq.direct/probe.k reached it: message_count={n}")


@case("queue.bind to default exchange ''", queues=["probe.q.bind"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.bind")
    ch.queue_bind(queue="probe.q.bind", exchange="", routing_key="probe.q.bind")


@case("queue.unbind from default exchange ''", queues=["probe.q.bind"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.bind")
    ch.queue_unbind(queue="probe.q.bind", exchange="", routing_key="probe.q.bind")


@case("queue.unbind missing queue")
def _(c):
    r = c.ch().queue_unbind(queue="probe.missing-q", exchange="amq.direct", routing_key="k")
    raise Ok(f"{amqp_name(r.method)}")


@case("queue.unbind missing exchange", queues=["probe.q.bind"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.bind")
    r = ch.queue_unbind(queue="probe.q.bind", exchange="probe.missing-x", routing_key="k")
    raise Ok(f"{amqp_name(r.method)}")


@case("queue.unbind binding that does not exist", queues=["probe.q.bind"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.bind")
    r = ch.queue_unbind(queue="probe.q.bind", exchange="amq.direct", routing_key="nope")
    raise Ok(f"{amqp_name(r.method)}")


@case("exchange.bind missing source", exchanges=["probe.x.dst"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.dst", exchange_type="direct")
    ch.exchange_bind(destination="probe.x.dst", source="probe.missing-x", routing_key="k")


@case("exchange.bind missing destination", exchanges=["probe.x.src"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.src", exchange_type="direct")
    ch.exchange_bind(destination="probe.missing-x", source="probe.x.src", routing_key="k")


@case("exchange.bind source is default exchange ''", exchanges=["probe.x.dst"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.dst", exchange_type="direct")
    ch.exchange_bind(destination="probe.x.dst", source="", routing_key="k")


@case("exchange.bind destination is default exchange ''", exchanges=["probe.x.src"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.src", exchange_type="direct")
    ch.exchange_bind(destination="", source="probe.x.src", routing_key="k")


@case("exchange.unbind missing source/destination")
def _(c):
    r = c.ch().exchange_unbind(destination="probe.missing-x", source="probe.missing-x2", routing_key="k")
    raise Ok(f"{amqp_name(r.method)}")


@case("queue.bind headers exchange with x-match 'foo'", queues=["probe.q.hdr"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.hdr")
    ch.queue_bind(queue="probe.q.hdr", exchange="amq.headers", arguments={"x-match": "foo", "a": "b"})


@case("queue.bind headers exchange with x-match 'any-with-x'", queues=["probe.q.hdr"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.hdr")
    r = ch.queue_bind(queue="probe.q.hdr", exchange="amq.headers",
                      arguments={"x-match": "any-with-x", "a": "b"})
    raise Ok(f"{amqp_name(r.method)}")


# -- publish -------------------------------------------------------------------
@case("basic.publish to missing exchange (then basic.qos)")
def _(c):
    ch = c.ch()
    ch.basic_publish(exchange="probe.missing-x", routing_key="k", body=b"x")
    sync(ch)


@case("basic.publish to missing exchange on a confirm channel")
def _(c):
    ch = c.ch()
    ch.confirm_delivery()
    ch.basic_publish(exchange="probe.missing-x", routing_key="k", body=b"x")


@case("basic.publish to internal exchange (then basic.qos)", exchanges=["probe.x.internal"])
def _(c):
    ch = c.ch()
    ch.exchange_declare(exchange="probe.x.internal", exchange_type="fanout", internal=True)
    ch.basic_publish(exchange="probe.x.internal", routing_key="k", body=b"x")
    sync(ch)


@case("basic.publish immediate=true (raw frame, then basic.qos)", queues=["probe.q.pub"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.pub")
    # pika's basic_publish has no 'immediate' parameter; send the frame ourselves
    raw(ch, spec.Basic.Publish(exchange="", routing_key="probe.q.pub", mandatory=False, immediate=True),
        (spec.BasicProperties(), b"x"))
    sync(ch)


@case("basic.publish to default exchange, no such queue (then basic.qos)")
def _(c):
    ch = c.ch()
    ch.basic_publish(exchange="", routing_key="probe.missing-q", body=b"x")
    sync(ch)
    raise Ok("message silently dropped; channel stays open")


@case("basic.publish message larger than max message size")
def _(c):
    raise ClientRefused("skipped: default max message size (128 MiB) is too big to test quickly")


# -- consume -------------------------------------------------------------------
@case("basic.consume missing queue")
def _(c):
    c.ch().basic_consume(queue="probe.missing-q", on_message_callback=lambda *a: None)


@case("basic.consume consumer tag already used on the channel (raw second consume)", queues=["probe.q.cons"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.cons")
    ch.basic_consume(queue="probe.q.cons", on_message_callback=lambda *a: None, consumer_tag="probe-ctag")
    # pika raises DuplicateConsumerTag itself; send the frame ourselves
    raw(ch, spec.Basic.Consume(queue="probe.q.cons", consumer_tag="probe-ctag"))
    sync(ch)


@case("basic.consume exclusive=true when another consumer exists", queues=["probe.q.cons"])
def _(c):
    ch1 = c.ch()
    ch1.queue_declare(queue="probe.q.cons")
    ch1.basic_consume(queue="probe.q.cons", on_message_callback=lambda *a: None)
    ch2 = c.ch()
    ch2.basic_consume(queue="probe.q.cons", on_message_callback=lambda *a: None, exclusive=True)


@case("basic.consume when an exclusive consumer exists", queues=["probe.q.cons"])
def _(c):
    ch1 = c.ch()
    ch1.queue_declare(queue="probe.q.cons")
    ch1.basic_consume(queue="probe.q.cons", on_message_callback=lambda *a: None, exclusive=True)
    ch2 = c.ch()
    ch2.basic_consume(queue="probe.q.cons", on_message_callback=lambda *a: None)


def _other_conn_exclusive(c):
    owner = c.ch()
    owner.queue_declare(queue="probe.q.excl", exclusive=True)
    return c.ch()


@case("basic.consume on another connection's exclusive queue")
def _(c):
    _other_conn_exclusive(c).basic_consume(queue="probe.q.excl", on_message_callback=lambda *a: None)


@case("queue.declare passive of another connection's exclusive queue")
def _(c):
    _other_conn_exclusive(c).queue_declare(queue="probe.q.excl", passive=True)


@case("queue.declare (non-passive) of another connection's exclusive queue")
def _(c):
    _other_conn_exclusive(c).queue_declare(queue="probe.q.excl")


@case("queue.declare exclusive of another connection's exclusive queue")
def _(c):
    _other_conn_exclusive(c).queue_declare(queue="probe.q.excl", exclusive=True)


@case("basic.get on another connection's exclusive queue")
def _(c):
    _other_conn_exclusive(c).basic_get(queue="probe.q.excl")


@case("queue.bind on another connection's exclusive queue")
def _(c):
    _other_conn_exclusive(c).queue_bind(queue="probe.q.excl", exchange="amq.direct", routing_key="k")


@case("queue.purge on another connection's exclusive queue")
def _(c):
    _other_conn_exclusive(c).queue_purge(queue="probe.q.excl")


@case("queue.delete on another connection's exclusive queue")
def _(c):
    _other_conn_exclusive(c).queue_delete(queue="probe.q.excl")


@case("basic.cancel unknown consumer tag")
def _(c):
    ch = c.ch()
    # BlockingChannel.basic_cancel ignores unknown tags locally; send it raw and wait for cancel-ok
    got = []
    ch._impl._rpc(spec.Basic.Cancel(consumer_tag="probe-nope"),  # pylint: disable=protected-access
                  lambda f: got.append(f.method), [spec.Basic.CancelOk])
    t0 = time.time()
    while not got and time.time() - t0 < 5:
        ch.connection.process_data_events(time_limit=0.1)
    sync(ch)
    raise Ok(f"basic.cancel-ok consumer_tag={got[0].consumer_tag!r}" if got else "no reply")


# -- acks --------------------------------------------------------------------------
@case("basic.ack unknown delivery tag 99 (then basic.qos)")
def _(c):
    ch = c.ch()
    ch.basic_ack(delivery_tag=99)
    sync(ch)


@case("basic.ack same delivery tag twice (then basic.qos)", queues=["probe.q.ack"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.ack")
    publish_confirmed(ch, "probe.q.ack", 1)
    m, _p, _b = ch.basic_get(queue="probe.q.ack", auto_ack=False)
    ch.basic_ack(delivery_tag=m.delivery_tag)
    ch.basic_ack(delivery_tag=m.delivery_tag)
    sync(ch)


@case("basic.ack delivery tag 0 multiple=false, nothing outstanding (then basic.qos)")
def _(c):
    ch = c.ch()
    ch.basic_ack(delivery_tag=0, multiple=False)
    sync(ch)


@case("basic.ack delivery tag 0 multiple=true, nothing outstanding (then basic.qos)")
def _(c):
    ch = c.ch()
    ch.basic_ack(delivery_tag=0, multiple=True)
    sync(ch)
    raise Ok("no error")


@case("basic.ack unknown delivery tag 99 multiple=true (then basic.qos)")
def _(c):
    ch = c.ch()
    ch.basic_ack(delivery_tag=99, multiple=True)
    sync(ch)


@case("basic.reject unknown delivery tag 99 (then basic.qos)")
def _(c):
    ch = c.ch()
    ch.basic_reject(delivery_tag=99)
    sync(ch)


@case("basic.nack unknown delivery tag 99 multiple=true (then basic.qos)")
def _(c):
    ch = c.ch()
    ch.basic_nack(delivery_tag=99, multiple=True)
    sync(ch)


@case("basic.ack of an auto-ack (no_ack) delivery (then basic.qos)", queues=["probe.q.ack"])
def _(c):
    ch = c.ch()
    ch.queue_declare(queue="probe.q.ack")
    publish_confirmed(ch, "probe.q.ack", 1)
    m, _p, _b = ch.basic_get(queue="probe.q.ack", auto_ack=True)
    ch.basic_ack(delivery_tag=m.delivery_tag)
    sync(ch)


# -- qos / recover / flow ---------------------------------------------------------
@case("basic.qos prefetch_size=1000")
def _(c):
    c.ch().basic_qos(prefetch_size=1000)


@case("basic.qos prefetch_count=10 global=true")
def _(c):
    c.ch().basic_qos(prefetch_count=10, global_qos=True)
    raise Ok("basic.qos-ok")


@case("basic.recover requeue=false")
def _(c):
    c.ch().basic_recover(requeue=False)


@case("basic.recover requeue=true")
def _(c):
    c.ch().basic_recover(requeue=True)
    raise Ok("basic.recover-ok")


@case("channel.flow active=false")
def _(c):
    r = c.ch().flow(False)
    raise Ok(f"channel.flow-ok active={r}")


@case("channel.flow active=true")
def _(c):
    r = c.ch().flow(True)
    raise Ok(f"channel.flow-ok active={r}")


# -- tx / confirm ---------------------------------------------------------------------
@case("tx.commit without tx.select")
def _(c):
    c.ch().tx_commit()


@case("tx.rollback without tx.select")
def _(c):
    c.ch().tx_rollback()


@case("tx.select on a confirm channel")
def _(c):
    ch = c.ch()
    ch.confirm_delivery()
    ch.tx_select()


@case("confirm.select on a tx channel")
def _(c):
    ch = c.ch()
    ch.tx_select()
    ch.confirm_delivery()


@case("tx.select twice")
def _(c):
    ch = c.ch()
    ch.tx_select()
    ch.tx_select()
    raise Ok("tx.select-ok")


@case("confirm.select twice")
def _(c):
    ch = c.ch()
    ch.confirm_delivery()
    # pika refuses a second confirm_delivery; send it raw and wait for select-ok
    got = []
    ch._impl._rpc(spec.Confirm.Select(), lambda f: got.append(f.method),  # pylint: disable=protected-access
                  [spec.Confirm.SelectOk])
    t0 = time.time()
    while not got and time.time() - t0 < 5:
        ch.connection.process_data_events(time_limit=0.1)
    sync(ch)
    raise Ok("confirm.select-ok" if got else "no reply")


# -- queue arguments ----------------------------------------------------------------------
def _declare_with(c, args, durable=False, name="probe.q.args"):
    c.ch().queue_declare(queue=name, durable=durable, arguments=args)
    raise Ok("queue.declare-ok")


@case("queue.declare x-queue-type=stream, durable=false", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-queue-type": "stream"})


@case("queue.declare x-queue-type=quorum, durable=false", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-queue-type": "quorum"})


@case("queue.declare x-queue-type=quorum, durable=true, exclusive=true", queues=["probe.q.args"])
def _(c):
    c.ch().queue_declare(queue="probe.q.args", durable=True, exclusive=True,
                         arguments={"x-queue-type": "quorum"})


@case("queue.declare x-queue-type=foo", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-queue-type": "foo"})


@case("queue.declare x-max-priority=300", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-max-priority": 300})


@case("queue.declare x-max-priority=-1", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-max-priority": -1})


@case("queue.declare x-message-ttl=-1", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-message-ttl": -1})


@case("queue.declare x-message-ttl='1000' (string)", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-message-ttl": "1000"})


@case("queue.declare x-max-length='abc' (string)", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-max-length": "abc"})


@case("queue.declare x-max-length=-1", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-max-length": -1})


@case("queue.declare x-max-length-bytes=-1", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-max-length-bytes": -1})


@case("queue.declare x-expires=0", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-expires": 0})


@case("queue.declare x-expires=-5", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-expires": -5})


@case("queue.declare x-overflow='foo'", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-overflow": "foo"})


@case("queue.declare x-dead-letter-exchange=5 (integer)", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-dead-letter-exchange": 5})


@case("queue.declare x-dead-letter-routing-key without x-dead-letter-exchange", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-dead-letter-routing-key": "rk"})


@case("queue.declare x-queue-mode='foo'", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-queue-mode": "foo"})


@case("queue.declare x-single-active-consumer='yes' (string)", queues=["probe.q.args"])
def _(c):
    _declare_with(c, {"x-single-active-consumer": "yes"})


# -- missing queues for get / purge ------------------------------------------------------
@case("basic.get missing queue")
def _(c):
    c.ch().basic_get(queue="probe.missing-q")


@case("queue.purge missing queue")
def _(c):
    c.ch().queue_purge(queue="probe.missing-q")


# -- channel / connection level ------------------------------------------------------------
@case("channel.open on a channel number that is already open (raw frame)")
def _(c):
    conn = c.conn()
    ch = conn.channel()
    conn._impl._send_method(ch.channel_number, spec.Channel.Open())  # pylint: disable=protected-access
    t0 = time.time()
    while time.time() - t0 < 5:
        conn.process_data_events(time_limit=0.1)
    raise Ok("no reply within 5s")


@case("method on a channel number that was never opened (raw queue.declare on channel 7)")
def _(c):
    conn = c.conn()
    conn.channel()
    conn._impl._send_method(7, spec.Queue.Declare(queue="probe.never"))  # pylint: disable=protected-access
    t0 = time.time()
    while time.time() - t0 < 5:
        conn.process_data_events(time_limit=0.1)
    raise Ok("no reply within 5s")


@case("login with wrong password")
def _(c):
    c.conn(credentials=pika.PlainCredentials("guest", "wrong-password"))
    raise Ok("connected?!")


@case("login with unknown user")
def _(c):
    c.conn(credentials=pika.PlainCredentials("nobody", "guest"))
    raise Ok("connected?!")


@case("connection.open to vhost 'nope'")
def _(c):
    c.conn(virtual_host="nope")
    raise Ok("connected?!")


# ---------------------------------------------------------------------------
# runner for the error cases
# ---------------------------------------------------------------------------
def describe_exception(e):
    """(closed, code, text) for an exception raised by a case."""
    if isinstance(e, ChannelClosedByBroker):
        return "channel", e.reply_code, e.reply_text
    if isinstance(e, ConnectionClosedByBroker):
        return "connection", e.reply_code, e.reply_text
    frame = LAST["close"]
    if isinstance(e, AMQPConnectionError) and frame is not None and frame[0] == "connection":
        # e.g. ProbableAuthenticationError wrapping the broker's connection.close
        return "connection", frame[1].reply_code, frame[1].reply_text
    if isinstance(e, AMQPConnectionError):
        return "connection", "-", f"no connection.close received; pika raised {type(e).__name__}: {e!r}"
    return "client-error", "-", f"{type(e).__name__}: {e}"


def run_case(url, admin, name, f, queues, exchanges):
    admin.delete(queues, exchanges)
    LAST["close"] = None
    pika_note = ""
    c = Ctx(url)
    try:
        f(c)
        closed, code, text = "ok", "-", "(case returned without error)"
    except Ok as e:
        closed, code, text = "ok", "-", str(e)
    except ClientRefused as e:
        closed, code, text = "client-refused", "-", str(e)
    except Exception as e:  # noqa: BLE001
        closed, code, text = describe_exception(e)
        if not isinstance(e, (ChannelClosedByBroker, ConnectionClosedByBroker)):
            pika_note = f"; pika raised {type(e).__name__}"
    finally:
        c.close_all()
    frame = LAST["close"]
    where = ""
    if closed in ("channel", "connection") and frame is not None:
        where = method_name(frame[1].class_id, frame[1].method_id)
        if frame[0] != closed:
            where += f" [close frame was {frame[0]}.close]"
    admin.delete(queues, exchanges)
    return f"{name} | {closed} | {code} | {text} | {where or '-'}{pika_note}"


# ---------------------------------------------------------------------------
# success-path facts
# ---------------------------------------------------------------------------
def shape(samples, prefix):
    """Describe generated names: prefix + X per random char, the lengths and
    the character classes seen over all samples."""
    s = samples[0]
    if not all(x.startswith(prefix) for x in samples):
        return f"{re.sub(r'[A-Za-z0-9]', 'X', s)} (length {len(s)}; does not start with {prefix!r})"
    rest = "".join(x[len(prefix):] for x in samples)
    lengths = sorted({len(x) for x in samples})
    classes = [name for name, rx in (("A-Z", "[A-Z]"), ("a-z", "[a-z]"), ("0-9", "[0-9]"),
                                     ("'-'", "-"), ("'_'", "_")) if re.search(rx, rest)]
    other = sorted(set(re.sub(r"[A-Za-z0-9_-]", "", rest)))
    if other:
        classes.append("other: " + "".join(other))
    return (f"{prefix}{'X' * (len(s) - len(prefix))} (total length {'/'.join(map(str, lengths))}, "
            f"random part {len(s) - len(prefix)} chars; over {len(samples)} samples saw {', '.join(classes)})")


def facts(url, out):
    admin = Admin(url)
    qname = "probe.q.facts"

    def fact(name, value):
        out.append(f"{name} | {value}")

    def fresh():
        admin.delete([qname])

    # connection.start / tune
    LAST["start"] = LAST["tune"] = None
    c = Ctx(url)
    try:
        conn = c.conn()
        st, tu = LAST["start"], LAST["tune"]
        fact("connection.start version", f"{st.version_major}-{st.version_minor}")
        props = dict(st.server_properties)
        caps = props.pop("capabilities", {})
        fact("connection.start server_properties keys", ", ".join(sorted(list(props) + ["capabilities"])))
        for k in sorted(props):
            fact(f"connection.start server_properties[{k}]", repr(props[k]))
        fact("connection.start capabilities keys", ", ".join(sorted(caps)))
        for k in sorted(caps):
            fact(f"connection.start capabilities[{k}]", repr(caps[k]))
        fact("connection.start mechanisms", repr(st.mechanisms))
        fact("connection.start locales", repr(st.locales))
        fact("connection.tune channel_max", tu.channel_max)
        fact("connection.tune frame_max", tu.frame_max)
        fact("connection.tune heartbeat", tu.heartbeat)

        ch = conn.channel()
        fact("first channel number pika opens", ch.channel_number)

        # server-named queues
        names = [ch.queue_declare(queue="", exclusive=True).method.queue for _ in range(40)]
        fact("queue.declare '' -> server-named queue", shape(names, "amq.gen-"))
        r = ch.queue_declare(queue=names[0], passive=True)
        fact("queue.declare '' -> declare-ok message_count/consumer_count",
             f"{r.method.message_count}/{r.method.consumer_count}")

        # server-generated consumer tags (pika makes up its own tags, so the
        # basic.consume with an empty tag is sent raw)
        tags = []
        for _ in range(40):
            tch = conn.channel()
            n = len(tags)
            tch._impl._rpc(spec.Basic.Consume(queue=names[0], consumer_tag=""),  # pylint: disable=protected-access
                           lambda f: tags.append(f.method.consumer_tag), [spec.Basic.ConsumeOk])
            t0 = time.time()
            while len(tags) == n and time.time() - t0 < 5:
                conn.process_data_events(time_limit=0.05)
            tch.close()
        fact("basic.consume with empty tag -> server consumer tag", shape(tags, "amq.ctag-"))
        for q in names:
            ch.queue_delete(queue=q)

        # declare-ok counts
        fresh()
        ch.queue_declare(queue=qname)
        pch = conn.channel()
        publish_confirmed(pch, qname, 3)
        r = ch.queue_declare(queue=qname, passive=True)
        fact("queue.declare-ok after 3 publishes, no consumer: message_count/consumer_count",
             f"{r.method.message_count}/{r.method.consumer_count}")

        # one consumer, prefetch 1, manual ack: 1 unacked, 2 ready
        c2 = c.conn()
        cch = c2.channel()
        cch.basic_qos(prefetch_count=1)
        got = []
        cch.basic_consume(queue=qname, on_message_callback=lambda ch_, m, p, b: got.append(m))
        t0 = time.time()
        while not got and time.time() - t0 < 5:
            c2.process_data_events(time_limit=0.1)
        time.sleep(0.2)
        r = ch.queue_declare(queue=qname, passive=True)
        fact("queue.declare-ok after 3 publishes + 1 consumer (prefetch 1, 1 unacked): "
             "message_count/consumer_count", f"{r.method.message_count}/{r.method.consumer_count}")
        r2 = ch.queue_declare(queue=qname)
        fact("same, non-passive redeclare: message_count/consumer_count",
             f"{r2.method.message_count}/{r2.method.consumer_count}")
        if got:
            m = got[0]
            fact("first basic.deliver: delivery_tag/redelivered/exchange/routing_key",
                 f"{m.delivery_tag}/{m.redelivered}/{m.exchange!r}/{m.routing_key!r}")
        c2.close()
        time.sleep(0.3)
        r = ch.queue_declare(queue=qname, passive=True)
        fact("queue.declare-ok after that consumer's connection closed (unacked requeued): "
             "message_count/consumer_count", f"{r.method.message_count}/{r.method.consumer_count}")
        m, _p, _b = ch.basic_get(queue=qname, auto_ack=True)
        fact("basic.get-ok of a requeued message: redelivered/message_count",
             f"{m.redelivered}/{m.message_count}")

        # consumer with auto-ack that drains the queue
        c3 = c.conn()
        ach = c3.channel()
        seen = []
        ach.basic_consume(queue=qname, on_message_callback=lambda ch_, m, p, b: seen.append(b),
                          auto_ack=True)
        t0 = time.time()
        while len(seen) < 2 and time.time() - t0 < 5:
            c3.process_data_events(time_limit=0.1)
        r = ch.queue_declare(queue=qname, passive=True)
        fact("queue.declare-ok with 1 auto-ack consumer that drained the queue: "
             "message_count/consumer_count", f"{r.method.message_count}/{r.method.consumer_count}")
        c3.close()

        # queue.delete-ok / purge-ok / get-ok counts
        fresh()
        ch.queue_declare(queue=qname)
        publish_confirmed(pch, qname, 5)
        r = ch.queue_delete(queue=qname)
        fact("queue.delete-ok message_count for a queue with 5 messages", r.method.message_count)

        ch.queue_declare(queue=qname)
        publish_confirmed(pch, qname, 4)
        r = ch.queue_purge(queue=qname)
        fact("queue.purge-ok message_count for a queue with 4 messages", r.method.message_count)
        r = ch.queue_purge(queue=qname)
        fact("queue.purge-ok message_count for an empty queue", r.method.message_count)

        publish_confirmed(pch, qname, 3)
        m, p, b = ch.basic_get(queue=qname, auto_ack=False)
        fact("basic.get-ok after 3 publishes: message_count (remaining)", m.message_count)
        fact("basic.get-ok (2nd basic.get on this channel) delivery_tag/redelivered/exchange/routing_key",
             f"{m.delivery_tag}/{m.redelivered}/{m.exchange!r}/{m.routing_key!r}")
        ch.basic_nack(delivery_tag=m.delivery_tag, requeue=True)
        m, p, b = ch.basic_get(queue=qname, auto_ack=False)
        fact("basic.get-ok after basic.nack requeue=true: delivery_tag/redelivered/message_count/body",
             f"{m.delivery_tag}/{m.redelivered}/{m.message_count}/{b!r}")
        ch.queue_purge(queue=qname)
        # basic.get-empty
        got_empty = []
        ch._impl.add_callback(lambda f: got_empty.append(f.method), [spec.Basic.GetEmpty], one_shot=True)
        m, p, b = ch.basic_get(queue=qname, auto_ack=True)
        fact("basic.get on empty queue", "basic.get-empty" if m is None else repr(m))
        ch.queue_delete(queue=qname)

        # mandatory publish that is unroutable -> basic.return
        returned = []
        rch = conn.channel()
        rch.add_on_return_callback(lambda ch_, m, p, b: returned.append(m))
        rch.basic_publish(exchange="amq.direct", routing_key="probe.nowhere", body=b"x", mandatory=True)
        t0 = time.time()
        while not returned and time.time() - t0 < 5:
            conn.process_data_events(time_limit=0.1)
        if returned:
            m = returned[0]
            fact("basic.return for mandatory unroutable publish: reply_code/reply_text/exchange/routing_key",
                 f"{m.reply_code}/{m.reply_text}/{m.exchange!r}/{m.routing_key!r}")
        else:
            fact("basic.return for mandatory unroutable publish", "none received within 5s")

        # publisher confirms: delivery tags
        cch2 = conn.channel()
        acks = []
        cch2._impl.confirm_delivery(lambda f: acks.append(f.method))  # pylint: disable=protected-access
        for _ in range(3):
            cch2._impl.basic_publish(exchange="", routing_key="probe.missing-q", body=b"x")
        t0 = time.time()
        while len(acks) < 3 and time.time() - t0 < 5:
            conn.process_data_events(time_limit=0.1)
        # the broker may coalesce confirms with multiple=true, so report which
        # publish sequence numbers ended up acked / nacked
        acked, nacked, done_upto = [], [], 0
        for a in acks:
            upto = range(done_upto + 1, a.delivery_tag + 1) if a.multiple else [a.delivery_tag]
            (acked if isinstance(a, spec.Basic.Ack) else nacked).extend(upto)
            done_upto = max(done_upto, a.delivery_tag)
        fact("confirms for 3 publishes to default exchange (unroutable): acked seq nos / nacked seq nos",
             f"{','.join(map(str, sorted(acked))) or 'none'} / {','.join(map(str, sorted(nacked))) or 'none'}")

        # pre-declared exchanges
        for x in ["amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match",
                  "amq.rabbitmq.trace", "amq.rabbitmq.log"]:
            xch = conn.channel()
            try:
                xch.exchange_declare(exchange=x, passive=True)
                fact(f"pre-declared exchange {x}", "exists")
                xch.close()
            except ChannelClosedByBroker as e:
                fact(f"pre-declared exchange {x}", f"{e.reply_code} {e.reply_text}")
    finally:
        c.close_all()
        admin.delete([qname])
        admin.close()


# facts that describe the server's identity or environment rather than its
# behaviour: shown by --compare but not counted
INFO_ONLY = re.compile(r"server_properties\[(cluster_name|copyright|information|platform|product|version)\]")


def parse_output(lines):
    """{key: (section, value)} from a probe output; the key is the first field."""
    out, section = {}, None
    for line in lines:
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, rest = line.partition(" | ")
        out[key] = (section, rest)
    return out


def compare(expected_lines, actual_lines):
    exp, act = parse_output(expected_lines), parse_output(actual_lines)
    passed = failed = 0
    for key, (section, want) in exp.items():
        got = act.get(key, (section, None))[1]
        if INFO_ONLY.search(key):
            status = "INFO" if got != want else "PASS"
        elif got == want:
            status = "PASS"
        else:
            status = "FAIL"
        if status == "PASS":
            passed += 1
        elif status == "FAIL":
            failed += 1
        print(f"{status} [{section}] {key}")
        if status != "PASS":
            print(f"     expected: {want}")
            print(f"     actual:   {got if got is not None else '(missing)'}")
    for key in act:
        if key not in exp:
            print(f"NEW  [{act[key][0]}] {key} | {act[key][1]}")
    print()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5673/"))
    ap.add_argument("--only", action="append", default=[], help="run only cases containing this substring")
    ap.add_argument("--no-facts", action="store_true")
    ap.add_argument("--out", help="also write the output to this file")
    ap.add_argument("--compare", metavar="EXPECTED",
                    help="after probing, compare with EXPECTED (e.g. expected/errors-rabbitmq-3.10.8.txt), "
                         "print PASS/FAIL per line and exit non-zero on any difference")
    a = ap.parse_args()

    import logging
    logging.basicConfig(level=logging.CRITICAL)  # pika logs every broker close as WARNING

    lines = []

    def emit(line):
        lines.append(line)
        if not a.compare:
            print(line, flush=True)

    admin = Admin(a.url)
    emit(f"# probe_errors.py (pika {pika.__version__})")
    emit("# case | closed | reply code | reply text | method named by the close frame")
    emit("[errors]")
    for name, f, queues, exchanges in CASES:
        if a.only and not any(o in name for o in a.only):
            continue
        emit(run_case(a.url, admin, name, f, queues, exchanges))
    admin.close()
    if not a.no_facts and not a.only:
        emit("")
        emit("[facts]")
        collected = []
        try:
            facts(a.url, collected)
        except Exception as e:  # noqa: BLE001
            collected.append(f"facts | stopped early: {type(e).__name__}: {e!r}")
        for line in collected:
            emit(line)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")
    if a.compare:
        with open(a.compare) as fh:
            expected = fh.read().splitlines()
        if a.only or a.no_facts:
            keys = set(parse_output(lines))
            expected = [l for l in expected if l.partition(" | ")[0] in keys or not l or l.startswith(("#", "["))]
        sys.exit(compare(expected, lines))


if __name__ == "__main__":
    main()
