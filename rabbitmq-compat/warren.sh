#!/usr/bin/env bash
# Warren as the compatibility suite runs it: a broker process that the
# restart scenarios can restart on the same data directory.
#
#   rabbitmq-compat/warren.sh start [PORT] [-- EXTRA WARREN ARGS...]   # default PORT=5672
#   rabbitmq-compat/warren.sh restart      # SIGTERM, wait for exit, start again with the same args
#   rabbitmq-compat/warren.sh stop         # SIGTERM (SIGKILL after a grace period), remove the state dir
#   rabbitmq-compat/warren.sh status
#
# `start` runs `$COMPAT_WARREN_BIN --port PORT --bind 127.0.0.1 --data-dir
# $COMPAT_WARREN_DIR/data --consumer-timeout 5000 EXTRA...` (the consumer
# timeout rabbitmq.sh gives RabbitMQ) in its own session (so a scenario's
# process group can be killed without touching it) with a fresh, empty data
# dir, remembers the command line and waits until the port accepts TCP
# connections.  `restart` stops that process with SIGTERM (Warren closes every
# connection with 320 CONNECTION_FORCED and flushes its store), waits until it
# has exited, starts the same command line again -- same port, same data dir,
# so durable state is recovered -- and returns when the port accepts again.
#
# Environment knobs:
#   COMPAT_WARREN_BIN   the broker binary (default: ../target/release/warren,
#                       or $CARGO_TARGET_DIR/release/warren when that is set)
#   COMPAT_WARREN_DIR   state dir: pid, command line, data dir
#                       (default /tmp/warren-compat-warren; `stop` removes it)
#   COMPAT_WARREN_LOG   the broker's stdout/stderr, appended across restarts
#                       (default $COMPAT_WARREN_DIR/warren.log)
#   COMPAT_WARREN_START_TIMEOUT  seconds to wait for the port (default 30)
#   COMPAT_WARREN_STOP_TIMEOUT   seconds to wait for exit after SIGTERM before SIGKILL (default 15)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${COMPAT_WARREN_DIR:-/tmp/warren-compat-warren}"
if [ -n "${COMPAT_WARREN_BIN:-}" ]; then
    BIN="$COMPAT_WARREN_BIN"
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
    BIN="$CARGO_TARGET_DIR/release/warren"
else
    BIN="$HERE/../target/release/warren"
fi
LOG="${COMPAT_WARREN_LOG:-$STATE_DIR/warren.log}"
START_TIMEOUT="${COMPAT_WARREN_START_TIMEOUT:-30}"
STOP_TIMEOUT="${COMPAT_WARREN_STOP_TIMEOUT:-15}"

log() { echo "[warren.sh] $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alive PID: the process exists and is not a zombie.  Warren outlives this
# script, so its parent becomes init (or a subreaper), which may take a while
# to reap it: a zombie has exited and released its port.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat%% *}" != Z ]
}

running_pid() {  # the pid from the state dir, if that process is alive
    local pid
    [ -f "$STATE_DIR/pid" ] || return 1
    pid="$(cat "$STATE_DIR/pid")"
    [ -n "$pid" ] && alive "$pid" || return 1
    echo "$pid"
}

# launch: start the saved command line (STATE_DIR/cmdline, NUL-separated) and
# wait for its port.
launch() {
    local -a cmd=()
    mapfile -d '' -t cmd < "$STATE_DIR/cmdline"
    local port
    port="$(cat "$STATE_DIR/port")"
    if port_open "$port"; then
        log "port $port is already in use"; return 1
    fi
    echo "--- $(date -u '+%F %T') warren.sh: ${cmd[*]}" >> "$LOG"
    # setsid: own session and process group.  Not a group leader here (no job
    # control in a script), so setsid execs in place and $! is Warren's pid.
    setsid "${cmd[@]}" >> "$LOG" 2>&1 < /dev/null &
    local pid=$!
    echo "$pid" > "$STATE_DIR/pid"
    local deadline=$(( $(date +%s) + START_TIMEOUT ))
    until port_open "$port"; do
        if ! alive "$pid"; then
            log "warren exited during start-up; last lines of $LOG:"
            tail -n 20 "$LOG" >&2 || true
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "timed out after ${START_TIMEOUT}s waiting for port $port; last lines of $LOG:"
            tail -n 20 "$LOG" >&2 || true
            return 1
        fi
        sleep 0.05
    done
}

# terminate: SIGTERM the running broker and wait for it to exit (SIGKILL after
# STOP_TIMEOUT seconds).
terminate() {
    local pid
    pid="$(running_pid)" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    local i=0
    while alive "$pid"; do
        if [ $i -ge $(( STOP_TIMEOUT * 20 )) ]; then
            log "pid $pid still alive ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.05
        i=$((i + 1))
    done
    rm -f "$STATE_DIR/pid"
}

cmd_start() {
    local port=5672
    if [ $# -gt 0 ] && [ "$1" != "--" ]; then port="$1"; shift; fi
    [ "${1:-}" = "--" ] && shift
    if [ ! -x "$BIN" ]; then
        log "no broker binary at $BIN (cargo build --release, or set COMPAT_WARREN_BIN)"; exit 2
    fi
    if running_pid >/dev/null; then
        log "a broker started by warren.sh is running already (state in $STATE_DIR); stopping it first"
        cmd_stop
    fi
    rm -rf "$STATE_DIR"
    mkdir -p "$STATE_DIR/data" "$(dirname "$LOG")"
    : > "$LOG"
    echo "$port" > "$STATE_DIR/port"
    printf '%s\0' "$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")" \
        --port "$port" --bind 127.0.0.1 --data-dir "$STATE_DIR/data" \
        --consumer-timeout 5000 "$@" > "$STATE_DIR/cmdline"
    launch || { terminate; exit 1; }
    log "warren up on amqp://guest:guest@127.0.0.1:$port/ (pid $(cat "$STATE_DIR/pid"), data $STATE_DIR/data, log $LOG)"
}

cmd_restart() {
    if [ ! -f "$STATE_DIR/cmdline" ]; then
        log "nothing to restart ($STATE_DIR/cmdline missing: use start first)"; exit 1
    fi
    local t0
    t0=$(date +%s%N)
    terminate
    launch || exit 1
    log "restarted warren in $(( ($(date +%s%N) - t0) / 1000000 )) ms (pid $(cat "$STATE_DIR/pid"))"
}

cmd_stop() {
    if [ ! -d "$STATE_DIR" ]; then
        log "nothing to stop ($STATE_DIR does not exist)"
        return 0
    fi
    terminate
    rm -rf "$STATE_DIR"
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        echo "running (pid $pid) on port $(cat "$STATE_DIR/port")"; return 0
    fi
    echo "not running"; return 1
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    restart) cmd_restart ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start [PORT] [-- WARREN ARGS...] | restart | stop | status" >&2; exit 2 ;;
esac
