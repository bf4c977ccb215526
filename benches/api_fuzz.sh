#!/usr/bin/env bash
# Schema-driven fuzzing of the API with schemathesis (PyPI) against /openapi.json, on loopback,
# bounded in time. It starts `kinitro run --no-auth` on a throwaway managed PostgreSQL, so nothing
# else is needed beyond deploy/setup.sh.
#
#   benches/api_fuzz.sh [MAX_EXAMPLES]      (default 50 examples per operation)
#
# Fails when any response is a 5xx or does not match the documented schema/status codes.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
examples="${1:-50}"
venv="$repo/third_party/fuzz-venv"
[ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kinitro-target}"
(cd "$repo" && cargo build -q)
data="$(mktemp -d /tmp/kinitro-fuzz-XXXX)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$CARGO_TARGET_DIR/debug/kinitro" run --no-auth --data-dir "$data" --host 127.0.0.1 --port "$port" \
  --log-level warning >"$data/run.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
timeout 600 "$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error,status_code_conformance \
  --max-examples "$examples" --request-timeout 10 --no-color
