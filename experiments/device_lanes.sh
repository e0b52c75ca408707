#!/usr/bin/env bash
# From-scratch seeds of one config in several processes side by side on one GPU ("lanes"), each
# lane running its seeds one after another, while rubikkit installs with its CUDA kernels in the
# background (the fine-tunings do not need the compiled extension). One training step of the
# 28^3 recipe keeps an H200 busy about half of the loop's time (benchmarks/RESULTS.md), so two
# lanes may finish more runs in a lease than one.
#
#     bash experiments/device_lanes.sh DEADLINE_S CONFIG SEEDS [SEEDS ...]
#
# SEEDS is one lane's comma-separated seeds, e.g. `... 570 experiments/adrenal28_scratch_resnet18.json
# 1,3 2,4`. DEADLINE_S: seconds after the start when a run still going is stopped (its record is
# then not written; the records already written stay). Each lane gets nproc / lanes CPU threads.
# To $OUT: the config's records file, every run's log.jsonl, nvidia-smi samples every 5 s
# (gpu_util.csv) and one log per lane and for the install.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
  echo "usage: $0 DEADLINE_S CONFIG SEEDS [SEEDS ...]" >&2
  exit 2
fi
deadline=$1
cfg=$2
shift 2
case "$deadline" in
  '' | *[!0-9]*) echo "DEADLINE_S: expected whole seconds, got '$deadline'" >&2; exit 2 ;;
esac
[ -f "$cfg" ] || { echo "CONFIG: $cfg not found" >&2; exit 2; }
for lane in "$@"; do
  case "$lane" in
    '' | *[!0-9,]* | ,* | *, | *,,*) echo "SEEDS: expected seeds like 1,3, got '$lane'" >&2; exit 2 ;;
  esac
done
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export RUBIKKIT_DATA=${RUBIKKIT_DATA:-$PWD/.device_data}
threads=$(($(nproc) / $#))
[ "$threads" -ge 1 ] || threads=1
name=$(basename "$cfg" .json)

nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 \
  >"$out/gpu_util.csv" 2>&1 &
smi=$!
# device_run.sh's install step alone (pip's full output to $OUT/install.log, its summary to
# $OUT/device_run.log).
OUT=$out STEPS=install nice bash experiments/device_run.sh 0 >/dev/null 2>&1 &
inst=$!

lane() {
  local seed left
  for seed in ${1//,/ }; do
    left=$((deadline - SECONDS))
    if [ "$left" -le 30 ]; then
      echo "== $SECONDS s: deadline near, seed $seed not started"
      break
    fi
    echo "== $SECONDS s: seed $seed (stopped after $left s)"
    OMP_NUM_THREADS=$threads timeout "$left" "$py" -m rubikkit experiment run "$cfg" \
      --seeds "$seed" --methods scratch --device auto --no-progress || echo "== stopped: seed $seed"
  done
  echo "== $SECONDS s: lane done"
}
pids=()
i=0
for seeds in "$@"; do
  i=$((i + 1))
  lane "$seeds" >"$out/lane$i.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}" || true
kill "$smi" 2>/dev/null || true
[ ! -f "results/$name.jsonl" ] || cp "results/$name.jsonl" "$out/"
if [ -d "runs/$name" ]; then
  find "runs/$name" -name log.jsonl | while read -r f; do
    cp "$f" "$out/$(echo "${f#runs/}" | tr / _)"
  done
fi
wait "$inst" && echo "install done" || echo "install failed: see install.log and device_run.log"
tail -n 3 "$out"/lane*.log
