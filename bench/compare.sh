#!/usr/bin/env bash
# tipoff (read cache off and on; SQLite, and PostgreSQL when TIPOFF_TEST_POSTGRES_URL is set)
# and the FastAPI peer side by side: same data, same wrk load, one run, ratios printed.
# Usage: bash bench/compare.sh
#   PEER_DIR      the peer's directory (its app.py), default ../shared/peer
#   PEER_WORKERS  uvicorn workers for the peer, default 2 (one per core)
#   WRK_CONNECTIONS (32), WRK_DURATION (8s)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
PEER_DIR=${PEER_DIR:-../shared/peer}
VENV=target/peer-venv
if ! "$VENV/bin/python" -c 'import fastapi, uvicorn, httpx, aiosqlite, uvloop, httptools' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q fastapi uvicorn httpx aiosqlite uvloop httptools
fi
export PEER_DIR PEER_PYTHON=$PWD/$VENV/bin/python
cargo bench --bench compare
