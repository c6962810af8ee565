"""X-ray IO: .npy, PNG (8/16-bit), TIFF, DICOM (MONOCHROME1/2, geometry tags)."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import assert_one_line_error
from xctreg.errors import XctregError
from xctreg.geometry import Camera
from xctreg.io import read_xray, transmission_to_attenuation, write_xray

RNG = np.random.default_rng(0)
IMG = (RNG.random((40, 56)) * 3.0 + np.linspace(0, 1, 56)).astype(np.float32)
CAM = Camera(1020.0, 40, 56, (1.6, 1.4))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("suffix", [".npy", ".tiff", ".tif"])
def test_lossless_round_trip(tmp_path, suffix) -> None:
    p = write_xray(tmp_path / f"x{suffix}", IMG)
    np.testing.assert_array_equal(read_xray(p).image, IMG)


def test_png_16bit_round_trip_is_linear(tmp_path) -> None:
    p = write_xray(tmp_path / "x.png", IMG)
    img = sitk.ReadImage(str(p))
    assert img.GetPixelID() == sitk.sitkUInt16
    back = read_xray(p).image
    assert back.shape == IMG.shape
    assert back.max() == 65535 and back.min() == 0
    assert _corr(back, IMG) > 0.999999


def test_png_8bit_and_rgb_read(tmp_path) -> None:
    u8 = (IMG / IMG.max() * 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(u8), str(tmp_path / "g.png"))
    np.testing.assert_array_equal(read_xray(tmp_path / "g.png").image, u8.astype(np.float32))
    rgb = np.stack([u8, u8, u8], -1)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "c.png"))
    np.testing.assert_allclose(read_xray(tmp_path / "c.png").image, u8, atol=1e-4)


@pytest.mark.parametrize("sop", ["dx", "sc"])
def test_dicom_geometry_round_trip(tmp_path, sop) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM, sop=sop, sid_mm=750.0)
    xr = read_xray(p)
    assert xr.camera == CAM
    np.testing.assert_allclose(xr.image, IMG, atol=(IMG.max() - IMG.min()) / 65535 + 1e-5)
    ds = pydicom.dcmread(p)
    assert float(ds.DistanceSourceToDetector) == 1020.0
    assert [float(v) for v in ds.ImagerPixelSpacing] == [1.6, 1.4]
    assert (ds.Rows, ds.Columns) == (40, 56)
    assert ds.SOPClassUID == ("1.2.840.10008.5.1.4.1.1.1.1" if sop == "dx" else "1.2.840.10008.5.1.4.1.1.7")


def test_dicom_monochrome1_and_pixelspacing_fallback(tmp_path) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM)
    ds = pydicom.dcmread(p)
    ds.PhotometricInterpretation = "MONOCHROME1"
    del ds.ImagerPixelSpacing
    ds.PixelSpacing = ["2.0", "2.5"]
    ds.save_as(tmp_path / "m1.dcm")
    xr = read_xray(tmp_path / "m1.dcm")
    assert _corr(xr.image, IMG) < -0.99999  # inverted: bright stays bright after the flip
    assert xr.camera.pixel_spacing_mm == (2.0, 2.5)
    assert xr.camera.sdd_mm == 1020.0


def test_dicom_without_geometry_tags(tmp_path) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG)
    assert read_xray(p).camera is None


def test_transmission_to_attenuation() -> None:
    mu = np.array([[0.0, 1.0], [2.0, 0.5]])
    att = transmission_to_attenuation(np.exp(-mu) * 1234.0)
    np.testing.assert_allclose(att, mu, atol=1e-6)
    with pytest.raises(XctregError):
        transmission_to_attenuation(np.zeros((3, 3)))


def test_bad_xrays(tmp_path, cli) -> None:
    assert_one_line_error(cli("check", "--xray", tmp_path / "none.png"), "not found")
    np.save(tmp_path / "vol.npy", np.zeros((4, 5, 6), np.float32))
    assert_one_line_error(cli("check", "--xray", tmp_path / "vol.npy"), "2D")
    bad = IMG.copy()
    bad[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert_one_line_error(cli("check", "--xray", tmp_path / "nan.npy"), "non-finite")
    (tmp_path / "x.jpg").write_bytes(b"jpeg?")
    assert_one_line_error(cli("check", "--xray", tmp_path / "x.jpg"), "unsupported")
    (tmp_path / "broken.dcm").write_bytes(b"garbage")
    assert_one_line_error(cli("check", "--xray", tmp_path / "broken.dcm"), "cannot read DICOM")


def test_geometry_that_contradicts_the_image(tmp_path, cli) -> None:
    write_xray(tmp_path / "x.png", IMG)
    (tmp_path / "g.json").write_text(json.dumps({"sdd_mm": 1020, "height": 56, "width": 40, "pixel_spacing_mm": [1, 1]}))
    assert_one_line_error(cli("check", "--xray", tmp_path / "x.png", "--geometry", tmp_path / "g.json"), "geometry says")
    with pytest.raises(XctregError, match="geometry says"):
        write_xray(tmp_path / "y.dcm", IMG, camera=Camera(1020.0, 10, 10, (1.0, 1.0)))
    assert not (tmp_path / "y.dcm").exists()


def test_writer_refuses_nan_and_leaves_nothing(tmp_path) -> None:
    bad = IMG.copy()
    bad[1, 1] = np.inf
    with pytest.raises(XctregError):
        write_xray(tmp_path / "x.png", bad)
    assert list(tmp_path.iterdir()) == []


def test_dicom_single_spacing_value_and_permissions(tmp_path) -> None:
    import os
    import stat

    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM)
    assert stat.S_IMODE(os.stat(p).st_mode) & 0o044  # readable by others, like any normal file (umask permitting)
    ds = pydicom.dcmread(p)
    ds.ImagerPixelSpacing = "1.5"
    del ds.PixelSpacing  # else it contradicts the new ImagerPixelSpacing (refused, see test_dicom.py)
    ds.save_as(tmp_path / "one.dcm")
    assert read_xray(tmp_path / "one.dcm").camera.pixel_spacing_mm == (1.5, 1.5)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_truncated_image_file_is_one_line_error(tmp_path, cli, suffix: str) -> None:
    """A PNG or TIFF X-ray cut short is refused, never read with missing rows."""
    write_xray(tmp_path / f"x{suffix}", IMG)
    data = (tmp_path / f"x{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    res = cli("check", "--xray", tmp_path / f"cut{suffix}")
    assert_one_line_error(res, "truncated or corrupt")
    assert f"cut{suffix}" in res.err and "Exception thrown" not in res.err
