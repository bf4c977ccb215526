#!/usr/bin/env bash
# Load benchmark of the API with wrk (Debian package) on loopback: 2 threads, 64 connections.
#   1. GET /v1/weights/latest            target ≥ 20,000 requests/s, p99 < 10 ms
#   2. POST /v1/tasks/fetch (batch 10)   target ≥ 1,500 requests/s over a 100,000-task pool,
#                                        flat as the pool drains (first vs second half reported)
# It builds the release binary, starts a throwaway managed PostgreSQL through `kinitro run`, seeds
# it with SQL, and prints wrk's summaries. The local executor is off (KINITRO_EXECUTOR_POOLS=0): it would
# claim the seeded tasks itself.
#
#   benches/api_load.sh [WEIGHTS_SECONDS] [FETCH_HALF_SECONDS]   (defaults 10 and 2)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-10}"
half_secs="${2:-2}"
command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -qq wrk >/dev/null; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kinitro-target}"
(cd "$repo" && cargo build -q --release)
bin="$CARGO_TARGET_DIR/release/kinitro"
data="$(mktemp -d /tmp/kinitro-load-XXXX)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KINITRO_EXECUTOR_POOLS=0 KINITRO_API_API_KEY=bench-key-0123456789abcdef0123456789 "$bin" run --data-dir "$data" --host 127.0.0.1 --port "$port" \
  --log-level warning >"$data/run.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 150); do curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
url="$(cat "$data/postgres/url")"
psql -q "$url" <<'SQL'
INSERT INTO evaluation_cycles (block_number, status, completed_at, n_miners, n_environments, duration_seconds,
  env_ids, episodes_per_env, pareto_frontier, registry_source)
VALUES (100, 'completed', now(), 256, 8, 3600, '[]', 50, '[]', 'file');
INSERT INTO computed_weights (cycle_id, block_number, weights_json, weights_u16_json)
SELECT 1, 100, jsonb_object_agg(i::text, 1.0/256), jsonb_build_object('uids', jsonb_agg(i), 'values', jsonb_agg(255))
FROM generate_series(0, 255) i;
INSERT INTO evaluation_cycles (block_number, env_ids, episodes_per_env, registry_source) VALUES (200, '[]', 50, 'file');
INSERT INTO task_pool (task_uuid, cycle_id, miner_uid, miner_hotkey, miner_endpoint, env_id, seed, sim_seed)
SELECT md5(i::text)::uuid::text, 2, i % 256, 'hk', 'http://m', 'metaworld/reach-v3', i, i FROM generate_series(1, 100000) i;
VACUUM ANALYZE; -- settle the freshly seeded tables so autovacuum does not start during the runs
SQL
# Write the seeded pages out now rather than during the runs (needs superuser; skipped otherwise).
psql -q "$url" -c CHECKPOINT 2>/dev/null || true
echo "== GET /v1/weights/latest"
wrk -t2 -c64 -d"${secs}s" --latency "http://127.0.0.1:$port/v1/weights/latest"
lua="$data/fetch.lua"
cat >"$lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key-0123456789abcdef0123456789"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"executor_id": "bench-' .. (counter % 16) .. '", "batch_size": 10}')
end
LUA
# Each half runs FETCH_HALF_SECONDS (at 2,000 requests/s a 100,000-task pool lasts 5 s, so keep it
# at 2 for two halves that both find pending tasks; a half that drains the pool reports empty answers
# as requests). Tasks claimed per second are printed for each half.
pending() { psql -qtA "$url" -c "SELECT count(*) FROM task_pool WHERE status='pending'"; }
for half in first second; do
  before=$(pending)
  echo "== POST /v1/tasks/fetch (batch 10), $half run; pending before: $before"
  wrk -t2 -c64 -d"${half_secs}s" --latency -s "$lua" "http://127.0.0.1:$port/v1/tasks/fetch"
  after=$(pending)
  echo "claimed $((before - after)) tasks: $(( (before - after) / half_secs )) tasks/s"
done
