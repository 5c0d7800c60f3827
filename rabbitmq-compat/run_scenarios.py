#!/usr/bin/env python3
"""Differential scenarios: run them against one broker, or compare two runs.

    run_scenarios.py --url amqp://guest:guest@127.0.0.1:5673/ --out rabbit.json [--only SUBSTR]...
                     [--restart-cmd 'rabbitmq.sh restart']
    run_scenarios.py --compare EXPECTED.json ACTUAL.json [--known known-differences.toml]
                     [--report out/compat.md] [--details out/scenarios-diff.txt]
    run_scenarios.py --list [--only SUBSTR]

Running writes {scenario name: observation} (plus "_meta": broker version,
date, client versions) as JSON.  Every scenario runs in its own child process
with a timeout (COMPAT_SCENARIO_TIMEOUT, default 10 s; some scenarios ask
for more); a hang is recorded as {"timeout": ...} and the suite goes on.
The restart scenarios (area "restart") restart the broker with the shell
command given by --restart-cmd (or $COMPAT_RESTART_CMD); without one they
are recorded as skipped, which fails the comparison.

Comparing prints one line per scenario grouped by area -- PASS, FAIL or
KNOWN-DIFF (differs, and known-differences.toml says why) -- with the
differing paths for failures, then "N passed, N failed".  Exit status 1 if
any scenario failed (an unlisted difference, or a scenario missing from
ACTUAL), else 0.  --report writes a Markdown summary (RabbitMQ version, date,
per-area table, known differences with reasons, failure details).
"""
import argparse
import datetime
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

DEFAULT_KNOWN = os.path.join(HERE, "known-differences.toml")


def log(s):
    print(s, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------
def broker_meta(url):
    import pika
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "pika": pika.__version__, "python": sys.version.split()[0]}
    try:
        p = pika.URLParameters(url)
        p.connection_attempts = 3
        p.retry_delay = 1
        c = pika.BlockingConnection(p)
        sp = c._impl.server_properties  # pylint: disable=protected-access
        for k in ("product", "version"):
            v = sp.get(k)
            meta[k] = v.decode() if isinstance(v, bytes) else v
        c.close()
    except Exception as e:  # noqa: BLE001
        meta["connect error"] = repr(e)
    return meta


def selected(registry, only):
    return [s for s in registry.values() if not only or any(o in s.name for o in only)]


def cmd_run(a):
    import logging
    logging.basicConfig(level=logging.CRITICAL)  # pika logs every broker close
    from scenarios.framework import load_all, run_one
    reg = load_all()
    scs = selected(reg, a.only)
    if a.restart_cmd:
        os.environ["COMPAT_RESTART_CMD"] = a.restart_cmd
    meta = broker_meta(a.url)
    log(f"running {len(scs)} scenarios against {meta.get('product')} {meta.get('version')} at {a.url}")
    nrestart = sum(1 for s in scs if s.restart)
    if nrestart:
        hook = os.environ.get("COMPAT_RESTART_CMD")
        log(f"  {nrestart} of them restart the broker with: {hook}" if hook else
            f"  no --restart-cmd: the {nrestart} restart scenarios are recorded as skipped")
    results = {}
    t_all = time.monotonic()
    for sc in scs:
        obs, dt = run_one(sc, a.url, log)
        results[sc.name] = obs
        flag = " TIMEOUT" if "timeout" in obs else (" UNCAUGHT" if "uncaught" in obs or "crashed" in obs else "")
        log(f"  {dt:5.2f}s {sc.name}{flag}")
    meta["duration_s"] = round(time.monotonic() - t_all, 1)
    out = {"_meta": meta}
    out.update(results)
    with open(a.out, "w") as fh:
        json.dump(out, fh, indent=1, sort_keys=False, ensure_ascii=False)
        fh.write("\n")
    log(f"wrote {len(results)} observations to {a.out} in {meta['duration_s']}s")
    return 0


# ---------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------
def flatten(v, path="$"):
    if isinstance(v, dict):
        if not v:
            yield path, "{}"
        for k, x in v.items():
            yield from flatten(x, f"{path}.{k}" if "." not in k and " " not in k else f"{path}[{k!r}]")
    elif isinstance(v, list):
        if not v:
            yield path, "[]"
        for i, x in enumerate(v):
            yield from flatten(x, f"{path}[{i}]")
    else:
        yield path, json.dumps(v, ensure_ascii=False)


def diff_lines(exp, act):
    fe, fa = dict(flatten(exp)), dict(flatten(act))
    out = []
    for k in fe:
        if k not in fa:
            out.append(f"{k}: expected {fe[k]}, actual (missing)")
        elif fe[k] != fa[k]:
            out.append(f"{k}: expected {fe[k]}, actual {fa[k]}")
    for k in fa:
        if k not in fe:
            out.append(f"{k}: expected (missing), actual {fa[k]}")
    return out


def area_of(name, meta=None):
    parts = name.split(".")
    return parts[1] if len(parts) > 2 else "other"


def load_known(path):
    if not path or not os.path.exists(path) or os.path.getsize(path) == 0:
        return {}
    import tomllib
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    known = {}
    for name, v in data.items():
        if not isinstance(v, dict) or "reason" not in v:
            raise SystemExit(f"{path}: entry {name!r} needs a 'reason'")
        known[name] = v
    return known


def rabbit_state(obs):
    if obs is None:
        return "not run"
    if "timeout" in obs:
        return "TIMEOUT"
    if "uncaught" in obs or "crashed" in obs:
        return "error"
    if "skipped" in obs:
        return "skipped"
    return "ok"


def cmd_compare(a):
    with open(a.compare[0]) as fh:
        exp = json.load(fh)
    with open(a.compare[1]) as fh:
        act = json.load(fh)
    known = load_known(a.known)
    emeta, ameta = exp.pop("_meta", {}), act.pop("_meta", {})
    names = list(exp) + [n for n in act if n not in exp]
    if a.present_only:
        names = [n for n in names if n in act]
    if a.only:
        names = [n for n in names if any(o in n for o in a.only)]
    rows, details = [], {}
    npass = nfail = nknown = 0
    for n in names:
        e, x = exp.get(n), act.get(n)
        if e is None:
            st, d = "FAIL", ["no expected observation (re-record expected/scenarios.json on RabbitMQ)"]
        elif x is None:
            st, d = "FAIL", ["not run against the broker under test"]
        elif any(k in o for o in (e, x) for k in ("crashed", "skipped")):
            # the program could not run (or had no restart hook): equal or not, nothing was compared
            st, d = "FAIL", [f"{side} observation: {o.get('crashed') or o.get('skipped')}"
                             for side, o in (("expected", e), ("actual", x))
                             if "crashed" in o or "skipped" in o]
        elif e == x:
            st, d = "PASS", []
        else:
            d = diff_lines(e, x)
            st = "KNOWN-DIFF" if n in known else "FAIL"
        if st == "PASS":
            npass += 1
        elif st == "FAIL":
            nfail += 1
        else:
            nknown += 1
        rows.append((area_of(n), n, st, e, x))
        if d:
            details[n] = d

    # console table, grouped by area (areas in first-seen order)
    areas = []
    for r in rows:
        if r[0] not in areas:
            areas.append(r[0])
    width = max((len(r[1]) for r in rows), default=10)
    for ar in areas:
        print(f"-- {ar}")
        for (area, n, st, e, x) in rows:
            if area != ar:
                continue
            note = ""
            if st == "KNOWN-DIFF":
                note = "  (" + known[n]["reason"].split("\n")[0][:100] + ")"
            elif st == "PASS" and n in known:
                note = "  (listed in known-differences but matches now: remove the entry)"
            if rabbit_state(e) not in ("ok", "not run"):
                note += f"  [expected observation is a {rabbit_state(e)}]"
            print(f"{st:<10}  {n:<{width}}{note}")
            if st == "FAIL":
                for line in details[n][:a.max_diff]:
                    print(f"              {line}")
                if len(details[n]) > a.max_diff:
                    print(f"              ... {len(details[n]) - a.max_diff} more (see details file)")
    for n in known if not (a.only or a.present_only) else []:
        if n not in exp and n not in act:
            print(f"NOTE: known-differences entry {n!r} names no scenario")
    if a.details:
        with open(a.details, "w") as fh:
            for n, d in details.items():
                fh.write(f"== {n}\n" + "\n".join(d) + "\n\n")
    if a.report:
        write_report(a.report, rows, areas, known, details, emeta, ameta, npass, nfail, nknown)
    print()
    if nknown:
        print(f"{nknown} known differences (known-differences.toml)")
    print(f"{npass} passed, {nfail} failed")
    return 1 if nfail else 0


def md_escape(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def write_report(path, rows, areas, known, details, emeta, ameta, npass, nfail, nknown):
    rv = f"{emeta.get('product', 'RabbitMQ')} {emeta.get('version', '?')}"
    wv = f"{ameta.get('product', '?')} {ameta.get('version', '?')}"
    L = []
    L.append("# RabbitMQ compatibility: differential scenarios\n")
    L.append("Generated by `rabbitmq-compat/run_scenarios.py --compare`. Every scenario is a small "
             "client program run against a real RabbitMQ (the oracle) and against Warren; what the "
             "client observes (returned values, deliveries with properties and headers, delivery "
             "tags, redelivered flags, counts, errors with reply code and text, which channel or "
             "connection was closed) must be identical after normalising server-generated names.\n")
    L.append(f"- Oracle: {rv} (recorded {emeta.get('date', '?')}, pika {emeta.get('pika', '?')})")
    L.append(f"- Under test: {wv} (run {ameta.get('date', '?')})")
    L.append(f"- Result: {npass} passed, {nfail} failed, {nknown} known differences, "
             f"{len(rows)} scenarios\n")
    L.append("| area | scenarios | pass | fail | known diff |")
    L.append("| --- | ---: | ---: | ---: | ---: |")
    for ar in areas:
        rs = [r for r in rows if r[0] == ar]
        L.append(f"| {ar} | {len(rs)} | {sum(r[2] == 'PASS' for r in rs)} | "
                 f"{sum(r[2] == 'FAIL' for r in rs)} | {sum(r[2] == 'KNOWN-DIFF' for r in rs)} |")
    L.append("")
    for ar in areas:
        L.append(f"## {ar}\n")
        L.append(f"| scenario | {rv} | Warren | note |")
        L.append("| --- | --- | --- | --- |")
        for (area, n, st, e, x) in rows:
            if area != ar:
                continue
            note = ""
            if st == "KNOWN-DIFF":
                note = "known difference, see below"
            elif st == "FAIL":
                first = details.get(n, [""])[0]
                note = md_escape(first[:140])
            L.append(f"| `{n}` | {rabbit_state(e)} | {st} | {note} |")
        L.append("")
    L.append("## Known differences\n")
    if not known:
        L.append("None.\n")
    for n, v in known.items():
        L.append(f"### `{n}`\n")
        L.append(v["reason"].strip() + "\n")
        if n in details:
            L.append("```")
            L.extend(details[n][:20])
            L.append("```\n")
    fails = [r[1] for r in rows if r[2] == "FAIL"]
    if fails:
        L.append("## Failures (unlisted differences)\n")
        for n in fails:
            L.append(f"### `{n}`\n")
            L.append("```")
            L.extend(details.get(n, [])[:40])
            L.append("```\n")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\n".join(L) + "\n")


def cmd_list(a):
    from scenarios.framework import load_all
    for s in selected(load_all(), a.only):
        first = s.doc.split("\n")[0] if s.doc else ""
        print(f"{s.name:<55} {s.timeout:>4g}s{' R' if s.restart else '  '} {first}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("AMQP_URL"))
    ap.add_argument("--out")
    ap.add_argument("--only", action="append", default=[], help="only scenarios whose name contains this")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--restart-cmd", default=os.environ.get("COMPAT_RESTART_CMD"),
                    help="shell command that restarts the broker and returns when it is back "
                         "(used by the restart scenarios)")
    ap.add_argument("--compare", nargs=2, metavar=("EXPECTED", "ACTUAL"))
    ap.add_argument("--known", default=DEFAULT_KNOWN)
    ap.add_argument("--report", help="write a Markdown report here")
    ap.add_argument("--details", help="write every difference here")
    ap.add_argument("--present-only", action="store_true",
                    help="compare only the scenarios present in ACTUAL")
    ap.add_argument("--max-diff", type=int, default=8, help="differing paths shown per failure")
    a = ap.parse_args()
    if a.list:
        return cmd_list(a)
    if a.compare:
        return cmd_compare(a)
    if not a.url or not a.out:
        ap.error("--url and --out are required (or --compare / --list)")
    return cmd_run(a)


if __name__ == "__main__":
    sys.exit(main())
