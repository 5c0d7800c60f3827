#!/usr/bin/env python3
"""The chaos test's checker: reads a run's record files and applies the rules
in tests/chaos/README.md.  `checker.py OUTDIR` re-checks a finished run and
exits 1 on any failure.

Inputs (all in OUTDIR):
  pub-*.tsv   sent | confirmed | nacked | unknown, id, queue, persistent, time
  con-*.tsv   ack | requeue | reject, id, queue consumed from, redelivered,
              body ok, first-death queue, first-death reason, time
  faults.tsv  fault, event, detail, time   (kill, fill, free, start, ...)
  run.json    parameters and the drain's outcome
"""

import collections
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEAD_QUEUE, QUEUES  # noqa: E402

# Dead-letter reasons each queue can legitimately produce.
EXPECTED_REASONS = {q: {"rejected"} for q in QUEUES}
EXPECTED_REASONS["chaos.ttl"].add("expired")
EXPECTED_REASONS["chaos.maxlen.drophead"].add("maxlen")


def read_tsv(pattern):
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            for line in f:
                if line.endswith("\n"):  # a torn last line is ignored
                    yield line.rstrip("\n").split("\t")


def load(out_dir):
    """Publisher outcomes, consumer records and fault events of one run."""
    sent, outcome = {}, {}
    for ev, mid, queue, pers, t in read_tsv(os.path.join(out_dir, "pub-*.tsv")):
        if ev == "sent":
            sent[mid] = (queue, pers == "1", float(t))
        else:
            outcome[mid] = (ev, float(t))
    deliveries = []
    for action, mid, queue, redelivered, bok, dq, reason, t in read_tsv(
            os.path.join(out_dir, "con-*.tsv")):
        deliveries.append(dict(action=action, id=mid, queue=queue, redelivered=redelivered == "1",
                               body_ok=bok == "1", death_queue=dq, reason=reason, t=float(t)))
    faults = [(ev, detail, float(t)) for _, ev, detail, t in read_tsv(
        os.path.join(out_dir, "faults.tsv"))]
    run = {}
    if os.path.exists(os.path.join(out_dir, "run.json")):
        with open(os.path.join(out_dir, "run.json")) as f:
            run = json.load(f)
    return sent, outcome, deliveries, faults, run


def check(out_dir):
    sent, outcome, deliveries, faults, run = load(out_dir)
    # Every moment the broker died: our kills, and crashes (noticed a little
    # after they happened, which is still after any confirm they could lose).
    kills = sorted(t for ev, _, t in faults if ev in ("kill", "unexpected-exit"))
    last_kill = kills[-1] if kills else float("-inf")
    frees = [t for ev, _, t in faults if ev == "free"]

    confirmed = {m for m, (ev, _) in outcome.items() if ev == "confirmed"}
    nacked = {m for m, (ev, _) in outcome.items() if ev == "nacked"}
    unknown = set(sent) - confirmed - nacked

    failures, anomalies = [], []
    # Where each id was finally consumed (acked): its own queue, or the DLQ.
    acked_direct = collections.Counter()
    acked_dead = collections.Counter()
    dead_reason = collections.Counter()  # (origin queue, reason) of DLQ copies
    rejected = set()
    # A second delivery from the same queue of a message already delivered
    # there should carry redelivered=true (RabbitMQ marks anything it may
    # have delivered before); count those that don't.
    delivered_from = set()
    unflagged_redeliveries = 0
    ghosts, corrupt, misrouted = set(), set(), set()
    for d in deliveries:
        mid = d["id"]
        if mid not in sent:
            ghosts.add(mid)
            continue
        origin = sent[mid][0]
        if not d["body_ok"]:
            corrupt.add(mid)
        if d["action"] == "reject":
            rejected.add(mid)
        if (mid, d["queue"]) in delivered_from and not d["redelivered"]:
            unflagged_redeliveries += 1
        delivered_from.add((mid, d["queue"]))
        if d["action"] != "ack":
            continue
        if d["queue"] == origin:
            acked_direct[mid] += 1
        elif d["queue"] == DEAD_QUEUE and d["death_queue"] == origin:
            acked_dead[mid] += 1
            dead_reason[(origin, d["reason"])] += 1
        else:
            misrouted.add(mid)

    per_queue = {q: collections.Counter() for q in QUEUES}
    lost_persistent, lost_transient, excused_transient = [], [], []
    for mid in confirmed:
        queue, persistent, _ = sent[mid]
        t_conf = outcome[mid][1]
        pq = per_queue[queue]
        pq["confirmed"] += 1
        pq["confirmed-persistent" if persistent else "confirmed-transient"] += 1
        n_direct, n_dead = acked_direct[mid], acked_dead[mid]
        if n_direct:
            pq["delivered"] += 1
        if n_dead:
            pq["dead-lettered"] += 1
        if n_direct + n_dead > 1:
            pq["duplicated"] += 1
        if n_direct + n_dead:
            continue
        # Never seen.  A transient message may die with the broker (RabbitMQ
        # semantics): excused if it was confirmed before some kill -9.
        if persistent:
            lost_persistent.append(mid)
            pq["LOST"] += 1
        elif t_conf < last_kill:
            excused_transient.append(mid)
            pq["transient-lost-across-kill"] += 1
        else:
            lost_transient.append(mid)
            pq["LOST"] += 1

    for mid in nacked:
        per_queue[sent[mid][0]]["nacked"] += 1
    for mid in unknown:
        per_queue[sent[mid][0]]["unknown"] += 1

    # Publishes nacked on a queue without reject-publish can only be the
    # broker refusing to store them (e.g. the disk is full).  Report those
    # that came after the disk was freed: the broker should recover.
    after_free = [m for m in nacked if frees and sent[m][0] != "chaos.maxlen.reject"
                  and outcome[m][1] > frees[0] + 5]

    for (origin, reason), n in sorted(dead_reason.items()):
        if reason not in EXPECTED_REASONS[origin]:
            anomalies.append(f"{n} messages from {origin} dead-lettered with reason {reason!r}")
    rejected_never_dead = [m for m in rejected if m in confirmed and not acked_dead[m]
                           and not acked_direct[m]]
    if after_free:
        anomalies.append(f"{len(after_free)} publishes nacked more than 5 s after the disk was "
                         "freed (not on the reject-publish queue)")

    nacked_seen = sum(1 for m in nacked if acked_direct[m] or acked_dead[m])
    if nacked_seen:
        anomalies.append(f"{nacked_seen} nacked publishes were delivered anyway (the publisher "
                         "would resend them: duplicates)")
    if unflagged_redeliveries:
        anomalies.append(f"{unflagged_redeliveries} repeat deliveries without the redelivered flag")

    drain = run.get("drain", {})
    expiry = drain.get("expiry_phase", {})
    wedges = []
    if run.get("stuck_workers"):
        wedges.append(f"client threads did not stop within 30 s: {run['stuck_workers']}")
    if drain.get("hung"):
        wedges.append("the drain hung (a broker call never returned)")
    if drain.get("error"):
        wedges.append(f"the drain failed: {drain['error']}")
    elif drain and not drain.get("finished"):
        why = "stalled" if drain.get("stalled") else "hit its deadline"
        wedges.append(f"the drain {why} with messages queued: {drain.get('depths')}")
    if expiry and not expiry.get("empty"):
        wedges.append("the TTL queue did not empty by expiry within TTL + grace: "
                      f"{expiry.get('depths', {}).get('chaos.ttl')} left")
    if run and not run.get("broker_up_for_drain", True):
        wedges.append("the broker could not be restarted for the drain")
    crashes = [f"{ev} {detail}" for ev, detail, _ in faults
               if ev in ("unexpected-exit", "start-failed", "restart-failed")]

    if lost_persistent:
        failures.append(f"LOST {len(lost_persistent)} confirmed persistent messages")
    if lost_transient:
        failures.append(f"LOST {len(lost_transient)} confirmed transient messages "
                        "with no kill after their confirm")
    if ghosts:
        failures.append(f"{len(ghosts)} delivered ids were never published")
    if corrupt:
        failures.append(f"{len(corrupt)} messages arrived with a corrupt body")
    if misrouted:
        failures.append(f"{len(misrouted)} messages consumed from the wrong queue")
    notes = []
    if wedges and (lost_persistent or lost_transient):
        notes.append("the drain did not finish: some LOST messages may be stuck in the "
                     "broker rather than gone (see the drain depths in run.json)")
    failures += [f"WEDGE: {w}" for w in wedges]
    failures += [f"BROKER: {c}" for c in crashes]

    totals = collections.Counter()
    for pq in per_queue.values():
        totals.update(pq)
    dup_extra = sum(max(0, acked_direct[m] + acked_dead[m] - 1) for m in confirmed)
    summary = {
        "sent": len(sent), "confirmed": len(confirmed), "nacked": len(nacked),
        "unknown": len(unknown),
        "unknown_seen": sum(1 for m in unknown if acked_direct[m] or acked_dead[m]),
        "nacked_seen": nacked_seen,
        "delivered": totals["delivered"], "dead_lettered": totals["dead-lettered"],
        "duplicated_ids": totals["duplicated"], "duplicate_deliveries": dup_extra,
        "unflagged_redeliveries": unflagged_redeliveries,
        "lost_persistent": len(lost_persistent), "lost_transient": len(lost_transient),
        "transient_lost_across_kill": len(excused_transient),
        "rejected_not_seen_in_dlq": len(rejected_never_dead),
        "kills": len(kills), "epochs": run.get("final_epoch"),
        "nacked_after_free": len(after_free),
    }
    report = {"summary": summary, "per_queue": {q: dict(c) for q, c in per_queue.items()},
              "dead_reasons": {f"{o}:{r}": n for (o, r), n in dead_reason.items()},
              "failures": failures, "anomalies": anomalies, "notes": notes, "drain": drain,
              "lost_sample": sorted(lost_persistent + lost_transient)[:50]}
    report["text"] = render(report)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump({k: v for k, v in report.items() if k != "text"}, f, indent=1)
    with open(os.path.join(out_dir, "report.txt"), "w") as f:
        f.write(report["text"])
    return report


def render(r):
    cols = {"confirmed": "confirmed", "confirmed-persistent": "persistent",
            "delivered": "delivered", "dead-lettered": "dead-lett.", "duplicated": "duplicated",
            "LOST": "LOST", "transient-lost-across-kill": "trans-lost", "nacked": "nacked",
            "unknown": "unknown"}
    lines = ["== chaos check =="]
    lines += [f"  {k:28} {v}" for k, v in r["summary"].items()]
    lines.append("")
    lines.append(f"  {'queue':24}" + "".join(f"{c:>11}" for c in cols.values()))
    for q, c in r["per_queue"].items():
        lines.append(f"  {q:24}" + "".join(f"{c.get(k, 0):>11}" for k in cols))
    lines.append("")
    lines.append("  dead-letter reasons (deliveries from chaos.dead): " + ", ".join(
        f"{k}={v}" for k, v in sorted(r["dead_reasons"].items())))
    for a in r["anomalies"]:
        lines.append(f"  anomaly: {a}")
    for n in r["notes"]:
        lines.append(f"  note: {n}")
    for f in r["failures"]:
        lines.append(f"  FAIL: {f}")
    if r["lost_sample"]:
        lines.append(f"  lost (first 50): {' '.join(r['lost_sample'])}")
    lines.append("  RESULT: " + ("FAIL" if r["failures"] else "PASS"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    rep = check(sys.argv[1])
    print(rep["text"])
    sys.exit(1 if rep["failures"] else 0)
