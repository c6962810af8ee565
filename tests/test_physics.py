"""Physics: density map, soft decomposition, NIST attenuation, spectra, detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xctreg.io import Volume
from xctreg.geometry import Camera
from xctreg.physics import (
    DecompositionConfig,
    DetectorConfig,
    apply_detector,
    beer_lambert,
    decompose,
    hu_to_density,
    mass_attenuation,
    tube_spectrum,
)
from xctreg.physics.spectrum import monoenergetic
from xctreg.render import RenderConfig, Renderer


def test_hu_to_density_piecewise_linear() -> None:
    hu = torch.tensor([-2000.0, -1000.0, -500.0, 0.0, 1000.0])
    np.testing.assert_allclose(
        hu_to_density(hu).numpy(), [0.0, 1.030 - 1.029, 1.030 - 0.5145, 1.030, 1.030 + 0.5886], atol=1e-5
    )


def test_decomposition_is_soft_and_sums_to_one() -> None:
    hu = torch.linspace(-1200, 2000, 321, requires_grad=True)
    w = decompose(hu)
    np.testing.assert_allclose(w.sum(-1).detach().numpy(), 1.0, atol=1e-6)
    assert torch.all(w >= 0)
    pick = lambda v: decompose(torch.tensor([v]))[0].numpy()  # noqa: E731
    assert pick(-1000.0)[0] > 0.99 and pick(40.0)[1] > 0.99 and pick(1200.0)[2] > 0.99
    assert 0.45 < pick(-800.0)[0] < 0.55 and 0.45 < pick(350.0)[2] < 0.55
    w[:, 2].sum().backward()
    assert hu.grad is not None and hu.grad.abs().max() > 0  # differentiable
    sharper = decompose(torch.tensor([400.0]), DecompositionConfig(bone_width_hu=5.0))[0, 2]
    assert sharper > pick(400.0)[2]


@pytest.mark.parametrize(
    ("material", "kev", "nist"),
    [
        ("air", 60, 0.1875), ("soft_tissue", 60, 0.2048), ("bone", 60, 0.3148),
        ("air", 30, 0.3538), ("soft_tissue", 30, 0.3790), ("bone", 30, 1.331),
    ],
)  # fmt: skip
def test_mass_attenuation_matches_nist(material, kev, nist) -> None:
    assert mass_attenuation(material, kev)[0] == pytest.approx(nist, rel=0.02)


def test_spectrum_bins() -> None:
    s = tube_spectrum(90, 4.0, 8)
    assert s.weights.sum() == pytest.approx(1.0)
    assert np.all(s.energies_kev <= 90) and np.all(np.diff(s.energies_kev) > 0)
    assert 40 < s.mean_kev < 70
    assert tube_spectrum(120, 4.0).mean_kev > tube_spectrum(70, 4.0).mean_kev
    assert tube_spectrum(90, 8.0).mean_kev > s.mean_kev  # more filtration, harder beam
    with pytest.raises(ValueError):
        tube_spectrum(500)


def _water_slab(thickness_mm: float) -> Volume:
    """A water box (0 HU) of the given AP thickness in air, 2 mm voxels."""
    hu = np.full((40, 130, 40), -1000.0, dtype=np.float32)  # (z, y, x)
    n = int(round(thickness_mm / 2.0))
    y0 = (130 - n) // 2
    hu[:, y0 : y0 + n, :] = 0.0
    return Volume(hu, spacing=[2.0, 2.0, 2.0], origin=[-39.0, -129.0, -39.0])


def test_beam_hardening_shows_and_mono_is_linear() -> None:
    cam = Camera(1020.0, 9, 9, (0.5, 0.5))
    out = {}
    for mode in ("poly", "mono"):
        for t in (100.0, 200.0):
            vol = _water_slab(t)
            r = Renderer(vol, cam, RenderConfig(mode=mode, voxel_mm=None, step_mm=0.5))
            out[mode, t] = float(r(torch.zeros(1, 6))[0, 0, 4, 4])
    assert out["mono", 200.0] == pytest.approx(2 * out["mono", 100.0], rel=2e-3)
    assert out["poly", 200.0] < 1.97 * out["poly", 100.0]
    # 10 cm of water at ~60 keV attenuates by about mu/rho * rho * 10 cm = 2.1
    assert out["mono", 100.0] == pytest.approx(mass_attenuation("water", 60)[0] * 1.03 * 10.0, rel=0.03)


def test_bone_contrast_falls_with_kvp() -> None:
    L_soft = torch.tensor([0.0, 22.0, 0.0]).reshape(1, 3, 1, 1)
    L_bone = torch.tensor([0.0, 20.0, 2.0 * 1.9]).reshape(1, 3, 1, 1)
    contrast = []
    for kvp in (70, 90, 120):
        s = tube_spectrum(kvp, 4.0)
        att = lambda L: -torch.log(beer_lambert(L, s))  # noqa: E731
        contrast.append(float(att(L_bone) - att(L_soft)))
    assert contrast[0] > contrast[1] > contrast[2] > 0


def test_per_sample_detector_matches_one_image_at_a_time() -> None:
    """The batched detector of the training augmentation: each image as ``apply_detector`` gives
    it alone (blur, scatter, Beer-Lambert per spectrum); the Poisson noise has the right spread."""
    from xctreg.physics.detector import _gaussian_blur, apply_detector_per_sample, beer_lambert_per_sample, gaussian_blur_per_sample

    g = torch.Generator().manual_seed(1)
    img = 0.05 + 0.9 * torch.rand(3, 1, 40, 48, generator=g)
    sig = torch.tensor([0.0, 0.7, 1.5])
    out = gaussian_blur_per_sample(img, sig)
    torch.testing.assert_close(out[0], img[0])
    for b in (1, 2):
        torch.testing.assert_close(out[b : b + 1], _gaussian_blur(img[b : b + 1], float(sig[b])), atol=2e-3, rtol=0)
    scatter = torch.tensor([0.0, 0.3, 0.1])
    att = apply_detector_per_sample(img, torch.zeros(3), sig, scatter)
    for b in range(3):
        one = apply_detector(img[b : b + 1], DetectorConfig(blur_px=float(sig[b]), scatter_fraction=float(scatter[b])))
        torch.testing.assert_close(att[b : b + 1], one, atol=5e-3, rtol=0)
    flat = torch.full((2, 1, 64, 64), 0.1)
    noisy = apply_detector_per_sample(flat, torch.tensor([1e4, 0.0]), torch.zeros(2), torch.zeros(2), generator=g)
    assert float(noisy[0].std()) == pytest.approx(1 / np.sqrt(1000), rel=0.15)
    assert float(noisy[1].std()) < 1e-6  # no photons given: no noise
    L = torch.rand(2, 3, 8, 8, generator=g)
    spectra = [tube_spectrum(70, 4.0, 4), tube_spectrum(120, 4.0, 6)]
    both = beer_lambert_per_sample(L, spectra)
    for b in range(2):
        torch.testing.assert_close(both[b : b + 1], beer_lambert(L[b : b + 1], spectra[b]))


def test_detector_effects() -> None:
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 1, 64, 64), 0.1)
    clean = apply_detector(flat, DetectorConfig())
    np.testing.assert_allclose(clean.numpy(), -np.log(0.1), rtol=1e-6)
    noisy = apply_detector(flat, DetectorConfig(photons=1e4), g)
    # Poisson: relative std of the counts is 1/sqrt(N0 * I) = 1/sqrt(1000)
    assert float(noisy.std()) == pytest.approx(1 / np.sqrt(1000), rel=0.15)
    g2 = torch.Generator().manual_seed(0)
    np.testing.assert_array_equal(noisy.numpy(), apply_detector(flat, DetectorConfig(photons=1e4), g2).numpy())
    edge = torch.ones(1, 1, 64, 64) * 0.9
    edge[..., 32:] = 0.1
    blurred = apply_detector(edge, DetectorConfig(blur_px=2.0))
    assert 0.1 < float(blurred[0, 0, 10, 31]) < -np.log(0.1) - 0.1  # the edge is smeared
    scat = apply_detector(edge, DetectorConfig(scatter_fraction=0.3))
    assert float(scat[0, 0, 10, 60]) < float(clean.max())  # scatter lifts the dark side: less attenuation
    assert torch.all(torch.isfinite(scat))
    assert mono_is_single_bin()


def mono_is_single_bin() -> bool:
    s = monoenergetic(60)
    return s.energies_kev.tolist() == [60.0] and s.weights.tolist() == [1.0]
