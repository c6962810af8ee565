"""Refinement objectives (``xctreg.objectives``): identity, invariances, masks, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xctreg.errors import XctregError
from xctreg.objectives import OBJECTIVES, get_objective


def _image(shift: float = 0.0) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(48.0), torch.arange(40.0), indexing="ij")
    return torch.exp(-((u - 18 - shift) ** 2 + (v - 22) ** 2) / 60) + 0.5 * torch.sin(u / 4 + shift / 4) * torch.cos(v / 5)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_identity_scaling_and_shift(name: str) -> None:
    f = get_objective(name)
    a = _image()
    assert float(f(a, a, None)) == pytest.approx(1.0, abs=1e-3)
    assert float(f(3 * a + 2, a, None)) == pytest.approx(1.0, abs=1e-3)  # any linear scaling
    near, far = float(f(_image(1.0), a, None)), float(f(_image(5.0), a, None))
    assert 1.0 > near > far  # falls off with misalignment


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_mask_ignores_outside_pixels(name: str) -> None:
    f = get_objective(name)
    a = _image()
    mask = torch.zeros_like(a)
    mask[6:42, 5:35] = 1
    b = torch.where(mask > 0, a, torch.full_like(a, 9.0))  # a black/white shutter outside
    assert float(f(a, b, mask)) == pytest.approx(1.0, abs=1e-3)
    assert float(f(a, b, None)) < 0.99


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_is_differentiable_and_batched(name: str) -> None:
    f = get_objective(name)
    a = torch.stack([_image(0.5), _image(2.0)]).requires_grad_(True)
    b = torch.stack([_image(), _image()])
    s = f(a, b, None)
    assert s.shape == (2,)
    s.sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_local_gradncc_ignores_a_ramp_and_a_smooth_gain_that_global_measures_do_not() -> None:
    """The fixed image with a linear ramp (a heel effect) and a gain that varies slowly across
    it (scatter's loss of local contrast): local gradient NCC is unchanged by the ramp and
    moved by the gain less than half as much as global gradient NCC (NCC drops far more)."""
    f = get_objective("local-gradncc")
    a = _image()
    v, u = torch.meshgrid(torch.arange(48.0), torch.arange(40.0), indexing="ij")
    ramp = a + 0.05 * u - 0.03 * v
    assert float(f(a, ramp, None)) == pytest.approx(1.0, abs=1e-4)
    gain = a * (0.4 + 0.6 * u / 39) + 0.02 * u
    local, glob = float(f(a, gain, None)), float(get_objective("gradncc")(a, gain, None))
    assert local > 0.98 and 1 - local < 0.5 * (1 - glob) and float(get_objective("ncc")(a, gain, None)) < 0.9
    # and it still falls off with misalignment under that gain
    assert float(f(_image(1.0), gain, None)) < local - 0.02


def test_weighted_local_gradncc_discounts_what_the_drr_leaves_flat() -> None:
    """An instrument (a bright bar) over a region that the DRR shows flat: the windows there
    cannot agree, so plain local gradient NCC drops; weighted by the DRR's gradient strength
    they hardly count. Power 0 is the plain mean, and it stays differentiable."""
    from xctreg.objectives import local_gradncc

    a = _image()
    a[:, 22:] = float(a[:, 21].mean())  # the CT predicts nothing on the right
    b = a.clone()
    b[10:40, 31:34] += 0.8  # what the CT lacks
    plain, weighted = float(get_objective("local-gradncc")(a, b, None)), float(get_objective("weighted-local-gradncc")(a, b, None))
    assert plain < 0.9 and weighted > 0.999
    assert float(local_gradncc(a, b, None, weight_power=0.0)) == pytest.approx(plain, abs=1e-7)
    # still an objective of the pose: misaligned falls off
    assert float(get_objective("weighted-local-gradncc")(_image(2.0), _image(), None)) < 0.99
    # differentiable in the DRR: a finite, non-zero gradient
    x = _image(1.0).requires_grad_(True)
    get_objective("weighted-local-gradncc")(x, _image(), None).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_unknown_objective() -> None:
    with pytest.raises(XctregError, match="unknown similarity 'mi'"):
        get_objective("mi")


def test_outlier_mask_leaves_out_what_the_ct_lacks() -> None:
    """A thin bright rod in the X-ray, absent from the DRR, is left out; little else is."""
    from xctreg.objectives import outlier_mask

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    drr = torch.sin(xx / 7) + torch.cos(yy / 5) + 0.5 * ((xx - 40) ** 2 + (yy - 50) ** 2 < 400).float()
    xray = 2.0 * drr + 0.3 + 0.02 * torch.randn(96, 96, generator=g)  # another contrast, noise
    rod = ((xx - yy - 5).abs() < 1.0) & (xx > 20) & (xx < 80)
    with_rod = xray + 1.5 * rod.float()
    m = outlier_mask(drr, with_rod)
    assert m[rod].mean() < 0.2  # the rod is out
    assert m[~rod].mean() > 0.9  # the rest stays
    clean = outlier_mask(drr, xray)
    assert clean.mean() > 0.95  # nothing to leave out: only noise tails in flat windows go
    user = torch.ones(96, 96)
    user[:, :10] = 0
    assert outlier_mask(drr, with_rod, user)[:, :10].sum() == 0  # within the given mask


def test_blur_and_with_blur() -> None:
    """``blur``: σ 0 leaves an image as it is, a constant stays constant, the sum is kept away
    from the borders, and a batch takes one σ per image. ``with_blur`` blurs only the moving
    image: an X-ray blurred by σ matches its sharp DRR best at σ."""
    from xctreg.objectives import blur, gradncc, with_blur

    x = _image()
    assert torch.equal(blur(x, 0.0), x)
    assert torch.allclose(blur(torch.full((20, 30), 2.0), 1.3), torch.full((20, 30), 2.0))
    spot = torch.zeros(41, 41)
    spot[20, 20] = 1.0
    b = blur(spot, 2.0)
    assert float(b.sum()) == pytest.approx(1.0, abs=1e-5) and float(b[20, 20]) < 0.1
    both = blur(torch.stack([x, x]), torch.tensor([0.0, 1.5]))
    assert torch.equal(both[0], x) and torch.allclose(both[1], blur(x, 1.5))
    assert with_blur(gradncc, 0.0) is gradncc
    y = blur(x, 1.0)
    scores = [float(with_blur(gradncc, s)(x, y)) for s in (0.0, 0.5, 1.0, 1.5, 2.0)]
    assert int(np.argmax(scores)) == 2 and scores[2] == pytest.approx(1.0, abs=1e-4)
