"""Gradient refinement against the conventional derivative-free one (the method's Table 2), and
refinement without the network, on X-rays from an independent renderer.

    python bench/baselines.py MODEL_DIR [--n 10] [--seed 2027] [--sets clean,realistic] [--out F.json]

The X-rays are `bench/realism.py`'s (DiffDRR's Siddon renderer, other physics, seeded
held-out poses; report seed 2027) on the model's detector. Every method starts from the
regressor's pose of the same X-ray (the last row: from the reference pose, no network) and
uses the same pyramid (32, 64, 128 px) and objective (patch NCC) as gradient refinement's
model levels (`register.refine`):

The rows are ``evaluate.run_baselines``' (what `xctreg evaluate --baselines` runs) plus one:

- ``gradient, model levels``: `register.refine`, Adam steps through the differentiable renderer;
- ``cma-es, model levels``, ``powell, model levels``: `baselines.refine_derivative_free`,
  forward renders only, run to convergence (or their render budget);
- ``cma-es, equal time``, ``powell, equal time``: the same, stopped when they have used the
  wall time gradient refinement took on that X-ray;
- ``no network``: `Registrar.register` started from the reference pose instead of the regressor's;
- ``register``: the whole `Registrar.register` (restarts and the last level on gradient NCC).

Each row: mTRE median and mean ± std, SR@10, NCC / SSIM / CSS between the X-ray and the final
DRR, renders (or steps), seconds per X-ray and the mean signed error of each parameter. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--sets", default="clean,realistic")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import realism as R

    from xctreg.evaluate import BaselineRun, run_baselines
    from xctreg.geometry import PoseSpace
    from xctreg.metrics import mtre, target_points
    from xctreg.register import Registrar

    reg = Registrar(args.model_dir)
    shots, cam = R.render_shots(args.model_dir, args.n, args.seed, None)
    mu = 4.0 / float(np.quantile(np.stack([s.L for s in shots]), 0.99))
    mub = 4.0 / float(np.quantile(np.stack([s.L_bone for s in shots]), 0.99))
    pts = torch.as_tensor(target_points(reg.ct(), 5000))
    T = lambda q: reg.space.to_matrix(torch.as_tensor(np.asarray(q), dtype=torch.float64))  # noqa: E731
    out: dict = {"model": str(args.model_dir), "n": args.n, "seed": args.seed, "sets": {}}
    for name in args.sets.split(","):
        rng = R.set_rng(args.seed, name)
        imgs = [R.make_xray(s, R.set_effects(name), rng, mu, mub) for s in shots]
        rows: dict[str, dict[str, list[float]]] = {}
        for img, shot in zip(imgs, shots, strict=True):
            runs = run_baselines(reg, img, cam)
            t = time.perf_counter()
            full = reg.register(img, cam)
            runs["register"] = BaselineRun(full.params, time.perf_counter() - t, full.similarity, full.iterations)
            for method, run in runs.items():
                row = rows.setdefault(method, {k: [] for k in ("mtre", "ncc", "ssim", "css", "s", "work", "signed")})
                row["mtre"].append(float(mtre(T(run.params), T(shot.truth), pts)))
                row["signed"].append(PoseSpace.difference(np.asarray(run.params), np.asarray(shot.truth)).tolist())
                row["s"].append(run.seconds)
                row["work"].append(run.work)
                for k, v in run.similarity.items():
                    row[k].append(float(v))
            print(name, {m: round(v["mtre"][-1], 2) for m, v in rows.items()}, flush=True)
        out["sets"][name] = {m: summarise(v) for m, v in rows.items()}
        print(markdown(name, out["sets"][name]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


def summarise(v: dict[str, list[float]]) -> dict[str, float]:
    e = np.asarray(v["mtre"])
    return {"median": float(np.median(e)), "mean": float(e.mean()), "std": float(e.std()), "sr_10mm": float(np.mean(e < 10)),
            "ncc": float(np.mean(v["ncc"])), "ssim": float(np.mean(v["ssim"])), "css": float(np.mean(v["css"])),
            "work": float(np.mean(v["work"])), "s": float(np.mean(v["s"])),
            "bias": np.asarray(v["signed"]).reshape(-1, 6).mean(0).tolist()}  # fmt: skip


def markdown(name: str, rows: dict[str, dict[str, float]]) -> str:
    lines = [f"| {name} | mTRE median | mean ± std (mm) | SR@10 | NCC | SSIM | CSS | renders or steps | s / X-ray | "
             "bias rx ry rz (°) | bias tx ty tz (mm) |", "|---" * 11 + "|"]  # fmt: skip
    for m, r in rows.items():
        b = r["bias"]
        lines.append(f"| {m} | {r['median']:.2f} | {r['mean']:.2f} ± {r['std']:.2f} | {r['sr_10mm']:.0%} | {r['ncc']:.3f} | "
                     f"{r['ssim']:.3f} | {r['css']:.3f} | {r['work']:.0f} | {r['s']:.1f} | "
                     f"{' '.join(f'{v:+.2f}' for v in b[:3])} | {' '.join(f'{v:+.2f}' for v in b[3:])} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
