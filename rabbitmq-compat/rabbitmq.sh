#!/usr/bin/env bash
# Private RabbitMQ node used as the compatibility oracle for Warren.
#
#   rabbitmq-compat/rabbitmq.sh start [PORT]   # default PORT=5673
#   rabbitmq-compat/rabbitmq.sh stop
#   rabbitmq-compat/rabbitmq.sh restart        # stop_app + start_app (the restart scenarios' hook)
#   rabbitmq-compat/rabbitmq.sh status
#
# The node never touches the system RabbitMQ service, port 5672, the system
# epmd (4369) or /var/lib/rabbitmq: it has its own node name, AMQP port,
# distribution port, epmd port, HOME (Erlang cookie), config, plugin list,
# mnesia and log dirs, all under $COMPAT_RABBITMQ_DIR
# (default /tmp/warren-compat-rabbitmq), which `stop` removes.
#
# Environment knobs:
#   COMPAT_RABBITMQ_DIR        state/temp dir (default /tmp/warren-compat-rabbitmq)
#   COMPAT_RABBITMQ_NODENAME   node name (default compat-rabbit@localhost)
#   COMPAT_RABBITMQ_DIST_PORT  Erlang distribution port (default 25673)
#   COMPAT_RABBITMQ_EPMD_PORT  private epmd port (default 4371)
#   COMPAT_RABBITMQ_START_TIMEOUT  seconds to wait for AMQP (default 180)
#   COMPAT_RABBITMQ_MGMT_PORT  management API port (default AMQP port + 10000;
#                              the rabbitmq_management plugin is enabled)
set -euo pipefail

STATE_DIR="${COMPAT_RABBITMQ_DIR:-/tmp/warren-compat-rabbitmq}"
NODENAME="${COMPAT_RABBITMQ_NODENAME:-compat-rabbit@localhost}"
DIST_PORT="${COMPAT_RABBITMQ_DIST_PORT:-25673}"
EPMD_PORT="${COMPAT_RABBITMQ_EPMD_PORT:-4371}"
START_TIMEOUT="${COMPAT_RABBITMQ_START_TIMEOUT:-180}"
RMQ_BIN=/usr/lib/rabbitmq/bin

log() { echo "[rabbitmq.sh] $*" >&2; }

port_open() {
    # true if something accepts TCP connections on 127.0.0.1:$1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ensure_installed() {
    if [ -x "$RMQ_BIN/rabbitmq-server" ]; then
        return 0
    fi
    log "rabbitmq-server not installed; installing with apt-get"
    # Never let the package's postinst start the system service (it would
    # grab port 5672). If the machine has no policy-rc.d, add one for the
    # duration of the install.
    local added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2 ||
            { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2; }
    } || rc=$?
    if [ "$added_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    [ "$rc" = 0 ] || { log "apt-get install rabbitmq-server failed"; return "$rc"; }
    # If a system service got started anyway (e.g. systemd ignored
    # policy-rc.d), stop it and keep it from starting on boot.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now rabbitmq-server >&2 2>/dev/null || true
    else
        service rabbitmq-server stop >&2 2>/dev/null || true
    fi
}

# All the environment the node and the CLI tools share.
node_env() {
    export HOME="$STATE_DIR/home"                 # private .erlang.cookie
    export ERL_EPMD_PORT="$EPMD_PORT"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_NODENAME="$NODENAME"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_DIST_PORT="$DIST_PORT"
    export RABBITMQ_CONF_ENV_FILE="$STATE_DIR/rabbitmq-env.conf"
    export RABBITMQ_CONFIG_FILE="$STATE_DIR/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$STATE_DIR/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$STATE_DIR/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$STATE_DIR/mnesia"
    export RABBITMQ_LOG_BASE="$STATE_DIR/log"
    export RABBITMQ_PID_FILE="$STATE_DIR/rabbit.pid"
    export RABBITMQ_PLUGINS_EXPAND_DIR="$STATE_DIR/plugins-expand"
    export RABBITMQ_LOGS="$STATE_DIR/log/rabbit.log"
    unset RABBITMQ_NODE_PORT_ERR 2>/dev/null || true
}

ctl() { "$RMQ_BIN/rabbitmqctl" -n "$NODENAME" "$@"; }

cmd_start() {
    local port="${1:-5673}"
    if [ "$port" = 5672 ]; then
        log "refusing to use port 5672 (reserved for Warren)"; exit 2
    fi
    ensure_installed
    if [ -f "$STATE_DIR/port" ]; then
        log "a node seems to be running already (state in $STATE_DIR); stopping it first"
        cmd_stop
    fi
    if port_open "$port"; then
        log "port $port is already in use"; exit 1
    fi
    rm -rf "$STATE_DIR"
    mkdir -p "$STATE_DIR/home" "$STATE_DIR/mnesia" "$STATE_DIR/log"
    chmod 700 "$STATE_DIR"
    # random private cookie
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$STATE_DIR/home/.erlang.cookie"
    chmod 400 "$STATE_DIR/home/.erlang.cookie"
    : > "$STATE_DIR/rabbitmq-env.conf"
    local mgmt_port="${COMPAT_RABBITMQ_MGMT_PORT:-$((port + 10000))}"
    if port_open "$mgmt_port"; then
        log "management port $mgmt_port is already in use"; exit 1
    fi
    echo '[rabbitmq_management].' > "$STATE_DIR/enabled_plugins"
    # A short consumer timeout (checked on a short channel tick) so that the
    # consumer-timeout scenario runs in seconds; warren.sh passes the same.
    echo '[{rabbit, [{consumer_timeout, 5000}, {channel_tick_interval, 500}]}].' \
        > "$STATE_DIR/advanced.config"
    cat > "$STATE_DIR/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$port
management.tcp.ip = 127.0.0.1
management.tcp.port = $mgmt_port
loopback_users.guest = true
log.console = false
log.file.level = info
EOF
    echo "$port" > "$STATE_DIR/port"
    echo "$mgmt_port" > "$STATE_DIR/mgmt_port"
    node_env
    export RABBITMQ_NODE_PORT="$port"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    log "starting $NODENAME on 127.0.0.1:$port (dist $DIST_PORT, epmd $EPMD_PORT, dir $STATE_DIR)"
    (cd "$STATE_DIR" && setsid "$RMQ_BIN/rabbitmq-server" \
        > "$STATE_DIR/log/server.stdout" 2> "$STATE_DIR/log/server.stderr" < /dev/null &
     echo $! > "$STATE_DIR/wrapper.pid")
    local deadline=$(( $(date +%s) + START_TIMEOUT ))
    while :; do
        if ! kill -0 "$(cat "$STATE_DIR/wrapper.pid")" 2>/dev/null; then
            log "node exited during startup; logs:"
            tail -n 50 "$STATE_DIR"/log/* >&2 || true
            exit 1
        fi
        if port_open "$port" && ctl -q await_startup --timeout 10 >/dev/null 2>&1; then
            break
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "timed out after ${START_TIMEOUT}s waiting for AMQP on port $port; logs:"
            tail -n 50 "$STATE_DIR"/log/* >&2 || true
            cmd_stop || true
            exit 1
        fi
        sleep 1
    done
    log "RabbitMQ $(ctl -q eval 'rabbit_misc:version().' 2>/dev/null | tr -d '"') up: amqp://guest:guest@127.0.0.1:$port/"
}

cmd_stop() {
    if [ ! -d "$STATE_DIR" ]; then
        log "nothing to stop ($STATE_DIR does not exist)"
        return 0
    fi
    node_env
    local beam_pid="" wrapper_pid=""
    [ -f "$RABBITMQ_PID_FILE" ] && beam_pid="$(cat "$RABBITMQ_PID_FILE" 2>/dev/null || true)"
    [ -f "$STATE_DIR/wrapper.pid" ] && wrapper_pid="$(cat "$STATE_DIR/wrapper.pid" 2>/dev/null || true)"
    if [ -x "$RMQ_BIN/rabbitmqctl" ]; then
        ctl -q stop >/dev/null 2>&1 || true
    fi
    # wait for the VM (and the wrapper shell) to go away; escalate if needed
    local pid
    for pid in $beam_pid $wrapper_pid; do
        local i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid still alive; sending TERM"
            kill -TERM "$pid" 2>/dev/null || true
            sleep 3
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    # the node started a private epmd on $EPMD_PORT; stop it
    if command -v epmd >/dev/null 2>&1; then
        epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
    elif [ -x "$(ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n1)" ]; then
        "$(ls /usr/lib/erlang/erts-*/bin/epmd | head -n1)" -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE_DIR"
    log "stopped"
}

# Restart the broker on the running node: `rabbitmqctl stop_app` closes every
# client connection (320 CONNECTION_FORCED) and stops the rabbit application
# (listeners, queues, message store); `start_app` recovers durable exchanges,
# queues, bindings and persistent messages from the node's mnesia dir, as a
# restart of the whole node would, but without restarting the Erlang VM (a
# couple of seconds instead of ~20).  Returns when AMQP accepts connections.
cmd_restart() {
    if [ ! -f "$STATE_DIR/port" ]; then
        log "no node to restart (state dir $STATE_DIR missing)"; exit 1
    fi
    local port
    port="$(cat "$STATE_DIR/port")"
    node_env
    local t0
    t0=$(date +%s%N)
    ctl -q stop_app >&2 || { log "rabbitmqctl stop_app failed"; exit 1; }
    ctl -q start_app >&2 || { log "rabbitmqctl start_app failed"; exit 1; }
    local deadline=$(( $(date +%s) + START_TIMEOUT ))
    until port_open "$port" && ctl -q await_startup --timeout 10 >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "timed out waiting for AMQP on port $port after start_app"; exit 1
        fi
        sleep 0.2
    done
    log "restarted the rabbit app on $NODENAME in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

cmd_status() {
    if [ -f "$STATE_DIR/port" ]; then
        node_env
        ctl -q status >/dev/null 2>&1 && { echo "running on port $(cat "$STATE_DIR/port")"; return 0; }
    fi
    echo "not running"; return 1
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) cmd_stop ;;
    restart) cmd_restart ;;
    status) cmd_status ;;
    *) echo "usage: $0 start [PORT] | stop | restart | status" >&2; exit 2 ;;
esac
