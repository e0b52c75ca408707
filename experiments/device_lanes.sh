#!/usr/bin/env bash
# Runs of one config in several processes side by side on one GPU ("lanes"), each lane running
# its seeds one after another, while rubikkit's CUDA kernels are built and tested in a copy of the
# tree in the background (the training does not need the compiled extension: the puzzle op falls
# back to torch). The compiled module joins this tree, and so the lanes' next runs, only once the
# kernel's tests have passed; if they fail, the lanes keep the fallback. One training step of the
# 28^3 recipe keeps an H200 busy about half of the loop's time (benchmarks/RESULTS.md), so two
# lanes may finish more runs in a lease than one.
#
#     bash experiments/device_lanes.sh DEADLINE_S CONFIG LANE [LANE ...]
#
# LANE is `[METHODS:]SEEDS`: the methods the lane runs (comma-separated, default scratch) and its
# comma-separated seeds, e.g. `... 570 experiments/adrenal28_ssl_resnet18.json rubik:0 scratch:0,1`
# (a method with pre-training runs it, its proxy evaluation and its fine-tunings).
# DEADLINE_S: seconds after the start when a run still going is stopped (its record is then not
# written; the records already written stay). Each lane gets nproc / lanes CPU threads. The data
# of a config that reads a dataset other than the phantoms must lie under RUBIKKIT_DATA (default
# .device_data, `make device-data`), or the script stops at once (status 2). It ends with status 1
# when a run failed other than by the deadline (the records and logs still come back).
#
# CHECKS=1 (environment): once the kernels have joined, run the puzzle benchmark (`--write`) with
# the lanes' processes paused (SIGSTOP, then SIGCONT) so that it times a quiet GPU; the paused
# seconds count in the wall time of the runs going then (the log says how long; the benchmark is
# stopped at DEADLINE_S). INSTALL=0 skips the build (and with it the tests and the benchmark): the
# lanes use whatever module the tree has.
# EXTRA (environment) is added to every `rubikkit experiment run` (e.g. `--max-steps 2`).
#
# A second call on the still-warm machine finds runs/ as the first left it (ignored paths stay), so
# a run stopped at the deadline resumes from its last.pt; but results/ comes from the sending
# tree: copy the returned records file into results/ first, or the finished runs are scored again.
#
# To $OUT (at most 8 files come back): the config's records file, benchmarks/RESULTS.md (with
# CHECKS=1), and logs.tgz: one log per lane, the install's and the checks' logs, nvidia-smi
# samples every 5 s (gpu_util.csv), and every run's log.jsonl and metrics.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
  echo "usage: $0 DEADLINE_S CONFIG LANE [LANE ...]" >&2
  exit 2
fi
deadline=$1
cfg=$2
shift 2
case "$deadline" in
  '' | *[!0-9]*) echo "DEADLINE_S: expected whole seconds, got '$deadline'" >&2; exit 2 ;;
esac
[ -f "$cfg" ] || { echo "CONFIG: $cfg not found" >&2; exit 2; }
lane_methods=()
lane_seeds=()
for lane in "$@"; do
  seeds=${lane#*:}
  methods=scratch
  [ "$seeds" = "$lane" ] || methods=${lane%%:*}
  lane_methods+=("$methods")
  lane_seeds+=("$seeds")
  case "$seeds" in
    '' | *[!0-9,]* | ,* | *, | *,,*) echo "LANE: expected [METHODS:]SEEDS like rubik:0 or 1,3, got '$lane'" >&2; exit 2 ;;
  esac
  case "$methods" in
    '' | *[!a-z0-9_,]* | ,* | *, | *,,*) echo "LANE: expected METHODS like scratch or rubik,ordering, got '$lane'" >&2; exit 2 ;;
  esac
done
data=${RUBIKKIT_DATA:-$PWD/.device_data}
# shellcheck source=experiments/device_data_check.sh
. experiments/device_data_check.sh
check_data "$cfg" "$data"
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
logs=$(mktemp -d)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export RUBIKKIT_DATA=$data
threads=$(($(nproc) / $#))
[ "$threads" -ge 1 ] || threads=1
name=$(basename "$cfg" .json)
extra=${EXTRA:-}

smi=
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 \
    >"$logs/gpu_util.csv" 2>&1 &
  smi=$!
fi

checks() {
  # device_run.sh's install and CUDA tests in a copy of the tree (logs: device_run.log,
  # install.log, cuda_tests.log, cpp_errors.log), then, with CHECKS=1, the puzzle benchmark here.
  local stage rc=0 so
  stage=$(mktemp -d)
  tar -cf - --exclude=./runs --exclude=./results --exclude=./.device_data --exclude=./build \
    --exclude=./.git . | tar -xf - -C "$stage"
  (cd "$stage" && PYTHONPATH=$stage OUT=$logs STEPS="install test" nice bash \
    experiments/device_run.sh 0) >/dev/null 2>&1 || rc=$?
  case $rc in
    0) ;;
    4)
      echo "== $SECONDS s: CUDA kernel tests FAILED: the lanes keep the torch fallback"
      return 1
      ;;
    *) echo "== $SECONDS s: install or tests did not run (status $rc)"; return 1 ;;
  esac
  so=$(basename "$stage"/rubikkit/_C*.so)
  cp "$stage/rubikkit/$so" "rubikkit/.$so.part" && mv "rubikkit/.$so.part" "rubikkit/$so"
  echo "== $SECONDS s: kernels built and tested; runs starting from now use them"
  [ "${CHECKS:-0}" = 1 ] || return 0
  # 5 s short of the deadline, where the call stops these checks: a benchmark bounded by the
  # deadline itself raced that stop, and the lanes could be left unlogged (or paused) by it.
  local t0=$SECONDS left=$((deadline - SECONDS - 5))
  [ "$left" -gt 0 ] || return 0
  pkill -STOP -f "rubikkit experiment run" || true
  echo "== $SECONDS s: lanes paused for the puzzle benchmark"
  # Bounded: the paused lanes' timeouts are paused too, so a benchmark that hung would hold the
  # lanes, and the call, past the deadline.
  timeout "$left" "$py" benchmarks/puzzle.py --runs 1 --pause 0 --write \
    --note "training processes of $name paused (SIGSTOP) during the run" \
    >"$logs/puzzle_bench.log" 2>&1 || echo "== puzzle benchmark failed"
  pkill -CONT -f "rubikkit experiment run" || true
  echo "== $SECONDS s: lanes resumed after $((SECONDS - t0)) s"
  cp benchmarks/RESULTS.md "$out/"
}

lane() {
  local methods=$1 seeds=$2 seed left
  for seed in ${seeds//,/ }; do
    left=$((deadline - SECONDS))
    if [ "$left" -le 30 ]; then
      echo "== $SECONDS s: deadline near, $methods seed $seed not started"
      break
    fi
    echo "== $SECONDS s: $methods seed $seed (stopped after $left s)"
    # shellcheck disable=SC2086  # EXTRA is split into arguments on purpose
    OMP_NUM_THREADS=$threads timeout "$left" "$py" -m rubikkit experiment run "$cfg" \
      --seeds "$seed" --methods "$methods" --device auto --no-progress $extra || {
      rc=$?
      echo "== $SECONDS s: stopped: $methods seed $seed (status $rc)"
      # 124 is the deadline; any other status is a failure, which the call's status reports.
      [ "$rc" -eq 124 ] || echo "$methods seed $seed: status $rc" >>"$logs/failed"
    }
  done
  echo "== $SECONDS s: lane done"
}

# A process and everything it started (the checks' install, tests and benchmark).
kill_tree() {
  local child
  kill -STOP "$1" 2>/dev/null || return 0  # no new children meanwhile
  for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
  kill -CONT "$1" 2>/dev/null || true
}

inst=
if [ "${INSTALL:-1}" = 1 ]; then
  checks >"$logs/checks.log" 2>&1 &
  inst=$!
fi
pids=()
for i in "${!lane_seeds[@]}"; do
  lane "${lane_methods[$i]}" "${lane_seeds[$i]}" >"$logs/lane$((i + 1)).log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}" || true
if [ -n "$inst" ]; then
  # The checks pause the lanes only while they run; past the deadline they are not waited for.
  left=$((deadline - SECONDS))
  if [ "$left" -gt 0 ] && kill -0 "$inst" 2>/dev/null; then timeout "$left" tail --pid="$inst" -f /dev/null || true; fi
  if kill -0 "$inst" 2>/dev/null; then
    kill_tree "$inst"
    echo "checks stopped at the deadline" >>"$logs/checks.log"
  fi
  pkill -CONT -f "rubikkit experiment run" || true
fi
[ -z "$smi" ] || kill "$smi" 2>/dev/null || true
[ ! -f "results/$name.jsonl" ] || cp "results/$name.jsonl" "$out/"
runs=()
if [ -d "runs/$name" ]; then
  while IFS= read -r f; do runs+=("$f"); done < <(find "runs/$name" -name log.jsonl -o -name metrics.json)
fi
if [ ${#runs[@]} -gt 0 ]; then
  tar -czf "$out/logs.tgz" -C "$logs" . -C "$PWD" "${runs[@]}"
else
  tar -czf "$out/logs.tgz" -C "$logs" .
fi
tail -n 4 "$logs"/lane*.log "$logs/checks.log" 2>/dev/null || true
[ ! -f "$logs/puzzle_bench.log" ] || tail -n 25 "$logs/puzzle_bench.log"
if [ -f "$logs/failed" ]; then
  echo "runs that failed (not stopped by the deadline; see the lane logs in logs.tgz):"
  cat "$logs/failed"
  exit 1
fi
