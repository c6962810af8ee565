"""The ray-march kernels in NVIDIA Warp: one fused kernel per pass, for CUDA (and Warp's CPU target).

The same midpoint rule on the same edge-clamped trilinear interpolant as the
numba kernels (``render.kernels``), over up to three material channels in one
pass: ``march_forward`` gives every ray's line integrals, ``march_backward``
the gradient with respect to its index-space origin and direction, from which
torch's autograd carries on to the pose (``march._interval_grads`` adds the
entry/exit term, as for numba). One thread per ray; no intermediate samples
are stored, unlike ``march_torch``, whose ``grid_sample`` keeps (rays ×
samples × channels) values for its backward pass.

Warp is optional (``pip install warp-lang``); this module imports it. Its
correctness is tested on Warp's CPU target against the numba kernels
(tests/test_warp_march.py), so CI covers it without a GPU.
"""

from __future__ import annotations

import numpy as np
import torch
import warp as wp

from xctreg.render.rays import IndexRays

wp.config.log_level = wp.LOG_WARNING  # no start-up banner
wp.init()  # once per process; kernels compile on first launch per device and are cached on disk
wp.set_module_options({"enable_backward": False})  # the backward pass is written by hand below


@wp.func
def _corner(x: float, n: int) -> wp.vec3:
    """(lower corner index, fractional offset, d(offset)/dx) of edge-clamped linear
    interpolation on n samples, as a vec3 (the index as a float)."""
    top = n - 1
    if x <= 0.0:
        return wp.vec3(0.0, 0.0, 0.0)
    if x >= float(top):
        return wp.vec3(float(top - 1), 1.0, 0.0)
    i0 = wp.min(int(x), top - 1)
    return wp.vec3(float(i0), x - float(i0), 1.0)


@wp.func
def _cell(vol: wp.array4d(dtype=wp.float32), p: wp.vec3) -> wp.mat33:
    """The interpolation cell of index-space point ``p``: rows ``_corner`` of x, y and z (on the
    volume's ni, nj, nk samples)."""
    return wp.matrix_from_rows(_corner(p[0], vol.shape[2]), _corner(p[1], vol.shape[1]), _corner(p[2], vol.shape[0]))


@wp.func
def _trilinear(vol: wp.array4d(dtype=wp.float32), cell: wp.mat33, c: int) -> float:
    """Channel ``c`` of the volume interpolated in ``cell`` (``_cell``)."""
    i0 = int(cell[0, 0])
    j0 = int(cell[1, 0])
    k0 = int(cell[2, 0])
    fx = cell[0, 1]
    fy = cell[1, 1]
    fz = cell[2, 1]
    hx = 1.0 - fx
    hy = 1.0 - fy
    hz = 1.0 - fz
    lo = hz * (hy * (hx * vol[k0, j0, i0, c] + fx * vol[k0, j0, i0 + 1, c]) + fy * (hx * vol[k0, j0 + 1, i0, c] + fx * vol[k0, j0 + 1, i0 + 1, c]))
    hi = fz * (hy * (hx * vol[k0 + 1, j0, i0, c] + fx * vol[k0 + 1, j0, i0 + 1, c]) + fy * (hx * vol[k0 + 1, j0 + 1, i0, c] + fx * vol[k0 + 1, j0 + 1, i0 + 1, c]))
    return lo + hi


@wp.kernel
def march_forward(
    vol: wp.array4d(dtype=wp.float32),
    o: wp.array(dtype=wp.vec3),
    d: wp.array(dtype=wp.vec3),
    t0: wp.array(dtype=wp.float32),
    t1: wp.array(dtype=wp.float32),
    step: float,
    out: wp.array2d(dtype=wp.float32),
):
    """out[r, c] = Σ_s vol_c(o_r + t_s d_r) Δt over the midpoint samples of [t0_r, t1_r]."""
    r = wp.tid()
    nc = vol.shape[3]
    a0 = float(0.0)
    a1 = float(0.0)
    a2 = float(0.0)
    length = t1[r] - t0[r]
    dt = float(0.0)
    if length > 0.0:
        n = int(wp.ceil(length / step))
        dt = length / float(n)
        for s in range(n):
            cell = _cell(vol, o[r] + (t0[r] + (float(s) + 0.5) * dt) * d[r])
            a0 += _trilinear(vol, cell, 0)
            if nc > 1:
                a1 += _trilinear(vol, cell, 1)
            if nc > 2:
                a2 += _trilinear(vol, cell, 2)
    out[r, 0] = a0 * dt
    if nc > 1:
        out[r, 1] = a1 * dt
    if nc > 2:
        out[r, 2] = a2 * dt


@wp.func
def _weighted(vol: wp.array4d(dtype=wp.float32), k: int, j: int, i: int, g: wp.vec3, nc: int) -> float:
    """Σ_c g_c vol[k, j, i, c]: one corner with the channels summed under the upstream gradient."""
    v = g[0] * vol[k, j, i, 0]
    if nc > 1:
        v += g[1] * vol[k, j, i, 1]
    if nc > 2:
        v += g[2] * vol[k, j, i, 2]
    return v


@wp.kernel
def march_backward(
    vol: wp.array4d(dtype=wp.float32),
    o: wp.array(dtype=wp.vec3),
    d: wp.array(dtype=wp.vec3),
    t0: wp.array(dtype=wp.float32),
    t1: wp.array(dtype=wp.float32),
    step: float,
    grad_out: wp.array(dtype=wp.vec3),
    grad_o: wp.array(dtype=wp.vec3),
    grad_d: wp.array(dtype=wp.vec3),
):
    """grad_o[r] = Σ_s ∇f·g Δt and grad_d[r] = Σ_s t_s ∇f·g Δt (t0, t1 and Δt held), where
    f·g is the interpolant of the channels weighted by the upstream gradient g = grad_out[r]."""
    r = wp.tid()
    nc = vol.shape[3]
    g = grad_out[r]
    go = wp.vec3(0.0, 0.0, 0.0)
    gd = wp.vec3(0.0, 0.0, 0.0)
    length = t1[r] - t0[r]
    if length > 0.0:
        n = int(wp.ceil(length / step))
        dt = length / float(n)
        for s in range(n):
            t = t0[r] + (float(s) + 0.5) * dt
            cell = _cell(vol, o[r] + t * d[r])
            i0 = int(cell[0, 0])
            j0 = int(cell[1, 0])
            k0 = int(cell[2, 0])
            fx = cell[0, 1]
            fy = cell[1, 1]
            fz = cell[2, 1]
            hx = 1.0 - fx
            hy = 1.0 - fy
            hz = 1.0 - fz
            v000 = _weighted(vol, k0, j0, i0, g, nc)
            v100 = _weighted(vol, k0, j0, i0 + 1, g, nc)
            v010 = _weighted(vol, k0, j0 + 1, i0, g, nc)
            v110 = _weighted(vol, k0, j0 + 1, i0 + 1, g, nc)
            v001 = _weighted(vol, k0 + 1, j0, i0, g, nc)
            v101 = _weighted(vol, k0 + 1, j0, i0 + 1, g, nc)
            v011 = _weighted(vol, k0 + 1, j0 + 1, i0, g, nc)
            v111 = _weighted(vol, k0 + 1, j0 + 1, i0 + 1, g, nc)
            sx = cell[0, 2] * ((v100 - v000) * hy * hz + (v110 - v010) * fy * hz + (v101 - v001) * hy * fz + (v111 - v011) * fy * fz)
            sy = cell[1, 2] * ((v010 - v000) * hx * hz + (v110 - v100) * fx * hz + (v011 - v001) * hx * fz + (v111 - v101) * fx * fz)
            sz = cell[2, 2] * ((v001 - v000) * hx * hy + (v101 - v100) * fx * hy + (v011 - v010) * hx * fy + (v111 - v110) * fx * fy)
            grad = wp.vec3(sx, sy, sz) * dt
            go += grad
            gd += grad * t
    grad_o[r] = go
    grad_d[r] = gd


def warp_device(device: torch.device) -> str:
    """Warp's name for a torch device: "cpu" or "cuda:N"."""
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    if device.type == "cpu":
        return "cpu"
    raise ValueError(f"Warp runs on the CPU or CUDA, not on {device}")


def _wp(x: torch.Tensor, dtype: object = wp.float32) -> wp.array:
    return wp.from_torch(x.detach().to(torch.float32).contiguous(), dtype=dtype)


class _WarpMarch(torch.autograd.Function):
    """Autograd wrapper: forward and pose backward in the fused Warp kernels, on the volume's device."""

    @staticmethod
    def forward(ctx, origin, direction, t0, t1, vol, step):  # noqa: ANN001, ANN205
        shape = origin.shape[:-1]
        R, C = origin.reshape(-1, 3).shape[0], vol.shape[-1]
        dev = warp_device(vol.device)
        out = torch.empty((R, C), dtype=torch.float32, device=vol.device)
        if R:
            args = [_wp(vol), _wp(origin.reshape(-1, 3), wp.vec3), _wp(direction.reshape(-1, 3), wp.vec3),
                    _wp(t0.reshape(-1)), _wp(t1.reshape(-1)), float(step), wp.from_torch(out)]  # fmt: skip
            wp.launch(march_forward, dim=R, inputs=args, device=dev)
        L = out.to(origin.dtype).reshape(*shape, C)
        ctx.save_for_backward(origin, direction, t0, t1, L, vol)
        ctx.step = step
        return L

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        from xctreg.render.march import _interval_grads

        origin, direction, t0, t1, L, vol = ctx.saved_tensors
        R, C = origin.reshape(-1, 3).shape[0], vol.shape[-1]
        g = torch.zeros((R, 3), dtype=torch.float32, device=vol.device)
        g[:, :C] = grad_out.reshape(R, C)
        go = torch.empty((R, 3), dtype=torch.float32, device=vol.device)
        gd = torch.empty_like(go)
        if R:
            args = [_wp(vol), _wp(origin.reshape(-1, 3), wp.vec3), _wp(direction.reshape(-1, 3), wp.vec3),
                    _wp(t0.reshape(-1)), _wp(t1.reshape(-1)), float(ctx.step), _wp(g, wp.vec3),
                    wp.from_torch(go, dtype=wp.vec3), wp.from_torch(gd, dtype=wp.vec3)]  # fmt: skip
            wp.launch(march_backward, dim=R, inputs=args, device=warp_device(vol.device))
        go_t = go.to(origin.dtype).reshape(origin.shape)
        gd_t = gd.to(origin.dtype).reshape(origin.shape)
        g_t0 = g_t1 = None
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            g_t0, g_t1 = _interval_grads(go_t, gd_t, direction, t0, t1, (grad_out * L).sum(-1))
        return go_t, gd_t, g_t0, g_t1, None, None


def march_warp(vol: torch.Tensor, rays: IndexRays, step_mm: float) -> torch.Tensor:
    """Trilinear line integrals (B, R, C) with the Warp kernels; vol float32 (nk, nj, ni, C),
    C <= 3, on the CPU or a CUDA device (the rays are moved there). Differentiable in the rays."""
    if vol.shape[-1] > 3:
        raise ValueError("the Warp marcher supports at most 3 channels")
    dev = vol.device
    return _WarpMarch.apply(rays.origin.to(dev), rays.direction.to(dev), rays.t0.to(dev), rays.t1.to(dev), vol, step_mm)


def as_warp_volume(channels_np: np.ndarray, device: torch.device) -> torch.Tensor:
    """The (nk, nj, ni, C) float32 channel volume as a contiguous torch tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(channels_np, dtype=np.float32)).to(device)
