#!/usr/bin/env bash
# kill -9 during training, then --resume: the run ends with the same weights as one that was never
# interrupted (CPU, fixed seed). A real process and a real signal, unlike tests/test_models.py,
# which stops a run in-process at a checkpoint.
#
#   bash scripts/fault_demo.sh            (about a minute on 2 cores; PYTHON=... to choose the interpreter)
#
# Both runs train the tiny test configuration (xctreg.train.quick_test_config: the small phantom,
# 32² X-rays) for STEPS steps with a checkpoint every 5. The second is killed with SIGKILL at a
# random moment after its first checkpoint (mid-step, or mid-write of a checkpoint, which is
# atomic), then resumed from its last.pt. Exit status 0 when the final weights are bitwise equal.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STEPS=${STEPS:-60}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONWARNINGS=ignore

train() {  # train OUT RESUME(0|1)
    "$PY" - "$1" "$2" "$STEPS" <<'PY'
import sys
from xctreg.data.phantom import PhantomConfig, make_phantom
from xctreg.train import Trainer, quick_test_config

out, resume, steps = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
ct = make_phantom(PhantomConfig(size=(64, 64, 64), spacing_mm=(6.0, 6.0, 6.0)))
cfg = quick_test_config(steps=steps, ckpt_every=5, val_every=10)
Trainer(ct, out, cfg, log=lambda s: None).fit(resume=resume)
PY
}

echo "1/3 an uninterrupted run of $STEPS steps"
train "$WORK/full" 0

echo "2/3 the same run, killed with SIGKILL after its first checkpoint"
train "$WORK/part" 0 &
pid=$!
while [ ! -f "$WORK/part/last.pt" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "the run ended before its first checkpoint; raise STEPS"; exit 1; }
    sleep 0.05
done
sleep "0.$(( RANDOM % 10 ))"
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
step=$("$PY" -c "from pathlib import Path; from xctreg.models.checkpoint import load_checkpoint; print(load_checkpoint(Path('$WORK/part/last.pt'))['step'])")
echo "    killed; its last checkpoint is at step $step of $STEPS"
[ "$step" -lt "$STEPS" ] || { echo "the kill came after the run's end; lower STEPS' speed or raise STEPS"; exit 1; }
leftover=$(find "$WORK/part" -name '.*tmp*' | wc -l)
echo "    temporary files left by the kill: $leftover"

echo "3/3 --resume"
train "$WORK/part" 1
"$PY" - "$WORK/full/last.pt" "$WORK/part/last.pt" <<'PY'
import sys
from pathlib import Path

import torch

from xctreg.models.checkpoint import load_checkpoint

a, b = (load_checkpoint(Path(p)) for p in sys.argv[1:3])
assert a["step"] == b["step"], (a["step"], b["step"])
diff = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
print(f"    final step {a['step']}: {len(a['model']) - len(diff)} of {len(a['model'])} tensors bitwise equal")
sys.exit(1 if diff else 0)
PY
echo "OK: the resumed run ended with the same weights"
