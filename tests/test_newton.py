"""Levenberg–Marquardt steps on the pose (``xctreg.newton``): its Jacobians against autograd,
its step against a known quadratic, and its convergence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from xctreg.geometry import Camera, PoseReference
from xctreg.newton import NewtonConfig, damped_step, drr_and_jacobian, newton_terms, ray_pose_jacobian, refine_newton, view_terms
from xctreg.objectives import get_objective
from xctreg.physics import DetectorConfig
from xctreg.render import RenderConfig, Renderer

P = np.array([3.0, -4.0, 6.0, 8.0, -5.0, 12.0])


@pytest.fixture(scope="module")
def renderer(small_phantom) -> Renderer:
    cam = Camera(1020.0, 40, 48, (6.0, 6.0))
    ref = PoseReference(tuple(small_phantom.center), 750.0)
    return Renderer(small_phantom, cam, RenderConfig(face_gradient=False), reference=ref)


def test_ray_pose_jacobian_matches_forward_mode_autodiff(renderer) -> None:
    p = torch.as_tensor(P)

    def rays(q: torch.Tensor) -> torch.Tensor:
        r = renderer.rays(q[None])
        return torch.cat([r.origin[0], r.direction[0]], -1)

    ref = torch.func.jacfwd(rays)(p)
    got = ray_pose_jacobian(renderer, p)
    assert got.shape == (40 * 48, 6, 6)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_drr_and_jacobian_match_the_renderer_and_its_autograd(renderer) -> None:
    p = torch.as_tensor(P)
    drr, D = drr_and_jacobian(renderer, p)
    q = p.float().clone().requires_grad_(True)
    img = renderer(q[None])[0, 0]
    torch.testing.assert_close(drr, img.detach(), rtol=1e-5, atol=1e-6)
    w = torch.randn(img.shape, generator=torch.Generator().manual_seed(0))
    (img * w).sum().backward()  # one vector-Jacobian product: wᵀD
    torch.testing.assert_close((D * w).flatten(1).sum(1), q.grad, rtol=2e-3, atol=1e-4 * float(q.grad.abs().max()))


def test_newton_terms_gradient_is_the_objectives_and_its_hessian_is_symmetric(renderer) -> None:
    obj = get_objective("local-gradncc")
    target = renderer(torch.as_tensor((P + 1.0)[None], dtype=torch.float32))[0, 0]
    mask = torch.ones_like(target)
    mask[:4] = 0
    q = torch.as_tensor(P, dtype=torch.float32).requires_grad_(True)
    s = obj(renderer(q[None])[0, 0], target, mask)
    s.backward()
    value, g, H = newton_terms(obj, *drr_and_jacobian(renderer, torch.as_tensor(P)), target, mask)
    assert value == pytest.approx(float(s.detach()), abs=1e-6)
    torch.testing.assert_close(g.float(), q.grad, rtol=2e-3, atol=1e-4 * float(q.grad.abs().max()))
    torch.testing.assert_close(H, H.T)


def test_damped_step_is_newtons_on_a_quadratic_and_respects_the_cap() -> None:
    A = torch.tensor(np.diag([2.0, 1.0, 4.0, 0.5, 1.0, 0.1]))  # s(x) = -½ (x-m)ᵀA(x-m): H = -A
    m = torch.tensor([0.1, -0.2, 0.05, 1.0, -0.5, 3.0], dtype=torch.float64)
    g = A @ m  # the gradient at x = 0
    step, gain = damped_step(g, -A, 0.0, (10.0, 10.0))
    np.testing.assert_allclose(step, m.numpy(), rtol=1e-6)
    assert gain == pytest.approx(0.5 * float(m @ A @ m))
    capped, _ = damped_step(g, -A, 0.0, (0.5, 2.0))
    assert np.abs(capped[3:]).max() == pytest.approx(2.0) and np.abs(capped[:3]).max() <= 0.5
    np.testing.assert_allclose(capped / np.linalg.norm(capped), step / np.linalg.norm(step), rtol=1e-9)
    # a Hessian that is not negative definite (a saddle) still gives an ascent direction
    saddle, _ = damped_step(g, A, 0.0, (10.0, 10.0))
    assert float(g @ torch.as_tensor(saddle)) > 0


def test_refine_newton_converges_in_few_renders_across_a_domain_gap(small_phantom) -> None:
    cam = Camera(1020.0, 64, 64, (6.0, 6.0))
    ref = PoseReference(tuple(small_phantom.center), 750.0)
    target_r = Renderer(small_phantom, cam, RenderConfig(kvp=110.0, detector=DetectorConfig(blur_px=0.5)), reference=ref)
    target = target_r(torch.as_tensor(P[None], dtype=torch.float32))[0, 0]
    r = Renderer(small_phantom, cam, RenderConfig(face_gradient=False), reference=ref)
    obj = get_objective("local-gradncc")
    start = P + np.array([0.6, -0.5, 0.4, 1.5, -1.0, 4.0])
    params, value, renders, _, path = refine_newton(view_terms(r, obj, target, None), start, NewtonConfig(iterations=10))
    with torch.no_grad():
        s0 = float(obj(r(torch.as_tensor(start[None], dtype=torch.float32))[0, 0], target, None))
    assert value > s0
    assert renders == len(path) <= 10
    err = params - P
    assert np.abs(err[:3]).max() < 0.15 and np.abs(err[3:5]).max() < 0.3, err
    assert abs(err[5]) < 2.0, err  # depth: magnification only, at 6 mm voxels


def test_refine_newton_stops_at_a_non_finite_gradient_and_keeps_the_start() -> None:
    """A NaN gradient (a flat or empty image) must not reach the kernels as a NaN pose."""
    calls: list[np.ndarray] = []

    def terms(p: np.ndarray) -> tuple[float, torch.Tensor, torch.Tensor]:
        calls.append(p.copy())
        return float("nan"), torch.full((6,), float("nan"), dtype=torch.float64), -torch.eye(6, dtype=torch.float64)

    out = refine_newton(terms, P)
    assert len(calls) == 1 and out.iterations == 1 and np.array_equal(out.params, P)


def test_refine_newton_refuses_a_renderer_without_kernel_jacobians(small_phantom) -> None:
    from xctreg.errors import XctregError

    r = Renderer(small_phantom, Camera(1020.0, 16, 16, (6.0, 6.0)), RenderConfig(backend="torch", face_gradient=False))
    with pytest.raises(XctregError, match="numba"):
        drr_and_jacobian(r, torch.zeros(6))


def test_refine_newton_does_not_import_torch_dynamo_sympy_or_jvp_decompositions() -> None:
    """A cold ``xctreg register`` must not pay these imports (2 cores): torch._dynamo (1 s:
    torch.func, and forward mode through avg_pool2d or a batched matmul), sympy (0.56 s:
    ``autograd.grad`` with a ``grad_outputs`` tensor) and the forward-mode decompositions
    (0.19 s: any ``make_dual``)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, torch\n"
        "from xctreg.data.phantom import PhantomConfig, make_phantom\n"
        "from xctreg.geometry import Camera\n"
        "from xctreg.newton import refine_newton, view_terms\n"
        "from xctreg.objectives import get_objective\n"
        "from xctreg.render import RenderConfig, Renderer\n"
        "vol = make_phantom(PhantomConfig(size=(24, 24, 24), spacing_mm=(10.0, 10.0, 10.0)))\n"
        "r = Renderer(vol, Camera(1020.0, 16, 16, (8.0, 8.0)), RenderConfig(face_gradient=False))\n"
        "y = r(torch.zeros(1, 6))[0, 0]\n"
        "for name in ('local-gradncc', 'gradncc'):\n"
        "    refine_newton(view_terms(r, get_objective(name), y, torch.ones_like(y)), np.ones(6))\n"
        "print([m for m in ('torch._dynamo', 'sympy', 'torch._decomp.decompositions_for_jvp') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.fixture
def newton_calls(monkeypatch) -> list[int]:
    """The evaluations of every ``refine_newton`` call that ``xctreg.register`` makes, in order."""
    import xctreg.register as R

    calls: list[int] = []
    real = R.refine_newton

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = real(*args, **kwargs)
        calls.append(out.iterations)
        return out

    monkeypatch.setattr(R, "refine_newton", counting)
    return calls


def test_registrar_uses_newton_steps_on_the_last_level_and_adam_when_asked(model_dir, small_phantom, newton_calls) -> None:
    from xctreg.register import RefineConfig, Registrar

    calls = newton_calls

    reg = Registrar(model_dir / "m", ct=small_phantom)
    p = reg.space.sample(1, seed=4)[0]
    r = Renderer(small_phantom, reg.camera, RenderConfig(kvp=100.0), reference=reg.reference)
    img = r(torch.as_tensor(p[None], dtype=torch.float32))[0, 0].numpy()
    base = RefineConfig(restarts=0)
    assert base.last_optimizer == "newton"
    res = reg.register(img, reg.camera, start_params=p + np.array([0.3, -0.3, 0.2, 1.0, -1.0, 2.0]), config=base)
    assert len(calls) == 1 and 1 <= calls[0] <= base.newton.iterations
    assert np.abs(res.params[:3] - p[:3]).max() < 0.3 and np.abs(res.params[3:5] - p[3:5]).max() < 1.0
    reg.register(img, reg.camera, config=replace(base, last_optimizer="adam"))
    reg.register(img, reg.camera, config=replace(base, render=replace(base.render, backend="torch")))  # no kernel Jacobians: Adam
    assert len(calls) == 1


def test_model_levels_from_newton_from_px_take_newton_steps(small_phantom, newton_calls) -> None:
    """``RefineConfig.newton_from_px``: the model levels at least that size take Newton steps
    (one ``refine_newton`` call each), the smaller ones Adam steps; 0 keeps Adam everywhere."""
    from xctreg.register import RefineConfig, refine

    calls = newton_calls

    cam = Camera(1020.0, 32, 32, (12.0, 12.0))
    ref = PoseReference(tuple(small_phantom.center), 750.0)
    target = Renderer(small_phantom, cam, RenderConfig(kvp=110.0), reference=ref)(torch.as_tensor(P[None], dtype=torch.float32))[0, 0]
    start = P + np.array([0.4, -0.4, 0.3, 1.0, -1.0, 2.0])
    cfg = RefineConfig(sizes=(16, 32), iterations=(10, 10), newton_from_px=32)
    res = refine(small_phantom, target.numpy(), cam, ref, start, cfg)
    assert len(calls) == 1 and res.iterations == len(res.trajectory) > calls[0]
    assert np.abs(res.params[:3] - P[:3]).max() < np.abs(start[:3] - P[:3]).max()
    refine(small_phantom, target.numpy(), cam, ref, start, replace(cfg, newton_from_px=0))
    assert len(calls) == 1
