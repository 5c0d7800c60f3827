"""Shared by chaos.py (the workload) and checker.py (the rules): the queues,
message bodies, and the TSV record files."""

import threading

BODY_SIZE = 1024  # 1 KiB: tens of MB of backlog are tens of thousands of messages

DLX = "chaos.dlx"          # fanout exchange every workload queue dead-letters to
DEAD_QUEUE = "chaos.dead"  # durable, bound to DLX, drained by a consumer

# Consumer mixes are (p_requeue, p_reject_to_dlx, p_away, max_away_secs): see
# chaos.consumer.
_DL = {"x-dead-letter-exchange": DLX}

QUEUES = {
    # Plain durable queue; consumers requeue and reject some.
    "chaos.plain": {
        "args": lambda a: dict(_DL),
        "weight": 30,
        "consumers": [(0.05, 0.03, 0.3, 8), (0.0, 0.0, 0.5, 8)],
    },
    # Priority queue: publishers set a random priority 0..9.
    "chaos.prio": {
        "args": lambda a: dict(_DL, **{"x-max-priority": 10}),
        "weight": 20,
        "priority": True,
        "consumers": [(0.05, 0.03, 0.3, 8)],
    },
    # TTL queue: a consumer that is mostly away (up to 30 s at a time), so most messages expire and
    # are dead-lettered (reason "expired").
    "chaos.ttl": {
        "args": lambda a: dict(_DL, **{"x-message-ttl": a.ttl_ms}),
        "weight": 20,
        "consumers": [(0.0, 0.02, 1.0, 30)],
    },
    # Max-length, drop-head (its consumer stays away up to 15 s, so the queue
    # reaches its limit): dropped heads are dead-lettered (reason "maxlen"),
    # so nothing confirmed may vanish.
    "chaos.maxlen.drophead": {
        "args": lambda a: dict(_DL, **{"x-max-length": a.max_length, "x-overflow": "drop-head"}),
        "weight": 15,
        "consumers": [(0.02, 0.02, 1.0, 15)],
    },
    # Max-length, reject-publish: publishes over the limit are nacked (and
    # recorded as such); the DLX only catches consumer rejects.
    "chaos.maxlen.reject": {
        "args": lambda a: dict(_DL, **{"x-max-length": a.max_length, "x-overflow": "reject-publish"}),
        "weight": 15,
        "consumers": [(0.02, 0.02, 1.0, 15)],
    },
    # Backlog: only the backlog publisher writes here, tens of MiB before its
    # consumer starts (half-way through the run), past the broker's 8 MiB
    # in-memory window per queue.
    "chaos.backlog": {
        "args": lambda a: dict(_DL),
        "weight": 0,
        "consumers": [(0.01, 0.01, 0.2, 8)],
    },
}


def body_for(mid, queue):
    """A deterministic 1 KiB body, so a consumer can tell it arrived intact."""
    head = f"{mid}|{queue}|".encode()
    return head + bytes((i * 31 + len(head)) % 251 for i in range(BODY_SIZE - len(head)))


def body_ok(mid, body):
    queue = body.split(b"|", 2)[1].decode(errors="replace") if body.count(b"|") >= 2 else ""
    return body == body_for(mid, queue)


def death_info(props):
    """(first death queue, reason) of a dead-lettered message, else ("", "")."""
    h = props.headers or {}
    q = h.get("x-first-death-queue", b"")
    r = h.get("x-first-death-reason", b"")
    if not q and h.get("x-death"):
        d = h["x-death"][0]
        q, r = d.get("queue", b""), d.get("reason", b"")
    dec = (lambda v: v.decode() if isinstance(v, bytes) else str(v))
    return dec(q), dec(r)


class Recorder:
    """An append-only TSV file, one line per event, flushed at once (the
    client is never killed, but a crash of the script should leave the files
    readable).  Thread-safe."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def write(self, *fields):
        line = "\t".join(str(x) for x in fields) + "\n"
        with self.lock:
            if not self.f.closed:
                self.f.write(line)

    def close(self):
        with self.lock:
            self.f.close()
