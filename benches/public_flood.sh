#!/usr/bin/env bash
# Do public reads starve the executors? (issue 23 item 4; docs/api.md §1.3)
#
# Claims executors can make per second, and the p99 of POST /v1/tasks/fetch, first unloaded and then
# while a second wrk floods GET /v1/status and GET /v1/miners at full rate, in the same run against
# the same server. Targets: loaded claims/s ≥ 80 % of unloaded, loaded fetch p99 ≤ 1.25 × unloaded.
# The pair is measured ROUNDS times (default 3), unloaded and loaded alternating, so drift shows.
# The API paces the flood (docs/api.md §1.3); KINITRO_API_PUBLIC_READS_PER_SECOND=0 in the caller's
# environment turns pacing off, to see what the flood costs without it.
#
#   benches/public_flood.sh [SECONDS_PER_MEASUREMENT]   (default 5)
#
# The database holds a completed cycle with 256 miners × 8 environments of scores and weights, and a
# running cycle with 400,000 pending tasks, so the public queries have real work to do. At the end it
# times the dashboard's pages on that data (goal: a 256 × 8 leaderboard in under 200 ms of server
# time; on loopback curl's total time is that plus a fraction of a millisecond).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-5}"
rounds="${ROUNDS:-3}"
command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -qq wrk >/dev/null; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kinitro-target}"
(cd "$repo" && cargo build -q --release)
bin="$CARGO_TARGET_DIR/release/kinitro"
data="$(mktemp -d /tmp/kinitro-flood-XXXX)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key=bench-key-0123456789abcdef0123456789
KINITRO_EXECUTOR_POOLS=0 KINITRO_API_API_KEY=$key "$bin" run --data-dir "$data" --host 127.0.0.1 \
  --port "$port" --log-level warning >"$data/run.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 150); do curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
url="$(cat "$data/postgres/url")"
psql -q "$url" <<'SQL'
INSERT INTO evaluation_cycles (block_number, status, completed_at, n_miners, n_environments, duration_seconds,
  env_ids, episodes_per_env, pareto_frontier, registry_source)
VALUES (100, 'completed', now(), 256, 8, 3600, '["metaworld/reach-v3", "metaworld/push-v3",
  "metaworld/pick-place-v3", "metaworld/door-open-v3", "metaworld/drawer-open-v3",
  "metaworld/drawer-close-v3", "metaworld/button-press-v3", "metaworld/peg-insert-v3"]', 50, '[0]', 'file');
INSERT INTO miners (cycle_id, uid, hotkey, repo, revision, endpoint, encrypted, commit_block, status)
SELECT 1, i, 'hk' || i, 'user/policy' || i, 'abc123de', 'http://m' || i, false, 1000 + i, 'active'
FROM generate_series(0, 255) i;
INSERT INTO miner_scores (cycle_id, uid, hotkey, env_id, success_rate, mean_reward, episodes_completed,
  episodes_failed, episodes_excluded)
SELECT 1, i, 'hk' || i, e, random(), 10.0, 50, 0, 0
FROM generate_series(0, 255) i, jsonb_array_elements_text((SELECT env_ids FROM evaluation_cycles WHERE id = 1)) e;
INSERT INTO computed_weights (cycle_id, block_number, weights_json, weights_u16_json)
SELECT 1, 100, jsonb_object_agg(i::text, 1.0/256), jsonb_build_object('uids', jsonb_agg(i), 'values', jsonb_agg(255))
FROM generate_series(0, 255) i;
INSERT INTO evaluation_cycles (block_number, env_ids, episodes_per_env, registry_source) VALUES (200, '[]', 50, 'file');
INSERT INTO miners (cycle_id, uid, hotkey, repo, revision, endpoint, encrypted, commit_block, status)
SELECT 2, uid, hotkey, repo, revision, endpoint, encrypted, commit_block, status FROM miners WHERE cycle_id = 1;
INSERT INTO task_pool (task_uuid, cycle_id, miner_uid, miner_hotkey, miner_endpoint, env_id, seed, sim_seed)
SELECT md5(i::text)::uuid::text, 2, i % 256, 'hk', 'http://m', 'metaworld/reach-v3', i, i
FROM generate_series(1, 400000) i;
VACUUM ANALYZE;
SQL
psql -q "$url" -c CHECKPOINT 2>/dev/null || true

fetch_lua="$data/fetch.lua"
cat >"$fetch_lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"executor_id": "bench-' .. (counter % 8) .. '", "batch_size": 10}')
end
LUA
flood_lua="$data/flood.lua"
cat >"$flood_lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  if counter % 2 == 0 then return wrk.format("GET", "/v1/status") end
  return wrk.format("GET", "/v1/miners")
end
LUA
pending() { psql -qtA "$url" -c "SELECT count(*) FROM task_pool WHERE status='pending'"; }
# Every measurement starts from the same 400,000 pending tasks: a fast machine would otherwise
# drain the queue within a round.
requeue() {
  psql -q "$url" -c "UPDATE task_pool SET status = 'pending', assigned_to = NULL, assigned_at = NULL,
    attempts = 0 WHERE status = 'assigned'" -c "VACUUM ANALYZE task_pool" >/dev/null
  # Flush the requeue's writes now, not in a checkpoint during the measurement.
  psql -q "$url" -c CHECKPOINT 2>/dev/null || true
}
# wrk's p99 line in milliseconds.
p99_ms() { awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
  f = (u == "us") ? 0.001 : (u == "s") ? 1000 : 1; printf "%.2f", v * f }'; }
# One measurement: claims/s and fetch p99 (ms), optionally under the flood.
measure() {
  local flood_pid="" before after out
  requeue
  if [ "$1" = loaded ]; then
    wrk -t1 -c64 -d"$((secs + 2))s" -s "$flood_lua" "http://127.0.0.1:$port" >"$data/flood.out" &
    flood_pid=$!
    sleep 1
  fi
  before=$(pending)
  out=$(wrk -t1 -c16 -d"${secs}s" --latency -s "$fetch_lua" "http://127.0.0.1:$port/v1/tasks/fetch")
  after=$(pending)
  [ "$after" -gt 0 ] || echo "warning: the queue ran dry; the claims figure is a floor" >&2
  [ -n "$flood_pid" ] && wait "$flood_pid"
  local flood_rps=""
  [ -n "$flood_pid" ] && flood_rps=$(awk '/Requests\/sec/ {print $2}' "$data/flood.out")
  echo "$(( (before - after) / secs )) $(echo "$out" | p99_ms) ${flood_rps:-0}"
}
echo "round  unloaded: claims/s p99ms   loaded: claims/s p99ms (flood req/s)   claims ratio  p99 ratio"
for r in $(seq "$rounds"); do
  read -r c0 p0 _ < <(measure unloaded)
  read -r c1 p1 f1 < <(measure loaded)
  printf "%5s  %18s %6s   %16s %6s %13s   %11s  %9s\n" "$r" "$c0" "$p0" "$c1" "$p1" "($f1)" \
    "$(awk -v a="$c1" -v b="$c0" 'BEGIN { printf "%.2f", a / b }')" \
    "$(awk -v a="$p1" -v b="$p0" 'BEGIN { printf "%.2f", a / b }')"
done

# The pacer's schedule may still run a few seconds ahead after the flood (docs/api.md §1.3).
sleep 6
echo
echo "dashboard pages on 256 miners × 8 environments: first request, then the median of 20 (ms)"
for path in /leaderboard /miners/7 /pareto /weights /; do
  first=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port$path")
  times=$(for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port$path"; done | sort -n)
  median=$(echo "$times" | sed -n 10p)
  bytes=$(curl -s "http://127.0.0.1:$port$path" | wc -c)
  printf "%-14s first %7.1f  median %7.1f  (%s bytes)\n" "$path" "$(awk -v t="$first" 'BEGIN{print t*1000}')" \
    "$(awk -v t="$median" 'BEGIN{print t*1000}')" "$bytes"
done
