"""What moves the objective's depth (tz) peak away from the truth? A controlled sweep.

X-rays of the same poses come from several sources: DiffDRR's Siddon line integral (its own
HU -> density ramp), and xctreg's own renderer in "line" mode (the density line integral,
DiffDRR's physics with xctreg's ramp) or "poly" mode (xctreg's spectrum and materials), with
or without Poisson noise, trilinear or exact Siddon. Each is compared, on the model's 128²
detector, with DRRs swept along tz through the true pose (the other five parameters at the
truth); the peak of a parabola through the best samples is where that objective would put
depth. Full field against a central disc (a collimated field), as mean ± sd over the X-rays.

A source whose physics matches the sweep's gives the control (the inverse crime): its peak
must sit at 0. Rows that differ in one thing only say what that thing does.

    python bench/depth_cause.py MODEL_DIR [--n 6] [--seed 1234] [--radius 0.35] [--size 256]

Measured on the tuning split (seed 1234); docs/register.md has the table and what it showed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realism import gaussian_blur, render_shots  # noqa: E402

from xctreg.preprocess import prepare_xray  # noqa: E402
from xctreg.register import Registrar, parabola_peak  # noqa: E402
from xctreg.render import RenderConfig  # noqa: E402
from xctreg.objectives import get_objective  # noqa: E402

OFFSETS = np.linspace(-3.0, 3.0, 25)  # mm of tz around the truth


def peak(values: np.ndarray) -> float:
    """The peak (mm) of the parabola through the samples within 1.5 mm of the best one."""
    sel = np.abs(OFFSETS - OFFSETS[int(values.argmax())]) <= 1.5
    return parabola_peak(OFFSETS[sel], values[sel])


def disc_mask(h: int, w: int, radius: float) -> torch.Tensor:
    """(h, w) 1 inside a central disc of ``radius`` × the width."""
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= (radius * w) ** 2
    return torch.as_tensor(inside.astype(np.float32))


def noisy(att: np.ndarray, rng: np.random.Generator, photons: float = 3e4) -> np.ndarray:
    """-log of Poisson counts of exp(-att)."""
    return -np.log(np.maximum(rng.poisson(photons * np.exp(-att)), 1.0) / photons)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1234, help="Pose seed (the tuning split by default).")
    ap.add_argument("--radius", type=float, default=0.35, help="Disc radius, a fraction of the width.")
    ap.add_argument("--size", type=int, default=None, help="X-ray detector (px), area-averaged to the model's (default: 2x the model's).")
    args = ap.parse_args()
    reg = Registrar(args.model_dir)
    c = reg.camera
    shots, cam = render_shots(args.model_dir, args.n, args.seed, args.size or 2 * max(c.height, c.width))
    masks = {"full": None, "disc": disc_mask(c.height, c.width, args.radius)}
    line_full = reg.renderer(cam, RenderConfig(voxel_mm=None, mode="line"))
    poly_full = reg.renderer(cam, RenderConfig(voxel_mm=None))
    sweeps = {("poly", "patch-ncc"): reg.renderer(c), ("line", "patch-ncc"): reg.renderer(c, RenderConfig(mode="line")),
              ("poly", "gradncc"): reg.renderer(c), ("poly", "patch-ncc+gradncc"): reg.renderer(c)}  # fmt: skip
    rng = np.random.default_rng(args.seed)
    peaks: dict[tuple[str, str, str, str], list[float]] = {}
    for shot in shots:
        truth = torch.as_tensor(shot.truth[None], dtype=torch.float32)
        with torch.no_grad():
            ours_line = line_full(truth)[0, 0].double().numpy()
            siddon = line_full.siddon_line_integrals(torch.as_tensor(shot.truth[None]))[0, 0].numpy()
            ours_poly = poly_full(truth)[0, 0].double().numpy()
        mu = 4.0 / float(np.quantile(shot.L, 0.99))
        scale = mu * float(np.median(shot.L)) / float(np.median(ours_line))
        sources = {
            "DiffDRR (its ramp, line integral)": mu * shot.L,
            "xctreg line (our ramp)": scale * ours_line,
            "xctreg line + Poisson noise": noisy(scale * ours_line, rng),
            "xctreg line, exact Siddon": scale * siddon,
            "xctreg poly": ours_poly,
        }
        poses = np.repeat(shot.truth[None], len(OFFSETS), 0)
        poses[:, 5] += OFFSETS
        with torch.no_grad():
            drrs = {key: r(torch.as_tensor(poses, dtype=torch.float32))[:, 0] for key, r in sweeps.items()}
        for sname, att in sources.items():
            y = torch.as_tensor(prepare_xray(gaussian_blur(att, 0.8).astype(np.float32), cam, c).image)
            for (mode, simname), d in drrs.items():
                f = get_objective(simname)
                for mname, m in masks.items():
                    v = np.array([float(f(di, y, m)) for di in d])
                    peaks.setdefault((sname, mode, simname, mname), []).append(peak(v))
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"| X-ray ({args.n}, seed {args.seed}) | DRR | objective | peak, full field (mm) | peak, disc r={args.radius:g} (mm) |")
    print("|---|---|---|---|---|")
    for sname, mode, simname in dict.fromkeys((k[0], k[1], k[2]) for k in peaks):
        cells = [f"{np.mean(peaks[(sname, mode, simname, m)]):+.2f} ± {np.std(peaks[(sname, mode, simname, m)]):.2f}" for m in masks]
        print(f"| {sname} | {mode} | {simname} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
