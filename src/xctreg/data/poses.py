"""Pose sampling for training data (rx ry rz in degrees, tx ty tz in mm, within the sampling ranges):
uniform or Sobol, with seeded, disjoint splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from xctreg.errors import XctregError
from xctreg.geometry import PoseRanges


def sample_poses(
    n: int, ranges: PoseRanges | None = None, seed: int = 0, method: Literal["uniform", "sobol"] = "uniform", skip: int = 0
) -> np.ndarray:
    """(n, 6) parameters (deg, mm) within ``ranges``.

    "uniform": independent uniform draws (NumPy PCG64, ``seed``).
    "sobol": a scrambled Sobol sequence (low discrepancy, torch SobolEngine,
    ``seed`` scrambles it); ``skip`` draws are skipped first, so disjoint index
    ranges of one sequence give disjoint, jointly low-discrepancy sets.
    """
    if n < 0:
        raise XctregError(f"number of poses must be >= 0, got {n}")
    lo, hi = (ranges or PoseRanges()).bounds()
    if method == "uniform":
        u = np.random.default_rng(seed).random((skip + n, 6))[skip:]
    elif method == "sobol":
        eng = torch.quasirandom.SobolEngine(6, scramble=True, seed=seed)
        if skip:
            eng.fast_forward(skip)
        u = eng.draw(n, dtype=torch.float64).numpy()
    else:
        raise XctregError(f"unknown sampling method {method!r}; use uniform or sobol")
    return lo + (hi - lo) * u


@dataclass(frozen=True)
class SplitConfig:
    """Sizes of the train/val/test pose sets, the ranges, the method and the seed."""

    n_train: int = 10000
    n_val: int = 200
    n_test: int = 200
    ranges: PoseRanges = field(default_factory=PoseRanges)
    method: Literal["uniform", "sobol"] = "uniform"
    seed: int = 0


def make_splits(cfg: SplitConfig) -> dict[str, np.ndarray]:
    """Train/val/test parameter arrays: disjoint slices of one seeded stream."""
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    total = sum(sizes.values())
    allp = sample_poses(total, cfg.ranges, cfg.seed, cfg.method)
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = allp[start : start + n]
        start += n
    return out
