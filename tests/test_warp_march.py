"""The fused Warp ray-march kernels (the GPU path), run on Warp's CPU target against numba.

CUDA itself is covered by tests/test_cuda.py on a GPU machine; here the same kernels'
maths (forward, pose backward, 1 and 3 channels, rays that miss, the faces' term) is
checked without one, so CI covers it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xctreg.geometry import Camera, sample_params
from xctreg.render import RenderConfig, Renderer

pytest.importorskip("warp", reason="NVIDIA Warp (warp-lang) is not installed")

CAM = Camera(1020.0, 40, 48, (8.0, 8.0))


@pytest.mark.parametrize(("mode", "face"), [("poly", False), ("line", True)])
def test_warp_matches_numba_forward_and_pose_gradient(small_phantom, mode: str, face: bool) -> None:
    """Images within float32 rounding and pose gradients within 1e-3 (relative) of the numba
    kernels, for a batch of poses, with 3 channels (poly) and 1 (line, with the faces' term)."""
    cfg = RenderConfig(mode=mode, step_mm=2.0, face_gradient=face)
    rn = Renderer(small_phantom, CAM, RenderConfig(**{**cfg.__dict__, "backend": "numba"}))
    rw = Renderer(small_phantom, CAM, RenderConfig(**{**cfg.__dict__, "backend": "warp"}))
    assert rw.backend == "warp"
    p = torch.tensor(sample_params(3, seed=7), dtype=torch.float64)
    p[0, 3] += 400.0  # the first pose misses the volume: its rays have t1 <= t0
    weights = torch.randn(3, 1, CAM.height, CAM.width, generator=torch.Generator().manual_seed(0))
    grads, images = [], []
    for r in (rn, rw):
        q = p.clone().requires_grad_(True)
        img = r(q)
        (img * weights).sum().backward()
        images.append(img.detach())
        grads.append(q.grad.clone())
    torch.testing.assert_close(images[1], images[0], rtol=1e-4, atol=1e-5)
    assert float(images[0][1:].abs().max()) > 0.1  # the other poses see the phantom
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-3 * float(grads[0].abs().max()))
    assert float(grads[0][1:].abs().max()) > 0


def test_warp_line_integrals_of_a_constant_volume_are_chord_lengths() -> None:
    """In a constant volume every channel's integral is value × chord (mm), as numba's."""
    from xctreg.io import Volume

    vol = Volume(np.full((10, 12, 14), 1000.0, np.float32), [4.0, 4.0, 4.0])
    rn = Renderer(vol, CAM, RenderConfig(mode="line", backend="numba", step_mm=1.0))
    rw = Renderer(vol, CAM, RenderConfig(mode="line", backend="warp", step_mm=1.0))
    p = torch.zeros(1, 6)
    torch.testing.assert_close(rw.line_integrals(p), rn.line_integrals(p), rtol=1e-5, atol=1e-6)


def test_unknown_backend_is_refused(small_phantom) -> None:
    from xctreg.errors import XctregError

    with pytest.raises(XctregError, match="backend"):
        Renderer(small_phantom, CAM, RenderConfig(backend="opengl"))  # type: ignore[arg-type]
