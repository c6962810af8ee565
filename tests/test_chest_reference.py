"""On the real chest CT: fast renderer vs Siddon, and line-integral mode vs DiffDRR 0.6.1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xctreg.geometry import Camera, PoseReference, params_to_matrix, sample_params
from xctreg.io import Volume, read_volume
from xctreg.physics import hu_to_density
from xctreg.render import RenderConfig, Renderer

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.fixture(scope="module")
def chest() -> Volume:
    from xctreg.data.chest import fetch_chest

    return read_volume(fetch_chest())


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("mode", ["poly", "line"])
def test_fast_renderer_agrees_with_siddon_on_chest(chest, mode) -> None:
    cam = Camera(1020.0, 256, 256, (1.6, 1.6))
    r = Renderer(chest, cam, RenderConfig(mode=mode))  # default: auto pyramid level, numba
    p = torch.tensor(sample_params(2, seed=11), dtype=torch.float32)
    fast = r(p)
    exact = Renderer(chest, cam, RenderConfig(mode=mode, voxel_mm=None))
    ref = exact.intensity_to_image(exact.siddon_line_integrals(p.double()).float())
    err = float((fast - ref).abs().sum() / ref.abs().sum())
    assert err < 0.01, err


def test_line_integrals_match_diffdrr(chest) -> None:
    DRR = pytest.importorskip("diffdrr.drr").DRR
    read = pytest.importorskip("diffdrr.data").read

    cam = Camera(1020.0, 128, 128, (3.2, 3.2))
    subject = read(str(chest.path), orientation=None, center_volume=False)
    drr = DRR(subject, sdd=cam.sdd_mm, height=cam.height, delx=cam.pixel_spacing_mm[1], renderer="siddon")
    # Same quantity in both: our HU->density map, in DiffDRR's (i, j, k) voxel order.
    density = hu_to_density(torch.from_numpy(chest.hu)).permute(2, 1, 0).contiguous()
    ours = Renderer(chest, cam, RenderConfig(mode="line", voxel_mm=None))
    ref = PoseReference(tuple(chest.center), 750.0)
    ras = torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)  # LPS <-> RAS
    for params in sample_params(3, seed=5):
        T = params_to_matrix(torch.tensor(params), ref)
        R, t = T[:3, :3], T[:3, 3]
        v, u = torch.meshgrid(torch.arange(cam.height), torch.arange(cam.width), indexing="ij")
        pix = torch.stack(
            [(u.reshape(-1) - cam.cx) * cam.pixel_spacing_mm[1], (v.reshape(-1) - cam.cy) * cam.pixel_spacing_mm[0],
             torch.full((u.numel(),), cam.sdd_mm)], -1,
        ).double()  # fmt: skip
        target = (pix - t) @ R  # detector pixel centres in world (LPS)
        source = -(R.T @ t)
        with torch.no_grad():
            theirs = drr.render(density, (source * ras)[None, None].float(), (target * ras)[None].float())
        theirs = theirs.reshape(cam.height, cam.width).numpy()
        mine = (ours(T[None].float())[0, 0] * 10.0).numpy()  # g/cm² -> g/cm³·mm like DiffDRR
        assert _ncc(mine, theirs) > 0.999
        assert np.abs(mine - theirs).sum() / np.abs(theirs).sum() < 0.02
