"""DICOM C-arm X-rays: intensity direction tags, VOI, positioner angles -> views, geometry checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import assert_one_line_error
from xctreg.errors import XctregError
from xctreg.geometry import VIEWS, Camera, PoseReference, positioner_to_view, view_to_positioner
from xctreg.io import read_xray, write_xray

try:  # a test extra; without it the property tests run over a fixed random sample
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

CAM = Camera(1020.0, 48, 64, (1.6, 1.6))
BONE = (slice(10, 38), slice(28, 36))  # a vertical "spine" (rows, cols)


def _image() -> np.ndarray:
    """Soft tissue (a smooth bump plus texture) and a bright bone bar: attenuation, bone bright."""
    rng = np.random.default_rng(1)
    r, c = np.mgrid[0:48, 0:64]
    img = 1.0 + 0.6 * np.exp(-((r - 24) ** 2 + (c - 32) ** 2) / 400.0) + 0.1 * rng.random((48, 64))
    img[BONE] += 1.5
    return img.astype(np.float32)


IMG = _image()


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _bone_bright(img: np.ndarray) -> bool:
    mask = np.zeros(img.shape, bool)
    mask[BONE] = True
    return float(img[mask].mean()) > float(img[~mask].mean())


def _rotation(view: tuple[float, float, float]) -> np.ndarray:
    return PoseReference((0.0, 0.0, 0.0), view_deg=view).rotation().numpy()


def _beam(a_deg: float, b_deg: float) -> np.ndarray:
    """DICOM beam direction (source -> detector) in LPS for positioner angles (a, b)."""
    a, b = math.radians(a_deg), math.radians(b_deg)
    return np.array([math.sin(a) * math.cos(b), -math.cos(a) * math.cos(b), math.sin(b)])


def _edit(path, out, **tags) -> None:  # noqa: ANN001
    """Copy a DICOM with tags set (value None deletes the tag)."""
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(out)


def _spoil(path, out, good: str, bad: str) -> None:  # noqa: ANN001
    """Copy a DICOM file with the bytes of a tag value ``good`` replaced by ``bad`` (same length)."""
    data = path.read_bytes()
    assert len(good) == len(bad) and data.count(good.encode()) == 1
    out.write_bytes(data.replace(good.encode(), bad.encode()))


def _raise_msg(path) -> str:  # noqa: ANN001
    with pytest.raises(XctregError) as info:
        read_xray(path)
    msg = str(info.value)
    assert "\n" not in msg and msg
    return msg


# --------------------------------------------------------------------------- intensity direction
ENCODINGS = [(None, None), ("LOG", 1), ("LOG", -1), ("LIN", 1), ("LIN", -1)]


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize(("relationship", "sign"), ENCODINGS)
def test_round_trip_every_encoding(tmp_path, photometric, relationship, sign) -> None:
    p = write_xray(
        tmp_path / "x.dcm", IMG, camera=CAM, photometric=photometric, intensity_relationship=relationship, intensity_sign=sign
    )
    ds = pydicom.dcmread(p)
    assert ds.PhotometricInterpretation == photometric
    assert ds.get("PixelIntensityRelationship") == relationship
    assert ds.get("PixelIntensityRelationshipSign") == sign
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a well-formed file reads without warnings
        back = read_xray(p)
    assert _ncc(back.image, IMG) > 0.999
    assert _bone_bright(back.image)
    assert back.camera == CAM


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("relationship", ["LOG", "LIN"])
def test_default_sign_displays_bone_white(tmp_path, photometric, relationship) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, photometric=photometric, intensity_relationship=relationship)
    ds = pydicom.dcmread(p)
    assert ds.PixelIntensityRelationshipSign == (-1 if photometric == "MONOCHROME2" else 1)
    stored = ds.pixel_array.astype(float)
    displayed = stored if photometric == "MONOCHROME2" else -stored
    assert _bone_bright(displayed)
    assert _bone_bright(read_xray(p).image)


def _with_pixels(tmp_path, name, stored, **tags):  # noqa: ANN001, ANN202
    """A DICOM whose stored uint16 pixels and tags are set by hand (slope 1, intercept 0)."""
    base = write_xray(tmp_path / "base.dcm", np.zeros(stored.shape, np.float32))
    ds = pydicom.dcmread(base)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(tmp_path / name)
    return tmp_path / name


MU = np.array([[0.0, 0.5, 1.0], [1.5, 2.0, 0.25]])  # attenuation (line integrals)
INTENSITY = np.round(60000 * np.exp(-MU))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_lin_tags_decide_the_direction(tmp_path, photometric) -> None:
    """LIN +1: I = v; LIN -1: I = top - v (top = 65535 for 16 unsigned bits). -log applied once."""
    plus = _with_pixels(tmp_path, "p.dcm", INTENSITY, PixelIntensityRelationship="LIN",
                        PixelIntensityRelationshipSign=1, PhotometricInterpretation=photometric)
    minus = _with_pixels(tmp_path, "m.dcm", 65535 - INTENSITY, PixelIntensityRelationship="LIN",
                         PixelIntensityRelationshipSign=-1, PhotometricInterpretation=photometric)
    for p in (plus, minus):
        np.testing.assert_allclose(read_xray(p).image, MU, atol=1e-4)


def test_lin_minus_uses_the_top_of_the_stored_range(tmp_path) -> None:
    """12 bits stored, rescaled by slope 2 and intercept -100: top = 4095·2 - 100."""
    i12 = np.round(4000 * np.exp(-MU))
    p = _with_pixels(tmp_path, "m.dcm", 4095 - i12, BitsStored=12, HighBit=11, PixelIntensityRelationship="LIN",
                     PixelIntensityRelationshipSign=-1)
    _edit(p, tmp_path / "r.dcm", RescaleSlope="2", RescaleIntercept="-100")
    np.testing.assert_allclose(read_xray(tmp_path / "r.dcm").image, MU, atol=2e-3)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_log_tags_decide_the_direction(tmp_path, photometric) -> None:
    """LOG +1: image = -v (up to an offset); LOG -1: image = v; the photometric does not flip again."""
    log_i = np.round(10000 * MU)  # grows with attenuation
    minus = _with_pixels(tmp_path, "m.dcm", log_i, PixelIntensityRelationship="LOG",
                         PixelIntensityRelationshipSign=-1, PhotometricInterpretation=photometric)
    plus = _with_pixels(tmp_path, "p.dcm", 30000 - log_i, PixelIntensityRelationship="LOG",
                        PixelIntensityRelationshipSign=1, PhotometricInterpretation=photometric)
    np.testing.assert_allclose(read_xray(minus).image, log_i)
    back = read_xray(plus).image
    np.testing.assert_allclose(back - back.min(), log_i - log_i.min())


def test_without_sign_the_photometric_decides(tmp_path) -> None:
    """No Sign tag: LIN MONOCHROME2 holds intensities; MONOCHROME1 is inverted as ever."""
    lin2 = _with_pixels(tmp_path, "l2.dcm", INTENSITY, PixelIntensityRelationship="LIN")
    np.testing.assert_allclose(read_xray(lin2).image, MU, atol=1e-4)
    lin1 = _with_pixels(tmp_path, "l1.dcm", 65535 - INTENSITY, PixelIntensityRelationship="LIN",
                        PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_allclose(read_xray(lin1).image, MU, atol=1e-4)
    log1 = _with_pixels(tmp_path, "g1.dcm", 30000 - 10000 * MU, PixelIntensityRelationship="LOG",
                        PhotometricInterpretation="MONOCHROME1")
    assert _ncc(read_xray(log1).image, MU) > 0.99999


def test_lin_with_transmission_applies_log_once(tmp_path) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, intensity_relationship="LIN", intensity_sign=1)
    plain = read_xray(p).image
    with pytest.warns(UserWarning, match="ignoring transmission"):
        both = read_xray(p, transmission=True).image
    np.testing.assert_array_equal(both, plain)
    # without the tags, transmission=True is the caller's to decide, as before
    raw = write_xray(tmp_path / "raw.dcm", np.exp(-IMG))
    assert _ncc(read_xray(raw, transmission=True).image, IMG) > 0.999


def test_unknown_relationship_warns_and_reads_attenuation_like(tmp_path) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG)
    _edit(p, tmp_path / "o.dcm", PixelIntensityRelationship="OTHER")
    with pytest.warns(UserWarning, match="OTHER"):
        back = read_xray(tmp_path / "o.dcm")
    np.testing.assert_allclose(back.image, read_xray(p).image)


def test_bad_sign_is_refused(tmp_path, cli) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, intensity_relationship="LOG")
    _edit(p, tmp_path / "s.dcm", PixelIntensityRelationshipSign=0)
    assert_one_line_error(cli("check", "--xray", tmp_path / "s.dcm"), "PixelIntensityRelationshipSign")


def test_voi_lut_and_window_are_not_applied(tmp_path) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM)
    ds = pydicom.dcmread(p)
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.add_new(0x00283006, "OW", np.arange(4095, -1, -1, dtype=np.uint16).tobytes())  # LUTData: an inverting curve
    lut.LUTExplanation = "inverting"
    ds.VOILUTSequence = Sequence([lut])
    ds.WindowCenter, ds.WindowWidth = "100", "50"
    ds.VOILUTFunction = "SIGMOID"
    ds.save_as(tmp_path / "voi.dcm")
    np.testing.assert_array_equal(read_xray(tmp_path / "voi.dcm").image, read_xray(p).image)


# --------------------------------------------------------------------------- positioner angles and views
@pytest.mark.parametrize(
    ("angles", "view"),
    [((0.0, 0.0), "pa"), ((90.0, 0.0), "lat-right"), ((-90.0, 0.0), "lat-left"), ((180.0, 0.0), "ap"), ((-180.0, 0.0), "ap")],
)
def test_positioner_angles_map_to_named_views(tmp_path, angles, view) -> None:
    np.testing.assert_allclose(_rotation(positioner_to_view(*angles)), _rotation(VIEWS[view]), atol=1e-12)
    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM, positioner_deg=angles)
    xr = read_xray(p)
    assert xr.positioner_deg == angles
    np.testing.assert_allclose(_rotation(xr.view_deg), _rotation(VIEWS[view]), atol=1e-12)


def test_view_deg_absent_without_angles(tmp_path) -> None:
    xr = read_xray(write_xray(tmp_path / "x.dcm", IMG))
    assert xr.positioner_deg is None and xr.view_deg is None


@pytest.mark.parametrize("primary", [0.0, 30.0, -45.0, 180.0])
def test_cranial_tilt_moves_the_beam_towards_the_head(primary) -> None:
    for b in (15.0, 40.0):
        R = _rotation(positioner_to_view(primary, b))
        assert R[2, 2] > 0  # beam (camera z) runs towards superior: the detector is cranial
        assert R[1, 2] < 0  # image down is still towards the feet (head up)
        R_cau = _rotation(positioner_to_view(primary, -b))
        assert R_cau[2, 2] < 0


def _over_angles(fn):  # noqa: ANN001, ANN202
    """Property test over positioner angles a in [-179, 179], b in [-89, 89] (degrees)."""
    if given is not None:
        return settings(max_examples=300, deadline=None)(given(st.tuples(st.floats(-179.0, 179.0), st.floats(-89.0, 89.0)))(fn))
    rng = np.random.default_rng(0)
    cases = [(float(a), float(b)) for a, b in zip(rng.uniform(-179, 179, 300), rng.uniform(-89, 89, 300), strict=True)]
    return pytest.mark.parametrize("ab", cases)(fn)


@_over_angles
def test_view_to_positioner_inverts_positioner_to_view(ab) -> None:
    a, b = ab
    a2, b2 = view_to_positioner(positioner_to_view(a, b))
    assert a2 == pytest.approx(a, abs=1e-6) and b2 == pytest.approx(b, abs=1e-6)


@_over_angles
def test_view_beam_is_the_dicom_detector_direction(ab) -> None:
    a, b = ab
    view = positioner_to_view(a, b)
    assert view[2] == 0.0 and abs(view[0]) <= 90.0 + 1e-9
    R = _rotation(view)
    np.testing.assert_allclose(R[2], _beam(a, b), atol=1e-9)
    assert R[1, 2] <= 1e-9  # head towards the top of the image (or the beam runs along the body axis)


@pytest.mark.parametrize(("a", "b"), [(0, 0), (90, 0), (-90, 0), (180, 0), (30, 20), (-120, -35), (179, 89)])
def test_view_beam_is_the_dicom_detector_direction_fixed(a, b) -> None:
    np.testing.assert_allclose(_rotation(positioner_to_view(a, b))[2], _beam(a, b), atol=1e-9)


@pytest.mark.parametrize(
    ("tags", "fragment"),
    [
        ({"PositionerPrimaryAngle": "200", "PositionerSecondaryAngle": "0"}, "out of range"),
        ({"PositionerPrimaryAngle": "10", "PositionerSecondaryAngle": "-95"}, "out of range"),
    ],
)
def test_bad_positioner_angles(tmp_path, cli, tags, fragment) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM, positioner_deg=(0.0, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about invalid DS strings
        _edit(p, tmp_path / "bad.dcm", **tags)
    assert_one_line_error(cli("check", "--xray", tmp_path / "bad.dcm"), fragment)


@pytest.mark.parametrize("keyword", ["PositionerPrimaryAngle", "DistanceSourceToDetector", "RescaleSlope"])
def test_non_numeric_tags_are_refused(tmp_path, cli, keyword) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM, positioner_deg=(0.0, 0.0))
    _edit(p, tmp_path / "marked.dcm", **{keyword: "12.34567"})
    _spoil(tmp_path / "marked.dcm", tmp_path / "bad.dcm", "12.34567", "LAO 12.x")
    assert_one_line_error(cli("check", "--xray", tmp_path / "bad.dcm"), f"{keyword} is not numeric")


# --------------------------------------------------------------------------- geometry tags
def test_another_detector_reads_back_exactly(tmp_path) -> None:
    cam = Camera(1100.0, 160, 192, (2.6, 2.6))
    rng = np.random.default_rng(3)
    img = (rng.random((160, 192)) + np.linspace(0, 2, 192)).astype(np.float32)
    img[40:120, 90:100] += 3.0
    p = write_xray(tmp_path / "c.dcm", img, camera=cam, sid_mm=800.0, photometric="MONOCHROME1",
                   positioner_deg=(-30.0, 20.0))
    xr = read_xray(p)
    assert xr.camera == cam
    assert xr.positioner_deg == (-30.0, 20.0)
    assert xr.view_deg == positioner_to_view(-30.0, 20.0)
    assert _ncc(xr.image, img) > 0.999
    assert xr.image[40:120, 90:100].mean() > xr.image.mean()


CONTRADICTIONS = [
    ({"DistanceSourceToPatient": "1020"}, "not less than"),
    ({"DistanceSourceToPatient": "1200"}, "not less than"),
    ({"DistanceSourceToDetector": "-1020"}, "must be positive"),
    ({"ImagerPixelSpacing": ["0", "1.6"], "PixelSpacing": None}, "must be positive"),
    ({"ImagerPixelSpacing": ["1.6", "1.6", "1.6"]}, "2 values"),
    ({"PixelSpacing": ["1.4", "1.4"]}, "no magnification tag explains"),
    ({"EstimatedRadiographicMagnificationFactor": "1.1"}, "contradicts"),
    ({"PixelSpacing": ["1.2", "1.2"], "EstimatedRadiographicMagnificationFactor": "1.36"}, "no magnification tag explains"),
]


@pytest.mark.parametrize(("tags", "fragment"), CONTRADICTIONS)
def test_contradictory_geometry_is_refused(tmp_path, cli, tags, fragment) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM, sid_mm=750.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _edit(p, tmp_path / "bad.dcm", **tags)
    assert fragment in _raise_msg(tmp_path / "bad.dcm")
    assert_one_line_error(cli("check", "--xray", tmp_path / "bad.dcm"), fragment)


@pytest.mark.parametrize(
    "tags",
    [
        {"PixelSpacing": ["1.1765", "1.1765"]},  # ImagerPixelSpacing / (SDD/SID = 1.36)
        {"PixelSpacing": ["1.1765", "1.1765"], "EstimatedRadiographicMagnificationFactor": "1.36"},
        {"PixelSpacing": ["1.2", "1.2"], "EstimatedRadiographicMagnificationFactor": "1.3333", "DistanceSourceToPatient": None},
        {"PixelSpacing": ["1.605", "1.595"]},  # within 1 %
        {"EstimatedRadiographicMagnificationFactor": "1.4"},  # within 5 % of 1020/750
    ],
)
def test_consistent_geometry_prefers_the_imager_spacing(tmp_path, tags) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM, sid_mm=750.0)
    _edit(p, tmp_path / "ok.dcm", **tags)
    assert read_xray(tmp_path / "ok.dcm").camera == CAM


def test_missing_sdd_or_spacing_gives_no_camera(tmp_path) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM, sid_mm=750.0)
    _edit(p, tmp_path / "nosdd.dcm", DistanceSourceToDetector=None)
    assert read_xray(tmp_path / "nosdd.dcm").camera is None
    _edit(p, tmp_path / "nosp.dcm", ImagerPixelSpacing=None, PixelSpacing=None)
    assert read_xray(tmp_path / "nosp.dcm").camera is None


@pytest.mark.parametrize("keep", [10, 200, 400, -1, -300])
def test_truncated_dicom_is_one_line_error(tmp_path, cli, keep) -> None:
    data = write_xray(tmp_path / "x.dcm", IMG, camera=CAM).read_bytes()
    (tmp_path / "t.dcm").write_bytes(data[:keep])
    assert_one_line_error(cli("check", "--xray", tmp_path / "t.dcm"), "cannot read DICOM")


# --------------------------------------------------------------------------- writer options
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"photometric": "RGB"}, "photometric"),
        ({"intensity_relationship": "DISP"}, "intensity_relationship"),
        ({"intensity_sign": 1}, "needs an intensity_relationship"),
        ({"intensity_relationship": "LOG", "intensity_sign": 2}, "intensity_sign"),
        ({"positioner_deg": (190.0, 0.0)}, "positioner"),
        ({"positioner_deg": "LAO"}, "positioner_deg"),
        ({"camera": CAM, "sid_mm": 1020.0}, "sid_mm"),
    ],
)
def test_writer_refuses_bad_options(tmp_path, kwargs, fragment) -> None:
    with pytest.raises(XctregError, match=fragment):
        write_xray(tmp_path / "x.dcm", IMG, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_writer_fills_the_c_arm_tags(tmp_path) -> None:
    p = write_xray(tmp_path / "x.dcm", IMG, camera=CAM, sid_mm=750.0, positioner_deg=(25.5, -10.0),
                   intensity_relationship="LIN")
    ds = pydicom.dcmread(p)
    assert float(ds.PositionerPrimaryAngle) == 25.5 and float(ds.PositionerSecondaryAngle) == -10.0
    assert float(ds.DistanceSourceToPatient) == 750.0
    assert ds.PixelIntensityRelationship == "LIN" and ds.PixelIntensityRelationshipSign == -1
