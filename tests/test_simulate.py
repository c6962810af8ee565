"""`xctreg simulate`: one pose or N random poses, every image format, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error
from xctreg.geometry import Camera, read_pose
from xctreg.errors import XctregError
from xctreg.io import read_xray, write_volume
from xctreg.physics import DetectorConfig
from xctreg.render import RenderConfig
from xctreg.simulate import SimulateConfig

P = {"params": {"rx_deg": 5, "ry_deg": -3, "rz_deg": 10, "tx_mm": 5, "ty_mm": 0, "tz_mm": 20}}


@pytest.fixture
def ct_path(tmp_path, small_phantom):
    return write_volume(small_phantom, tmp_path / "ct.nii.gz")


@pytest.fixture
def geom(tmp_path):
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"sdd_mm": 1020, "height": 48, "width": 64, "pixel_spacing_mm": [6.0, 5.0]}))
    return g


@pytest.mark.parametrize("suffix", [".npy", ".png", ".tiff", ".dcm"])
def test_simulate_one_pose(cli, tmp_path, ct_path, geom, suffix) -> None:
    (tmp_path / "p.json").write_text(json.dumps(P))
    out = tmp_path / f"drr{suffix}"
    res = cli("simulate", ct_path, "--geometry", geom, "--pose", tmp_path / "p.json", "--out", out)
    assert res.code == 0, res.err
    xr = read_xray(out)
    assert xr.image.shape == (48, 64)
    assert xr.image.std() > 0
    pose = read_pose(tmp_path / "drr.pose.json")
    np.testing.assert_allclose(pose.params, [5, -3, 10, 5, 0, 20], atol=1e-9)
    if suffix == ".dcm":
        assert xr.camera == Camera(1020.0, 48, 64, (6.0, 5.0))
    if suffix == ".npy":  # bone bright: the spine column is brighter than the lung fields
        assert xr.image.max() > np.median(xr.image) + 1.0


def test_simulate_random_writes_poses_and_is_seeded(cli, tmp_path, ct_path, geom) -> None:
    args = ["simulate", ct_path, "--geometry", geom, "--random", "5", "--format", "npy", "--photons", "2000", "--seed", "3"]
    assert cli(*args, "--out", tmp_path / "a").code == 0
    assert cli(*args, "--out", tmp_path / "b").code == 0
    poses = json.loads((tmp_path / "a" / "poses.json").read_text())
    assert [e["file"] for e in poses["poses"]] == [f"drr_{i:04d}.npy" for i in range(5)]
    for e in poses["poses"]:
        for k, v in e["params"].items():
            lim = 50 if k == "tz_mm" else (30 if k.startswith("t") else 15)
            assert -lim <= v <= lim
        np.testing.assert_array_equal(np.load(tmp_path / "a" / e["file"]), np.load(tmp_path / "b" / e["file"]))
    assert (tmp_path / "a" / "geometry.json").is_file()


def test_simulate_bad_input(cli, tmp_path, ct_path, geom) -> None:
    (tmp_path / "p.json").write_text(json.dumps(P))
    bad = {"T_cam_from_world": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 700], [0, 0, 0, 1]]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    res = cli("simulate", ct_path, "--pose", tmp_path / "bad.json", "--out", tmp_path / "x.png")
    assert_one_line_error(res, "not a rigid transform")
    g = tmp_path / "pp.json"
    g.write_text(json.dumps({"sdd_mm": 1020, "height": 48, "width": 64, "pixel_spacing_mm": [6, 5], "principal_point_px": [90, 10]}))
    res = cli("simulate", ct_path, "--geometry", g, "--pose", tmp_path / "p.json", "--out", tmp_path / "x.png")
    assert_one_line_error(res, "outside the 48x64 image")
    assert_one_line_error(cli("simulate", ct_path, "--out", tmp_path / "x.png"), "exactly one of")
    res = cli("simulate", ct_path, "--pose", tmp_path / "p.json", "--out", tmp_path / "x.jpg", "--geometry", geom)
    assert_one_line_error(res, "unsupported")
    assert not list(tmp_path.glob("x.*"))
    assert_one_line_error(cli("simulate", ct_path, "--random", "2", "--out", tmp_path / "d", "--device", "cuda:7"), "cuda")


@pytest.mark.parametrize(
    ("flag", "value", "make"),
    [
        ("--kvp", "300", lambda: RenderConfig(kvp=300.0)),
        ("--al-mm", "-1", lambda: RenderConfig(al_mm=-1.0)),
        ("--mode", "bogus", lambda: RenderConfig(mode="bogus")),  # type: ignore[arg-type]
        ("--photons", "-5", lambda: DetectorConfig(photons=-5.0)),
        ("--blur-px", "-1", lambda: DetectorConfig(blur_px=-1.0)),
        ("--scatter", "2", lambda: DetectorConfig(scatter_fraction=2.0)),
        ("--sid-mm", "-5", lambda: SimulateConfig(sid_mm=-5.0)),
    ],
)
def test_api_and_cli_refuse_the_same_settings(cli, tmp_path, ct_path, geom, flag, value, make) -> None:
    """The range checks live in the config dataclasses: the Python API and the command line
    refuse the same values, with one line that names the flag."""
    with pytest.raises(XctregError, match=flag):
        make()
    (tmp_path / "p.json").write_text(json.dumps(P))
    res = cli("simulate", ct_path, "--geometry", geom, "--pose", tmp_path / "p.json", "--out", tmp_path / "x.npy", flag, value)
    assert_one_line_error(res, flag)
    assert not (tmp_path / "x.npy").exists()


def test_simulate_refuses_bad_physics_options(cli, tmp_path, ct_path, geom) -> None:
    (tmp_path / "p.json").write_text(json.dumps(P))
    base = ["simulate", ct_path, "--geometry", geom, "--pose", tmp_path / "p.json", "--out", tmp_path / "x.npy"]
    assert_one_line_error(cli(*base, "--kvp", "300"), "--kvp")
    assert_one_line_error(cli(*base, "--sid-mm", "-5"), "--sid-mm")
    assert_one_line_error(cli(*base, "--scatter", "2"), "--scatter")
    assert not (tmp_path / "x.npy").exists()
