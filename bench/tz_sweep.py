"""The refinement objective along depth (tz) through the true pose, on independent X-rays.

Depth is the one parameter a single view barely sees: it shows only as
magnification. This sweeps tz through the truth (other parameters at the
truth) on DiffDRR X-rays from ``bench/realism.py`` and finds each curve's peak
(a parabola through the best three samples). The set-ups compared:

- *patch-ncc*: the X-ray resampled to the model's detector (128² on the chest
  model), patch NCC, what refinement's model levels use;
- *gradncc*: the model's detector, gradient NCC, what its last level used there
  until ``RefineConfig.last_objective``;
- *last*: the model's detector, ``RefineConfig.last_objective`` (local gradient
  NCC), what its last level uses there now (an X-ray no finer than the model's);
- *native*: when ``--size`` is finer than the model's detector, the X-ray's own
  pixels and ``RefineConfig.native_objective``, what the last level uses on them.

``--field disc:R`` keeps only a central disc of radius R x the width (``ring:R``:
only what lies outside it), to see where in the field depth is placed.

Prints the mean and standard deviation of the peak offsets (mm) per set and
set-up, and with ``--plot`` draws the normalised curves (docs/img/tz_sweep.png).

    python bench/tz_sweep.py MODEL_DIR [--n 8] [--seed 1234] [--sets clean,scatter] [--size 256]
                             [--field disc:0.38] [--plot FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from realism import make_xray, render_shots, set_effects, set_rng  # noqa: E402


def peak(offsets: np.ndarray, values: np.ndarray) -> float:
    """Sub-sample argmax: a parabola through the best sample and its neighbours."""
    i = int(np.clip(values.argmax(), 1, len(values) - 2))
    a, b, c = values[i - 1 : i + 2]
    den = a - 2 * b + c
    return float(offsets[i] + (0.5 * (a - c) / den if den < 0 else 0.0) * (offsets[1] - offsets[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--sets", default="clean,scatter")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--half-mm", type=float, default=3.0)
    ap.add_argument("--field", default="", help="disc:R or ring:R (R: a fraction of the width): the part of the field kept")
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    kind, _, radius = args.field.partition(":")
    if args.field and (kind not in ("disc", "ring") or not radius):
        ap.error("--field takes disc:R or ring:R")

    from xctreg.preprocess import prepare_xray
    from xctreg.register import RefineConfig, Registrar
    from xctreg.objectives import get_objective

    shots, cam = render_shots(args.model_dir, args.n, args.seed, args.size)
    mu = 4.0 / float(np.quantile(np.stack([s.L for s in shots]), 0.99))
    mu_bone = 4.0 / float(np.quantile(np.stack([s.L_bone for s in shots]), 0.99))
    reg = Registrar(args.model_dir)
    cfg = RefineConfig()
    setups = {"patch-ncc": (reg.camera, "patch-ncc"), "gradncc": (reg.camera, "gradncc"), "last": (reg.camera, cfg.last_objective)}
    if cam.height * cam.width > reg.camera.height * reg.camera.width:
        setups["native"] = (cam, cfg.native_objective)
    keep = None
    if args.field:
        v, u = np.mgrid[0 : cam.height, 0 : cam.width]
        inside = (u - (cam.width - 1) / 2) ** 2 + (v - (cam.height - 1) / 2) ** 2 <= (float(radius) * cam.width) ** 2
        keep = (inside if kind == "disc" else ~inside).astype(np.float32)
    offsets = np.linspace(-args.half_mm, args.half_mm, 25)
    curves: dict[tuple[str, str], list[np.ndarray]] = {}
    for name in (s for s in args.sets.split(",") if s):
        rng = set_rng(args.seed, name)
        for shot in shots:
            img = make_xray(shot, set_effects(name), rng, mu, mu_bone)
            for label, (c, sim) in setups.items():
                xr = prepare_xray(img, cam, c, mask=keep)
                P = np.repeat(shot.truth[None], len(offsets), 0)
                P[:, 5] += offsets
                with torch.no_grad():
                    drr = reg.renderer(c)(torch.as_tensor(P, dtype=torch.float32))[:, 0]
                f = get_objective(sim)
                y, m = torch.as_tensor(xr.image), torch.as_tensor(xr.mask)
                curves.setdefault((name, label), []).append(np.array([float(f(d, y, m)) for d in drr]))
        for label in setups:
            pk = [peak(offsets, v) for v in curves[name, label]]
            print(json.dumps({"set": name, "setup": label, "peak_mean_mm": float(np.mean(pk)), "peak_std_mm": float(np.std(pk)),
                              "peaks_mm": [round(p, 2) for p in pk]}), flush=True)  # fmt: skip
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = sorted({n for n, _ in curves})
        k = len(setups)
        fig, axes = plt.subplots(len(names), k, figsize=(4 * k, 3.2 * len(names)), sharey=True, squeeze=False)
        for j, (name, label) in enumerate((n, lab) for n in names for lab in setups):
            ax = axes[j // k, j % k]
            for v in curves[name, label]:
                ax.plot(offsets, (v - v.min()) / max(np.ptp(v), 1e-12), lw=1)
                ax.axvline(peak(offsets, v), color="k", alpha=0.25, lw=0.8)
            ax.axvline(0, color="r", lw=1)
            c, sim = setups[label]
            ax.set_title(f"{name}, {label}: {c.height}², {sim}", fontsize=9)
            ax.set_xlabel("tz offset from the truth (mm)")
        for row in axes:
            row[0].set_ylabel("objective (normalised per X-ray)")
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=90)


if __name__ == "__main__":
    main()
