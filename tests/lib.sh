# Shell helpers shared by tests/clients/run.sh, tests/agents/run.sh and tests/console/run.sh
# (sourced, not run): a work directory whose processes are stopped on exit, a free port, and
# waiting for a file or a URL.

WORK=$(mktemp -d)
PIDS=()

# Stops what the script started: SIGTERM, up to 10 s to exit, then SIGKILL, so that a process
# that ignores SIGTERM (or drains slowly) can never hold the script, and CI, forever.
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A port on 127.0.0.1 that nothing listens on now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to 10 s for each file to be non-empty (a process writing its port).
wait_for_files() {
    local f
    for _ in $(seq 100); do
        local missing=0
        for f in "$@"; do [ -s "$f" ] || missing=1; done
        [ "$missing" -eq 0 ] && return 0
        sleep 0.1
    done
    echo "FAILED: waited 10 s for $*" >&2
    return 1
}

# Waits up to 30 s for a URL to answer with a success.
wait_for_url() {
    for _ in $(seq 300); do
        curl -sf "$1" >/dev/null && return 0
        sleep 0.1
    done
    echo "FAILED: $1 did not answer within 30 s" >&2
    return 1
}
