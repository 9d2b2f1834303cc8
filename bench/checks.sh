#!/usr/bin/env bash
# The cost of the request checks (body limits, 405/Allow, nosniff, empty and unknown query
# parameters, the normalised read-cache key, sessions and the failed-authentication limit,
# stream caps): the same load on two commits, side by side, on the same machine in one run.
#
#   bash bench/checks.sh [BASE] [NEW]      (defaults: b5054ee, the commit before the checks; HEAD)
#
# For each commit: the release binary on a fresh SQLite database with 100 NBA games imported
# from a local mock ESPN (the real 2024-01-29 scoreboard served for ten days, each day's event
# ids made unique: CONSTRUCTED), then wrk on /health and /api/v1/games?limit=50 (cache on, and
# off with TIPOFF_READ_CACHE_TTL=0s), ROUNDS rounds alternating the two binaries (best round
# kept); then `cargo bench --bench money` (stakes through the HTTP API) in each tree.
# CONNECTIONS (32), DURATION (5s), ROUNDS (3) change the load.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
BASE=${1:-b5054ee}
NEW=${2:-HEAD}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
ROOT=$PWD
FIXTURES=${TIPOFF_FIXTURES_DIR:-$ROOT/../shared/fixtures}
export TIPOFF_FIXTURES_DIR=$FIXTURES
TREES=$ROOT/target/bench-checks
mkdir -p "$TREES"
# The trees' benches read ../shared beside their checkout.
ln -sfn "$(cd "$FIXTURES/.." && pwd)" "$TREES/shared"
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

tree() { # name commit → a detached worktree at that commit (its own target directory: two
  # checkouts of one workspace must not share one), binary and money bench built
  local name=$1 commit=$2 dir=$TREES/$1
  git worktree remove --force "$dir" 2>/dev/null || rm -rf "$dir"
  git worktree add --detach -q "$dir" "$commit"
  (cd "$dir" && export CARGO_TARGET_DIR=$TREES/$name-target &&
    cargo build --release -q && cargo bench -q --no-run --bench money 2>/dev/null &&
    cp "$CARGO_TARGET_DIR/release/tipoff" "$TREES/$name.bin")
}
tree base "$BASE"
tree new "$NEW"

# Mock ESPN: the real scoreboard for every date from 2024-01-01 to 2024-01-10, ids per date.
python3 - "$FIXTURES/espn/nba-scoreboard-20240129.json" > "$WORK/espn.port" <<'PY' &
import http.server, json, sys, re, socketserver
base = json.load(open(sys.argv[1]))
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        m = re.search(r"dates=(\d{8})", self.path)
        day = m.group(1) if m else "20240101"
        board = json.loads(json.dumps(base))
        if "20240101" <= day <= "20240110":
            for e in board.get("events", []):
                e["id"] = e["id"] + day
        else:
            board["events"] = []
        body = json.dumps(board).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
s = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
for _ in $(seq 50); do [ -s "$WORK/espn.port" ] && break; sleep 0.1; done
ESPN="http://127.0.0.1:$(cat "$WORK/espn.port")"
TOKEN=bench-admin-token-0123456789
PORT=18097

run() { # name ttl → starts the binary with games imported; leaves PID set
  local name=$1 ttl=$2 data=$WORK/$1-data
  if [ ! -d "$data" ]; then fresh=1; else fresh=0; fi
  TIPOFF_LISTEN=127.0.0.1:$PORT TIPOFF_DATA_DIR=$data TIPOFF_ADMIN_TOKEN=$TOKEN TIPOFF_LOG=warn \
    TIPOFF_LEAGUES=nba TIPOFF_ESPN_BASE_URL=$ESPN TIPOFF_SCHEDULE_INTERVAL=24h \
    TIPOFF_SCORE_IDLE_INTERVAL=24h TIPOFF_IMPORT_CHECK_INTERVAL=100ms TIPOFF_READ_CACHE_TTL=$ttl \
    "$TREES/$name.bin" > "$WORK/$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
  if [ "$fresh" = 1 ]; then
    local id
    id=$(curl -sf -XPOST "127.0.0.1:$PORT/admin/imports" -H "authorization: Bearer $TOKEN" \
      -H 'content-type: application/json' -d '{"league":"nba","from":"2024-01-01","to":"2024-01-10"}' |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    for _ in $(seq 300); do
      curl -sf "127.0.0.1:$PORT/admin/imports/$id" -H "authorization: Bearer $TOKEN" | grep -q '"succeeded"' && break
      sleep 0.1
    done
  fi
  local n
  n=$(curl -sf "127.0.0.1:$PORT/api/v1/games?limit=200" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
  [ "$n" -ge 50 ] || { echo "$name: only $n games imported" >&2; exit 1; }
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; }
rps() { wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$PORT$1" | awk '/Requests\/sec/{print int($2)}'; }

declare -A best
for round in $(seq "$ROUNDS"); do
  for name in base new; do
    for ttl in 1s 0s; do
      run "$name" "$ttl"
      for path in /health "/api/v1/games?limit=50"; do
        key="$name $ttl $path"
        [ "$ttl" = 0s ] && [ "$path" = /health ] && continue
        r=$(rps "$path")
        [ "${best[$key]:-0}" -lt "$r" ] && best[$key]=$r
      done
      stop
    done
  done
done

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); date: $(date -u +%F)"
echo "base $BASE ($(git rev-parse --short "$BASE")) vs new $NEW ($(git rev-parse --short "$NEW")); wrk 2 threads × $CONNECTIONS connections, $DURATION, best of $ROUNDS"
printf '%-40s %10s %10s %8s\n' "request" "base req/s" "new req/s" "change"
for row in "1s /health" "1s /api/v1/games?limit=50" "0s /api/v1/games?limit=50"; do
  ttl=${row%% *}; path=${row#* }
  b=${best["base $ttl $path"]}; n=${best["new $ttl $path"]}
  label="$path (cache ${ttl/0s/off})"; label=${label/(cache 1s)/(cache on)}
  printf '%-40s %10s %10s %7s%%\n' "$label" "$b" "$n" "$(python3 -c "print(f'{($n-$b)/$b*100:+.1f}')")"
done

echo "--- stakes through the HTTP API (cargo bench --bench money, SQLite), two rounds"
for round in 1 2; do
  for name in base new; do
    (cd "$TREES/$name" && CARGO_TARGET_DIR=$TREES/$name-target env -u TIPOFF_TEST_POSTGRES_URL \
      cargo bench -q --bench money 2>/dev/null | grep -E "stakes:" | sed "s/^/$name: /")
  done
done
