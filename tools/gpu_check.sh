#!/usr/bin/env bash
# Everything issue 21 measures on the GPU, in one command of at most 8 minutes:
#   1. install mamba_ssm (and causal_conv1d, if its wheel is there) from the carried wheels;
#   2. the GPU tests (test/test_gpu.py) and the CPU-reference tests of the same code;
#   3. cobra-bench at the full cobra-3b shape, bf16, random weights drawn on the GPU (nothing is
#      downloaded or written to disk), saving its JSON after every stage, and its PNG.
# Each stage has its own time budget; results, logs and a summary go to $OUT (default ./gpu-out).
#
# On the device machine the checkout travels without ../shared, so copy the wheel in first (here):
#   echo /.gpu-wheels/ >> .git/info/exclude
#   mkdir -p .gpu-wheels && cp ../shared/gpu-wheels/mamba_ssm-*.whl .gpu-wheels/
# then run, with carry [".gpu-wheels"]:   bash tools/gpu_check.sh
# Here, on the CPU: `bash tools/gpu_check.sh --dry-run` runs the same stages at the micro preset
# (no wheel installed; the GPU tests skip).
set -uo pipefail

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0

# stage NAME BUDGET_S COMMAND...: runs COMMAND under its time budget, logs to $OUT/NAME.log
stage() {
  local name=$1 budget=$2 start=$SECONDS rc
  shift 2
  echo "== $name (budget ${budget}s)"
  timeout --signal=TERM --kill-after=10 "$budget" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  echo "$name: rc=$rc in $((SECONDS - start))s (budget ${budget}s)" | tee -a "$SUMMARY"
  [ "$rc" -eq 0 ] || FAILED=1
}

install_wheels() {
  local wheels=()
  for dir in .gpu-wheels shared/gpu-wheels ../shared/gpu-wheels; do
    if compgen -G "$dir/mamba_ssm-*.whl" > /dev/null; then
      wheels=("$dir"/mamba_ssm-*.whl)
      compgen -G "$dir/causal_conv1d-*.whl" > /dev/null && wheels+=("$dir"/causal_conv1d-*.whl)
      break
    fi
  done
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "no mamba_ssm wheel in .gpu-wheels/ or shared/gpu-wheels/ (see the header of $0)" >&2
    return 1
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${wheels[@]}" &&
    PYTHONPATH=/tmp/site "$PY" -c "import mamba_ssm, torch; print('mamba_ssm', mamba_ssm.__version__,
      'torch', torch.__version__, torch.cuda.get_device_name())"
}

if [ "$DRY" -eq 1 ]; then
  echo "dry run: CPU, micro preset, no wheel installed" | tee -a "$SUMMARY"
  stage tests 120 "$PY" -m pytest -q -p no:cacheprovider test/test_gpu.py
  stage bench 240 "$PY" -m cobra_ros.cli.bench --preset micro --device cpu --new-tokens 12 --batch 2 \
    --yes-no-repeats 3 --prompt-lengths 64,128 --questions 1,4 --scan-tokens 64 --json "$OUT/bench.json"
else
  export -f install_wheels
  export PY
  stage install 45 bash -c install_wheels
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee -a "$SUMMARY"
  stage tests 120 "$PY" -m pytest -q -p no:cacheprovider test/test_gpu.py test/test_mamba.py \
    test/test_engine_batch.py
  stage bench 300 "$PY" -m cobra_ros.cli.bench --preset cobra-3b --device cuda --dtype bfloat16 \
    --json "$OUT/bench.json"
fi
echo "results in $OUT:"; ls -l "$OUT"
cat "$SUMMARY"
exit "$FAILED"
