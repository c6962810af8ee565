"""The procedural phantom: deterministic, CT-like, asymmetric."""

from __future__ import annotations

import numpy as np
import pytest

from xctreg.data.phantom import PhantomConfig, make_phantom
from xctreg.errors import XctregError
from xctreg.io import check_ct


def test_default_phantom_is_deterministic_and_ct_like() -> None:
    a, b = make_phantom(), make_phantom()
    assert a.shape_ijk == (128, 128, 128)
    np.testing.assert_allclose(a.spacing, 3.0)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_allclose(a.center, 0.0, atol=1e-9)
    check_ct(a)
    frac = lambda m: float(np.mean(m))  # noqa: E731
    assert frac(a.hu < -950) > 0.2  # air around the body
    assert frac((a.hu > -900) & (a.hu < -600)) > 0.02  # lungs
    assert frac(a.hu > 300) > 0.005  # bone


def test_size_and_spacing_are_configurable(small_phantom) -> None:
    v = make_phantom(PhantomConfig(size=(40, 50, 60), spacing_mm=(8.0, 7.0, 6.0)))
    assert v.shape_ijk == (40, 50, 60)
    np.testing.assert_allclose(v.spacing, [8.0, 7.0, 6.0])
    with pytest.raises(XctregError):
        PhantomConfig(size=(4, 4, 4))


def _world_grid(vol):  # noqa: ANN001, ANN202
    nk, nj, ni = vol.hu.shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    return vol.index_to_world(np.stack([i, j, k], -1))


def test_anatomy_sits_where_the_lps_frame_says(small_phantom) -> None:
    xyz = _world_grid(small_phantom)
    hu = small_phantom.hu
    lung = (hu > -900) & (hu < -600)
    bone = hu > 300
    # lungs are superior (z > 0), the pelvis inferior; the spine is posterior (y > 0)
    assert xyz[lung][:, 2].mean() > 40
    assert xyz[bone & (xyz[..., 2] < -120)].shape[0] > 20
    assert xyz[bone & (np.abs(xyz[..., 0]) < 15)][:, 1].mean() > 10
    # left/right: the heart is left so the left lung is smaller; mirror images differ
    left, right = lung & (xyz[..., 0] > 0), lung & (xyz[..., 0] < 0)
    assert left.sum() < 0.8 * right.sum()
    assert np.abs(hu - hu[:, :, ::-1]).mean() > 10  # not left/right symmetric
    assert np.abs(hu - hu[::-1]).mean() > 50  # not head/foot symmetric
