#!/usr/bin/env bash
# Executor throughput (issue 6): one `kinitro executor` process against `kinitro run` (API + scheduler,
# no local executor) and reference miners from `kinitro miner serve --delay-ms N`.
#
# For each case (images on/off × miner delay 0/20 ms × K) it runs one cycle of pick-place episodes and
# reports episodes/s, env steps/s and the executor's own CPU time per step (from /proc, so the miners'
# CPU is excluded), and its ratio to the baseline: physics + rendering + observation encoding measured
# alone by `kinitro env test` (in-process, one episode at a time, no HTTP). It measures two windows:
# the whole run, start-up included (loading and compiling the scene, the first resets), and the steady
# state (the second to seventh eighths of the steps, counted from the executor's /metrics), which is
# the per-step cost the target is about, as the baseline also leaves out compiling its scene. For
# each window it also prints the episode workers' own wall time for physics + rendering + observation
# encoding (the sums of kinitro_sim_step_seconds, kinitro_render_seconds and kinitro_obs_encode_seconds):
# wall time, so it includes waiting for a core and the cache misses of K interleaved episodes; the split
# of the executor's CPU between the episode-worker threads (MuJoCo, rendering with Mesa's rasteriser
# threads, encoding) and the rest (the pools' arbiters: HTTP to the miners, episode state machines;
# the API client); how often the workers were preempted; and the mean `/act` round trip the executor
# charged the miners (the miner's delay plus loopback and the miner's own time: it shows that the
# executor's scheduling is not charged to them). It gives the executor's peak resident memory.
#
# Usage: benches/executor.sh [EPISODES_WITH_IMAGES] [STEPS] [EPISODES_WITHOUT_IMAGES]
#        (defaults 16 and 128 episodes of 100 steps: enough to fill the slots of each case)
#        BENCH_IMAGES="on off" and BENCH_DELAYS="0 20" (the defaults) pick the cases: e.g. BENCH_IMAGES=off
#        runs only those without images. BENCH_K_OFF (default 128) is K without images: with a 20 ms
#        miner delay, 2 pools × 128 episodes keep both episode workers busy.
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES="${1:-16}"
STEPS="${2:-100}"
EPISODES_OFF="${3:-128}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kinitro-target}"
cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/kinitro"
WORK="$(mktemp -d /tmp/kinitro-exbench-XXXX)"
chmod 755 "$WORK" # the managed PostgreSQL runs as the postgres user when root
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# "tid kind ticks preemptions" per thread of process $1; kind is worker (episode workers and Mesa's
# llvmpipe rasteriser threads, which render for them) or other; preemptions are the thread's
# involuntary context switches (another thread took its core while it could still run).
thread_ticks() { for t in /proc/"$1"/task/*; do
  printf '%s %s %s %s\n' "${t##*/}" "$(grep -Eq '^(episode-worker|llvmpipe)' "$t/comm" && echo worker || echo other)" \
    "$(awk '{print $14 + $15}' "$t/stat")" "$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status")"
done 2>/dev/null; }
TICK=$(getconf CLK_TCK)
# Integer member $2 of the JSON object $1, parsed in the shell: the progress polls run during the
# measurement, and a Python start-up (through a version-manager shim) every 0.2 s took a fifth of
# this 2-core machine away from the executor.
json_int() { [[ $1 =~ \"$2\":([0-9]+) ]] && echo "${BASH_REMATCH[1]}" || echo 0; }
tasks_stats() { curl -s "http://127.0.0.1:$1/v1/tasks/stats"; }
# Steps the executor on metrics port $1 has simulated (0 until its /metrics is up).
steps_done() { { curl -s "http://127.0.0.1:$1/metrics" || true; } | awk '/^kinitro_sim_step_seconds_count/ { s += $NF } END { printf "%d", s }'; }
# Saves the executor's (pid $1, metrics on port $2) CPU ticks, per-thread ticks, /metrics and the time
# as $WORK/$3.*.
snapshot() {
  curl -s "http://127.0.0.1:$2/metrics" > "$WORK/$3.metrics" || true # not up yet: no steps
  cpu_ticks "$1" > "$WORK/$3.ticks"; thread_ticks "$1" > "$WORK/$3.threads"; date +%s.%N > "$WORK/$3.time"
}
# Copies snapshot $1 as $2.
cp_snapshot() { for f in "$WORK/$1".*; do cp "$f" "$WORK/$2.${f##*.}"; done; }

# The baseline of a case is measured right before it and again right after it (the executor and
# `kinitro run` stopped), and the case is compared with the mean of the two: this shared VM's speed
# drifts by up to 15 % within minutes, so one measurement on one side of the case may not match the
# speed the case itself ran at. Physics alone runs 300 episodes (about 6 s): shorter runs varied
# by ±10 % from one to the next; with images rendering dominates, and 4 episodes keep it short.
# The in-process run behind every baseline: zero-policy pick-place episodes; its JSON summary is the
# last line. Arguments: the number of episodes, then any further flags.
env_test() { local episodes=$1; shift
  "$BIN" env test metaworld/pick-place-v3 --policy zero --episodes "$episodes" --max-steps "$STEPS" "$@" --json | tail -1
}
measure_baseline() { # images(true|false): sets BASELINE and prints it
  local images=$1 episodes line summary
  episodes=$([ "$images" = true ] && echo 4 || echo 300)
  line=$(env_test "$episodes" $([ "$images" = true ] || echo --no-images))
  { read -r BASELINE; read -r summary; } < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1])
physics, render, encode = 1e3 / d["steps_per_second"], d["render_ms_mean"] or 0, d["encode_ms_mean"]
print(physics + render + encode)
print("baseline (in-process, %s episodes): physics %.3f ms/step (%.0f env steps/s) + render %.3f + encode %.4f = %.3f ms/step" % (sys.argv[2], physics, d["steps_per_second"], render, encode, physics + render + encode))' "$line" "$episodes")
  echo "$summary"
}

# Without images the baseline is also measured with every core busy: one copy per core (one per pool
# at the executor's default), all at once, as the executor's episode workers run. On this shared VM
# one busy core can run faster than two (the host's clock boost), by up to a tenth some hours and
# not at all in others; this second ratio shows how much of the first is that.
measure_busy_baseline() { # sets BUSY_BASELINE and prints it
  local copies i running=(); copies=$(nproc)
  for i in $(seq "$copies"); do env_test 300 --no-images > "$WORK/busy-$i.json" & running+=($!); done
  wait "${running[@]}"
  BUSY_BASELINE=$(python3 -c 'import json,sys
ds = [json.load(open(f)) for f in sys.argv[1:]]
print(sum(1e3 / d["steps_per_second"] + d["encode_ms_mean"] for d in ds) / len(ds))' "$WORK"/busy-*.json)
  echo "baseline with all $copies cores busy ($copies copies at once): $(printf '%.3f' "$BUSY_BASELINE") ms/step"
}

run_case() { # images(true|false) delay_ms K episodes
  local images=$1 delay=$2 k=$3 EPISODES=$4 api_port miners_file="$WORK/miners-$1-$2-$3.toml"
  measure_baseline "$images"
  local busy=0; if [ "$images" = false ]; then measure_busy_baseline; busy=$BUSY_BASELINE; fi
  : > "$miners_file"
  for uid in 0 1 2 3; do
    local p; p=$(free_port)
    "$BIN" miner serve --policy zero --port "$p" --delay-ms "$delay" >/dev/null 2>&1 & PIDS+=($!)
    printf '[[miners]]\nuid = %d\nhotkey = "hk%d"\nendpoint = "http://127.0.0.1:%d"\ncommit_block = %d\n\n' "$uid" "$uid" "$p" "$((100 + uid))" >> "$miners_file"
  done
  api_port=$(free_port)
  KINITRO_EXECUTOR_POOLS=0 KINITRO_SCHEDULER_EPISODES_PER_ENV=$((EPISODES / 4)) \
    KINITRO_SCHEDULER_ENV_IDS=metaworld/pick-place-v3 KINITRO_SCHEDULER_POLL_INTERVAL_SECONDS=1 \
    "$BIN" run --no-auth --data-dir "$WORK/data-$images-$delay-$k" --port "$api_port" --miners-file "$miners_file" \
    >"$WORK/run.log" 2>&1 & local run_pid=$!; PIDS+=($run_pid)
  until curl -sf "http://127.0.0.1:$api_port/health" >/dev/null; do kill -0 "$run_pid" || { cat "$WORK/run.log"; exit 1; }; sleep 0.2; done
  until [ "$(json_int "$(tasks_stats "$api_port")" pending_tasks)" -ge "$EPISODES" ]; do sleep 0.2; done
  local metrics_port; metrics_port=$(free_port)
  KINITRO_EXECUTOR_METRICS_ADDR="127.0.0.1:$metrics_port" \
  KINITRO_EXECUTOR_USE_IMAGES=$images KINITRO_EXECUTOR_EPISODES_PER_POOL=$k KINITRO_EXECUTOR_MAX_TIMESTEPS=$STEPS \
    KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS=true KINITRO_EXECUTOR_SPOOL_DIR="$WORK/spool" KINITRO_EXECUTOR_POLL_INTERVAL_SECONDS=0.2 \
    "$BIN" executor --api-url "http://127.0.0.1:$api_port" >"$WORK/executor.log" 2>&1 & local ex_pid=$!; PIDS+=($ex_pid)
  sleep 0.5
  # Two windows: the whole run (from 0.5 s after the executor starts: its start-up, loading and
  # compiling the scene, the first resets, included) and the steady state (from the end of the first
  # eighth of the steps to the end of the seventh eighth: the per-step cost with every slot busy).
  # At each edge: the executor's CPU ticks, per-thread ticks and preemptions, its /metrics (step
  # count, physics/render/encode sums) and the time.
  local snap=0 done_count=0 stats stepped total=$((EPISODES * STEPS))
  snapshot "$ex_pid" "$metrics_port" start
  while [ "$done_count" -lt "$EPISODES" ]; do
    sleep 0.2
    stats=$(tasks_stats "$api_port")
    done_count=$(( $(json_int "$stats" completed_tasks) + $(json_int "$stats" failed_tasks) ))
    stepped=$(steps_done "$metrics_port")
    if [ "$snap" = 0 ] && [ "$stepped" -ge $((total / 8)) ]; then snapshot "$ex_pid" "$metrics_port" steady0; snap=1; fi
    if [ "$snap" = 1 ] && [ "$stepped" -ge $((total - total / 8)) ]; then snapshot "$ex_pid" "$metrics_port" steady1; snap=2; fi
  done
  snapshot "$ex_pid" "$metrics_port" end
  [ "$snap" -ge 1 ] || cp_snapshot end steady0; [ "$snap" -ge 2 ] || cp_snapshot end steady1 # too short to tell
  local peak_rss before=$BASELINE; peak_rss=$(awk '/^VmHWM/ { print int($2 / 1024) }' "/proc/$ex_pid/status")
  kill "$ex_pid" "$run_pid" 2>/dev/null || true; wait "$ex_pid" "$run_pid" 2>/dev/null || true
  measure_baseline "$images" > "$WORK/after.txt"; sed 's/^baseline/baseline after the case/' "$WORK/after.txt"
  BASELINE=$(python3 -c "print(($before + $BASELINE) / 2)")
  echo "baseline: mean of before and after = $(printf '%.3f' "$BASELINE") ms/step"
  if [ "$images" = false ]; then
    measure_busy_baseline | sed 's/^baseline/baseline after the case/'
    busy=$(python3 -c "print(($busy + $BUSY_BASELINE) / 2)")
  fi
  python3 - "$images" "$delay" "$k" "$TICK" "$EPISODES" "$WORK" "$peak_rss" "$BASELINE" "$busy" <<'EOF'
import functools, sys
images, delay, k, tick, episodes, work, rss, baseline, busy = sys.argv[1:]
tick, baseline, busy = int(tick), float(baseline), float(busy)
@functools.cache
def load(name):
    snap = {"time": float(open(f"{work}/{name}.time").read()), "ticks": int(open(f"{work}/{name}.ticks").read())}
    snap["threads"] = {t: (kind, int(ticks), int(pre)) for t, kind, ticks, pre in
                       (l.split() for l in open(f"{work}/{name}.threads") if len(l.split()) == 4)}
    metrics = [l.rsplit(" ", 1) for l in open(f"{work}/{name}.metrics") if not l.startswith("#") and " " in l]
    def total(suffix, names):
        return sum(float(v) for m, v in metrics if any(m.startswith(n + suffix) for n in names))
    snap["steps"] = total("_count", ["kinitro_sim_step_seconds"])
    snap["worker_wall"] = total("_sum", ["kinitro_sim_step_seconds", "kinitro_render_seconds", "kinitro_obs_encode_seconds"])
    snap["acts"] = total("_count", ["kinitro_miner_action_latency_seconds"])
    snap["act_time"] = total("_sum", ["kinitro_miner_action_latency_seconds"])
    return snap
def window(label, a, b):
    a, b = load(a), load(b)
    wall, n, cpu = b["time"] - a["time"], b["steps"] - a["steps"], (b["ticks"] - a["ticks"]) / tick
    if n <= 0:
        return print(f"  {label}: not measured (the run was too short to sample it)")
    workers = pre = 0
    for t, (kind, ticks, p) in b["threads"].items():
        if kind == "worker":
            _, ticks0, p0 = a["threads"].get(t, (kind, 0, 0))
            workers += (ticks - ticks0) / tick; pre += p - p0
    print(f"  {label}: {n / wall:5.0f} env steps/s, executor CPU {1e3 * cpu / n:6.3f} ms/step = {1e3 * cpu / n / baseline:.2f}x the baseline"
          + (f" ({1e3 * cpu / n / busy:.2f}x with all cores busy)" if busy else "") +
          f" (episode workers and their rasteriser {1e3 * workers / n:.3f}, arbiters and the rest {1e3 * (cpu - workers) / n:.3f});"
          f" workers' physics+render+encode wall time {1e3 * (b['worker_wall'] - a['worker_wall']) / n:.3f} ms/step;"
          f" workers preempted {pre / n:.2f} times per step;"
          f" /act round trip {1e3 * (b['act_time'] - a['act_time']) / max(b['acts'] - a['acts'], 1):.2f} ms on average")
wall = load("end")["time"] - load("start")["time"]
print(f"images {'on ' if images == 'true' else 'off'} delay {int(delay):>2} ms K {int(k):>3} ({episodes} episodes): "
      f"{int(episodes) / wall:.2f} episodes/s, peak RSS {rss} MiB")
window("whole run   ", "start", "end")
window("steady state", "steady0", "steady1")
EOF
  echo "  miner timeouts: $(grep -c "Miner action timeout" "$WORK/executor.log" || true)"
}

echo "== executor (4 zero-policy miners, pick-place episodes of $STEPS steps) =="
for images in ${BENCH_IMAGES:-on off}; do
  for delay in ${BENCH_DELAYS:-0 20}; do
    if [ "$images" = on ]; then run_case true "$delay" 8 "$EPISODES"; else run_case false "$delay" "${BENCH_K_OFF:-128}" "$EPISODES_OFF"; fi
  done
done
