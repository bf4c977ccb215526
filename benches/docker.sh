#!/usr/bin/env bash
# Docker evaluation mode against the in-process mode (issue 22, docs/containers.md §3): the same
# cycle of zero-policy pick-place episodes, run once by `kinitro executor` (native) and once by
# `kinitro executor --eval-mode docker`, against `kinitro run` (API + scheduler, no local executor) and
# four `kinitro miner serve --delay-ms N` miners, for images on/off and miner delays 0 and 20 ms.
#
# Per case it reports episodes/s and the CPU per env step of everything that evaluates: the executor
# process (from /proc) plus, in docker mode, the environment container (its cgroup's CPU counter),
# the ratio docker/native of both, and the miner timeouts (there must be none). The image is built
# first from the same binary (`kinitro env build`), so both modes run identical code.
#
# Usage: benches/docker.sh [EPISODES_WITH_IMAGES] [STEPS] [EPISODES_WITHOUT_IMAGES]
#        (defaults 8, 100 and 64). BENCH_IMAGES="on off", BENCH_DELAYS="0 20" pick the cases;
#        BENCH_K_ON (default 8) and BENCH_K_OFF (default 128) are the episodes per pool: with a 20 ms
#        miner delay, 2 pools × 128 episodes keep both cores busy without images;
#        BENCH_PROFILE=debug uses the debug build instead of building a release one.
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES_ON="${1:-8}"
STEPS="${2:-100}"
EPISODES_OFF="${3:-64}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kinitro-target}"
PROFILE="${BENCH_PROFILE:-release}"
if [ "$PROFILE" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
BIN="$CARGO_TARGET_DIR/$PROFILE/kinitro"
IMAGE=kinitro-bench/metaworld:v1
WORK="$(mktemp -d /tmp/kinitro-dockerbench-XXXX)"
chmod 755 "$WORK" # the managed PostgreSQL runs as the postgres user when root
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TICK=$(getconf CLK_TCK)
cpu_seconds() { awk -v t="$TICK" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
# CPU seconds of container $1 (cgroup v1 cpuacct, else cgroup v2 cpu.stat).
container_cpu() {
  local id; id=$(docker inspect -f '{{.Id}}' "$1" 2>/dev/null) || { echo 0; return; }
  if [ -f "/sys/fs/cgroup/cpuacct/docker/$id/cpuacct.usage" ]; then
    awk '{printf "%.3f", $1 / 1e9}' "/sys/fs/cgroup/cpuacct/docker/$id/cpuacct.usage"
  elif [ -f "/sys/fs/cgroup/system.slice/docker-$id.scope/cpu.stat" ]; then
    awk '/^usage_usec/ {printf "%.3f", $2 / 1e6}' "/sys/fs/cgroup/system.slice/docker-$id.scope/cpu.stat"
  else echo 0; fi
}
json_int() { [[ $1 =~ \"$2\":([0-9]+) ]] && echo "${BASH_REMATCH[1]}" || echo 0; }

echo "== building $IMAGE from $BIN =="
"$BIN" env build metaworld --no-render --tag "$IMAGE" 2>/dev/null | tail -1

run_case() { # mode(native|docker) images(true|false) delay episodes: prints "episodes/s cpu_ms_per_step timeouts"
  local mode=$1 images=$2 delay=$3 episodes=$4 api_port miners_file="$WORK/miners-$1-$2-$3.toml" id="bench-$1-$2-$3"
  : > "$miners_file"
  for uid in 0 1 2 3; do
    local p; p=$(free_port)
    "$BIN" miner serve --policy zero --port "$p" --delay-ms "$delay" >/dev/null 2>&1 & PIDS+=($!)
    printf '[[miners]]\nuid = %d\nhotkey = "hk%d"\nendpoint = "http://127.0.0.1:%d"\ncommit_block = %d\n\n' "$uid" "$uid" "$p" "$((100 + uid))" >> "$miners_file"
  done
  api_port=$(free_port)
  KINITRO_EXECUTOR_POOLS=0 KINITRO_SCHEDULER_EPISODES_PER_ENV=$((episodes / 4)) \
    KINITRO_SCHEDULER_ENV_IDS=metaworld/pick-place-v3 KINITRO_SCHEDULER_POLL_INTERVAL_SECONDS=1 \
    "$BIN" run --no-auth --data-dir "$WORK/data-$mode-$images-$delay" --port "$api_port" --miners-file "$miners_file" \
    >"$WORK/run.log" 2>&1 & local run_pid=$!; PIDS+=($run_pid)
  until curl -sf "http://127.0.0.1:$api_port/health" >/dev/null; do kill -0 "$run_pid" || { cat "$WORK/run.log"; exit 1; }; sleep 0.2; done
  until [ "$(json_int "$(curl -s "http://127.0.0.1:$api_port/v1/tasks/stats")" pending_tasks)" -ge "$episodes" ]; do sleep 0.2; done
  local extra=()
  if [ "$mode" = docker ]; then
    extra=(--eval-mode docker)
    export KINITRO_EXECUTOR_EVAL_NETWORK=host KINITRO_EXECUTOR_EVAL_IMAGES="{\"metaworld\": \"$IMAGE\"}"
    export KINITRO_EXECUTOR_EVAL_POOLS=2 KINITRO_EXECUTOR_EVAL_EPISODES_PER_POOL="$K"
  fi
  local start; start=$(date +%s.%N)
  KINITRO_EXECUTOR_USE_IMAGES=$images KINITRO_EXECUTOR_POOLS=2 KINITRO_EXECUTOR_EPISODES_PER_POOL="$K" \
    KINITRO_EXECUTOR_MAX_TIMESTEPS="$STEPS" KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS=true \
    KINITRO_EXECUTOR_SPOOL_DIR="$WORK/spool" KINITRO_EXECUTOR_POLL_INTERVAL_SECONDS=0.2 KINITRO_LOG_FORMAT=text \
    "$BIN" executor --executor-id "$id" --api-url "http://127.0.0.1:$api_port" "${extra[@]}" >"$WORK/executor.log" 2>&1 & local ex_pid=$!; PIDS+=($ex_pid)
  local stats done_count=0
  while [ "$done_count" -lt "$episodes" ]; do
    sleep 0.2
    stats=$(curl -s "http://127.0.0.1:$api_port/v1/tasks/stats")
    done_count=$(( $(json_int "$stats" completed_tasks) + $(json_int "$stats" failed_tasks) ))
  done
  local wall cpu container=0 name="kinitro-eval-$id-h0-metaworld-0" timeouts
  wall=$(python3 -c "import time; print(time.time() - $start)")
  cpu=$(cpu_seconds "$ex_pid")
  if [ "$mode" = docker ]; then container=$(container_cpu "$name"); fi
  timeouts=$( { cat "$WORK/executor.log"; [ "$mode" = docker ] && docker logs "$name" 2>&1; } | grep -c "Miner action timeout" || true)
  kill -TERM "$ex_pid" 2>/dev/null || true; wait "$ex_pid" 2>/dev/null || true
  kill "$run_pid" 2>/dev/null || true; wait "$run_pid" 2>/dev/null || true
  unset KINITRO_EXECUTOR_EVAL_NETWORK KINITRO_EXECUTOR_EVAL_IMAGES KINITRO_EXECUTOR_EVAL_POOLS KINITRO_EXECUTOR_EVAL_EPISODES_PER_POOL
  python3 -c "import sys; e, w, c, x, s = map(float, sys.argv[1:6]); print('%.3f %.4f %d' % (e / w, 1e3 * (c + x) / (e * s), int(sys.argv[6])))" \
    "$episodes" "$wall" "$cpu" "$container" "$STEPS" "$timeouts"
}

echo "== docker vs in-process (4 zero-policy miners, pick-place episodes of $STEPS steps, 2 pools) =="
for images in ${BENCH_IMAGES:-on off}; do
  for delay in ${BENCH_DELAYS:-0 20}; do
    if [ "$images" = on ]; then episodes=$EPISODES_ON; K=${BENCH_K_ON:-8}; else episodes=$EPISODES_OFF; K=${BENCH_K_OFF:-128}; fi
    read -r n_eps n_cpu n_to < <(run_case native "$([ "$images" = on ] && echo true || echo false)" "$delay" "$episodes")
    read -r d_eps d_cpu d_to < <(run_case docker "$([ "$images" = on ] && echo true || echo false)" "$delay" "$episodes")
    python3 -c "import sys; a = sys.argv[1:]
print('images %-3s delay %2s ms (%s episodes, K %s): native %s episodes/s, %s ms CPU/step | docker %s episodes/s, %s ms CPU/step (executor + container) | docker/native CPU %.2fx, throughput %.2fx | miner timeouts %s/%s'
      % (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], float(a[7]) / float(a[5]), float(a[6]) / float(a[4]), a[8], a[9]))" \
      "$images" "$delay" "$episodes" "$K" "$n_eps" "$n_cpu" "$d_eps" "$d_cpu" "$n_to" "$d_to"
  done
done
