#!/usr/bin/env bash
# RabbitMQ compatibility check for Warren.  Three suites run against a real
# RabbitMQ (the oracle, "expected") and then against Warren ("actual"):
#   tutorials  the six official RabbitMQ tutorials (Python/pika, JavaScript/amqplib)
#   errors     probe_errors.py: reply codes/texts of ~120 error cases + handshake facts
#   scenarios  run_scenarios.py: the differential scenarios under scenarios/
#              (pika, raw frames, ...), compared with known-differences.toml;
#              the lapin (Rust) scenarios need cargo (skipped with a message without it)
#
#   rabbitmq-compat/run.sh [--warren-bin PATH [--warren-port PORT] | --warren-url URL [--warren-restart CMD]]
#                          [--update-expected] [--no-tutorials] [--no-errors] [--no-scenarios] [--only SUBSTR]
#
#   --warren-bin PATH  start Warren from this binary (with warren.sh: 127.0.0.1, a fresh data
#                      dir, log in $COMPAT_OUT/warren-broker.log), stop it at the end; the
#                      restart scenarios restart it with `warren.sh restart` (what .ci/run uses)
#   --warren-port PORT port for --warren-bin (default 5672)
#   --warren-url URL   an already running Warren (default amqp://guest:guest@127.0.0.1:5672/)
#   --warren-mgmt-url URL  that Warren's management API (default http://127.0.0.1:15672)
#   --warren-restart CMD  shell command that restarts that Warren on the same data dir and
#                      returns when it accepts connections again; without it (and without
#                      --warren-bin) the restart scenarios are recorded as skipped and fail
#   --errors           accepted for compatibility (the error probe runs by default)
#   --no-tutorials / --no-errors / --no-scenarios   skip a suite
#   --only SUBSTR      run only scenarios whose name contains SUBSTR (repeatable)
#   --update-expected  after running on real RabbitMQ, copy the results to
#                      expected/tutorials.json and expected/scenarios.json
#
# Environment:
#   COMPAT_SKIP_RABBITMQ=1   don't install/start RabbitMQ; use the committed
#                            expected/tutorials.json, expected/errors-rabbitmq-3.10.8.txt
#                            and expected/scenarios.json as the expected output
#   COMPAT_RABBITMQ_PORT     port for the private RabbitMQ (default 5673); its
#                            management API listens on this port + 10000
#   The access scenarios reach each broker's management API through
#   COMPAT_MGMT_URL, which this script sets for each run.
#   COMPAT_OUT               output dir (default rabbitmq-compat/out)
#   COMPAT_SCENARIO_TIMEOUT  default per-scenario timeout in seconds (10)
#   COMPAT_WARREN_DIR        state/data dir of the Warren started by --warren-bin
#                            (default /tmp/warren-compat-warren; see warren.sh)
#
# Outputs in $COMPAT_OUT: expected-*.json / actual-*.json, errors-*.txt,
# scenarios-diff.txt (every differing path) and compat.md (the report).
# Exit status: 0 if everything matched (known differences allowed), 1
# otherwise (2 on setup errors).  The last line printed is "N passed, N failed"
# summed over the suites that ran.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WARREN_URL="amqp://guest:guest@127.0.0.1:5672/"
WARREN_BIN=""
WARREN_PORT=5672
WARREN_RESTART=""
WARREN_MGMT_URL="http://127.0.0.1:15672"
RUN_TUTORIALS=1
RUN_ERRORS=1
RUN_SCENARIOS=1
UPDATE_EXPECTED=0
ONLY=()
while [ $# -gt 0 ]; do
    case "$1" in
        --warren-url) WARREN_URL="$2"; shift 2 ;;
        --warren-url=*) WARREN_URL="${1#*=}"; shift ;;
        --warren-bin) WARREN_BIN="$2"; shift 2 ;;
        --warren-bin=*) WARREN_BIN="${1#*=}"; shift ;;
        --warren-port) WARREN_PORT="$2"; shift 2 ;;
        --warren-port=*) WARREN_PORT="${1#*=}"; shift ;;
        --warren-mgmt-url) WARREN_MGMT_URL="$2"; shift 2 ;;
        --warren-mgmt-url=*) WARREN_MGMT_URL="${1#*=}"; shift ;;
        --warren-restart) WARREN_RESTART="$2"; shift 2 ;;
        --warren-restart=*) WARREN_RESTART="${1#*=}"; shift ;;
        --errors) RUN_ERRORS=1; shift ;;
        --no-errors) RUN_ERRORS=0; shift ;;
        --no-tutorials) RUN_TUTORIALS=0; shift ;;
        --no-scenarios) RUN_SCENARIOS=0; shift ;;
        --only) ONLY+=(--only "$2"); shift 2 ;;
        --only=*) ONLY+=(--only "${1#*=}"); shift ;;
        --update-expected) UPDATE_EXPECTED=1; shift ;;
        -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
T_START=$(date +%s)
RABBIT_PORT="${COMPAT_RABBITMQ_PORT:-5673}"
OUT="${COMPAT_OUT:-$HERE/out}"
# The generated report is committed as docs/compat.md (COMPAT_REPORT overrides).
REPORT="${COMPAT_REPORT:-$HERE/../docs/compat.md}"
mkdir -p "$OUT"

log() { echo "[run.sh] $*" >&2; }

apt_install() {
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; }
}

# ---- Python venv with pika, kombu, aio-pika ------------------------------------------------
VENV="$HERE/.venv"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    command -v python3 >/dev/null || apt_install python3
    if ! python3 -m venv "$VENV" >&2 2>/dev/null; then
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV" >&2
    fi
fi
# every pin in requirements.txt (pika, kombu, aio-pika and their pinned deps) must be installed
if ! "$PY" - "$HERE/requirements.txt" 2>/dev/null <<'EOF'
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, pin = line.split("==", 1)
        if version(name.strip()) != pin.strip():
            sys.exit(1)
EOF
then
    log "installing $(cat "$HERE/requirements.txt") into $VENV"
    "$PY" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt" >&2
fi

# ---- Node + amqplib ----------------------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
JS_DIR="$HERE/tutorials/javascript"
if [ ! -f "$JS_DIR/node_modules/amqplib/package.json" ] ||
   ! diff -q <(node -p "require('$JS_DIR/node_modules/amqplib/package.json').version") \
             <(node -p "require('$JS_DIR/package-lock.json').packages['node_modules/amqplib'].version") >/dev/null; then
    log "npm ci (amqplib) in $JS_DIR"
    (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# ---- Rust + lapin (scenarios/lapin_client, program in lapin/) ---------------
CARGO="$(command -v cargo || true)"
[ -z "$CARGO" ] && [ -x "$HOME/.cargo/bin/cargo" ] && CARGO="$HOME/.cargo/bin/cargo"
if [ -n "$CARGO" ]; then
    log "cargo build --release (lapin scenarios, target/lapin-compat)"
    # --target-dir explicitly: lapin/.cargo/config.toml only applies when cargo runs
    # inside lapin/, and CARGO_TARGET_DIR (if set for the workspace) must not apply
    "$CARGO" build --release --quiet --manifest-path "$HERE/lapin/Cargo.toml" \
        --target-dir "$HERE/../target/lapin-compat" >&2 ||
        { log "building the lapin scenarios failed (rabbitmq-compat/lapin)"; exit 2; }
else
    log "cargo not found: SKIPPING the lapin scenarios (lapin.*); install Rust to run them"
    export COMPAT_SKIP_LAPIN=1
fi

# ---- expected output: real RabbitMQ or the committed files -------------------
EXPECTED="$OUT/expected-tutorials.json"
EXPECTED_ERRORS="$HERE/expected/errors-rabbitmq-3.10.8.txt"
EXPECTED_SCEN="$OUT/expected-scenarios.json"
if [ "${COMPAT_SKIP_RABBITMQ:-0}" = 1 ]; then
    log "COMPAT_SKIP_RABBITMQ=1: using the committed expected/ files"
    cp "$HERE/expected/tutorials.json" "$EXPECTED"
    cp "$HERE/expected/scenarios.json" "$EXPECTED_SCEN"
    if [ "${COMPAT_SKIP_LAPIN:-0}" = 1 ]; then  # not run against Warren either: drop them
        "$PY" - "$EXPECTED_SCEN" <<'EOF'
import json, sys
with open(sys.argv[1]) as fh:
    d = json.load(fh)
with open(sys.argv[1], "w") as fh:
    json.dump({k: v for k, v in d.items() if not k.startswith("lapin.")}, fh, indent=1, ensure_ascii=False)
EOF
    fi
else
    "$HERE/rabbitmq.sh" start "$RABBIT_PORT"
    trap '"$HERE/rabbitmq.sh" stop || true' EXIT
    RABBIT_URL="amqp://guest:guest@127.0.0.1:$RABBIT_PORT/"
    if [ "$RUN_TUTORIALS" = 1 ]; then
        log "running the tutorials against RabbitMQ (port $RABBIT_PORT)"
        "$PY" "$HERE/run_tutorials.py" --url "$RABBIT_URL" \
            --out "$EXPECTED" 2> "$OUT/rabbitmq-tutorials.log" ||
            { log "tutorial run against RabbitMQ failed; see $OUT/rabbitmq-tutorials.log"; exit 2; }
    fi
    if [ "$RUN_ERRORS" = 1 ]; then
        log "running the error probe against RabbitMQ"
        "$PY" "$HERE/probe_errors.py" --url "$RABBIT_URL" --out "$OUT/errors-rabbitmq.txt" \
            > /dev/null 2> "$OUT/rabbitmq-errors.log" ||
            { log "error probe against RabbitMQ failed; see $OUT/rabbitmq-errors.log"; exit 2; }
        # identity facts (cluster_name, ...) differ between nodes; everything else must not
        if ! "$PY" - "$HERE" "$EXPECTED_ERRORS" "$OUT/errors-rabbitmq.txt" \
                > "$OUT/errors-rabbitmq-vs-committed.txt" 2>&1 <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import probe_errors
with open(sys.argv[2]) as a, open(sys.argv[3]) as b:
    sys.exit(probe_errors.compare(a.read().splitlines(), b.read().splitlines()))
EOF
        then
            log "WARNING: live RabbitMQ error probe differs from the committed $(basename "$EXPECTED_ERRORS"):"
            grep -v '^PASS\|^INFO\|^  ' "$OUT/errors-rabbitmq-vs-committed.txt" >&2 || true
        fi
        EXPECTED_ERRORS="$OUT/errors-rabbitmq.txt"
    fi
    if [ "$RUN_SCENARIOS" = 1 ]; then
        log "running the scenarios against RabbitMQ"
        COMPAT_MGMT_URL="http://127.0.0.1:$((RABBIT_PORT + 10000))" \
        "$PY" "$HERE/run_scenarios.py" --url "$RABBIT_URL" --out "$EXPECTED_SCEN" "${ONLY[@]}" \
            --restart-cmd "$(printf '%q' "$HERE/rabbitmq.sh") restart" \
            2> "$OUT/rabbitmq-scenarios.log" ||
            { log "scenario run against RabbitMQ failed; see $OUT/rabbitmq-scenarios.log"; exit 2; }
        tail -n 1 "$OUT/rabbitmq-scenarios.log" | sed 's/^/[run.sh] RabbitMQ: /' >&2
    fi
    "$HERE/rabbitmq.sh" stop
    trap - EXIT
    if [ "$UPDATE_EXPECTED" = 1 ]; then
        if [ "$RUN_TUTORIALS" = 1 ]; then
            cp "$EXPECTED" "$HERE/expected/tutorials.json"
            log "updated expected/tutorials.json"
        fi
        if [ "$RUN_SCENARIOS" = 1 ] && [ ${#ONLY[@]} -eq 0 ]; then
            cp "$EXPECTED_SCEN" "$HERE/expected/scenarios.json"
            log "updated expected/scenarios.json"
        fi
    else
        if [ "$RUN_TUTORIALS" = 1 ] && ! cmp -s "$EXPECTED" "$HERE/expected/tutorials.json"; then
            log "WARNING: live RabbitMQ output differs from the committed expected/tutorials.json:"
            "$PY" "$HERE/run_tutorials.py" --compare "$HERE/expected/tutorials.json" "$EXPECTED" >&2 || true
        fi
        if [ "$RUN_SCENARIOS" = 1 ] && [ ! -f "$HERE/expected/scenarios.json" ]; then
            log "WARNING: no committed expected/scenarios.json yet (record it with --update-expected)"
        elif [ "$RUN_SCENARIOS" = 1 ] &&
           ! "$PY" "$HERE/run_scenarios.py" --compare "$HERE/expected/scenarios.json" "$EXPECTED_SCEN" \
               --known /dev/null --present-only "${ONLY[@]}" > "$OUT/scenarios-rabbitmq-vs-committed.txt" 2>&1; then
            log "WARNING: live RabbitMQ scenario observations differ from the committed expected/scenarios.json" \
                "(see $OUT/scenarios-rabbitmq-vs-committed.txt; re-record with --update-expected):"
            grep -v '^PASS\|^-- ' "$OUT/scenarios-rabbitmq-vs-committed.txt" | head -n 40 >&2 || true
        fi
    fi
fi

# ---- Warren -------------------------------------------------------------------
if [ -n "$WARREN_BIN" ]; then
    # started here (after RabbitMQ has stopped), restarted by the restart scenarios
    export COMPAT_WARREN_BIN="$WARREN_BIN"
    export COMPAT_WARREN_LOG="$OUT/warren-broker.log"
    "$HERE/warren.sh" start "$WARREN_PORT" -- --management-port "$((WARREN_PORT + 10000))" || { log "could not start Warren ($WARREN_BIN); see $COMPAT_WARREN_LOG"; exit 2; }
    trap '"$HERE/warren.sh" stop || true' EXIT
    WARREN_URL="amqp://guest:guest@127.0.0.1:$WARREN_PORT/"
    WARREN_MGMT_URL="http://127.0.0.1:$((WARREN_PORT + 10000))"
    WARREN_RESTART="$(printf '%q' "$HERE/warren.sh") restart"
elif [ -z "$WARREN_RESTART" ] && [ "$RUN_SCENARIOS" = 1 ]; then
    log "no --warren-restart (nor --warren-bin): the restart scenarios cannot restart Warren and will fail"
fi
"$PY" - "$WARREN_URL" 2>/dev/null <<'EOF' || { log "Warren is not accepting TCP connections at $WARREN_URL (start it first)"; }
import socket, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
socket.create_connection((u.hostname or "localhost", u.port or 5672), timeout=5).close()
EOF
TOTAL_PASS=0
TOTAL_FAIL=0
status=0
add_counts() {  # add_counts LABEL FILE: take "N passed, N failed" from FILE's last line
    local line
    line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$2" | tail -n 1)"
    if [ -z "$line" ]; then
        echo "$1: no result line (see $2)"; status=1; TOTAL_FAIL=$((TOTAL_FAIL + 1)); return
    fi
    echo "$1: $line"
    TOTAL_PASS=$((TOTAL_PASS + $(echo "$line" | cut -d' ' -f1)))
    TOTAL_FAIL=$((TOTAL_FAIL + $(echo "$line" | cut -d' ' -f3)))
}

if [ "$RUN_TUTORIALS" = 1 ]; then
    log "running the tutorials against Warren at $WARREN_URL"
    "$PY" "$HERE/run_tutorials.py" --url "$WARREN_URL" --out "$OUT/actual-tutorials.json" \
        2> "$OUT/warren-tutorials.log" || log "tutorial driver reported an error; see $OUT/warren-tutorials.log"
fi
if [ "$RUN_ERRORS" = 1 ]; then
    log "running the error probe against Warren"
    "$PY" "$HERE/probe_errors.py" --url "$WARREN_URL" --out "$OUT/errors-warren.txt" \
        --compare "$EXPECTED_ERRORS" > "$OUT/errors-compare.txt" 2>&1 || status=1
fi
RESTART_ARGS=()
[ -n "$WARREN_RESTART" ] && RESTART_ARGS=(--restart-cmd "$WARREN_RESTART")
if [ "$RUN_SCENARIOS" = 1 ]; then
    log "running the scenarios against Warren"
    COMPAT_MGMT_URL="$WARREN_MGMT_URL" \
    "$PY" "$HERE/run_scenarios.py" --url "$WARREN_URL" --out "$OUT/actual-scenarios.json" "${ONLY[@]}" \
        "${RESTART_ARGS[@]}" 2> "$OUT/warren-scenarios.log" ||
        log "scenario runner reported an error; see $OUT/warren-scenarios.log"
fi
if [ -n "$WARREN_BIN" ]; then
    "$HERE/warren.sh" stop
    trap - EXIT
fi

if [ "$RUN_TUTORIALS" = 1 ]; then
    echo "== tutorials (expected: $( [ "${COMPAT_SKIP_RABBITMQ:-0}" = 1 ] && echo committed file || echo RabbitMQ ) vs Warren)"
    "$PY" "$HERE/run_tutorials.py" --compare "$EXPECTED" "$OUT/actual-tutorials.json" \
        > "$OUT/tutorials-compare.txt" 2>&1 || status=1
    cat "$OUT/tutorials-compare.txt"
    echo
fi
if [ "$RUN_ERRORS" = 1 ]; then
    echo "== error/fact probe vs $( [ "$EXPECTED_ERRORS" = "$OUT/errors-rabbitmq.txt" ] && echo RabbitMQ || basename "$EXPECTED_ERRORS" )"
    grep -v '^PASS' "$OUT/errors-compare.txt" || true
    echo
fi
if [ "$RUN_SCENARIOS" = 1 ]; then
    echo "== scenarios (expected: $( [ "${COMPAT_SKIP_RABBITMQ:-0}" = 1 ] && echo committed expected/scenarios.json || echo RabbitMQ ) vs Warren)"
    "$PY" "$HERE/run_scenarios.py" --compare "$EXPECTED_SCEN" "$OUT/actual-scenarios.json" "${ONLY[@]}" \
        --report "$REPORT" --details "$OUT/scenarios-diff.txt" > "$OUT/scenarios-compare.txt" 2>&1 || status=1
    cat "$OUT/scenarios-compare.txt"
    echo "(report: $REPORT; all differences: $OUT/scenarios-diff.txt)"
    echo
fi

echo "== summary ($(( $(date +%s) - T_START )) s)"
[ "$RUN_TUTORIALS" = 1 ] && add_counts tutorials "$OUT/tutorials-compare.txt"
[ "$RUN_ERRORS" = 1 ] && add_counts errors "$OUT/errors-compare.txt"
[ "$RUN_SCENARIOS" = 1 ] && add_counts scenarios "$OUT/scenarios-compare.txt"
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
exit $status
