"""amqplib (Node.js) scenarios (client name: amqplib).

Every scenario is one function in scenarios.js (promise API) or callback.js
(callback API), run as ``node scenarios.js NAME URL PREFIX``; amqplib itself
comes from tutorials/javascript/node_modules (run.sh installs it with npm ci)."""
import os

from scenarios.framework import external

_HERE = os.path.dirname(os.path.abspath(__file__))
_JS = os.path.join(_HERE, "scenarios.js")
_CALLBACK_JS = os.path.join(_HERE, "callback.js")

for _area, _name, _doc in [
    ("confirms", "confirm-wait-for-confirms",
     "createConfirmChannel: 10 sendToQueue (+1 unroutable) with callbacks, waitForConfirms, checkQueue count"),
    ("basic", "consume-prefetch-nack-requeue",
     "prefetch(2) consumer: first two deliveries, nack(requeue) of m1 comes back redelivered, acks release the rest"),
    ("queue", "assert-check-errors",
     "checkQueue/checkExchange of missing names (404 as amqplib reports it), assertQueue mismatches (406), amq. name (403), bad type (503)"),
    ("exchange", "exchange-bindings",
     "bindExchange topic->fanout, routing through it, unbindExchange, bind to a missing source"),
    ("queue", "get-purge-counts",
     "get with/without ack, purgeQueue count, nack requeue, deleteQueue counts, delete ifEmpty on a non-empty queue"),
    ("connection", "connection-close-and-server-properties",
     "server capabilities/frameMax/channelMax/heartbeat as amqplib negotiated; exclusive queue from another connection (405); clean closes"),
]:
    external(_area, _name, ["node", _JS, _name], "amqplib", cwd=_HERE, doc=_doc)

external("connection", "close-with-full-write-buffer", ["node", _CALLBACK_JS, "close-with-full-write-buffer"],
         "amqplib", cwd=_HERE,
         doc="callback API: publish 1000-byte messages until channel.publish returns false (buffer full), "
             "then connection.close(cb), which goes out ahead of the buffered publishes: whether the "
             "callback fires without error, and the connection/channel events")

external("restart", "reconnect-after-restart", ["node", _JS, "reconnect-after-restart"], "amqplib",
         cwd=_HERE, timeout=60, restart=True,
         doc="confirm channel: durable topic exchange, durable + transient queue, persistent and "
             "non-persistent messages, one got and left unacked; the broker restarts; connection/channel "
             "events and errors on the dead objects; reconnect: what survived, bodies, properties, redelivered")
