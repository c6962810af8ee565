"""Multi-view registration: several X-rays of one patient, taken from C-arm positions whose
relative geometry (the rig) is known, and one unknown patient pose.

A single X-ray shows depth (the first view's tz) only as magnification; a second view at an
angle sees that depth as an in-plane shift, which it places to a fraction of a pixel.

The unknown is the first view's ``T_cam_from_world`` (mm). View k's pose is
``T_cam_from_first[k] · T_cam_from_world[first]``, where ``T_cam_from_first[k]`` maps the first
view's camera frame to view k's (mm; the identity for the first view).

The pipeline (``register_views``):

1. **Proposals.** Each view is preprocessed as single-view ``register`` does, its regressor
   proposes a pose, and the model levels of single-view refinement (coarse sizes only) move it.
   A view's score there (its objective, on its own) says how well its CT explains it.
2. **Robust start.** The proposals are mapped into the first view's frame and combined:
   rotations by a weighted chordal mean, the CT centre's position by weighted least squares in
   which each view's depth counts ``depth_weight``² times less than its in-plane position. Views
   are weighted by their score and down-weighted when they disagree with the others (a Cauchy
   weight on the disagreement in mm). The start is the best, by the joint objective, of the
   combination and every view's own proposal.
3. **Joint refinement.** Adam on one set of six parameters (the first view's) with the weighted
   mean of the views' objectives; gradients flow through every view's renderer. Coarse to fine,
   then a last level with the edge objective (gradient NCC), as single-view ``register`` ends.
4. **Check.** A view whose score alone is low is left out from the start. After the joint
   levels, the view whose score at the joint pose falls furthest below its score alone (by more
   than ``flag_drop``) is left out and the joint levels run again without it. Two views that
   disagree cannot tell which of them is wrong; the first (the session's reference) is kept.
   When one view remains, it is registered alone with the full single-view pipeline.

Optionally (``refine_rig``) each further view's rig gets one more degree of freedom: a rotation
(within ±``rig_bound_deg``) about the rig's own rotation axis through its fixed point, i.e. the
C-arm's rotation axis through the isocentre, for a C-arm whose angle encoder is approximate.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xctreg._fs import read_json
from xctreg.errors import XctregError
from xctreg.geometry import Pose, PoseReference, params_to_matrix, rigid_matrix
from xctreg.newton import Terms, ToMatrix, refine_newton, view_terms
from xctreg.newton import available as newton_available
from xctreg.objectives import get_objective
from xctreg.optim import Adam
from xctreg.preprocess import PreparedXray, PreprocessConfig
from xctreg.register import Refinement, RefineConfig, Registrar, Result, level_inputs, cached_renderer, refine

ROT, TRANS = slice(0, 3), slice(3, 6)


# ------------------------------------------------------------------ the session
@dataclass(frozen=True)
class ViewSpec:
    """One view of a session: its model folder, its X-ray, an optional geometry JSON and
    ``T_cam_from_first`` (4x4, mm: the first view's camera frame to this view's)."""

    model: Path
    xray: Path
    T_cam_from_first: np.ndarray
    geometry: Path | None = None


def read_session(path: str | os.PathLike[str], models: Sequence[str | os.PathLike[str]] | None = None) -> list[ViewSpec]:
    """Read and check a session JSON: ``{"views": [{"model", "xray", "geometry" (optional),
    "T_cam_from_first"}, ...]}``. Relative paths are taken from the session's folder.
    ``models`` (one per view) replaces the session's model folders."""
    path = Path(path)
    d = read_json(path, "session JSON")
    views = d.get("views") if isinstance(d, dict) else None
    if not isinstance(views, list):
        raise XctregError(f"{path}: a session JSON needs a list \"views\"")
    if len(views) < 2:
        raise XctregError(f"{path}: a multi-view session needs at least two views, got {len(views)} (use xctreg register for one)")
    if models is not None and len(models) != len(views):
        raise XctregError(f"--models gives {len(models)} model folders for {len(views)} views")
    base = path.parent
    out = []
    for k, v in enumerate(views):
        name = f"{path}: view {k}"
        if not isinstance(v, dict):
            raise XctregError(f"{name} must be a JSON object")
        model = models[k] if models is not None else v.get("model")
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise XctregError(f"{name} has no \"model\" (a MODEL_DIR; or pass --models)")
        xray = v.get("xray")
        if not isinstance(xray, str) or not xray:
            raise XctregError(f"{name} has no \"xray\" (a file path)")
        geom = v.get("geometry")
        if geom is not None and not isinstance(geom, str):
            raise XctregError(f"{name}: \"geometry\" must be a file path")
        if "T_cam_from_first" not in v:
            raise XctregError(f"{name} has no \"T_cam_from_first\" (4x4; the identity for the first view)")
        T = rigid_matrix(v["T_cam_from_first"], f"{name}: T_cam_from_first")
        if k == 0 and not np.allclose(T, np.eye(4), atol=1e-6):
            raise XctregError(f"{name}: the first view's T_cam_from_first must be the identity")
        model_path = Path(model).expanduser().resolve() if models is not None else _resolve(base, model)  # the command line's: from here
        spec = ViewSpec(model_path, _resolve(base, xray), T, None if geom is None else _resolve(base, geom))
        for what, p in (("X-ray", spec.xray), ("geometry", spec.geometry)):
            if p is not None and not p.is_file():
                raise XctregError(f"{name}: {what} {p} not found")
        if not (spec.model / "config.json").is_file():
            raise XctregError(f"{name}: {spec.model} is not a model folder (no config.json)")
        out.append(spec)
    return out


def _resolve(base: Path, p: str | os.PathLike[str]) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else base / q


def rig_between(first: PoseReference, other: PoseReference) -> np.ndarray:
    """``T_cam_from_first`` (4x4, mm) of two reference views of one CT: the map from ``first``'s
    camera frame to ``other``'s, at their reference poses (e.g. AP and lateral about one isocentre)."""
    z = torch.zeros(6, dtype=torch.float64)
    Ta, Tb = params_to_matrix(z, first).numpy(), params_to_matrix(z, other).numpy()
    return Tb @ np.linalg.inv(Ta)


def sample_session_poses(spaces: Sequence[Any], rigs: Sequence[np.ndarray], n: int, seed: int) -> list[np.ndarray]:
    """``n`` poses of the first view, drawn within its ranges (seeded), whose parameters in every
    other view (through its rig) also lie within that view's ranges: one (n, 6) array per view
    (deg, mm, each relative to its own view). ``spaces`` are the views' ``PoseSpace``s."""
    if n < 1:
        raise XctregError(f"the number of poses must be at least 1, got {n}")
    out: list[list[np.ndarray]] = [[] for _ in spaces]
    for k in range(1000):
        for p in spaces[0].sample(200, seed=seed * 1000 + k):
            T = spaces[0].to_matrix(torch.as_tensor(p)).numpy()
            ps = [sp.from_matrix(torch.as_tensor(rig @ T)).numpy() for sp, rig in zip(spaces, rigs, strict=True)]
            if all(sp.ranges.contains(q) for sp, q in zip(spaces, ps, strict=True)):
                for lst, q in zip(out, ps, strict=True):
                    lst.append(q)
            if len(out[0]) == n:
                return [np.asarray(lst) for lst in out]
    raise XctregError("the views' ranges hardly overlap: cannot draw poses that every view's model covers")


def check_same_ct(registrars: Sequence[Registrar], names: Sequence[str]) -> None:
    """One error line when the views' models come from different CTs (their SHA-256 differ)."""
    shas = [r.meta.get("ct_sha256") for r in registrars]
    for k in range(1, len(shas)):
        if shas[k] != shas[0]:
            raise XctregError(f"the models of view 0 ({names[0]}) and view {k} ({names[k]}) were trained on different CTs "
                              f"(SHA-256 {str(shas[0])[:12]} and {str(shas[k])[:12]}); a session needs one patient's CT")  # fmt: skip


# ------------------------------------------------------------------ the rig's degree of freedom
def rig_axis(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation axis of a rig (unit, first camera's frame) and its point nearest the first
    view's source (mm): for views about one isocentre, the C-arm's axis through it."""
    R, t = T[:3, :3], T[:3, 3]
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if np.linalg.norm(w) < 1e-9:  # 0° or 180°: the axis is R's eigenvector of eigenvalue 1
        vals, vecs = np.linalg.eigh(R + R.T)
        w = vecs[:, int(np.argmax(vals))]
    a = w / np.linalg.norm(w)
    # points x with R x + t = x + (t·a) a: (I - R) x = t - (t·a) a, a line along a
    o = np.linalg.lstsq(np.eye(3) - R, t - (t @ a) * a, rcond=None)[0]  # the least-norm point: nearest the source
    return a, o


def rotation_about(axis: np.ndarray, point: np.ndarray, angle_rad: torch.Tensor) -> torch.Tensor:
    """4x4 rotation by ``angle_rad`` about the line through ``point`` along unit ``axis`` (mm). Differentiable."""
    a = torch.as_tensor(axis, dtype=torch.float64)
    o = torch.as_tensor(point, dtype=torch.float64)
    K = torch.zeros(3, 3, dtype=torch.float64)
    K[0, 1], K[0, 2], K[1, 0], K[1, 2], K[2, 0], K[2, 1] = -a[2], a[1], a[2], -a[0], -a[1], a[0]
    R = torch.eye(3, dtype=torch.float64) + torch.sin(angle_rad) * K + (1 - torch.cos(angle_rad)) * (K @ K)
    top = torch.cat([R, (o - R @ o)[:, None]], 1)
    return torch.cat([top, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)], 0)


# ------------------------------------------------------------------ configuration and results
@dataclass(frozen=True)
class MultiviewConfig:
    """Multi-view registration.

    Attributes:
        refine: the single-view refinement settings the views share (learning rates, patience,
            objectives, renderer); a view left alone after the check is registered with it.
        objective: the objective of the per-view proposal levels, the joint levels before the
            last and the views' scores (``flag_*``): patch NCC, on whose scores the flag
            thresholds below are calibrated (single-view ``register`` moved to local gradient
            NCC on 2026-11-29; the joint levels were not re-tuned with it).
        proposal_sizes, proposal_iterations: the per-view levels that move each regressor
            proposal before the views are combined (px, longest side; Adam steps).
        sizes, iterations: the joint levels.
        final_iterations: Adam steps of the last joint level, on the model's detector, with
            ``refine.last_objective`` (edges place the pose; see ``RefineConfig``).
        depth_weight: how many times less certain a single view's depth is than its in-plane
            position, for combining the proposals (the regressor's tz errors are 3-5 times its tx, ty).
        disagree_mm: the scale (mm) of the Cauchy weight on a proposal's disagreement.
        flag_score: a view whose score alone (``objective``) stays below this is left out.
        flag_drop: a view whose score at the joint pose falls this far below its score alone is left out.
        flag_gap: a view whose score alone is this far below the best view's is flagged but kept
            (weighted by its score). Tuning split (6 DiffDRR pairs, chest): good realistic views
            lie within 0.07 of the best; a lateral collimated to a disc 12-16 % of its width across
            (an iris the collimator detection misses) 0.16-0.45 below.
        flag_field: a view whose exposed field is less than this share of its X-ray is flagged
            but kept (biplane, chest, a lateral collimated to a disc 12-16 % of its width across:
            joint 0.36 mm median against 0.62 for the AP alone, on 4 tuning pairs).
        refine_rig: refine each further view's rotation about the rig's axis, within ±``rig_bound_deg``.
    """

    refine: RefineConfig = field(default_factory=RefineConfig)
    objective: str = "patch-ncc"
    proposal_sizes: tuple[int, ...] = (32, 64)
    proposal_iterations: tuple[int, ...] = (60, 50)
    sizes: tuple[int, ...] = (64, 128)
    iterations: tuple[int, ...] = (50, 40)
    final_iterations: int = 40
    depth_weight: float = 4.0
    disagree_mm: float = 10.0
    flag_score: float = 0.5
    flag_drop: float = 0.15
    flag_gap: float = 0.12
    flag_field: float = 0.2
    refine_rig: bool = False
    rig_bound_deg: float = 3.0

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.iterations) or len(self.proposal_sizes) != len(self.proposal_iterations):
            raise XctregError("multi-view levels: one iteration count per size")
        if not (0 < self.rig_bound_deg <= 30):
            raise XctregError(f"rig bound (--rig-bound-deg) must be in (0, 30] degrees, got {self.rig_bound_deg:g}")
        if self.depth_weight < 1:
            raise XctregError(f"depth_weight must be at least 1, got {self.depth_weight:g}")


@dataclass
class ViewReport:
    """How one view took part: its weight in the joint objective (0: left out), why it was flagged (or None),
    its score alone and at the joint pose (``MultiviewConfig.objective``), how far its proposal lay from
    the combined start (mm, CT centre; NaN, null in JSON, for a view not combined) and its
    rig's refined rotation (deg)."""

    weight: float
    flag: str | None
    score_alone: float | None
    score_joint: float
    disagreement_mm: float
    rig_delta_deg: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"weight": _num(self.weight, 4), "flagged": self.flag is not None, "left_out": self.weight == 0, "reason": self.flag,
                "score_alone": _num(self.score_alone, 4), "score_joint": _num(self.score_joint, 4),
                "proposal_disagreement_mm": _num(self.disagreement_mm, 3), "rig_delta_deg": _num(self.rig_delta_deg, 4)}  # fmt: skip


def _num(x: float | None, digits: int) -> float | None:
    """``x`` to ``digits`` significant digits for JSON; None for None or a non-finite value."""
    return None if x is None or not math.isfinite(x) else float(f"{x:.{digits}g}")


@dataclass
class MultiviewResult:
    """The joint registration: ``joint`` is the first view's result (its ``initial`` the first
    view's regressor pose, as in single-view results; ``joint_start`` the combined start the
    joint refinement began from); ``views`` holds every view's result in its own camera,
    ``reports`` how each view took part, ``rigs`` the rigs used (refined with ``refine_rig``)."""

    joint: Result
    views: list[Result]
    reports: list[ViewReport]
    rigs: list[np.ndarray]

    @property
    def flagged(self) -> list[int]:
        return [k for k, r in enumerate(self.reports) if r.flag is not None]

    def to_dict(self) -> dict[str, Any]:
        """``{"joint": RESULT, "views": [RESULT, ...]}``: each a result JSON in its own view's
        camera, the views' with a ``multiview`` entry (weight, flagged, reason, scores)."""
        views = []
        for res, rep, rig in zip(self.views, self.reports, self.rigs, strict=True):
            views.append({**res.to_dict(), "multiview": rep.to_dict(), "T_cam_from_first": rig.tolist()})
        joint = {**self.joint.to_dict(), "flagged_views": self.flagged}
        return {"joint": joint, "views": views}


# ------------------------------------------------------------------ the joint objective
@dataclass
class _Level:
    """One level of every view: renderers, images and masks at one size."""

    renderers: list[Any]
    images: list[torch.Tensor]
    masks: list[torch.Tensor | None]


def _level(registrars: Sequence[Registrar], xrays: Sequence[PreparedXray], size: int, cfg: RefineConfig) -> _Level:
    rs, ys, ms = [], [], []
    for reg, xr in zip(registrars, xrays, strict=True):
        cam, y, mk = level_inputs(xr.camera, torch.as_tensor(xr.image)[None, None], torch.as_tensor(xr.mask)[None, None], size)
        r = cached_renderer(reg._renderers, reg.volume_for, cam, cfg.render, reg.reference, reg.device)
        rs.append(r)
        ys.append(y.to(r.device))
        ms.append(None if mk is None else mk.to(r.device))
    return _Level(rs, ys, ms)


class _Joint:
    """The unknown (the first view's parameters, deg and mm) and the rig deltas, mapped to every view's pose."""

    def __init__(self, first: Registrar, rigs: Sequence[np.ndarray], cfg: MultiviewConfig) -> None:
        self.first = first
        self.rigs = [torch.as_tensor(T, dtype=torch.float64) for T in rigs]
        self.axes = [rig_axis(T) if k and _angle_deg(T[:3, :3], np.eye(3)) > 0.5 else None for k, T in enumerate(rigs)]  # no turn: no axis
        self.bound = math.radians(cfg.rig_bound_deg)
        self.u = torch.zeros(len(rigs), dtype=torch.float64)  # rig deltas: bound · tanh(u)

    def rig(self, k: int, u: torch.Tensor | None = None) -> torch.Tensor:
        u = self.u if u is None else u
        axis = self.axes[k]
        if axis is None:
            return self.rigs[k]
        a, o = axis
        return self.rigs[k] @ rotation_about(a, o, self.bound * torch.tanh(u[k]))

    def poses(self, p: torch.Tensor, u: torch.Tensor | None = None) -> list[torch.Tensor]:
        """(4, 4) ``T_cam_from_world`` of every view from the first view's (6,) parameters."""
        T0 = params_to_matrix(p, self.first.reference)
        return [self.rig(k, u) @ T0 for k in range(len(self.rigs))]

    def rig_deltas_deg(self) -> list[float]:
        return [math.degrees(self.bound * math.tanh(float(v))) if k else 0.0 for k, v in enumerate(self.u)]


def _scores(level: _Level, poses: Sequence[torch.Tensor], objective: str, active: Sequence[int]) -> list[torch.Tensor]:
    sim = get_objective(objective)
    return [sim(level.renderers[k](poses[k].float()[None])[0, 0], level.images[k], level.masks[k]) for k in active]


def refine_joint(joint: _Joint, level: _Level, start: np.ndarray, weights: Sequence[float], objective: str, iterations: int,
                 lr_rot_deg: float, lr_trans_mm: float, cfg: MultiviewConfig) -> Refinement:  # fmt: skip
    """Adam on the first view's parameters (deg, mm; and the rig deltas with ``refine_rig``)
    maximising the weighted mean of the views' objectives at one level. Keeps the best iterate."""
    t0 = time.perf_counter()
    active = [k for k, w in enumerate(weights) if w > 0]
    w = torch.tensor([weights[k] for k in active], dtype=torch.float64)
    w = w / w.sum()
    p = torch.as_tensor(np.asarray(start, dtype=np.float64)).clone()
    rot, tr = p[ROT].clone().requires_grad_(True), p[TRANS].clone().requires_grad_(True)
    u = joint.u.clone().requires_grad_(cfg.refine_rig)
    groups = [([rot], lr_rot_deg), ([tr], lr_trans_mm)]
    if cfg.refine_rig:
        groups.append(([u], lr_rot_deg / math.degrees(joint.bound)))  # about lr_rot_deg degrees per step
    opt = Adam(groups)
    best, best_p, best_u, stale, path = -2.0, p.clone(), joint.u.clone(), 0, []
    n = 0
    for _ in range(iterations):
        q = torch.cat([rot, tr])
        s = (torch.stack(_scores(level, joint.poses(q, u), objective, active)).double().cpu() * w).sum()
        n += 1
        path.append(q.detach().numpy().copy())
        score = float(s.detach())
        if score > best + cfg.refine.min_gain:
            best, best_p, best_u, stale = score, q.detach().clone(), u.detach().clone(), 0
        else:
            stale += 1
            if stale >= cfg.refine.patience:
                break
        opt.zero_grad()
        (-s).backward()
        opt.step()
    joint.u = best_u
    return Refinement(best_p.numpy(), best, n, time.perf_counter() - t0, np.asarray(path).reshape(-1, 6))


def joint_terms(joint: _Joint, level: _Level, weights: Sequence[float], objective: str) -> Terms:
    """The weighted mean of the views' objectives at one level, as ``newton.refine_newton`` wants
    it: the first view's parameters (6,) (deg, mm) -> value, gradient (6,), Hessian (6, 6). Each
    view renders at its rig's pose (the rig held); its Jacobian is taken through the rig."""
    active = [k for k, w in enumerate(weights) if w > 0]
    w = np.array([weights[k] for k in active], dtype=np.float64)
    w = w / w.sum()
    sim = get_objective(objective)

    def to_matrix(k: int) -> ToMatrix:
        rig = joint.rig(k).detach().double()
        return lambda q: rig @ params_to_matrix(q, joint.first.reference)

    views = [view_terms(level.renderers[k], sim, level.images[k], level.masks[k], to_matrix(k)) for k in active]

    def terms(p: np.ndarray) -> tuple[float, torch.Tensor, torch.Tensor]:
        parts = [v(p) for v in views]
        value, g, H = (sum(wk * t[i] for wk, t in zip(w, parts, strict=True)) for i in range(3))
        return float(value), g, H

    return terms


# ------------------------------------------------------------------ combining the proposals
def _centre_in_first(T0: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return T0[:3, :3] @ centre + T0[:3, 3]


def combine_proposals(T0s: Sequence[np.ndarray], rigs: Sequence[np.ndarray], quality: Sequence[float], centre: np.ndarray,
                      depth_weight: float = 4.0, scale_mm: float = 10.0, rounds: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Robustly combine per-view pose proposals, all in the first view's frame (4x4 each).

    Rotations: a weighted chordal mean. Position of ``centre`` (world mm, the CT's centre) in the
    first camera: weighted least squares in which each view's depth (its own camera's z, through
    its rig) weighs ``depth_weight``² times less than its in-plane position. Weights: ``quality``
    (≥ 0) times a Cauchy weight of each proposal's disagreement with the combination (mm, that
    same metric; rotations count as the displacement at 100 mm). Returns the combined 4x4, the
    final weights and the disagreements (mm).
    """
    import roma

    K = len(T0s)
    q = np.maximum(np.asarray(quality, dtype=np.float64), 1e-6)
    Rs = np.stack([T[:3, :3] for T in T0s])
    xs = np.stack([_centre_in_first(T, centre) for T in T0s])
    info = [rig[:3, :3].T @ np.diag([1.0, 1.0, 1.0 / depth_weight**2]) @ rig[:3, :3] for rig in rigs]
    w = q.copy()
    for _ in range(rounds):
        R = roma.special_procrustes(torch.as_tensor((w[:, None, None] * Rs).sum(0))).numpy()
        A = sum(w[k] * info[k] for k in range(K))
        x = np.linalg.solve(A, sum(w[k] * info[k] @ xs[k] for k in range(K)))
        d = np.array([math.sqrt(max((xs[k] - x) @ info[k] @ (xs[k] - x), 0.0))
                      + 100.0 * math.radians(_angle_deg(Rs[k], R)) for k in range(K)])  # fmt: skip
        w = q / (1.0 + (d / scale_mm) ** 2)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = x - R @ centre
    return T, w, d


def _angle_deg(A: np.ndarray, B: np.ndarray) -> float:
    c = (np.trace(A.T @ B) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


# ------------------------------------------------------------------ the pipeline
def register_views(
    registrars: Sequence[Registrar],
    xrays: Sequence[PreparedXray],
    rigs: Sequence[np.ndarray],
    config: MultiviewConfig | None = None,
    refine_pose: bool = True,
) -> MultiviewResult:
    """Register prepared X-rays of one patient jointly (see the module's docstring).

    ``registrars[k]`` is view k's model, ``xrays[k]`` its X-ray prepared by that model
    (``Registrar.prepare``), ``rigs[k]`` its ``T_cam_from_first`` (4x4, mm). Returns every
    view's result in its own camera, the first view's being the joint one. Without
    ``refine_pose`` the result is the robust combination of the regressors' proposals.
    """
    if len(registrars) < 2 or not (len(registrars) == len(xrays) == len(rigs)):
        raise XctregError("multi-view registration needs two or more views, each with a model, an X-ray and a rig")
    run = _JointRun(registrars, xrays, rigs, config or MultiviewConfig())
    run.propose(refine_pose)
    if refine_pose and run.active() >= 2:
        run.refine_levels()
        while run.check() and run.active() >= 2:  # a view left out: again without it
            run.refine_levels()
        if run.active() >= 2:
            run.last_level()
    if refine_pose and run.active() == 1:
        run.register_alone()
    return run.result(refine_pose)


class _JointRun:
    """The state of one multi-view registration, step by step (``register_views``)."""

    def __init__(self, registrars: Sequence[Registrar], xrays: Sequence[PreparedXray], rigs: Sequence[np.ndarray], cfg: MultiviewConfig) -> None:
        self.t0 = time.perf_counter()
        self.regs, self.xrays, self.rigs, self.cfg = list(registrars), list(xrays), list(rigs), cfg
        self.first = registrars[0]
        self.joint = _Joint(self.first, rigs, cfg)
        self.flags: list[str | None] = [None] * len(registrars)
        self.iters, self.traj = 0, [np.zeros((0, 6))]
        self.alone: list[Refinement] = []

    def active(self) -> int:
        return int(sum(w > 0 for w in self.weights))

    def _to_first(self, k: int, params: np.ndarray) -> np.ndarray:
        """View k's parameters (deg, mm) as the first view's ``T_cam_from_world`` (4x4)."""
        return np.linalg.inv(self.rigs[k]) @ self.regs[k].space.to_matrix(torch.as_tensor(params)).numpy()

    def _first_params(self, T0: np.ndarray) -> np.ndarray:
        return self.first.space.from_matrix(torch.as_tensor(T0)).numpy()

    def propose(self, refine_pose: bool) -> None:
        """Each view's regressor pose, moved by its coarse model levels, combined robustly; views
        with a small field are flagged, views their CT explains poorly are left out."""
        cfg = self.cfg
        self.regressions = [r.regress(x) for r, x in zip(self.regs, self.xrays, strict=True)]
        props = [g.params for g in self.regressions]
        quality = [1.0] * len(props)
        if refine_pose:
            pcfg = replace(cfg.refine, sizes=cfg.proposal_sizes, iterations=cfg.proposal_iterations, objective=cfg.objective)
            self.alone = [refine(r.volume_for, x.image, x.camera, r.reference, p, pcfg, x.mask, r._renderers, r.device)
                          for r, x, p in zip(self.regs, self.xrays, props, strict=True)]  # fmt: skip
            props = [a.params for a in self.alone]
            quality = [max(a.score, 0.0) ** 2 for a in self.alone]
        self.T0s = [self._to_first(k, p) for k, p in enumerate(props)]
        self.quality = np.asarray(quality)
        self.weights, self.disagree = self._combine(self.quality)
        for k, x in enumerate(self.xrays):
            if x.field_fraction < cfg.flag_field:  # kept: a small field still places what it shows
                self.flags[k] = f"only {x.field_fraction:.0%} of its X-ray is exposed (collimated)"
        best = max((a.score for a in self.alone), default=0.0)
        for k, a in enumerate(self.alone):  # kept, weighted by its score: what it shows still helps
            if best - a.score > cfg.flag_gap:
                self.flags[k] = f"its X-ray matches its CT much worse than the best view's (score {a.score:.2f} against {best:.2f}): collimated, corrupted or not this patient?"
        for k, a in enumerate(self.alone):
            if a.score < cfg.flag_score:
                self.flags[k] = f"its X-ray is poorly explained by its CT on its own (score {a.score:.2f} < {cfg.flag_score:g})"
                self.weights[k] = 0.0
        if refine_pose and self.active() == 0:  # every view is poor: keep them all, flagged
            self.quality = np.full(len(self.alone), 1e-6)
            self.weights = self.quality.copy()

    def _combine(self, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Combine the proposals of the views with ``quality`` > 0 into the start ``self.p``;
        returns every view's weight and disagreement (mm; 0 and NaN for the others)."""
        keep = [k for k, q in enumerate(quality) if q > 0]
        if not keep:  # every view scored 0 or less: combine them all, equally
            quality, keep = np.ones(len(quality)), list(range(len(quality)))
        centre = np.asarray(self.first.reference.isocenter_mm, dtype=np.float64)
        T, w, d = combine_proposals([self.T0s[k] for k in keep], [self.rigs[k] for k in keep], quality[keep], centre,
                                    self.cfg.depth_weight, self.cfg.disagree_mm)  # fmt: skip
        weights, disagree = np.zeros(len(quality)), np.full(len(quality), np.nan)
        weights[keep], disagree[keep] = w, d
        self.start = self.p = self._first_params(T)
        return weights, disagree

    def _objective(self, level: _Level, p: np.ndarray, objective: str) -> float:
        active = [k for k, w in enumerate(self.weights) if w > 0]
        with torch.no_grad():
            s = _scores(level, self.joint.poses(torch.as_tensor(p)), objective, active)
        return float(sum(self.weights[k] * float(v) for k, v in zip(active, s, strict=True)))

    def _run_level(self, level: _Level, objective: str, iterations: int, depth: int) -> None:
        rc = self.cfg.refine
        f = rc.lr_decay**depth
        ref = refine_joint(self.joint, level, self.p, self.weights, objective, iterations, rc.lr_rot_deg * f, rc.lr_trans_mm * f, self.cfg)
        self.p, self.iters = ref.params, self.iters + ref.iterations
        self.traj.append(ref.trajectory)

    def refine_levels(self) -> None:
        """Start from the combination or any view's own proposal, whichever the joint objective
        prefers; then the joint levels, coarse to fine."""
        cfg, rc = self.cfg, self.cfg.refine
        self.joint.u = torch.zeros_like(self.joint.u)  # a rerun without a view starts afresh
        self.weights, _ = self._combine(np.where(self.weights > 0, np.maximum(self.quality, 1e-6), 0.0))
        level = _level(self.regs, self.xrays, cfg.sizes[0], rc)
        cands = [self.p] + [self._first_params(T) for k, T in enumerate(self.T0s) if self.weights[k] > 0]
        self.p = self.start = cands[int(np.argmax([self._objective(level, c, cfg.objective) for c in cands]))]
        for i, (size, it) in enumerate(zip(cfg.sizes, cfg.iterations, strict=True)):
            level = level if i == 0 else _level(self.regs, self.xrays, size, rc)
            self._run_level(level, cfg.objective, it, len(cfg.proposal_sizes) - 1 + i)

    def _scores_at(self, p: np.ndarray) -> list[float]:
        level = _level(self.regs, self.xrays, self.cfg.proposal_sizes[-1], self.cfg.refine)
        with torch.no_grad():
            return [float(s) for s in _scores(level, self.joint.poses(torch.as_tensor(p)), self.cfg.objective, range(len(self.regs)))]

    def check(self) -> bool:
        """Leave out the view that the joint pose explains worst compared with its own pose (its
        score drops by more than ``flag_drop``). Two views that disagree cannot say which of them
        is wrong: the first view, the session's reference, is kept. True when a view was left out."""
        at_joint = self._scores_at(self.p)
        drop = np.array([a.score - at_joint[k] if self.weights[k] > 0 else -np.inf for k, a in enumerate(self.alone)])
        if drop.max() <= self.cfg.flag_drop:
            return False
        k = int(np.argmax(drop))
        if self.active() == 2 and self.weights[0] > 0:
            k = int(np.flatnonzero(self.weights > 0)[1])
        a = self.alone[k].score
        self.flags[k] = f"it disagrees with the other views (score {a:.2f} alone, {at_joint[k]:.2f} at the joint pose)"
        self.weights[k] = 0.0
        return True

    def last_level(self) -> None:
        """The last joint level, on the model's detector, with the edge objective: Newton steps
        (``RefineConfig.last_optimizer``, on the numba renderer, the rig held), else Adam steps."""
        cfg = self.cfg
        size = max(cfg.sizes[-1], self.first.camera.height, self.first.camera.width)
        level = _level(self.regs, self.xrays, size, cfg.refine)
        newton = cfg.refine.last_optimizer == "newton" and not cfg.refine_rig
        if newton and all(newton_available(level.renderers[k]) for k in range(len(self.regs)) if self.weights[k] > 0):
            ref = refine_newton(joint_terms(self.joint, level, self.weights, cfg.refine.last_objective), self.p, cfg.refine.newton)
            self.p, self.iters = ref.params, self.iters + ref.iterations
            self.traj.append(ref.trajectory)
        else:
            self._run_level(level, cfg.refine.last_objective, cfg.final_iterations, len(cfg.proposal_sizes) + len(cfg.sizes) - 1)

    def register_alone(self) -> None:
        """One view left: exactly what single-view ``register`` gives, mapped to the first view."""
        k = int(np.argmax(self.weights))
        res = self.regs[k].register(self.xrays[k], config=self.cfg.refine)
        to_first = np.linalg.inv(self.rigs[k])
        self.p = self._first_params(to_first @ res.pose.T_cam_from_world)
        self.start = self._first_params(to_first @ res.initial.T_cam_from_world)
        if len(res.trajectory):
            self.traj.append(self._first_params(to_first @ self.regs[k].space.to_matrix(torch.as_tensor(res.trajectory)).numpy()))
        self.iters += res.iterations
        self.joint.u = torch.zeros_like(self.joint.u)

    def result(self, refine_pose: bool) -> MultiviewResult:
        """Every view's ``Result`` at the joint pose, in its own camera, and the reports."""
        at_joint = self._scores_at(self.p)
        seconds = time.perf_counter() - self.t0
        trajectory = np.concatenate(self.traj)
        rigs = [self.joint.rig(k).detach().numpy() for k in range(len(self.regs))]
        deltas = self.joint.rig_deltas_deg()
        reports = [ViewReport(float(self.weights[k]), self.flags[k], float(self.alone[k].score) if refine_pose else None,
                              at_joint[k], float(self.disagree[k]), deltas[k]) for k in range(len(self.regs))]  # fmt: skip
        T0 = self.first.space.to_matrix(torch.as_tensor(self.p)).numpy()
        path = self.first.space.to_matrix(torch.as_tensor(trajectory)).numpy() if len(trajectory) else np.zeros((0, 4, 4))
        results = []
        for k, (reg, xr, g) in enumerate(zip(self.regs, self.xrays, self.regressions, strict=True)):
            pk = reg.space.from_matrix(torch.as_tensor(rigs[k] @ T0)).numpy()
            tk = reg.space.from_matrix(torch.as_tensor(rigs[k] @ path)).numpy() if len(path) else np.zeros((0, 6))
            t_reg = sum(r.seconds for r in self.regressions)  # the whole session's: regress + refine = total
            timing = {"regress": t_reg, "refine": seconds - t_reg, "total": seconds}
            extra = {"model_dir": str(reg.dir.resolve()), "ct_path": reg.meta.get("ct_path")}
            results.append(Result(reg.space.pose(pk), g.pose, reg.scores_at(xr, pk), timing, self.iters, tk, xr.image, xr.mask,
                                  xr.camera, xr.input_camera, xr.positioner_deg, extra))  # fmt: skip
        start = Pose(self.first.space.to_matrix(torch.as_tensor(self.start)).numpy(), self.first.reference)
        joint = replace(results[0], extra={**results[0].extra, "n_views": len(self.regs), "joint_start": start.to_dict()})
        return MultiviewResult(joint, results, reports, rigs)


def register_session(
    specs: Sequence[ViewSpec],
    config: MultiviewConfig | None = None,
    device: torch.device | str = "cpu",
    strict: bool = True,
    refine_pose: bool = True,
    preprocess: PreprocessConfig | None = None,
    transmission: bool = False,
) -> tuple[MultiviewResult, list[Registrar]]:
    """Load every view's model (once per folder), check that they share one CT, prepare the
    X-rays and register them jointly (``register_views``). Returns the result and the registrars."""
    cache: dict[Path, Registrar] = {}
    regs = []
    for s in specs:
        key = s.model.resolve()
        if key not in cache:
            cache[key] = Registrar(s.model, device=device, strict=strict)
        regs.append(cache[key])
    check_same_ct(regs, [str(s.model) for s in specs])
    xrays = [r.prepare(s.xray, s.geometry, preprocess=preprocess, transmission=transmission) for r, s in zip(regs, specs, strict=True)]
    return register_views(regs, xrays, [s.T_cam_from_first for s in specs], config, refine_pose), regs
