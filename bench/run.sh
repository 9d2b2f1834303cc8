#!/usr/bin/env bash
# Operator-level benchmarks of the release binary (see BENCHMARKS.md):
#   start → READY=1 (fresh and existing SQLite database), /health and /debug/status throughput
#   and latency with wrk at fixed concurrency, idle RSS, idle CPU over 60 s, SIGTERM → exit.
# Usage: bash bench/run.sh            (IDLE_SECS=60 CONNECTIONS=32 DURATION=10s by default)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
IDLE_SECS=${IDLE_SECS:-60}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
TOKEN=bench-admin-token-0123456789
cargo build --release -q
BIN=$PWD/target/release/tipoff
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=18099

# Prints milliseconds from exec to READY=1 on a NOTIFY_SOCKET; leaves the daemon running in $PID.
start_daemon() {
  rm -f "$WORK/notify.sock"
  python3 - "$WORK/notify.sock" > "$WORK/ready_ms" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])
open(sys.argv[1] + ".up", "w").close()
t0 = None
while True:
    d = s.recv(4096).decode()
    if "READY=1" in d:
        print(round((time.monotonic_ns() - int(open(sys.argv[1] + ".t0").read())) / 1e6, 1)); break
PY
  local py=$!
  while [ ! -e "$WORK/notify.sock.up" ]; do sleep 0.01; done
  rm -f "$WORK/notify.sock.up"
  python3 -c 'import time; print(time.monotonic_ns())' > "$WORK/notify.sock.t0"
  (cd "$WORK" && NOTIFY_SOCKET="$WORK/notify.sock" TIPOFF_LISTEN=127.0.0.1:$PORT TIPOFF_ADMIN_TOKEN=$TOKEN \
     TIPOFF_LOG=warn exec "$BIN" serve) >>"$WORK/daemon.log" 2>&1 &
  PID=$!
  wait $py
}

stop_daemon() {
  local t0 t1
  t0=$(date +%s%N); kill -TERM "$PID"; wait "$PID" || true; t1=$(date +%s%N)
  STOP_MS=$(( (t1 - t0) / 1000000 ))
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); date: $(date -u +%F)"
start_daemon; echo "start → READY=1, fresh SQLite database: $(cat "$WORK/ready_ms") ms"
sleep 1
stop_daemon; echo "idle shutdown (SIGTERM → exit): $STOP_MS ms"
start_daemon; echo "start → READY=1, existing SQLite database: $(cat "$WORK/ready_ms") ms"
sleep 2
echo "idle RSS after start: $(awk '/VmRSS/{print $2, $3}' /proc/$PID/status)"
t0=$(awk '{print $14 + $15}' /proc/$PID/stat)
sleep "$IDLE_SECS"
t1=$(awk '{print $14 + $15}' /proc/$PID/stat)
hz=$(getconf CLK_TCK)
echo "idle CPU over ${IDLE_SECS}s: $(python3 -c "print(f'{($t1-$t0)/$hz/$IDLE_SECS*100:.3f} % of one core')")"
echo "idle RSS after ${IDLE_SECS}s idle: $(awk '/VmRSS/{print $2, $3}' /proc/$PID/status)"
echo "--- wrk /health: 2 threads, $CONNECTIONS connections, $DURATION"
wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PORT/health" | grep -E "Requests/sec|Latency|50%|99%"
echo "--- wrk /debug/status (handler → supervisor → reply): 2 threads, $CONNECTIONS connections, $DURATION"
wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/debug/status" | grep -E "Requests/sec|Latency|50%|99%"
echo "RSS after load: $(awk '/VmRSS/{print $2, $3}' /proc/$PID/status)"
sleep 1
stop_daemon; echo "shutdown after load (SIGTERM → exit): $STOP_MS ms"
