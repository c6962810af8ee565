"""Levenberg–Marquardt steps on the pose, with the objective's own curvature.

Refinement's last level (issue #13: ≤ 1 s per X-ray warm) spent 20 Adam steps at the X-ray's
size, one render each. Near the answer a second-order step needs far fewer renders. For a
similarity s(a) of the DRR a(p) (p: the 6 parameters, deg and mm):

- the numba kernel already returns each ray's derivatives with respect to its origin and
  direction (``march_forward_jacobian``), and those are linear in the pose's tangents, so one
  render gives the DRR's whole Jacobian D = da/dp (6, H, W);
- the gradient is Dᵀ∇s and the curvature Dᵀ(∇²s)D: six Hessian-vector products of the
  objective alone (one double backward), with the second derivatives of the DRR itself left
  out, as in Gauss–Newton;
- a damped step δ = (A + λ·diag A)⁻¹ g, with A = −Dᵀ(∇²s)D made positive definite, is
  accepted when it raises s, and λ shrinks; else λ grows and the step is tried again.

Several views of one patient (``multiview.joint_terms``) add their gradients and curvatures,
each taken through its rig (``to_matrix``).

Frames and units: parameters as ``PoseSpace`` (rx, ry, rz in degrees, tx, ty, tz in mm, the
camera frame); images (H, W) bone bright on the renderer's detector.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from xctreg.errors import XctregError
from xctreg.geometry import backproject, pixel_grid
from xctreg.objectives import Objective
from xctreg.render import Renderer
from xctreg.render.rays import world_to_index_matrix

ToMatrix = Callable[[torch.Tensor], torch.Tensor]
Terms = Callable[[np.ndarray], "tuple[float, torch.Tensor, torch.Tensor]"]


class NewtonResult(NamedTuple):
    """``refine_newton``'s answer, in ``register.Refinement``'s order: the best parameters (6,)
    (deg, mm), their objective value, the evaluations used, the seconds, and the poses evaluated (K, 6)."""

    params: np.ndarray
    score: float
    iterations: int
    seconds: float
    trajectory: np.ndarray


@dataclass(frozen=True)
class NewtonConfig:
    """Levenberg–Marquardt on the pose.

    Attributes:
        iterations: the most renders (each with its Jacobian).
        damping: λ at the start; times ``shrink`` after an accepted step. A rejected step sets
            λ to at least ``retry_damping`` (times ``grow``); ``max_rejects`` rejections in a
            row end the search (the pose is then within the objective's noise).
        max_step: the largest step (deg for rotations, mm for translations): a trust region.
        min_gain: stop when the quadratic model predicts less than this gain.
    """

    iterations: int = 8
    damping: float = 1e-2
    shrink: float = 0.3
    grow: float = 10.0
    retry_damping: float = 0.1
    max_rejects: int = 2
    max_step: tuple[float, float] = (0.5, 2.0)
    min_gain: float = 2e-5


def available(renderer: Renderer) -> bool:
    """Whether Newton steps can run on ``renderer``: they need the numba kernel's ray
    derivatives (the CPU backend)."""
    return renderer.backend == "numba"


def ray_pose_jacobian(renderer: Renderer, params: torch.Tensor, to_matrix: ToMatrix | None = None) -> torch.Tensor:
    """d(origin, direction)/dp of every ray of ``renderer`` at ``params`` (6,) (deg, mm):
    (R, 6, 6) in index units (per mm for directions) per degree or mm; rows (o_xyz, d_xyz).
    ``to_matrix``: (B, 6) parameters -> (B, 4, 4) ``T_cam_from_world`` of this renderer's camera
    (float64); None: the renderer's own parameterisation."""
    to_matrix = to_matrix or renderer.poses_to_matrix
    p = params.detach().double().reshape(6)
    T = to_matrix(p[None])[0]
    # dT/dp by central differences in float64 (h = 1e-5 deg or mm: error about 1e-10 relative, as
    # the matrix is smooth in p), in one batch of 12 poses: reverse mode took 4.6 ms, and forward
    # mode through a batched matmul imports torch._dynamo (1 s of a cold start)
    h = 1e-5
    e = torch.eye(6, dtype=torch.float64) * h
    Tpm = to_matrix(torch.cat([p + e, p - e]))
    dT = (Tpm[:6] - Tpm[6:]) / (2 * h)  # (6, 4, 4)
    R, t = T[:3, :3], T[:3, 3]
    dR, dt = dT[:, :3, :3], dT[:, :3, 3]  # (6, 3, 3), (6, 3)
    uv = pixel_grid(renderer.camera, dtype=torch.float64)
    d_cam = backproject(uv, torch.eye(4, dtype=torch.float64), renderer.camera)[1]  # (R, 3), camera frame
    M = world_to_index_matrix(renderer.affine.double())[:3, :3]
    d_src = -(dR.transpose(1, 2) @ t + (R.T @ dt.T).T)  # (6, 3): the source's tangents, world mm
    d_dir = torch.einsum("rj,qjk->qrk", d_cam, dR)  # (6, R, 3): the rays' direction tangents, world
    do = (d_src @ M.T)[:, None].expand_as(d_dir)
    dd = d_dir @ M.T
    return torch.cat([do, dd], -1).permute(1, 2, 0).float()  # (R, 6, 6)


def drr_and_jacobian(renderer: Renderer, params: torch.Tensor, to_matrix: ToMatrix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The DRR (H, W) at ``params`` (6,) (deg, mm) and its Jacobian (6, H, W) with respect to
    them, from one forward-and-Jacobian march (numba backend only; the rays' entry and exit
    held fixed, as ``RenderConfig(face_gradient=False)``). ``to_matrix``: as ``ray_pose_jacobian``."""
    from xctreg.render.kernels import march_forward_jacobian
    from xctreg.render.march import _np32

    if not available(renderer):
        raise XctregError("Newton steps need the numba renderer (CPU)")
    p = params.detach().double().reshape(6)
    T = (to_matrix or renderer.poses_to_matrix)(p[None])
    rays = renderer.rays(T.float())
    o, d = _np32(rays.origin.reshape(-1, 3)), _np32(rays.direction.reshape(-1, 3))
    a, b = _np32(rays.t0.reshape(-1)), _np32(rays.t1.reshape(-1))
    C = renderer._chan_np.shape[-1]
    out = np.empty((o.shape[0], C), np.float32)
    jac = np.empty((o.shape[0], C, 6), np.float32)
    march_forward_jacobian(renderer._chan_np, o, d, a, b, float(renderer.step_mm), out, jac)
    J = ray_pose_jacobian(renderer, p, to_matrix)  # (R, 6, 6)
    dL = torch.einsum("rck,rkq->qcr", torch.from_numpy(jac), J) * 0.1  # (6, C, R), mm -> cm
    H, W = renderer.camera.height, renderer.camera.width
    L = (torch.from_numpy(out).T * 0.1).reshape(1, C, H, W)
    tangents = dL.reshape(6, C, H, W)
    img, D = jvp_by_double_vjp(renderer.intensity_to_image, L.expand(6, -1, -1, -1), tangents)
    return img[0, 0], D[:, 0]


def jvp_by_double_vjp(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) and the Jacobian-vector product J v, with reverse mode twice: g(u) = Jᵀu is linear in
    u, so J v = ∂(g(u)·v)/∂u. Forward mode would do it in one pass, but its first use imports
    ``torch._decomp.decompositions_for_jvp`` (0.19 s of a cold start) and, through some ops,
    ``torch._dynamo`` (1 s); ``torch.func`` imports the latter. Both passes differentiate a
    scalar: ``autograd.grad`` given a ``grad_outputs`` tensor imports sympy (0.56 s)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = f(x)
        u = torch.zeros_like(y, requires_grad=True)
        (g,) = torch.autograd.grad((y * u).sum(), x, create_graph=True)
        (jv,) = torch.autograd.grad((g * v).sum(), u)
    return y.detach(), jv


def newton_terms(objective: Objective, drr: torch.Tensor, D: torch.Tensor, image: torch.Tensor,
                 mask: torch.Tensor | None) -> tuple[float, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The objective's value, its gradient (6,) and its Gauss–Newton Hessian (6, 6) in the pose,
    from the DRR (H, W), its Jacobian D (6, H, W) and the X-ray (H, W) with its mask."""
    # the 6 Hessian-vector products in one double backward over 6 copies of the DRR (reverse over
    # reverse: forward mode through avg_pool2d, or torch.func, imports torch._dynamo, 1 s cold)
    a = drr.detach().expand(6, -1, -1).clone().requires_grad_(True)
    with torch.enable_grad():
        s = objective(a, image.expand_as(a), None if mask is None else mask.expand_as(a))
        (g6,) = torch.autograd.grad(s.sum(), a, create_graph=True)
        (HD,) = torch.autograd.grad((g6 * D).sum(), a)
    value, g_a = float(s[0].detach()), g6[0].detach()
    g = (D * g_a).flatten(1).sum(1).double()
    Hm = torch.einsum("qhw,khw->qk", D.double(), HD.double())
    return value, g, 0.5 * (Hm + Hm.T)


def damped_step(g: torch.Tensor, H: torch.Tensor, damping: float, max_step: tuple[float, float]) -> tuple[np.ndarray, float]:
    """The Levenberg–Marquardt step (6,) that raises an objective with gradient g and Hessian H
    (made negative definite), clipped to ``max_step`` (deg, mm), and the gain its quadratic
    model predicts."""
    A = -H
    w, V = torch.linalg.eigh(A)
    w = w.clamp_min(1e-6 * float(w.abs().max().clamp_min(1e-30)))
    A = (V * w) @ V.T
    A = A + damping * torch.diag(torch.diagonal(A))
    step = torch.linalg.solve(A, g)
    cap = torch.as_tensor(max_step, dtype=step.dtype).repeat_interleave(3)
    step = step / max(1.0, float((step.abs() / cap).max()))
    gain = float(g @ step + 0.5 * step @ H @ step)
    return step.numpy(), gain


def view_terms(renderer: Renderer, objective: Objective, image: torch.Tensor, mask: torch.Tensor | None,
               to_matrix: ToMatrix | None = None) -> Terms:  # fmt: skip
    """``newton_terms`` of one view as a function of the parameters (6,) (deg, mm): ``image``
    and ``mask`` (H, W) on ``renderer``'s detector; ``to_matrix`` as ``ray_pose_jacobian``."""

    def terms(p: np.ndarray) -> tuple[float, torch.Tensor, torch.Tensor]:
        return newton_terms(objective, *drr_and_jacobian(renderer, torch.as_tensor(p), to_matrix), image, mask)

    return terms


def refine_newton(terms: Terms, start: np.ndarray, config: NewtonConfig | None = None) -> NewtonResult:
    """Levenberg–Marquardt from ``start`` (6,) (deg, mm) on an objective given by ``terms``
    (parameters -> value, gradient (6,), Hessian (6, 6); ``view_terms``, or a weighted sum of
    several views'). An evaluation renders every view once."""
    cfg = config or NewtonConfig()
    t0 = time.perf_counter()
    p = np.asarray(start, dtype=np.float64).reshape(6)
    value, g, H = terms(p)
    lam, evals, rejects, path = cfg.damping, 1, 0, [p.copy()]
    while evals < cfg.iterations and rejects < cfg.max_rejects:
        step, gain = damped_step(g, H, lam, cfg.max_step)
        if not (np.isfinite(gain) and np.all(np.isfinite(step))) or gain < cfg.min_gain:
            break  # converged, or an objective without a finite gradient here: keep the best pose
        q = p + step
        value_q, g_q, H_q = terms(q)
        evals += 1
        path.append(q.copy())
        if value_q > value:
            p, value, g, H, lam, rejects = q, value_q, g_q, H_q, lam * cfg.shrink, 0
        else:
            lam, rejects = max(lam * cfg.grow, cfg.retry_damping), rejects + 1
    return NewtonResult(p, value, evals, time.perf_counter() - t0, np.asarray(path))
