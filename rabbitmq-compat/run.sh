#!/usr/bin/env bash
# RabbitMQ compatibility check for Warren: run the six official RabbitMQ
# tutorials (Python/pika and JavaScript/amqplib) against a real RabbitMQ
# (the oracle) and against Warren, and compare what the programs print.
#
#   rabbitmq-compat/run.sh [--warren-url URL] [--errors] [--update-expected]
#
#   --warren-url URL   Warren's AMQP URL (default amqp://guest:guest@127.0.0.1:5672/).
#                      Warren must already be running; this script does not start it.
#   --errors           also run probe_errors.py against Warren and compare it with
#                      expected/errors-rabbitmq-3.10.8.txt (counts towards the exit status)
#   --update-expected  after running the tutorials on real RabbitMQ, copy the result
#                      to expected/tutorials.json (the committed expected output)
#
# Environment:
#   COMPAT_SKIP_RABBITMQ=1   don't install/start RabbitMQ; use the committed
#                            expected/tutorials.json as the expected output
#   COMPAT_RABBITMQ_PORT     port for the private RabbitMQ (default 5673)
#   COMPAT_OUT               output dir (default rabbitmq-compat/out)
#
# Exit status: 0 if every scenario matched, 1 otherwise (2 on setup errors).
# The last line printed is "N passed, N failed".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WARREN_URL="amqp://guest:guest@127.0.0.1:5672/"
RUN_ERRORS=0
UPDATE_EXPECTED=0
while [ $# -gt 0 ]; do
    case "$1" in
        --warren-url) WARREN_URL="$2"; shift 2 ;;
        --warren-url=*) WARREN_URL="${1#*=}"; shift ;;
        --errors) RUN_ERRORS=1; shift ;;
        --update-expected) UPDATE_EXPECTED=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
RABBIT_PORT="${COMPAT_RABBITMQ_PORT:-5673}"
OUT="${COMPAT_OUT:-$HERE/out}"
mkdir -p "$OUT"

log() { echo "[run.sh] $*" >&2; }

apt_install() {
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; }
}

# ---- Python venv with pika ------------------------------------------------
VENV="$HERE/.venv"
PY="$VENV/bin/python"
PIKA_PIN="$(grep -i '^pika==' "$HERE/requirements.txt" | cut -d= -f3)"
if [ ! -x "$PY" ]; then
    command -v python3 >/dev/null || apt_install python3
    if ! python3 -m venv "$VENV" >&2 2>/dev/null; then
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV" >&2
    fi
fi
if [ "$("$PY" -c 'import pika; print(pika.__version__)' 2>/dev/null)" != "$PIKA_PIN" ]; then
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

# ---- expected output: real RabbitMQ or the committed file ---------------------
EXPECTED="$OUT/expected-tutorials.json"
if [ "${COMPAT_SKIP_RABBITMQ:-0}" = 1 ]; then
    log "COMPAT_SKIP_RABBITMQ=1: using committed expected/tutorials.json"
    cp "$HERE/expected/tutorials.json" "$EXPECTED"
else
    "$HERE/rabbitmq.sh" start "$RABBIT_PORT"
    trap '"$HERE/rabbitmq.sh" stop || true' EXIT
    log "running the tutorials against RabbitMQ (port $RABBIT_PORT)"
    "$PY" "$HERE/run_tutorials.py" --url "amqp://guest:guest@127.0.0.1:$RABBIT_PORT/" \
        --out "$EXPECTED" 2> "$OUT/rabbitmq-tutorials.log" ||
        { log "tutorial run against RabbitMQ failed; see $OUT/rabbitmq-tutorials.log"; exit 2; }
    "$HERE/rabbitmq.sh" stop
    trap - EXIT
    if [ "$UPDATE_EXPECTED" = 1 ]; then
        cp "$EXPECTED" "$HERE/expected/tutorials.json"
        log "updated expected/tutorials.json"
    elif ! cmp -s "$EXPECTED" "$HERE/expected/tutorials.json"; then
        log "WARNING: live RabbitMQ output differs from the committed expected/tutorials.json:"
        "$PY" "$HERE/run_tutorials.py" --compare "$HERE/expected/tutorials.json" "$EXPECTED" >&2 || true
    fi
fi

# ---- Warren -------------------------------------------------------------------
"$PY" - "$WARREN_URL" 2>/dev/null <<'EOF' || { log "Warren is not accepting TCP connections at $WARREN_URL (start it first)"; }
import socket, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
socket.create_connection((u.hostname or "localhost", u.port or 5672), timeout=5).close()
EOF
log "running the tutorials against Warren at $WARREN_URL"
"$PY" "$HERE/run_tutorials.py" --url "$WARREN_URL" --out "$OUT/actual-tutorials.json" \
    2> "$OUT/warren-tutorials.log" || log "tutorial driver reported an error; see $OUT/warren-tutorials.log"

status=0
if [ "$RUN_ERRORS" = 1 ]; then
    echo "== error/fact probe vs expected/errors-rabbitmq-3.10.8.txt"
    "$PY" "$HERE/probe_errors.py" --url "$WARREN_URL" --out "$OUT/errors-warren.txt" \
        --compare "$HERE/expected/errors-rabbitmq-3.10.8.txt" > "$OUT/errors-compare.txt" 2>&1 || status=1
    grep -v '^PASS' "$OUT/errors-compare.txt" | sed 's/^\([0-9]* passed, [0-9]* failed\)$/errors: \1/'
    echo
fi
echo "== tutorials (expected: $( [ "${COMPAT_SKIP_RABBITMQ:-0}" = 1 ] && echo committed file || echo RabbitMQ ) vs Warren)"
"$PY" "$HERE/run_tutorials.py" --compare "$EXPECTED" "$OUT/actual-tutorials.json" || status=1
exit $status
