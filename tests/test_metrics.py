"""Metrics on known values (SPEC §6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xctreg.geometry import Camera, PoseReference, params_to_matrix
from xctreg.metrics import image_scores, mpd, mtre, ncc, param_errors, ssim_css, success_rates

REF = PoseReference((0.0, 0.0, 0.0), 750.0)
PTS = torch.tensor([[10.0, 20.0, 30.0], [-40.0, 5.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)


def test_mtre_and_mpd_known_values() -> None:
    T = params_to_matrix(torch.tensor([1.0, 2, 3, 4, 5, 6], dtype=torch.float64), REF)
    cam = Camera(1020.0, 100, 100, (2.0, 2.0))
    assert float(mtre(T, T, PTS)) == 0.0 and float(mpd(T, T, PTS, cam)) == 0.0
    shift = torch.eye(4, dtype=torch.float64)
    shift[:3, 3] = torch.tensor([3.0, 4.0, 0.0])
    assert float(mtre(shift @ T, T, PTS)) == pytest.approx(5.0)
    # an in-plane camera shift of d mm at depth z moves projections by d * sdd / z on the detector
    T0 = params_to_matrix(torch.zeros(6, dtype=torch.float64), REF)
    pt = torch.zeros(1, 3, dtype=torch.float64)
    shift[:3, 3] = torch.tensor([3.0, 0.0, 0.0])
    assert float(mpd(shift @ T0, T0, pt, cam)) == pytest.approx(3.0 * 1020.0 / 750.0)


def test_success_rates_and_param_errors() -> None:
    sr = success_rates(np.array([0.5, 1.5, 3.0, 7.0, 12.0]))
    assert sr == {"sr_10mm": 0.8, "sr_5mm": 0.6, "sr_2mm": 0.4, "sr_1mm": 0.2}
    e = param_errors(np.array([[359.0, 179.0, 0, 1, 2, 3]]), np.array([[-1.0, -179.0, 0, 0, 0, 0]]))
    assert e["rx_deg"] == pytest.approx(0.0) and e["ry_deg"] == pytest.approx(2.0)
    assert (e["tx_mm"], e["ty_mm"], e["tz_mm"]) == (1.0, 2.0, 3.0)


def test_ncc_ssim_css() -> None:
    a = torch.rand(40, 40, generator=torch.Generator().manual_seed(0))
    assert float(ncc(a, 3 * a + 1)) == pytest.approx(1.0, abs=1e-6)
    assert float(ncc(a, -a)) == pytest.approx(-1.0, abs=1e-6)
    s, c = ssim_css(a, a)
    assert float(s) == pytest.approx(1.0, abs=1e-5) and float(c) == pytest.approx(1.0, abs=1e-5)
    b = torch.rand(40, 40, generator=torch.Generator().manual_seed(1))
    m = image_scores(a, b)
    assert abs(m["ncc"]) < 0.2 and m["ssim"] < 0.3 and m["css"] < 0.3
    s2, c2 = ssim_css(a, 0.5 * a + 0.25)  # images are min-max normalised first: a linear change is no change
    assert float(s2) == pytest.approx(1.0, abs=1e-4) and float(c2) == pytest.approx(1.0, abs=1e-4)


def test_ssim_maps_equal_monais() -> None:
    """Own SSIM/CS maps (register must not import MONAI) against MONAI's, the reference."""
    from monai.metrics.regression import compute_ssim_and_cs

    from xctreg.metrics import ssim_maps

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 40, 52, generator=g)
    y = (0.6 * x + 0.4 * torch.rand(2, 1, 40, 52, generator=g)).clamp(0, 1)
    ours = ssim_maps(x, y)
    ref = compute_ssim_and_cs(x, y, spatial_dims=2, kernel_size=(11, 11), kernel_sigma=(1.5, 1.5), data_range=1.0)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape == (2, 1, 30, 42)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert 0.2 < float(ours[0].mean()) < 0.95
