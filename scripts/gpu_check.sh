#!/usr/bin/env bash
# One device run: install the carried wheels, show the GPU, run bench/gpu_check.py on CUDA,
# then the CPU render/physics/model tests as a check that the wheels import.
#
#   device run:  bash scripts/gpu_check.sh        (carry: [".whl"]; build .whl with scripts/device_wheels.py)
#   local try:   PYTHON=.venv/bin/python DEVICE=cpu CHECK_ARGS=--quick NO_WHEELS=1 bash scripts/gpu_check.sh
#
# Writes $OUT/gpu_check.log, $OUT/gpu_check.jsonl and $OUT/pytest.log ($OUT defaults to ./out).
# Time limits: gpu_check 210 s, pytest 120 s (each is killed at its limit, so the call ends in time).
# Exit status: non-zero when gpu_check or pytest fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

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
nproc
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| available', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

echo "== bench/gpu_check.py --device $DEVICE ${CHECK_ARGS:-}"
t0=$(date +%s)
# shellcheck disable=SC2086
timeout -k 10 210 "$PY" -u bench/gpu_check.py --device "$DEVICE" --out "$OUT/gpu_check.jsonl" ${CHECK_ARGS:-} 2>&1 | tee "$OUT/gpu_check.log"
rc_check=$?
echo "gpu_check exit $rc_check after $(( $(date +%s) - t0 )) s (124 = timed out)"

echo "== pytest (CPU): ${PYTEST_ARGS:-tests/test_render.py tests/test_physics.py tests/test_models.py}"
t0=$(date +%s)
# shellcheck disable=SC2086
timeout -k 10 120 "$PY" -m pytest -x -q -p no:cacheprovider ${PYTEST_ARGS:-tests/test_render.py tests/test_physics.py tests/test_models.py} > "$OUT/pytest.log" 2>&1
rc_test=$?
tail -30 "$OUT/pytest.log"
echo "pytest exit $rc_test after $(( $(date +%s) - t0 )) s (124 = timed out)"

echo "== done: gpu_check exit $rc_check, pytest exit $rc_test"
[ "$rc_check" -eq 0 ] && [ "$rc_test" -eq 0 ]
