"""Derivative-free refinement, the conventional baseline (the method's Table 2): CMA-ES or Powell.

The same pyramid of levels, the same objective and the same start as gradient refinement
(``register.refine``), but the pose is searched with forward renders only: CMA-ES (the
``cmaes`` package; each generation is rendered as one batch) or Powell's method (scipy).
The search works in scaled parameters: at level k a unit step is ``scale_deg`` degrees or
``scale_mm`` mm times ``RefineConfig.lr_decay``^k, so that each level searches finer, as
gradient refinement's learning rates do. It shows what the differentiable renderer buys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from xctreg.geometry import Camera, PoseReference
from xctreg.register import Refinement, RefineConfig, VolumeSource, cached_renderer, level_inputs
from xctreg.render import Renderer
from xctreg.objectives import get_objective

Method = Literal["cma-es", "powell"]
METHODS: tuple[str, ...] = ("cma-es", "powell")


@dataclass(frozen=True)
class SearchConfig:
    """How the derivative-free search runs on each level of ``RefineConfig.sizes``.

    Attributes:
        evaluations: the most objective evaluations (renders) per level.
        scale_deg, scale_mm: the search's unit step on the first level (deg, mm); CMA-ES's
            initial step size is one unit.
        population: CMA-ES's population (renders per generation, one batch); 0 = its default.
        seed: CMA-ES's random seed.
        seconds: a wall-time budget for the whole search (s), shared by the levels in
            proportion to ``evaluations``; None = no limit. With the seconds gradient
            refinement took, the two are compared at equal time.
    """

    evaluations: tuple[int, ...] = (300, 200, 150)
    scale_deg: float = 2.0
    scale_mm: float = 5.0
    population: int = 0
    seed: int = 0
    seconds: float | None = None


class _OutOfTime(Exception):
    """The level's wall-time budget is spent."""


def refine_derivative_free(
    volume: VolumeSource,
    image: np.ndarray,
    camera: Camera,
    reference: PoseReference,
    start_params: np.ndarray,
    method: Method = "cma-es",
    config: RefineConfig | None = None,
    search: SearchConfig | None = None,
    mask: np.ndarray | None = None,
    renderers: dict[Any, Renderer] | None = None,
    device: torch.device | str = "cpu",
) -> Refinement:
    """Refine pose parameters (deg, mm) so that the DRR matches ``image`` (H, W, bone bright),
    as ``register.refine`` does, with ``method`` instead of gradient steps. ``Refinement.iterations``
    counts the objective evaluations (renders)."""
    if method not in METHODS:
        raise ValueError(f"unknown derivative-free method {method!r}; use {', '.join(METHODS)}")
    cfg, sc = config or RefineConfig(), search or SearchConfig()
    sim_fn = get_objective(cfg.objective)
    t0 = time.perf_counter()
    target = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    m_full = None if mask is None else torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    p = np.asarray(start_params, dtype=np.float64).copy()
    best_s, total, path = -2.0, 0, []
    budgets = sc.evaluations if len(sc.evaluations) == len(cfg.sizes) else (sc.evaluations[-1],) * len(cfg.sizes)
    shares = np.cumsum(budgets) / float(sum(budgets))
    for level, (size, budget) in enumerate(zip(cfg.sizes, budgets, strict=True)):
        deadline = None if sc.seconds is None else t0 + sc.seconds * float(shares[level])
        cam, y, mk = level_inputs(camera, target, m_full, size)
        r = cached_renderer(renderers, volume, cam, cfg.render, reference, device)
        y, mk = y.to(r.device), None if mk is None else mk.to(r.device)
        unit = np.repeat([sc.scale_deg, sc.scale_mm], 3) * cfg.lr_decay**level

        @torch.no_grad()
        def scores(z: np.ndarray, r: Renderer = r, y: torch.Tensor = y, mk: torch.Tensor | None = mk, unit: np.ndarray = unit,
                   origin: np.ndarray = p.copy()) -> np.ndarray:  # fmt: skip
            """Similarities of the scaled points ``z`` (K, 6) around ``origin``."""
            q = torch.as_tensor(origin + np.atleast_2d(z) * unit, dtype=torch.float32)
            drr = r(q)[:, 0]
            m = None if mk is None else mk.expand_as(drr)
            return sim_fn(drr, y.expand_as(drr), m).double().cpu().numpy()

        z, s, n = (_cma if method == "cma-es" else _powell)(scores, budget, sc, deadline)
        p = p + z * unit
        best_s, total = s, total + n
        path.append(p.copy())
    return Refinement(p, best_s, total, time.perf_counter() - t0, np.asarray(path).reshape(-1, 6))


def _cma(scores: Any, budget: int, sc: SearchConfig, deadline: float | None = None) -> tuple[np.ndarray, float, int]:
    """CMA-ES from 0 with step 1 for ``budget`` evaluations or until ``deadline`` (``time.perf_counter``);
    the best point seen, its score, the count."""
    from cmaes import CMA

    opt = CMA(mean=np.zeros(6), sigma=1.0, seed=sc.seed, population_size=sc.population or None)
    best_z, best_s, n = np.zeros(6), float(scores(np.zeros((1, 6)))[0]), 1
    while n + opt.population_size <= budget and not opt.should_stop() and (deadline is None or time.perf_counter() < deadline):
        zs = np.stack([opt.ask() for _ in range(opt.population_size)])
        s = scores(zs)  # one batch of renders
        n += len(zs)
        opt.tell([(z, -float(v)) for z, v in zip(zs, s, strict=True)])
        k = int(np.argmax(s))
        if s[k] > best_s:
            best_z, best_s = zs[k].copy(), float(s[k])
    return best_z, best_s, n


def _powell(scores: Any, budget: int, sc: SearchConfig, deadline: float | None = None) -> tuple[np.ndarray, float, int]:
    """Powell's method (scipy) from 0 for at most ``budget`` evaluations or until ``deadline``
    (``time.perf_counter``); the best point, its score, the count."""
    from scipy.optimize import minimize

    seen = {"n": 0, "z": np.zeros(6), "s": -np.inf}

    def f(z: np.ndarray) -> float:
        if deadline is not None and seen["n"] > 0 and time.perf_counter() >= deadline:
            raise _OutOfTime
        s = float(scores(z[None])[0])
        seen["n"] += 1
        if s > seen["s"]:
            seen["z"], seen["s"] = np.asarray(z, dtype=np.float64).copy(), s
        return -s

    try:
        minimize(f, np.zeros(6), method="Powell", options={"maxfev": budget, "xtol": 1e-3, "ftol": 1e-7})
    except _OutOfTime:
        pass
    return seen["z"], float(seen["s"]), int(seen["n"])
