"""The Celery app of the kombu.celery scenarios (celery_delayed.py).

Not a scenario module (the leading '_' keeps load_all() from importing it).
The worker subprocess loads it with ``celery -A
scenarios.kombu_client._celery_app worker`` (cwd = rabbitmq-compat, so that
``celery`` is the package, not kombu_client/celery.py); the scenario process
imports it to send tasks.  Configured from the environment:

    COMPAT_CELERY_BROKER    broker URL (the broker under test)
    COMPAT_CELERY_PREFIX    prefix of the task queue/exchange names (ctx.prefix)
    COMPAT_CELERY_DIR       directory for the worker's files (worker side only):
                            ready          written on worker_ready
                            received.jsonl one line per task_received: id, time
                            declares.jsonl every declare/bind/qos/consume/ack the
                                           worker sent, with the broker's answer
    COMPAT_CELERY_TIMES=1   prefix each of those lines with the time (debugging)

Quorum queues switch on Celery's native delayed delivery (5.5+): the worker
declares the celery_delayed_0..27 topic exchanges and quorum queues (message
TTL 2^level s, dead-lettered at-least-once to the next level) and the
celery_delayed_delivery exchange, and binds the task exchange to it; a task
sent with a countdown goes to celery_delayed_27 with the countdown's 28 bits
as the first words of its routing key.  The task exchange must not be a direct
one (Celery then falls back to holding the task in the worker).
"""
import inspect
import json
import os
import threading
import time

from celery import Celery, signals

PREFIX = os.environ.get("COMPAT_CELERY_PREFIX", "compat.kombu.celery")
TASKS = f"{PREFIX}.tasks"
WORKDIR = os.environ.get("COMPAT_CELERY_DIR")
TIMES = bool(os.environ.get("COMPAT_CELERY_TIMES"))

app = Celery("compat_celery", broker=os.environ.get("COMPAT_CELERY_BROKER"), backend="rpc://")
app.conf.update(
    task_default_queue=TASKS,
    task_default_exchange=TASKS,
    task_default_exchange_type="topic",
    task_default_routing_key=TASKS,
    task_default_queue_type="quorum",
    worker_detect_quorum_queues=True,
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=False,
    broker_connection_retry=False,
    broker_connection_max_retries=0,
    worker_enable_remote_control=False,  # no pidbox queue/exchange (global names)
    worker_send_task_events=False,
    task_send_sent_event=False,
    result_expires=300,                  # x-expires of the rpc:// reply queue
    worker_log_format="%(levelname)s %(name)s: %(message)s",
    worker_task_log_format="%(levelname)s %(name)s: %(message)s",
    worker_redirect_stdouts=False,
    # The worker's event loop (kombu's hub) sends an ack it was handed from a
    # timer (an ETA task, i.e. every countdown task, is run from a timer) only
    # when the loop wakes up again: on I/O or on the next timer, up to 10 s
    # later -- past the 5 s consumer timeout both test brokers run with
    # (RabbitMQ closes the channel: 406 "delivery acknowledgement on channel 1
    # timed out").  AMQP heartbeats of 2 s put a 1 s heartbeat-check timer in
    # the worker's loop; the client (the scenario process, which sleeps
    # between steps and does not send heartbeats) runs without.
    broker_heartbeat=2 if WORKDIR else 0,
)


@app.task(name="compat.add")
def add(x, y):
    return {"sum": x + y, "ran_at": time.time()}


# ---- what the worker saw (files under COMPAT_CELERY_DIR) ----------------------
_lock = threading.Lock()


def _append(name, entry):
    line = entry if isinstance(entry, str) else json.dumps(entry, default=repr)
    with _lock, open(os.path.join(WORKDIR, name), "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def install_declare_log(write):
    """Wrap py-amqp's Channel methods that shape the topology so that each
    call is passed to write() as one line: method, arguments, and the
    broker's answer (declare-ok counts) or the error."""
    from amqp.channel import Channel
    skip = {"self", "argsig", "callback", "on_cancel", "nowait", "ticket"}

    def wrap(meth):
        orig = getattr(Channel, meth)
        sig = inspect.signature(orig)

        def f(self, *a, **kw):
            b = sig.bind(self, *a, **kw)
            b.apply_defaults()
            args = {k: v for k, v in b.arguments.items() if k not in skip}
            line = meth.replace("_", ".", 1) + " " + json.dumps(args, sort_keys=True, default=repr)
            if TIMES:  # debugging aid: when each call was made
                line = f"{time.time():.3f} {line}"
            try:
                r = orig(self, *a, **kw)
            except Exception as e:  # noqa: BLE001
                write(f"{line} -> {type(e).__name__} {getattr(e, 'code', '')} "
                      f"{getattr(e, 'reply_text', str(e))}")
                raise
            if meth == "queue_declare" and r is not None:
                write(f"{line} -> ok message_count={r.message_count} consumer_count={r.consumer_count}")
            else:
                write(f"{line} -> ok")
            return r
        setattr(Channel, meth, f)

    for m in ("exchange_declare", "queue_declare", "queue_bind", "exchange_bind", "basic_qos",
              "basic_consume", "basic_ack", "basic_reject"):
        wrap(m)


if WORKDIR:
    install_declare_log(lambda line: _append("declares.jsonl", line))

    @signals.worker_ready.connect
    def _ready(sender=None, **kw):  # noqa: ARG001
        _append("ready", {"ready_at": time.time()})

    @signals.task_received.connect
    def _received(sender=None, request=None, **kw):  # noqa: ARG001
        m = request.message
        _append("received.jsonl", {
            "id": request.id, "at": time.time(),
            "delivery_info": {k: m.delivery_info.get(k)
                              for k in ("exchange", "routing_key", "redelivered")},
            # what the broker added on the way (x-death, x-first-death-*, ...)
            "broker headers": {k: v for k, v in sorted((m.headers or {}).items())
                               if k.startswith("x-")},
            "properties": {k: v for k, v in sorted(m.properties.items())
                           if k != "application_headers"},
        })
