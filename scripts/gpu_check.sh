#!/usr/bin/env bash
# One device run: install the carried wheels, show the GPU, then, each stage under its own time limit
# (so the call ends in time and a stage that hangs costs only its own share):
#   1. tests/test_cuda.py: the GPU path end to end against the CPU (augmentation, noise, Registrar, demo);
#   2. bench/register.py: warm refinement on the GPU vs the CPU, same X-rays and starts (a CT from .devdata/);
#   3. bench/gpu_check.py: renderer parity and speed, regressor parity, a training step;
#   4. bench/nanodrr_speed.py: xctreg's renderer against nanodrr's, same grid, detector and poses;
#   5. a timed `xctreg train --preset quick` on the GPU (cut at its limit: data generation and steps/s).
#
#   device run:  bash scripts/gpu_check.sh     (carry: [".whl", ".devdata"]; build .whl with scripts/device_wheels.py,
#                                               .devdata/chest_half.nii.gz: the chest CT at half its in-plane resolution)
#   local try:   PYTHON=.venv/bin/python DEVICE=cpu QUICK=1 NO_WHEELS=1 bash scripts/gpu_check.sh
#
# Writes its logs under $OUT (default ./out). Exit status: the number of stages that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$PWD/out}
CT=${CT:-.devdata/chest_half.nii.gz}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
T_START=$(date +%s)

if [ -z "${NO_WHEELS:-}" ]; then
    "$PY" -c "import lzma" || { echo "this Python has no lzma module: the LZMA-packed wheels cannot be installed"; exit 2; }
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/*.whl here: name .whl in the run's carry"; exit 2; }
    t0=$(date +%s)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 2; }
    echo "wheels installed into /tmp/site in $(( $(date +%s) - t0 )) s: $(ls .whl | tr '\n' ' ')"
    export PYTHONPATH=/tmp/site:$PWD/src
else
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi

echo "== machine"
nvidia-smi -L 2>&1 || echo "(no nvidia-smi)"
echo "cores: $(nproc)"
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| available', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

FAILED=0
SUMMARY=""
# stage NAME LIMIT_S CMD...: run CMD under a time limit, its output to the terminal and $OUT/NAME.log
stage() {
    local name=$1 limit=$2; shift 2
    echo "== [$name] (limit ${limit} s, at +$(( $(date +%s) - T_START )) s): $*"
    local t0; t0=$(date +%s)
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== [$name] exit $rc after $(( $(date +%s) - t0 )) s (124 = timed out)"
    SUMMARY="$SUMMARY $name=$rc"
    [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
}

if [ -n "${QUICK:-}" ]; then N=1; CHECK_ARGS=--quick; TRAIN_S=20; else N=4; CHECK_ARGS=""; TRAIN_S=80; fi

stage cuda_tests 100 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py
if [ -f "$CT" ]; then
    stage register 100 "$PY" -u bench/register.py --ct "$CT" --n "$N" --device "$DEVICE" --reference-device cpu
else
    echo "== [register] skipped: no $CT (carry .devdata)"
fi
# shellcheck disable=SC2086
stage gpu_check 170 "$PY" -u bench/gpu_check.py --device "$DEVICE" --out "$OUT/gpu_check.jsonl" $CHECK_ARGS
# shellcheck disable=SC2086
stage nanodrr 60 "$PY" -u bench/nanodrr_speed.py --device "$DEVICE" --out "$OUT/nanodrr.jsonl" $CHECK_ARGS
if [ -f "$CT" ]; then
    rm -rf /tmp/train_quick
    stage train_quick "$TRAIN_S" "$PY" -u -m xctreg train "$CT" --out /tmp/train_quick --preset quick --device "$DEVICE"
    cp /tmp/train_quick/train_log.csv "$OUT/train_log.csv" 2>/dev/null
    { echo "== files (mtime in s)"; ls -la --time-style=+%s /tmp/train_quick /tmp/train_quick/data/*; } >> "$OUT/train_quick.log" 2>&1
fi

echo "== done after $(( $(date +%s) - T_START )) s:$SUMMARY"
exit "$FAILED"
