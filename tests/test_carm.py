"""Real C-arm X-rays end to end: DICOM geometry and angles, projection of planned points, export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error
from xctreg.geometry import Camera, positioner_to_view, project, rotation_to_positioner, view_to_positioner

OTHER = Camera(1100.0, 160, 192, (2.6, 2.6))  # another detector than the model's (32² at 12.8 mm, SDD 1020)
TRUE = np.array([2.0, -3.0, 4.0, 5.0, -5.0, 10.0])
FAST = {"sizes": (16, 32), "iterations": (8, 8), "restarts": 0}


@pytest.fixture(scope="module")
def carm(model_dir, tmp_path_factory):
    """One X-ray of the phantom on OTHER, as a MONOCHROME1 DICOM with positioner angles and as a
    PNG with a geometry JSON."""
    from xctreg.geometry import write_camera
    from xctreg.io import write_xray
    from xctreg.register import Registrar
    from xctreg.render import Renderer

    d = tmp_path_factory.mktemp("carm")
    reg = Registrar(model_dir / "m")
    T = reg.space.to_matrix(torch.as_tensor(TRUE))
    img = Renderer(reg.ct(), OTHER, reference=reg.reference)(T[None].float())[0, 0].numpy()
    angles = rotation_to_positioner(T[:3, :3].numpy())
    write_xray(d / "x.dcm", img, OTHER, photometric="MONOCHROME1", positioner_deg=angles, sid_mm=750.0)
    write_xray(d / "x.png", img)
    write_camera(d / "g.json", OTHER)
    return d, angles


def test_dicom_from_another_detector_needs_no_geometry(carm, model_dir) -> None:
    from xctreg.register import RefineConfig, Registrar

    d, angles = carm
    reg = Registrar(model_dir / "m")
    a = reg.register(d / "x.dcm", config=RefineConfig(**FAST))
    b = reg.register(d / "x.png", d / "g.json", config=RefineConfig(**FAST))
    # the same registration up to the two files' 16-bit rounding: the last level's Adam steps
    # move the other five by a few hundredths (0.03 mm seen; their spread on the bench is
    # ±0.1), and depth, placed last where the objective is nearly flat along tz, by a fraction
    # of its spread (0.2-0.3 mm on the bench)
    assert np.allclose(a.params[:5], b.params[:5], atol=0.05), (a.params, b.params)
    assert abs(a.params[5] - b.params[5]) < 0.25, (a.params, b.params)
    ra, rb = a.to_dict(), b.to_dict()
    assert Camera.from_dict(ra["geometry"]) == OTHER == Camera.from_dict(rb["geometry"])
    assert ra["positioner"]["primary_deg"] == pytest.approx(angles[0], abs=1e-6)
    assert ra["positioner"]["view_deg"] == pytest.approx(list(positioner_to_view(*angles)), abs=1e-6)
    assert "positioner" not in rb


def test_register_warns_when_the_c_arm_is_outside_the_model_views(model_dir, tmp_path, cli) -> None:
    from xctreg.io import write_xray

    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    cam = Camera.from_dict(json.loads((model_dir / "m" / "geometry.json").read_text()))
    write_xray(tmp_path / "lat.dcm", img, cam, positioner_deg=view_to_positioner((0.0, 90.0, 0.0)))
    res = cli("register", model_dir / "m", tmp_path / "lat.dcm", "--no-refine", "--out", tmp_path / "r.json")
    assert res.code == 0, res.err
    warn = [ln for ln in res.err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "outside its ranges" in warn[0] and "lat-left" in warn[0], res.err
    # an AP C-arm (DICOM primary 180) is inside: no warning
    write_xray(tmp_path / "ap.dcm", img, cam, positioner_deg=(180.0, 0.0))
    res = cli("register", model_dir / "m", tmp_path / "ap.dcm", "--no-refine", "--out", tmp_path / "r2.json")
    assert res.code == 0 and "warning" not in res.err, res.err


def test_project_draws_planned_points_where_the_pose_puts_them(carm, model_dir, tmp_path, cli) -> None:
    d, _ = carm
    res = cli("register", model_dir / "m", d / "x.dcm", "--no-refine", "--out", tmp_path / "r.json")
    assert res.code == 0, res.err
    r = json.loads((tmp_path / "r.json").read_text())
    c = np.array(json.loads((model_dir / "m" / "config.json").read_text())["reference"]["isocenter_mm"])
    pts = c + np.array([[0.0, 0.0, 0.0], [40.0, -20.0, 60.0]])
    (tmp_path / "p.csv").write_text("name,x,y,z\n" + "".join(f"p{i},{x},{y},{z}\n" for i, (x, y, z) in enumerate(pts)))
    res = cli("project", tmp_path / "r.json", "--xray", d / "x.dcm", "--points", tmp_path / "p.csv",
              "--out", tmp_path / "o.png", "--csv", tmp_path / "o.csv")  # fmt: skip
    assert res.code == 0, res.err
    assert "2 of 2 points" in res.out and (tmp_path / "o.png").stat().st_size > 5000
    rows = [ln.split(",") for ln in (tmp_path / "o.csv").read_text().splitlines()[1:]]
    uv = np.array([[float(a[1]), float(a[2])] for a in rows])
    want, _ = project(torch.as_tensor(pts), torch.as_tensor(r["T_cam_from_world"], dtype=torch.float64), OTHER)
    assert np.allclose(uv, want.numpy(), atol=1e-3)
    P = np.asarray(r["projection_matrix"])
    h = np.c_[pts, np.ones(2)] @ P.T
    assert np.allclose(h[:, :2] / h[:, 2:], uv, atol=1e-3)


def test_project_bad_input(carm, model_dir, tmp_path, cli) -> None:
    from xctreg.io import Volume, write_volume

    d, _ = carm
    res = cli("register", model_dir / "m", d / "x.dcm", "--no-refine", "--out", tmp_path / "r.json")
    assert res.code == 0, res.err
    (tmp_path / "bad.csv").write_text("name,x,y\np,1,2\n")
    assert_one_line_error(cli("project", tmp_path / "r.json", "--points", tmp_path / "bad.csv", "--out", tmp_path / "o.png"),
                          "name,x,y,z")  # fmt: skip
    far = Volume(np.ones((8, 8, 8), dtype=np.float32), spacing=(2.0, 2.0, 2.0), origin=(5000.0, 5000.0, 5000.0))
    write_volume(far, tmp_path / "far.nii.gz")
    assert_one_line_error(cli("project", tmp_path / "r.json", "--labels", tmp_path / "far.nii.gz", "--out", tmp_path / "o.png"),
                          "overlap")  # fmt: skip
    assert_one_line_error(cli("project", tmp_path / "r.json", "--out", tmp_path / "o.png"), "nothing to draw")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("fmt", ["itk", "opencv", "diffdrr"])
def test_export_cli_writes_each_format(carm, model_dir, tmp_path, cli, fmt: str) -> None:
    d, _ = carm
    res = cli("register", model_dir / "m", d / "x.dcm", "--no-refine", "--out", tmp_path / "r.result.json")
    assert res.code == 0, res.err
    res = cli("export", tmp_path / "r.result.json", "--to", fmt)
    assert res.code == 0, res.err
    out = {"itk": "r.result.tfm", "opencv": "r.result.opencv.json", "diffdrr": "r.result.diffdrr.json"}[fmt]
    assert (tmp_path / out).is_file()
    if fmt == "itk":
        import SimpleITK as sitk

        T = np.asarray(json.loads((tmp_path / "r.result.json").read_text())["T_cam_from_world"])
        p = np.array([10.0, -20.0, 30.0])
        assert np.allclose(sitk.ReadTransform(str(tmp_path / out)).TransformPoint(p.tolist()), T[:3, :3] @ p + T[:3, 3], atol=1e-6)


def test_export_bad_input(tmp_path, cli) -> None:
    pose = {"T_cam_from_world": np.eye(4).tolist()}
    (tmp_path / "p.json").write_text(json.dumps(pose))
    assert_one_line_error(cli("export", tmp_path / "p.json", "--to", "blender"), "unknown export format")
    assert_one_line_error(cli("export", tmp_path / "p.json", "--to", "opencv"), "--geometry")


def test_train_view_from_a_dicom(tmp_path, cli, model_dir) -> None:
    from xctreg.cli import _view_from_xray
    from xctreg.io import write_xray

    img = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    write_xray(tmp_path / "lat.dcm", img, Camera(1020.0, 16, 16, (10.0, 10.0)), positioner_deg=(-90.0, 0.0))
    assert _view_from_xray(tmp_path / "lat.dcm") == pytest.approx((0.0, 90.0, 0.0))  # RAO 90 = source on the left
    write_xray(tmp_path / "none.dcm", img, Camera(1020.0, 16, 16, (10.0, 10.0)))
    ct = model_dir / "ct.nii.gz"
    assert_one_line_error(cli("train", ct, "--out", tmp_path / "m", "--view-from", tmp_path / "none.dcm"), "positioner")
    assert_one_line_error(cli("train", ct, "--out", tmp_path / "m", "--view", "ap", "--view-from", tmp_path / "lat.dcm"), "not both")


def test_evaluate_with_target_points(model_dir, tmp_path, cli) -> None:
    c = np.array(json.loads((model_dir / "m" / "config.json").read_text())["reference"]["isocenter_mm"])
    (tmp_path / "t.csv").write_text(f"name,x,y,z\na,{c[0]},{c[1]},{c[2]}\nb,{c[0] + 50},{c[1]},{c[2]}\n")
    res = cli("evaluate", model_dir / "m", "--n", "2", "--no-refine", "--targets", tmp_path / "t.csv", "--out", tmp_path / "e")
    assert res.code == 0, res.err
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["targets"] == "2 given points" and set(m["param_bias"]) == set(m["param_mae"])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert_one_line_error(cli("evaluate", model_dir / "m", "--n", "2", "--targets", tmp_path / "bad.csv"), "x,y,z")


def test_register_warns_when_patient_orientation_says_the_image_is_mirrored(model_dir, tmp_path, cli) -> None:
    import pydicom

    from xctreg.io import read_xray, write_xray

    img = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    cam = Camera.from_dict(json.loads((model_dir / "m" / "geometry.json").read_text()))
    for name, orient in (("ok", ["L", "F"]), ("mirror", ["R", "FL"])):
        write_xray(tmp_path / f"{name}.dcm", img, cam)
        ds = pydicom.dcmread(tmp_path / f"{name}.dcm")
        ds.PatientOrientation = orient
        ds.save_as(tmp_path / f"{name}.dcm")
    assert read_xray(tmp_path / "mirror.dcm").patient_orientation == ("R", "FL")
    res = cli("register", model_dir / "m", tmp_path / "ok.dcm", "--no-refine", "--out", tmp_path / "a.json")
    assert res.code == 0 and "warning" not in res.err, res.err
    res = cli("register", model_dir / "m", tmp_path / "mirror.dcm", "--no-refine", "--out", tmp_path / "b.json")
    assert res.code == 0, res.err
    warn = [ln for ln in res.err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "mirrored left-right" in warn[0], res.err


@pytest.mark.parametrize(
    ("view", "orient", "kind"),
    [((0.0, 0.0, 0.0), ("L", "F"), None), ((0.0, 180.0, 0.0), ("L", "F"), "mirrored left-right"),
     ((0.0, 90.0, 0.0), ("P", "F"), None), ((0.0, 90.0, 0.0), ("A", "F"), "mirrored left-right"),
     ((0.0, 0.0, 0.0), ("L", "H"), "mirrored top-bottom"), ((0.0, 0.0, 0.0), ("R", "H"), "180"),
     ((0.0, 0.0, 0.0), ("F", "L"), "not oriented")],
)
def test_image_orientation_check(view, orient, kind) -> None:
    from xctreg.geometry import PoseReference, image_orientation_check

    msg = image_orientation_check(PoseReference((0.0, 0.0, 0.0), view_deg=view).rotation().numpy(), orient)
    assert (msg is None) if kind is None else (kind in msg)
