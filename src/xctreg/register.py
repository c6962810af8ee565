"""Pose estimation for X-rays with a trained MODEL_DIR: regression, then refinement.

``Registrar(model_dir).register(image, geometry)`` gives the pose of an X-ray
in its camera (``T_cam_from_world``, CT LPS mm -> C-arm camera; see docs/geometry.md)
with no manual start pose, as a ``Result``:

1. ``preprocess.prepare_xray``: collimated borders are detected and masked, the
   image is resampled to the model's detector and normalised;
2. the regressor's estimate;
3. refinement by gradient descent on the 6 parameters through the
   differentiable renderer: coarse to fine, a selectable objective
   (``xctreg.objectives``), Adam with separate rotation and translation
   learning rates, the best pose kept, a plateau stop, and restarts around
   the start when the objective stays low.

``refine`` can also be used alone from any start pose.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from xctreg._fs import sha256_file
from xctreg.errors import XctregError
from xctreg.geometry import (
    ROT,
    TRANS,
    Camera,
    Pose,
    PoseReference,
    PoseSpace,
    image_orientation_check,
    positioner_to_view,
    projection_matrix,
    read_camera,
    view_name,
    view_rotation_delta,
)
from xctreg.io.volume import Volume, read_volume
from xctreg.metrics import image_scores
from xctreg.optim import Adam
from xctreg.preprocess import PreparedXray, PreprocessConfig, prepare_xray
from xctreg.render import RenderConfig, Renderer
from xctreg.render.drr import auto_voxel_mm, has_material_volume, level_voxel_mm, material_volume, pyramid_level
from xctreg.render.levels import level_path, load_level, save_level
from xctreg.objectives import blur, get_objective, outlier_mask, with_blur
from xctreg.models.checkpoint import load_model
from xctreg.newton import NewtonConfig, refine_newton, view_terms
from xctreg.newton import available as newton_available


@dataclass
class Regression:
    """The regressor's answer: the pose, its parameters (deg, mm) and the seconds it took."""

    pose: Pose
    params: np.ndarray
    seconds: float


@dataclass(frozen=True)
class RefineConfig:
    """Coarse-to-fine refinement.

    Attributes:
        sizes: image sizes (px, longest side) of the levels; capped at the camera's size.
        iterations: the most Adam steps per level.
        lr_rot_deg, lr_trans_mm: Adam learning rates (degrees and mm per step) of the first level.
        lr_decay: the learning rates' factor from one level to the next (finer steps on finer images).
        patience, min_gain: stop a level after ``patience`` steps without a gain of ``min_gain``.
            8 (was 12): on the tuning split (20 independent X-rays per set, chest) as accurate
            (128²: clean 0.30 / 0.63 mm median / p95 against 0.31 / 0.78) and about 0.5 s
            faster per X-ray.
        objective: the model levels' objective, a name from ``xctreg.objectives.OBJECTIVES``
            (``xctreg register --similarity``): local gradient NCC (was patch NCC). On the
            independent X-rays, patch NCC weighs smooth shading, whose shape depends on the
            X-ray's physics: with scatter, it left depth off by up to 6.6 mm after the model
            levels, which the last level's short depth search could not take back (leaving
            out one effect at a time on the six worst X-rays: without scatter, 0.2 to 1.0 mm).
            Tuning split (seed 1234, 40 DiffDRR X-rays per set, chest one-stage quick model,
            128², 2 cores), median / p95 / max mm, tz bias ± sd, patch NCC → local gradient NCC:
            realistic 0.67 / 2.04 / 6.58, +0.52 ± 1.22 → 0.54 / 1.38 / 1.77, +0.22 ± 0.74;
            clean 0.22 / 0.39, +0.00 → 0.21 / 0.38, +0.02; collimator 0.40 / 0.74 → 0.40 /
            0.84; low dose 0.29 / 0.54 → 0.28 / 0.53; scatter 0.18 / 0.36 (local gradient NCC);
            from 1.2-1.3 to 1.0-1.3 s per X-ray. Converged scores are lower than patch NCC's
            (about 0.89 on clean X-rays, 0.64-0.78 on realistic ones, against 0.98 and 0.91-0.95),
            still above ``restart_below``.
        restarts, restart_below, restart_spread, restart_objective: up to ``restarts`` more
            runs from the start perturbed by ±spread (deg, mm) while ``restart_objective`` at the
            best pose so far, on the finest model level, stays below ``restart_below``. It is
            patch NCC whatever ``objective`` is: local gradient NCC's peak falls with noise
            (a phantom at 1e4 photons: 0.47 where patch NCC has 0.9), so it cannot tell a wrong
            pose from a noisy X-ray by one threshold.
        native_size, native_search, native_iterations: one last level, once, after the
            restarts, from their best pose. It runs on the X-ray's own pixels when its detector is
            finer than the model's (at most ``native_size`` px, longest side; 0 = never), else on
            the model's detector. Depth (tz) shows only as magnification: on the chest, 1 mm
            moves the image's edges by 0.04 model pixels, so finer pixels place it better.
            ``native_search`` says how it moves the pose: "adam+depth" (the default: at most
            ``native_iterations`` Adam steps on all six parameters, then the depth line search),
            "adam" or "depth" alone, or "none". The line search (``search_depth``:
            ``depth_rounds`` batched sweeps of ``depth_samples`` poses over ±``depth_half_mm``,
            halved each round, forward renders only, ``depth_objective``) places tz; the Adam
            steps place the out-of-plane rotations, which the model levels leave at ±0.1° and
            which weigh most in the mTRE. Tuning split (20 independent X-rays per set, chest
            quick model), median / p95 mm and tz bias, line search alone → Adam alone →
            adam+depth:
              256² clean 0.32 / 0.54, −0.01 → 0.21 / 0.38, +0.02 → 0.17 / 0.33, −0.07;
              256² realistic 0.51 / 1.19, +0.16 → 0.46 / 1.12, +0.36 → 0.34 / 0.66, −0.07;
              256² leaky iris 0.38 / 0.87, +0.22 → 0.25 / 0.53, +0.10 → 0.22 / 0.43, +0.03;
              128² clean 0.30 / 0.66, +0.01 → 0.20 / 0.53, −0.04 → 0.20 / 0.51, −0.08;
              128² realistic 0.54 / 0.88, +0.12 → 0.41 / 1.28, +0.37 → 0.29 / 0.74, −0.09.
            It costs about 1 s more per X-ray than the line search alone (128²: 2.6–3.7 s
            against 2.8 s warm on 2 cores; 256²: about 1.5 s more).
        last_iterations: the Adam steps of that level when it runs on the model's detector (it
            then takes the place of the model level of that size); ``native_iterations`` when it
            runs on the X-ray's own finer pixels, after the model levels. 10 native steps (was 20)
            and one depth round of 5 samples (was 2 rounds of 7): tuning split (20 independent
            X-rays per set, chest quick model of 2026-11-28, 2 cores, warm), median / p95 mm, tz
            bias, s per X-ray, before → after:
              256² clean 0.17 / 0.40, −0.07, 3.5 s → 0.18 / 0.41, −0.07, 2.6 s;
              256² realistic 0.35 / 0.70, −0.05, 4.5 s → 0.34 / 0.72, +0.04, 2.9 s;
              128² clean 0.31 / 1.11, −0.19, 1.14 s → 0.31 / 1.12, −0.20, 0.95 s;
              128² realistic 0.64 / 1.30, −0.12, 1.38 s → 0.63 / 1.49, −0.05, 1.20 s (paired
              mTRE change +0.01 ± 0.16 mm).
            The depth line search's parabola is well determined: 5 or 7 samples, 1 or 2 rounds move
            tz by less than 0.005 mm. Fewer Adam steps are not free: 6 native steps (256²
            realistic, max 0.75 → 1.2 mm) or 10 on the model's detector (128² realistic p95 1.30
            → 3.3 mm, tz bias +0.39) lose accuracy; dropping the 128 px model level before the
            native one does too (256² clean 0.17 → 0.22 mm).
        native_objective, depth_objective: the objectives of that level's Adam steps and
            of its line search on the X-ray's own finer pixels (on the model's detector:
            ``last_objective``): gradient NCC. Depth shows as where edges fall; patch NCC also
            weighs smooth shading, whose shape depends on the X-ray's physics (spectrum, bone
            contrast, scatter), and where the field is collimated that moves its tz peak (tz
            sweeps through the truth, 128², a central disc: +1.5 ± 1.0 mm with patch NCC, +0.3 ±
            0.15 with gradient NCC). Tuning split, 256², line search alone: realistic set tz
            bias +0.42 → +0.11 mm, p95 1.43 → 1.08 mm; clean unchanged (0.32 / 0.54 mm). Adam
            steps on patch NCC: realistic 1.07 / 2.41 mm, tz +1.03.
        last_objective: the objective of that level's Adam steps, blur estimate and line
            search when it runs on the model's detector (an X-ray no finer than the model's;
            ``native_objective`` and ``depth_objective`` then do not apply): local gradient NCC
            (``objectives.local_gradncc``). At the model's coarse pixels, global gradient NCC
            is ruled by a few strong edges (spine, diaphragm, body outline) whose contrast
            depends on the X-ray's physics; normalising each 9 px window weighs every edge alike
            and takes out scatter's and the heel effect's smooth change of local contrast.
            Tuning split (seed 1234, 20 independent X-rays per set, chest quick model, 128²),
            median / p95 mm, tz bias ± sd, gradient NCC → local gradient NCC: clean 0.36 / 0.81,
            −0.18 ± 0.35 → 0.22 / 0.34, +0.01 ± 0.15; scatter 0.45 / 1.34, −0.37 → 0.25 / 0.36,
            +0.02; heel 0.35 / 1.10 → 0.22 / 0.39; instrument 0.37 / 0.81 → 0.21 / 0.34;
            low dose 0.33 / 0.93 → 0.30 / 0.59; realistic 0.58 / 1.14, −0.01 ± 0.78 → 0.47 /
            1.14, +0.28 ± 0.50; same time. Worse on a collimated field: 0.34 / 0.78, +0.05 →
            0.41 / 0.57, +0.28 (in the field's centre the detector blur that the DRR lacks
            shows as depth, docs/register.md). On the X-ray's own finer pixels (256²) it
            was not better: realistic 0.29 / 0.67, +0.01 → 0.38 / 0.93, +0.35, so the native
            level keeps gradient NCC.
        blur_px: a Gaussian blur (σ, pixels of each level) applied to the DRRs before the
            objective; 0 = none. ``register`` sets it for the last level (``match_blur``).
        match_blur, blur_grid_px: the last level first estimates the X-ray's detector blur that
            the DRR lacks (``estimate_blur``: the σ of ``blur_grid_px``, refined by a parabola,
            that best matches the DRR at its start pose to the X-ray with its objective) and
            blurs its DRRs by it. Off: the estimate is right (DiffDRR X-rays blurred by 0.8 and
            1.6 px: 0.7 and 1.4 on every one), but a blurred DRR keeps only coarse edges, whose
            look depends on the X-ray's physics, and those pull depth short. Tuning split
            (128², 20 independent X-rays per set), median / p95 mm, tz bias ± sd, off → on:
            clean 0.37 / 0.78, −0.20 ± 0.37 → 0.40 / 0.70, −0.27 ± 0.29; blur σ 1.6 px
            0.92 / 2.44, −0.06 ± 1.11 → 0.77 / 1.28, −0.54 ± 0.57; realistic 0.62 / 1.26,
            −0.10 ± 0.94 → 0.57 / 2.15, −0.38 ± 0.95.
        native_outliers: when > 0, that level first leaves out the pixels the DRR at its
            start pose cannot explain (``objectives.outlier_mask`` with k = this value). Off:
            on the tuning split it did not help (instrument set) or hurt (all effects), as
            it also drops the misaligned edges that show depth.
        last_optimizer, newton: how that level's steps move the pose. "newton" (the default):
            Levenberg–Marquardt (``xctreg.newton``) with the objective's own curvature, from the
            DRR's Jacobian that the numba kernel gives with each render, at most
            ``newton.iterations`` renders (it falls back to Adam where the renderer is not the
            numba one, e.g. on CUDA). "adam": ``last_iterations`` / ``native_iterations`` Adam
            steps. Newton steps took 3–7 renders on bench/register.py's X-rays where Adam
            took 20. Chest quick model, 128², 40 independent X-rays per set, median / p95 mm,
            paired mean change, s per X-ray (2 cores, warm), Adam → Newton: tuning split (seed
            1234) clean 0.21 / 0.38 → 0.17 / 0.33, −0.035 ± 0.010, 1.07 → 0.66 s; realistic
            0.54 / 1.38 → 0.58 / 1.40, −0.033 ± 0.025, 0.99 → 0.74 s. Report split (seed 2027)
            clean 0.20 / 0.41 → 0.15 / 0.38, realistic 0.53 / 1.40 → 0.49 / 1.55. 256² (tuning,
            20 per set): clean 0.19 → 0.15, realistic 0.31 → 0.26, 2.6 → 1.9 s. A cold register
            takes 2.9 s, a warm one 0.64 s (docs/register.md, "Newton steps in the last level").
        newton_from_px: the levels of ``refine`` of at least this size (px) take Newton steps
            instead of Adam steps, where the renderer is numba's (0: none, the default for the
            model levels; the last level sets it to its own size for ``last_optimizer="newton"``). 64 on the tuning split (128², 40 per set), paired against 0:
            clean −0.006 ± 0.005 mm, 0.77 → 0.64 s; realistic +0.016 ± 0.012 mm (median 0.57 →
            0.62), 0.78 → 0.75 s. Faster, but not better where it matters: off.
        render: how refinement renders its DRRs. Its pose gradient holds the rays' entry and
            exit through the CT's faces fixed (``face_gradient=False``): with that term, the
            tuning split (20 independent X-rays per set, 128², chest) was as accurate (clean
            0.42 / 0.83 mm median / p95 against 0.44 / 0.76; realistic 1.99 / 4.18 against
            2.16 / 4.14) and 0.5 s per X-ray slower (3.5 against 2.9 s clean). On a real
            X-ray the anatomy goes on past a cut-off face anyway.
    """

    sizes: tuple[int, ...] = (32, 64, 128)
    iterations: tuple[int, ...] = (60, 50, 40)
    lr_rot_deg: float = 0.3
    lr_trans_mm: float = 1.0
    lr_decay: float = 0.5
    patience: int = 8
    min_gain: float = 1e-4
    objective: str = "local-gradncc"
    restarts: int = 3
    restart_below: float = 0.6
    restart_spread: tuple[float, float] = (4.0, 8.0)
    restart_objective: str = "patch-ncc"
    native_size: int = 256
    native_search: Literal["adam+depth", "adam", "depth", "none"] = "adam+depth"
    native_iterations: int = 10
    last_iterations: int = 20
    native_objective: str = "gradncc"
    depth_objective: str = "gradncc"
    last_objective: str = "local-gradncc"
    blur_px: float = 0.0
    match_blur: bool = False
    blur_grid_px: tuple[float, ...] = (0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0)
    native_outliers: float = 0.0
    depth_half_mm: float = 1.5
    depth_samples: int = 5
    depth_rounds: int = 1
    last_optimizer: Literal["adam", "newton"] = "newton"
    newton_from_px: int = 0
    newton: NewtonConfig = field(default_factory=NewtonConfig)
    render: RenderConfig = field(default_factory=lambda: RenderConfig(face_gradient=False))


@dataclass
class Refinement:
    """The refined parameters (deg, mm), ``score`` (the objective's final value), the
    iterations used, the trajectory (the parameters at every iteration, (K, 6)) and the
    X-ray's detector blur that the last level estimated (σ, px of that level; 0 when not
    estimated)."""

    params: np.ndarray
    score: float
    iterations: int
    seconds: float
    trajectory: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    blur_px: float = 0.0

    def then(self, params: np.ndarray, iterations: int, seconds: float, trajectory: np.ndarray) -> Refinement:
        """This refinement continued by a later step that moved the pose to ``params``: its
        iterations, seconds and trajectory rows added; the score stays this one's."""
        return Refinement(params, self.score, self.iterations + iterations, self.seconds + seconds,
                          np.concatenate([self.trajectory, trajectory]), self.blur_px)  # fmt: skip


VolumeSource = Volume | Callable[[Camera, RenderConfig], Volume]
"""A CT, or a function giving the CT (or its pyramid level) a (camera, render config) needs."""


def cached_renderer(
    cache: dict[Any, Renderer] | None,
    volume: VolumeSource,
    camera: Camera,
    config: RenderConfig,
    reference: PoseReference,
    device: torch.device | str = "cpu",
) -> Renderer:
    """The renderer of ``volume`` for (camera, config) on ``device``, built once per ``cache``
    (None: no caching). A cache serves one volume and reference, so the key is (camera, config, device).
    ``volume`` may be a function of (camera, config), called only when the renderer is built.
    """
    key = (camera, config, str(torch.device(device)))
    r = cache.get(key) if cache is not None else None
    if r is None:
        vol = volume(camera, config) if callable(volume) else volume
        r = Renderer(vol, camera, config, device=device, reference=reference)
        if cache is not None:
            cache[key] = r
    return r


def level_camera(camera: Camera, size: int) -> Camera:
    """``camera`` resized to at most ``size`` px (longest side, at least 8; never enlarged)."""
    scale = min(1.0, size / max(camera.height, camera.width))
    return camera.resized(max(8, round(camera.height * scale)), max(8, round(camera.width * scale)))


def level_inputs(
    camera: Camera, image: torch.Tensor, mask: torch.Tensor | None, size: int
) -> tuple[Camera, torch.Tensor, torch.Tensor | None]:
    """One refinement level: ``camera`` resized to at most ``size`` px (longest side, at least
    8), the (1, 1, H, W) ``image`` area-averaged onto it (h, w), and the (1, 1, H, W) ``mask``
    kept only where its pixels lie wholly inside (h, w; None stays None)."""
    cam = level_camera(camera, size)
    y = F.interpolate(image, size=(cam.height, cam.width), mode="area")[0, 0]
    mk = None if mask is None else (F.interpolate(mask, size=(cam.height, cam.width), mode="area")[0, 0] > 0.999).float()
    return cam, y, mk


def refine(
    volume: VolumeSource,
    image: np.ndarray | torch.Tensor,
    camera: Camera,
    reference: PoseReference,
    start_params: np.ndarray,
    config: RefineConfig | None = None,
    mask: np.ndarray | None = None,
    renderers: dict[Any, Renderer] | None = None,
    device: torch.device | str = "cpu",
) -> Refinement:
    """Refine pose parameters (deg, mm) so that the DRR matches ``image`` (H, W, bone bright).

    ``volume``: the CT, or a function of (camera, render config) giving it (see ``cached_renderer``).

    ``mask`` (H, W, 1 = use) excludes pixels (e.g. collimated borders) from the objective.
    ``renderers``: a dict kept between calls on the same volume and reference, so that the
    renderer of each level (its pyramid level and material volumes) is built once.
    ``device``: where the DRRs and the objective are computed (the numba kernels on the CPU,
    torch on CUDA, unless ``config.render.backend`` says otherwise); the parameters stay on the CPU.
    """
    cfg = config or RefineConfig()
    sim_fn = with_blur(get_objective(cfg.objective), cfg.blur_px)
    t0 = time.perf_counter()
    target = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    m_full = None if mask is None else torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    p = torch.as_tensor(np.asarray(start_params, dtype=np.float64)).reshape(1, 6)
    best_s, total = -2.0, 0
    path: list[np.ndarray] = []
    for level, (size, iters) in enumerate(zip(cfg.sizes, cfg.iterations, strict=True)):
        cam, y, mk = level_inputs(camera, target, m_full, size)
        r = cached_renderer(renderers, volume, cam, cfg.render, reference, device)
        y, mk = y.to(r.device), None if mk is None else mk.to(r.device)
        if 0 < cfg.newton_from_px <= size and newton_available(r):  # Newton steps instead of Adam's
            fit = refine_newton(view_terms(r, sim_fn, y, mk), p[0].numpy(), cfg.newton)
            p, best_s, total = torch.as_tensor(fit.params).reshape(1, 6), fit.score, total + fit.iterations
            path.extend(fit.trajectory)
            continue
        rot = p[:, ROT].clone().requires_grad_(True)  # degrees and mm: separate learning rates
        tr = p[:, TRANS].clone().requires_grad_(True)
        f = cfg.lr_decay**level
        opt = Adam([([rot], cfg.lr_rot_deg * f), ([tr], cfg.lr_trans_mm * f)])
        best_s, best_p, stale = -2.0, p.clone(), 0
        for _ in range(iters):
            q = torch.cat([rot, tr], 1)
            s = sim_fn(r(q.float())[0, 0], y, mk)
            total += 1
            path.append(q.detach()[0].numpy().copy())
            score = float(s.detach())
            if score > best_s + cfg.min_gain:
                best_s, best_p, stale = score, q.detach().clone(), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
            opt.zero_grad()
            (-s).backward()
            opt.step()
        p = best_p
    traj = np.asarray(path, dtype=np.float64).reshape(-1, 6)
    return Refinement(p[0].numpy(), best_s, total, time.perf_counter() - t0, traj)


def parabola_peak(offsets: np.ndarray, values: np.ndarray) -> float:
    """The maximum of the least-squares parabola through (offsets, values), kept within the
    sampled range; the best sample when the fit is not concave."""
    a, b, _ = np.polyfit(offsets, values, 2)
    if a >= 0:
        return float(offsets[int(np.argmax(values))])
    return float(np.clip(-b / (2 * a), offsets.min(), offsets.max()))


@torch.no_grad()
def search_depth(
    renderer: Renderer,
    image: torch.Tensor,
    mask: torch.Tensor | None,
    params: np.ndarray,
    objective_name: str,
    half_mm: float = 1.5,
    samples: int = 7,
    rounds: int = 2,
    max_extend: int = 2,
    blur_px: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Place depth (tz, mm) by a line search, the other five parameters held.

    Each round renders ``samples`` poses over ±``half_mm`` around the current tz in one
    batch (forward only), moves tz to the peak of the parabola through their objective values,
    and halves the range; when the peak lies at the range's edge, the round is repeated
    around it (at most ``max_extend`` times). Depth shows only as magnification, a smooth,
    nearly quadratic objective near its peak, so a few batched renders place it about as
    well as many gradient steps. ``blur_px``: the DRRs' blur before the objective (see
    ``RefineConfig.blur_px``). Returns the parameters (deg, mm), the parameters after each
    round (K, 6) and the number of renders.
    """
    sim_fn = with_blur(get_objective(objective_name), blur_px)
    image, mask = image.to(renderer.device), None if mask is None else mask.to(renderer.device)
    p = np.asarray(params, dtype=np.float64).copy()
    n, k, extended = 0, 0, 0
    path: list[np.ndarray] = []
    while k < rounds:
        offsets = np.linspace(-half_mm, half_mm, samples) / 2**k
        batch = np.repeat(p[None], samples, 0)
        batch[:, 5] += offsets
        drr = renderer(torch.as_tensor(batch, dtype=torch.float32))[:, 0]
        m = None if mask is None else mask.expand_as(drr)
        values = sim_fn(drr, image.expand_as(drr), m).double().cpu().numpy()
        step = parabola_peak(offsets, values)
        p[5] += step
        n += samples
        path.append(p.copy())
        if abs(step) >= 0.999 * offsets[-1] and extended < max_extend:
            extended += 1  # the peak lies beyond the range: search again around it, as wide
        else:
            k += 1
    return p, np.asarray(path), n


@torch.no_grad()
def estimate_blur(
    renderer: Renderer,
    image: torch.Tensor,
    mask: torch.Tensor | None,
    params: np.ndarray,
    objective_name: str,
    grid_px: tuple[float, ...] = RefineConfig.blur_grid_px,
) -> float:
    """The X-ray's detector blur that the DRR lacks: the Gaussian σ (pixels of ``renderer``'s
    camera) which, applied to the DRR at ``params`` (deg, mm), makes it most similar to
    ``image`` (H, W) inside ``mask`` by the objective ``objective_name``. One render; the
    DRR is blurred by every σ of ``grid_px`` in one batch, and the best one and its
    neighbours are refined by a parabola.
    Near the pose the answer hardly depends on the pose error (chest, 128², DiffDRR X-rays
    blurred by σ 0.8 and 1.6 px at the true pose: 0.7 and 1.4 on a 0.1-0.2 px grid)."""
    sim_fn = get_objective(objective_name)
    image = image.to(renderer.device)
    drr = renderer(torch.as_tensor(np.asarray(params)[None], dtype=torch.float32))[:, 0]
    grid = torch.as_tensor(grid_px, dtype=torch.float64)
    b = blur(drr.expand(len(grid), *drr.shape[-2:]), grid)
    m = None if mask is None else mask.to(renderer.device).expand_as(b)
    values = sim_fn(b, image.expand_as(b), m).double().cpu().numpy()
    i = int(np.argmax(values))
    lo, hi = max(0, i - 1), min(len(grid), i + 2)
    if hi - lo < 3:
        return float(grid[i])
    return max(0.0, parabola_peak(grid[lo:hi].numpy(), values[lo:hi]))


@dataclass
class Result:
    """The registration of one X-ray.

    Attributes:
        pose: the final pose (``T_cam_from_world``, mm) and its parameters (deg, mm).
        initial: the regressor's pose.
        similarity: {"ncc", "ssim", "css"} between the X-ray and the final DRR, inside the field.
        timing_s: {"regress", "refine", "total"} in seconds.
        iterations: refinement steps (0 without refinement).
        trajectory: (K, 6) parameters at each refinement step (deg, mm).
        image: the preprocessed X-ray on the model's detector, [0, 1].
        mask: 1 where the objective looked (exposed field, not user-masked).
        camera: the model camera of ``image`` and ``mask``.
        input_camera: the X-ray's own detector (the pose is the same on both: same source).
        positioner_deg: DICOM (primary, secondary) C-arm angles, when the X-ray had them.
        extra: more keys for the JSON (e.g. the model and CT paths).
    """

    pose: Pose
    initial: Pose
    similarity: dict[str, float]
    timing_s: dict[str, float]
    iterations: int
    trajectory: np.ndarray
    image: np.ndarray
    mask: np.ndarray
    camera: Camera
    input_camera: Camera | None = None
    positioner_deg: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> np.ndarray:
        """The final (rx, ry, rz, tx, ty, tz) in degrees and mm."""
        return np.asarray(self.pose.params, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The result JSON: the pose JSON (``T_cam_from_world``, ``params``, ``reference``) plus
        ``projection_matrix`` (3x4, pixels of the X-ray as given), ``initial`` (the regressor's pose),
        ``similarity`` (ncc, ssim, css), ``timing_s`` and ``iterations``; also ``geometry`` (the
        X-ray's detector), ``positioner`` (DICOM angles and their view) and ``extra``."""
        cam = self.input_camera or self.camera
        d = {
            **self.pose.to_dict(),
            "projection_matrix": projection_matrix(self.pose.T_cam_from_world, cam).tolist(),
            "geometry": cam.to_dict(),
            "initial": self.initial.to_dict(),
            "similarity": dict(self.similarity),
            "timing_s": dict(self.timing_s),
            "iterations": int(self.iterations),
        }
        if self.positioner_deg is not None:
            a, b = self.positioner_deg
            d["positioner"] = {"primary_deg": a, "secondary_deg": b, "view_deg": list(positioner_to_view(a, b))}
        d.update(self.extra)
        return d


def _is_dicom_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a DICOM file (by its suffix or its "DICM" preamble)."""
    from xctreg.io.xray import _is_dicom

    return _is_dicom(Path(path))


def _same_file(a: str | os.PathLike[str] | None, b: str | os.PathLike[str] | None) -> bool:
    return a is not None and b is not None and Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()


class Registrar:
    """A trained patient-specific model, loaded once, for many X-rays.

    ``device`` runs the regressor and refinement's renderer (the numba kernels on the CPU,
    torch on CUDA; ``RefineConfig.render.backend`` can choose). ``strict`` (the default)
    refuses a CT whose SHA-256 differs from the one trained on; ``strict=False`` (the CLI's
    ``--force``) uses it with a warning.
    """

    def __init__(self, model_dir: str | Path, device: torch.device | str = "cpu", strict: bool = True, ct: Volume | None = None) -> None:
        self.dir = Path(model_dir)
        self.device = torch.device(device)
        self.model, self.model_config, self.meta = load_model(self.dir, device=self.device)
        self.camera = Camera.from_dict(self.meta["camera"])
        self.space = PoseSpace.from_dict(self.meta, name=f"{self.dir / 'config.json'}")
        self.reference = self.space.reference
        self._ct = ct
        self.strict = strict
        self._renderers: dict[Any, Renderer] = {}
        self._levels: dict[float, Volume] = {}
        # levels are loaded and stored only for the CT of config.json (read here, or passed in after being read from there)
        self._ct_matches = ct is None or _same_file(ct.path, self.meta.get("ct_path"))
        self._ct_change_msg: str | None | Literal[False] = False  # False: not hashed yet

    def renderer(self, camera: Camera | None = None, config: RenderConfig | None = None) -> Renderer:
        """A renderer of the model's CT (default: the model's camera, default physics), built once."""
        return cached_renderer(self._renderers, self.volume_for, camera or self.camera, config or RenderConfig(), self.reference, self.device)

    def volume_for(self, camera: Camera, config: RenderConfig) -> Volume:
        """The CT, or the pyramid level of it that ``config`` renders ``camera`` from (``level``)."""
        voxel = level_voxel_mm(camera, config.voxel_mm, self.reference.sid_mm)
        return self.ct() if voxel is None else self.level(voxel)

    def level(self, voxel_mm: float) -> Volume:
        """The CT resampled to no axis finer than ``voxel_mm`` (mm), as ``pyramid_level`` makes it.

        Kept in MODEL_DIR/levels (``render.levels``), so that a fresh process loads it instead of
        reading and downsampling the full CT; made and stored there on first use (a model folder
        that cannot be written to only loses the speed-up). A level also works without the CT.
        The levels of ``level_voxels`` also keep their material volumes (a level stored without
        them gets them on its first use).
        """
        voxel = float(voxel_mm)  # exactly the renderer's: a rounded one would make another grid
        hit = self._levels.get(voxel)
        if hit is not None:
            return hit
        path = level_path(self.dir, voxel)
        sha = self.meta.get("ct_sha256")
        if self.strict and self._ct is None and self._ct_change() is not None:
            raise XctregError(self._ct_change())  # the stored levels would spare reading it: check its file anyway
        vol = load_level(path, sha, voxel) if sha and self._ct_matches else None
        # the levels of a default register on the model's detector keep their material volumes
        # too (4x the HU's size; finer levels' rendering outweighs computing them)
        keep = voxel in self.level_voxels()
        if vol is None:
            vol = pyramid_level(self.ct(), voxel)
            self._store_level(path, vol, voxel, keep)
        elif keep and not has_material_volume(vol):  # stored before levels kept their materials (or they were damaged)
            self._store_level(path, vol, voxel, keep, quiet=True)
        self._levels[voxel] = vol
        return vol

    def _store_level(self, path: Path, vol: Volume, voxel_mm: float, materials: bool, quiet: bool = False) -> None:
        """Keep ``vol`` (and its material volumes when ``materials``) at ``path`` when it is the
        CT of config.json's; a folder that cannot be written to warns, unless ``quiet`` (a level
        already stored there, without its materials, still serves)."""
        sha = self.meta.get("ct_sha256")
        if not (sha and self._ct_matches):
            return
        try:
            save_level(path, vol, sha, voxel_mm, materials=material_volume(vol) if materials else None)
        except OSError as exc:
            if not quiet:
                warnings.warn(f"cannot keep the CT's level in {path.parent} ({exc.strerror}); each new process will recompute it", stacklevel=3)

    def level_voxels(self, config: RefineConfig | None = None) -> list[float]:
        """The voxel sizes (mm) of the CT levels that ``register`` with ``config`` renders from on
        the model's detector: each refinement level's, which the depth search and the final DRR share."""
        cfg = config or RefineConfig()
        return sorted({auto_voxel_mm(level_camera(self.camera, s), self.reference.sid_mm) for s in cfg.sizes})

    def precompute(self, config: RefineConfig | None = None) -> list[Path]:
        """Make and store in MODEL_DIR/levels the CT levels of ``level_voxels``; returns their paths."""
        voxels = self.level_voxels(config)
        for v in voxels:
            self.level(v)
        return [level_path(self.dir, v) for v in voxels]

    def _ct_change(self) -> str | None:
        """A one-line message when the file at config.json's ``ct_path`` is there but is not the
        CT trained on (its SHA-256 differs; hashed once per Registrar), else None."""
        if self._ct_change_msg is False:
            path, want = self.meta.get("ct_path"), self.meta.get("ct_sha256")
            differs = bool(path and want and Path(path).exists() and sha256_file(path) != want)
            self._ct_change_msg = (f"the CT at {path} is not the one the model {self.dir} was trained on (SHA-256 differs); "
                                   "--force uses it anyway") if differs else None  # fmt: skip
        return self._ct_change_msg

    def ct(self) -> Volume:
        """The CT the model was trained on (read from config.json's path; SHA-256 checked)."""
        if self._ct is None:
            path = self.meta.get("ct_path")
            if not path or not Path(path).exists():
                raise XctregError(f"the CT of {self.dir} ({path}) is not available")
            msg = self._ct_change()
            if msg is not None:
                if self.strict:
                    raise XctregError(msg)
                warnings.warn(msg, stacklevel=2)
                self._ct_matches = False
            self._ct = read_volume(path, force=True)
        return self._ct

    def prepare(
        self,
        image: np.ndarray | torch.Tensor | str | os.PathLike[str],
        geometry: Camera | dict[str, Any] | str | os.PathLike[str] | None = None,
        mask: np.ndarray | None = None,
        preprocess: PreprocessConfig | None = None,
        transmission: bool = False,
    ) -> PreparedXray:
        """Read (if a path), check and preprocess an X-ray onto the model's detector.

        ``geometry``: a Camera, a geometry dict or JSON path; by default the DICOM's own
        tags, else the model's camera. ``mask``: (H, W), 1 = use the pixel.
        """
        cam: Camera | None = None
        positioner = None
        if isinstance(image, (str, os.PathLike)):
            from xctreg.io import read_xray

            xr = read_xray(image, transmission=transmission)
            img, cam, positioner = xr.image, xr.camera, xr.positioner_deg
            if xr.patient_orientation is not None:
                msg = image_orientation_check(self.reference.rotation().numpy(), xr.patient_orientation)
                if msg is not None:
                    warnings.warn(f"{image}: {msg}; flip it before registering", stacklevel=2)
        else:
            img = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
            if transmission:
                from xctreg.io.xray import transmission_to_attenuation

                img = transmission_to_attenuation(img)
        if isinstance(geometry, Camera):
            cam = geometry
        elif isinstance(geometry, dict):
            cam = Camera.from_dict(geometry)
        elif geometry is not None:
            cam = read_camera(geometry)
        elif cam is None and isinstance(image, (str, os.PathLike)) and _is_dicom_path(image):
            self._no_dicom_geometry(image, img.shape)
        prepared = prepare_xray(img, cam or self.camera, self.camera, preprocess, mask)
        prepared = replace(prepared, input_camera=cam or self.camera, positioner_deg=positioner)
        if positioner is not None:
            self.check_positioner(positioner, str(image) if isinstance(image, (str, os.PathLike)) else "X-ray")
        return prepared

    def _no_dicom_geometry(self, path: str | os.PathLike[str], shape: tuple[int, ...]) -> None:
        """A DICOM X-ray without its geometry tags and no ``--geometry``: the model's detector is
        assumed, with a warning, when the image has its size; otherwise one error line."""
        cam = self.camera
        tags = "DistanceSourceToDetector and ImagerPixelSpacing"
        if tuple(shape) != (cam.height, cam.width):
            raise XctregError(f"{path} has no geometry tags ({tags}) and is {shape[0]}x{shape[1]} px, not the model's "
                              f"{cam.height}x{cam.width}: pass its geometry with --geometry G.json")  # fmt: skip
        warnings.warn(f"{path} has no geometry tags ({tags}); assuming the model's detector (pass --geometry G.json if it differs)", stacklevel=3)

    @staticmethod
    def _on_native(xr: PreparedXray, cfg: RefineConfig) -> bool:
        """Whether the last level runs on the X-ray's own, finer pixels (else on the model's detector)."""
        return xr.native is not None and cfg.native_size > max(cfg.sizes)

    @staticmethod
    def _levels_for(xr: PreparedXray, cfg: RefineConfig, on_native: bool) -> RefineConfig:
        """``cfg`` for this X-ray: when the last level's Adam steps will run on the model's own
        detector (no finer native image), they take the place of the model levels at that size
        (the same pixels twice). Tuning split, 128²: clean 0.20 → 0.23 mm median, realistic
        0.29 → 0.36 mm, and 3.7 → 2.3 s, 5.0 → 3.3 s per X-ray."""
        if on_native or "adam" not in cfg.native_search:
            return cfg
        px = max(xr.camera.height, xr.camera.width)
        keep = [(s, i) for s, i in zip(cfg.sizes, cfg.iterations, strict=True) if s < px]
        if not keep:
            return cfg
        return replace(cfg, sizes=tuple(s for s, _ in keep), iterations=tuple(i for _, i in keep))

    def _last_level(self, xr: PreparedXray, ref: Refinement, cfg: RefineConfig, on_native: bool) -> Refinement:
        """The last level, from ``ref``'s pose (the best of the restarts), as ``native_search``
        says: Adam steps on all six parameters with the learning rates the next model level would
        have had, then a line search along depth. It runs on the X-ray's own pixels when they are
        finer than the model's (up to ``native_size`` px), else on the model's detector."""
        render = cfg.render
        if on_native:
            assert xr.native is not None
            image, mask, camera, size = xr.native.image, xr.native.mask, xr.native.camera, cfg.native_size
            if render.voxel_mm == "auto":  # the finest model level's volume: finer pixels, not a finer CT (3x faster, as accurate)
                render = replace(render, voxel_mm=auto_voxel_mm(self.camera, self.reference.sid_mm))
            adam_objective, depth_objective = cfg.native_objective, cfg.depth_objective
        else:
            image, mask, camera, size = xr.image, xr.mask, xr.camera, max(xr.camera.height, xr.camera.width)
            adam_objective = depth_objective = cfg.last_objective
        if cfg.match_blur:
            t0 = time.perf_counter()
            sigma = self._estimate_blur(image, mask, camera, ref.params, size, adam_objective, cfg.blur_grid_px, render)
            ref = replace(ref.then(ref.params, 0, time.perf_counter() - t0, np.zeros((0, 6))), blur_px=sigma)
            cfg = replace(cfg, blur_px=sigma)
        if "adam" in cfg.native_search:
            t0 = time.perf_counter()
            f = cfg.lr_decay ** len(cfg.sizes)
            iters = cfg.native_iterations if on_native else cfg.last_iterations
            newton_from = size if cfg.last_optimizer == "newton" else 0  # refine falls back to Adam off the numba renderer
            level = replace(cfg, sizes=(size,), iterations=(iters,), objective=adam_objective, newton_from_px=newton_from,
                            lr_rot_deg=cfg.lr_rot_deg * f, lr_trans_mm=cfg.lr_trans_mm * f, render=render)  # fmt: skip
            fine = refine(self.volume_for, image, camera, self.reference, ref.params, level, mask, self._renderers, self.device)
            ref = ref.then(fine.params, fine.iterations, time.perf_counter() - t0, fine.trajectory)
        if "depth" in cfg.native_search:
            ref = self._search_depth(image, mask, camera, ref, cfg, size, depth_objective, render)
        return ref

    @torch.no_grad()
    def _restart_score(self, xr: PreparedXray, params: np.ndarray, cfg: RefineConfig) -> float:
        """``cfg.restart_objective`` between the X-ray and the DRR at ``params`` (deg, mm) on the
        finest model level of ``cfg`` (one render), inside the X-ray's mask."""
        r, y, mk = self._level(xr.image, xr.mask, xr.camera, max(cfg.sizes), cfg.render)
        drr = r(torch.as_tensor(np.asarray(params)[None], dtype=torch.float32))[0, 0]
        return float(get_objective(cfg.restart_objective)(drr, y.to(drr.device), mk.to(drr.device)))

    def _search_depth(self, image: np.ndarray, mask: np.ndarray, camera: Camera, ref: Refinement, cfg: RefineConfig,
                      size: int, objective_name: str, render: RenderConfig) -> Refinement:  # fmt: skip
        """``search_depth`` on (image, mask, camera), resized to at most ``size`` px, from ``ref``'s pose."""
        t0 = time.perf_counter()
        r, y, mk = self._level(image, mask, camera, size, render)
        if cfg.native_outliers > 0:
            with torch.no_grad():
                drr = r(torch.as_tensor(ref.params[None], dtype=torch.float32))[0, 0].cpu()
            mk = outlier_mask(drr, y, mk, cfg.native_outliers)
        params, path, _ = search_depth(r, y, mk, ref.params, objective_name, cfg.depth_half_mm, cfg.depth_samples, cfg.depth_rounds,
                                       blur_px=cfg.blur_px)  # fmt: skip
        return ref.then(params, len(path), time.perf_counter() - t0, path)  # a round is a step

    def _estimate_blur(self, image: np.ndarray, mask: np.ndarray, camera: Camera, params: np.ndarray, size: int,
                       objective_name: str, grid_px: tuple[float, ...], render: RenderConfig) -> float:  # fmt: skip
        """``estimate_blur`` on (image, mask, camera), resized to at most ``size`` px."""
        return estimate_blur(*self._level(image, mask, camera, size, render), params, objective_name, grid_px)

    def _level(self, image: np.ndarray, mask: np.ndarray, camera: Camera, size: int,
               render: RenderConfig) -> tuple[Renderer, torch.Tensor, torch.Tensor]:  # fmt: skip
        """The (cached) renderer, image and mask of (image, mask, camera) resized to at most ``size`` px."""
        cam, y, mk = level_inputs(camera, torch.as_tensor(image)[None, None], torch.as_tensor(mask)[None, None], size)
        assert mk is not None
        return cached_renderer(self._renderers, self.volume_for, cam, render, self.reference, self.device), y, mk

    def check_positioner(self, positioner_deg: tuple[float, float], name: str = "X-ray") -> bool:
        """Warn (one line) when DICOM C-arm angles lie outside the model's view ± its rotation
        ranges; True when inside. The in-plane angle (rz) is not given by DICOM and not checked."""
        view = positioner_to_view(*positioner_deg)
        delta = view_rotation_delta(view, self.reference.view_deg)
        lo, hi = self.space.ranges.bounds()
        inside = bool(np.all((delta[:2] >= lo[:2] - 1e-6) & (delta[:2] <= hi[:2] + 1e-6)))
        if not inside:
            a, b = positioner_deg
            warnings.warn(
                f"{name}: C-arm at primary {a:g} deg, secondary {b:g} deg (view {view_name(view)}) is "
                f"{abs(delta[0]):.0f} deg / {abs(delta[1]):.0f} deg (rx / ry) from the model's view "
                f"{view_name(self.reference.view_deg)}, outside its ranges rx [{lo[0]:g}, {hi[0]:g}], ry [{lo[1]:g}, {hi[1]:g}] deg; "
                f"registration will likely fail (train a model with --view-from this X-ray)",
                stacklevel=2,
            )
        return inside

    @torch.no_grad()
    def scores_at(self, xr: PreparedXray, params: np.ndarray) -> dict[str, float]:
        """{"ncc", "ssim", "css"} between a prepared X-ray and the DRR at ``params`` (deg, mm) on
        its (model) detector, inside its mask."""
        drr = self.renderer(xr.camera)(torch.as_tensor(params, dtype=torch.float32)[None])[0, 0].cpu()
        return image_scores(torch.as_tensor(xr.image), drr, torch.as_tensor(xr.mask))

    @torch.no_grad()
    def attention(self, image: np.ndarray | torch.Tensor | PreparedXray) -> np.ndarray:
        """Self-attention map of the model for one X-ray (prepared, or (H, W) bone bright on the
        model's detector), (H, W) in [0, 1] at the model's detector size."""
        from xctreg.models import attention_map

        xr = image if isinstance(image, PreparedXray) else self.prepare(image)
        out = self.model(torch.as_tensor(xr.image)[None, None].to(self.device))
        amap = attention_map(out, self.model_config.input_size)
        amap = F.interpolate(amap, size=(self.camera.height, self.camera.width), mode="bilinear", align_corners=False)
        return amap[0, 0].clamp(0, 1).float().cpu().numpy()

    @torch.no_grad()
    def regress(self, image: np.ndarray | torch.Tensor | PreparedXray) -> Regression:
        """Predict the pose of one X-ray: a PreparedXray, or an (H, W) bone-bright image on the
        model's detector (then prepared with the default preprocessing)."""
        t0 = time.perf_counter()
        xr = image if isinstance(image, PreparedXray) else self.prepare(image)
        q = self.model(torch.as_tensor(xr.image)[None, None].to(self.device))["params"].float().cpu()
        p = self.space.denormalize(q)[0].double()
        T = self.space.to_matrix(p).numpy()
        return Regression(Pose(T, self.reference), p.numpy(), time.perf_counter() - t0)

    def register(
        self,
        image: np.ndarray | torch.Tensor | str | os.PathLike[str] | PreparedXray,
        geometry: Camera | dict[str, Any] | str | os.PathLike[str] | None = None,
        refine_pose: bool = True,
        config: RefineConfig | None = None,
        mask: np.ndarray | None = None,
        preprocess: PreprocessConfig | None = None,
        transmission: bool = False,
        start_params: np.ndarray | None = None,
    ) -> Result:
        """Preprocess, regress, then (by default) refine one X-ray (bone bright unless ``transmission``).

        ``image``: an (H, W) array or a path (.npy, .png, .tif, DICOM), or an X-ray ``prepare``
        made (then ``geometry``, ``mask``, ``preprocess`` and ``transmission`` are not used); ``geometry``: see
        ``prepare``; ``mask``: (H, W), 1 = use the pixel. ``start_params`` (deg, mm): start
        from these instead of the regressor's estimate (e.g. the reference pose, zeros: the
        no-network baseline). ``Result.to_dict()`` is the result JSON (pose, initial, similarity, timing).
        """
        t0 = time.perf_counter()
        xr = image if isinstance(image, PreparedXray) else self.prepare(image, geometry, mask, preprocess, transmission)
        if start_params is None:
            reg = self.regress(xr)
        else:
            p0 = np.asarray(start_params, dtype=np.float64).reshape(6)
            reg = Regression(self.space.pose(p0), p0, 0.0)
        params, iters, t_ref, traj, blur_px = reg.params, 0, 0.0, np.zeros((0, 6)), None
        cam = xr.camera
        if refine_pose:
            cfg = config or RefineConfig()
            on_native = self._on_native(xr, cfg)
            cfg = self._levels_for(xr, cfg, on_native)
            ref = refine(self.volume_for, xr.image, cam, self.reference, reg.params, cfg, xr.mask, self._renderers, self.device)
            rng = np.random.default_rng(0)
            k = 0
            check = self._restart_score(xr, ref.params, cfg) if cfg.restarts > 0 else 1.0
            while check < cfg.restart_below and k < cfg.restarts:  # low score: try around the start
                d = rng.uniform(-1, 1, 6) * np.repeat(cfg.restart_spread, 3)
                alt = refine(self.volume_for, xr.image, cam, self.reference, reg.params + d, cfg, xr.mask, self._renderers, self.device)
                merged = np.concatenate([ref.trajectory, alt.trajectory])
                best = alt if alt.score > ref.score else ref
                if best is alt:
                    check = self._restart_score(xr, alt.params, cfg)
                ref = Refinement(best.params, best.score, ref.iterations + alt.iterations, ref.seconds + alt.seconds, merged)
                k += 1
            if cfg.native_search != "none":
                ref = self._last_level(xr, ref, cfg, on_native)  # once, from the best of the restarts
            params, iters, t_ref, traj = ref.params, ref.iterations, ref.seconds, ref.trajectory
            blur_px = ref.blur_px if cfg.match_blur and cfg.native_search != "none" else None
        pose = self.space.pose(params)
        sim = self.scores_at(xr, params)
        timing = {"regress": reg.seconds, "refine": t_ref, "total": time.perf_counter() - t0}
        extra: dict[str, Any] = {"model_dir": str(self.dir.resolve()), "ct_path": self.meta.get("ct_path")}
        if blur_px is not None:  # match_blur: the X-ray's blur that the last level fitted (σ, px of its detector)
            extra["blur_px"] = float(blur_px)
        return Result(pose, reg.pose, sim, timing, iters, traj, xr.image, xr.mask, cam, xr.input_camera, xr.positioner_deg, extra)
