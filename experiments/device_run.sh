#!/usr/bin/env bash
# One prepared call on a lent GPU machine (a fixed slice of device time): install rubikkit with its
# CUDA kernels, check them against the reference, measure the GPU benchmarks, then run experiment
# grids until a time budget is spent. What is worth keeping is copied to $OUT: the records files
# of the grids it ran, benchmarks/RESULTS.md and one log.
#
# On the machine that sends the call, first copy the data beside the working tree (the data
# folder next to the checkout does not travel; .device_data is gitignored and never committed):
#     make device-data
# then run, from the repository root of the GPU machine, carrying .device_data:
#     bash experiments/device_run.sh BUDGET_S experiments/adrenal28_scratch_resnet18.json [...]
# and copy $OUT/*.jsonl back into results/ (each is the whole file: old records plus new ones).
#
# BUDGET_S: seconds after which the grids start no further run (a run already going finishes),
# so leave room for the longest single run under the call's own time limit.
# STEPS (environment, default "install test bench exp") picks the parts; RUBIKKIT_CUDA_ARCH
# (default 90: H100/H200) the CUDA architectures compiled.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  echo "usage: $0 BUDGET_S [CONFIG ...]" >&2
  exit 2
fi
budget=$1
shift
case "$budget" in
  '' | *[!0-9]*) echo "BUDGET_S: expected whole seconds, got '$budget'" >&2; exit 2 ;;
esac
for cfg in "$@"; do
  [ -f "$cfg" ] || { echo "CONFIG: $cfg not found" >&2; exit 2; }
done
steps=" ${STEPS:-install test bench exp} "
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
log="$out/device_run.log"
export PYTHONUNBUFFERED=1
export RUBIKKIT_DATA=${RUBIKKIT_DATA:-$PWD/.device_data}
export RUBIKKIT_TEST_DATA=${RUBIKKIT_TEST_DATA:-$RUBIKKIT_DATA}
py=${PYTHON:-python3}
start=$(date +%s)
say() { echo "== $(($(date +%s) - start)) s: $*" | tee -a "$log"; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee -a "$log"

if [[ $steps == *" install "* ]]; then
  say "install (CUDA architectures ${RUBIKKIT_CUDA_ARCH:-90})"
  RUBIKKIT_CUDA=1 RUBIKKIT_CUDA_ARCH=${RUBIKKIT_CUDA_ARCH:-90} \
    "$py" -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -n 5 | tee -a "$log"
  "$py" -m rubikkit info 2>&1 | tee -a "$log"
fi
if [[ $steps == *" test "* ]]; then
  say "CUDA kernel tests"
  "$py" -m pytest -q -p no:cacheprovider tests/test_puzzle_cuda.py 2>&1 | tail -n 15 | tee -a "$log"
fi
if [[ $steps == *" bench "* ]]; then
  say "benchmarks"
  "$py" benchmarks/puzzle.py --runs 1 --pause 0 --write 2>&1 | tail -n 12 | tee -a "$log"
  "$py" benchmarks/pretrain.py --device cuda --write 2>&1 | tail -n 8 | tee -a "$log"
  cp benchmarks/RESULTS.md "$out/"
fi
if [[ $steps == *" exp "* ]] && [ $# -gt 0 ]; then
  for cfg in "$@"; do
    left=$((budget - ($(date +%s) - start)))
    if [ "$left" -le 0 ]; then
      say "budget spent before $cfg"
      break
    fi
    say "experiment $cfg (budget $left s)"
    "$py" -m rubikkit experiment run "$cfg" --device auto --no-progress --time-budget "$left" \
      2>&1 | tee -a "$log" || say "experiment $cfg failed"
    name=$(basename "$cfg" .json)
    [ -f "results/$name.jsonl" ] && cp "results/$name.jsonl" "$out/"
  done
fi
say "done"
