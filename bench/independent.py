"""A trained model on clean X-rays from an independent renderer: ``bench/realism.py --sets clean``.

Kept as a short name for the most common question ("how good is the model on
X-rays that xctreg did not render?"). Everything, the options included, is
``bench/realism.py``'s: DiffDRR 0.6.1's Siddon ray tracer on the
full-resolution CT, its own HU -> density ramp, monoenergetic Beer–Lambert,
Poisson noise, a Gaussian detector blur and 16-bit quantisation, at poses drawn
with ``--seed`` (2027 to report; tune on another).

    python bench/independent.py MODEL_DIR [--n 20] [--seed 2027] [--size 256] [--out result.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import realism  # noqa: E402

if __name__ == "__main__":
    if not any(a == "--sets" or a.startswith("--sets=") for a in sys.argv[1:]):
        sys.argv[1:1] = ["--sets", "clean"]
    realism.main()
