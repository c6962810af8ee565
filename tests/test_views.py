"""Reference views (SPEC §4.1) and the one owner of the pose parameterisation, PoseSpace."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_one_line_error
from xctreg.errors import XctregError
from xctreg.geometry import (
    VIEWS,
    Camera,
    Pose,
    PoseRanges,
    PoseReference,
    PoseSpace,
    euler_to_rotmat,
    invert_se3,
    parse_ranges,
    parse_view,
    project,
    projection_matrix,
    view_rotation_delta,
)

C = (12.0, -30.0, 105.0)
CAM = Camera(1020.0, 96, 128, (3.0, 2.5))


def _source(T: torch.Tensor) -> np.ndarray:
    return invert_se3(T)[:3, 3].numpy()


@pytest.mark.parametrize(
    ("view", "axis", "sign"),
    [("ap", 1, -1), ("pa", 1, +1), ("lat-left", 0, +1), ("lat-right", 0, -1)],
)
def test_named_views_put_the_source_where_their_name_says(view: str, axis: int, sign: int) -> None:
    """LPS: +x is the patient's left, +y posterior. The source is sid from the isocenter."""
    space = PoseSpace(PoseReference(C, 750.0, parse_view(view)))
    src = _source(space.to_matrix(torch.zeros(6, dtype=torch.float64))) - np.array(C)
    assert np.linalg.norm(src) == pytest.approx(750.0)
    assert sign * src[axis] == pytest.approx(750.0)


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_named_view_keeps_the_head_at_the_top(view: str) -> None:
    space = PoseSpace(PoseReference(C, 750.0, VIEWS[view]))
    T = space.to_matrix(torch.zeros(6, dtype=torch.float64))
    head = torch.tensor([[C[0], C[1], C[2] + 80.0]], dtype=torch.float64)
    uv, depth = project(head, T, CAM)
    assert float(uv[0, 1]) < CAM.cy - 10 and float(depth[0]) > 0
    assert abs(float(uv[0, 0]) - CAM.cx) < 1e-6


def test_lateral_left_shows_anterior_on_the_image_left() -> None:
    """Source on the patient's left looking right: anterior (-y) is on camera -x (image left)."""
    space = PoseSpace(PoseReference(C, 750.0, VIEWS["lat-left"]))
    T = space.to_matrix(torch.zeros(6, dtype=torch.float64))
    uv, _ = project(torch.tensor([[C[0], C[1] - 80.0, C[2]]], dtype=torch.float64), T, CAM)
    assert float(uv[0, 0]) < CAM.cx - 10


def test_view_formula_matches_spec() -> None:
    view = (10.0, 80.0, -20.0)
    p = torch.tensor([3.0, -4.0, 5.0, 6.0, -7.0, 8.0], dtype=torch.float64)
    T = PoseSpace(PoseReference(C, 700.0, view)).to_matrix(p)
    r_ap = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)
    R = euler_to_rotmat(p[:3]) @ euler_to_rotmat(torch.tensor(view, dtype=torch.float64)) @ r_ap
    x = torch.tensor([40.0, -20.0, 90.0], dtype=torch.float64)
    want = R @ (x - torch.tensor(C, dtype=torch.float64)) + p[3:] + torch.tensor([0, 0, 700.0], dtype=torch.float64)
    got = T[:3, :3] @ x + T[:3, 3]
    assert torch.allclose(got, want, atol=1e-9)


def test_a_lateral_pose_has_small_parameters_not_ry_near_90() -> None:
    """The parameters are deltas around the view: no gimbal lock for a lateral model."""
    ap = PoseSpace(PoseReference(C, 750.0, VIEWS["ap"]))
    lat = PoseSpace(PoseReference(C, 750.0, VIEWS["lat-left"]))
    p = np.array([4.0, -6.0, 2.0, 5.0, -3.0, 10.0])
    T = lat.to_matrix(torch.as_tensor(p))
    assert np.allclose(lat.from_matrix(T).numpy(), p, atol=1e-8)
    assert abs(ap.from_matrix(T).numpy()[1]) > 60  # the same pose in AP parameters is far out


@settings(max_examples=60, deadline=None)
@given(
    view=st.tuples(*[st.floats(-180, 180)] * 3),
    p=st.tuples(*[st.floats(-30, 30)] * 3, *[st.floats(-60, 60)] * 3),
)
def test_params_round_trip_for_any_view(view, p) -> None:
    space = PoseSpace(PoseReference(C, 750.0, view))
    back = space.from_matrix(space.to_matrix(torch.tensor(p, dtype=torch.float64))).numpy()
    assert np.allclose(back, p, atol=1e-6)


def test_normalisation_maps_the_ranges_to_unit_interval() -> None:
    ranges = PoseRanges(rx_deg=(-10, 20), tz_mm=(-40, 60))
    space = PoseSpace(PoseReference(C), ranges)
    lo, hi = ranges.bounds()
    q = space.normalize(torch.tensor(np.stack([lo, hi])))
    assert torch.allclose(q, torch.tensor([[-1.0] * 6, [1.0] * 6], dtype=torch.float64))
    p = torch.randn(5, 6, dtype=torch.float64)
    assert torch.allclose(space.denormalize(space.normalize(p)), p)


def test_sampling_stays_inside_the_ranges() -> None:
    space = PoseSpace(PoseReference(C), parse_ranges("5,6,7,8,9,10"))
    s = space.sample(500, seed=3)
    assert space.ranges.contains(s).all()
    assert np.allclose(np.abs(s).max(0), [5, 6, 7, 8, 9, 10], rtol=0.05)


def test_reference_json_carries_the_view_and_old_files_are_ap() -> None:
    ref = PoseReference(C, 700.0, VIEWS["lat-right"])
    d = json.loads(json.dumps(ref.to_dict()))
    assert d["view_deg"] == [0.0, -90.0, 0.0]
    assert PoseReference.from_dict(d) == ref
    old = {"isocenter_mm": list(C), "sid_mm": 700.0}
    assert PoseReference.from_dict(old).view_deg == (0.0, 0.0, 0.0)


def test_pose_json_params_are_read_relative_to_its_view() -> None:
    ref = PoseReference(C, 750.0, (0.0, 90.0, 0.0))
    p = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    pose = Pose.from_params(p, ref)
    d = json.loads(json.dumps(pose.to_dict()))
    params_only = {"params": d["params"], "reference": d["reference"]}
    back = Pose.from_dict(params_only)
    assert np.allclose(back.T_cam_from_world, pose.T_cam_from_world, atol=1e-9)
    assert np.allclose(back.params, p, atol=1e-9)
    # the same params read as AP would be another pose entirely
    ap = Pose.from_dict({"params": d["params"], "reference": {"isocenter_mm": list(C), "sid_mm": 750.0}})
    assert not np.allclose(ap.T_cam_from_world, pose.T_cam_from_world, atol=1e-3)


def test_view_rotation_delta() -> None:
    d = view_rotation_delta((0.0, 100.0, 0.0), (0.0, 90.0, 0.0))
    assert np.allclose(d, [0, 10, 0], atol=1e-9)


def test_projection_matrix_agrees_with_project() -> None:
    space = PoseSpace(PoseReference(C, 750.0, (5.0, 85.0, 3.0)))
    T = space.to_matrix(torch.tensor([1.0, 2, 3, 4, 5, 6], dtype=torch.float64))
    P = projection_matrix(T, CAM)
    pts = torch.tensor(np.random.default_rng(0).normal(C, 50.0, (20, 3)))
    uv, z = project(pts, T, CAM)
    h = np.c_[pts.numpy(), np.ones(20)] @ P.T
    assert np.allclose(h[:, :2] / h[:, 2:], uv.numpy(), atol=1e-9)
    assert np.allclose(h[:, 2], z.numpy(), atol=1e-9)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("oblique", "unknown view"), ("10,20", "three angles"), ("0,190,0", "within [-180, 180]"), ("a,b,c", "must be a name"),
     ("nan,0,0", "finite")],
)
def test_bad_views_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(XctregError, match=None) as exc:
        parse_view(text)
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("1,2,3", "six numbers"), ("15,15,15,30,30,-50", "positive"), ("15,15,15,30,30,0", "positive"), ("x,1,1,1,1,1", "six numbers"),
     ("100,15,15,30,30,50", "at most 90")],
)
def test_bad_ranges_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(XctregError) as exc:
        parse_ranges(text)
    assert fragment in str(exc.value)


def test_cli_refuses_bad_view_and_ranges(tmp_path, cli, small_phantom) -> None:
    from xctreg.io import write_volume

    ct = write_volume(small_phantom, tmp_path / "ct.nii.gz")
    assert_one_line_error(cli("simulate", ct, "--random", "2", "--out", tmp_path / "o", "--view", "sideways"), "unknown view")
    assert_one_line_error(cli("simulate", ct, "--random", "2", "--out", tmp_path / "o", "--view", "0,200,0"), "[-180, 180]")
    assert_one_line_error(cli("train", ct, "--out", tmp_path / "m", "--ranges", "1,2,3"), "six numbers")
    assert_one_line_error(cli("data", "generate", ct, "--out", tmp_path / "d", "--ranges", "1,2,3,4,5,0"), "positive")


def test_simulate_random_around_a_view_writes_the_view(tmp_path, cli, small_phantom) -> None:
    from xctreg.io import write_volume

    ct = write_volume(small_phantom, tmp_path / "ct.nii.gz")
    res = cli("simulate", ct, "--random", "3", "--out", tmp_path / "o", "--view", "lat-left", "--ranges", "2,2,2,3,3,4",
              "--format", "npy", "--mode", "line", "--geometry", _geom(tmp_path))  # fmt: skip
    assert res.code == 0, res.err
    poses = json.loads((tmp_path / "o" / "poses.json").read_text())
    assert poses["reference"]["view_deg"] == [0.0, 90.0, 0.0]
    for e in poses["poses"]:
        p = np.array([e["params"][k] for k in ("rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm")])
        assert np.all(np.abs(p) <= [2, 2, 2, 3, 3, 4])
        src = _source(torch.tensor(e["T_cam_from_world"])) - np.array(small_phantom.center)
        assert src[0] > 700  # the source is on the patient's left


def _geom(tmp_path) -> str:
    p = tmp_path / "g.json"
    p.write_text(json.dumps({"sdd_mm": 1020, "height": 32, "width": 32, "pixel_spacing_mm": [12.8, 12.8]}))
    return str(p)


def test_a_model_trained_around_a_view_records_and_uses_it(tmp_path, small_phantom) -> None:
    """Training data, config.json and the Registrar all carry the lateral view."""
    from dataclasses import replace

    from xctreg.data.dataset import ShardDataset
    from xctreg.io import write_volume
    from xctreg.register import Registrar
    from xctreg.render import Renderer
    from xctreg.train import Trainer, quick_test_config

    ct = write_volume(small_phantom, tmp_path / "ct.nii.gz")
    cfg = quick_test_config(steps=2, view_deg=(0.0, 90.0, 0.0), ranges=parse_ranges("5,5,5,10,10,20"))
    Trainer(small_phantom, tmp_path / "m", cfg, ct_path=ct, log=lambda s: None).fit()
    conf = json.loads((tmp_path / "m" / "config.json").read_text())
    assert conf["reference"]["view_deg"] == [0.0, 90.0, 0.0] and conf["view"] == "lat-left"
    assert conf["ranges"]["tz_mm"] == [-20.0, 20.0]
    data = ShardDataset(tmp_path / "m" / "data" / "stage1", "train")
    assert data.reference.view_deg == (0.0, 90.0, 0.0)
    L, p = data[0]
    assert np.all(np.abs(p.numpy()) <= [5, 5, 5, 10, 10, 20])
    r = Renderer(small_phantom, cfg.camera, reference=data.reference)
    want = r.line_integrals(p[None].float())[0]
    assert torch.allclose(L.float(), want, rtol=0.02, atol=0.02)  # the stored DRR is the lateral one
    reg = Registrar(tmp_path / "m", ct=small_phantom)
    assert reg.space.reference.view_deg == (0.0, 90.0, 0.0) and reg.space.ranges == cfg.ranges
    out = reg.regress(np.asarray(r(p[None].float())[0, 0]))
    assert np.allclose(reg.space.from_matrix(torch.as_tensor(out.pose.T_cam_from_world)).numpy(), out.params, atol=1e-6)
    # resuming with the same configuration works; another view is refused
    again = Trainer(small_phantom, tmp_path / "m", cfg, ct_path=ct, log=lambda s: None).fit(resume=True)
    assert again.step == cfg.steps
    with pytest.raises(XctregError, match="another configuration"):
        Trainer(small_phantom, tmp_path / "m", replace(cfg, view_deg=(0.0, 0.0, 0.0)), ct_path=ct, log=lambda s: None).fit(resume=True)


def test_a_model_dir_from_before_views_loads_as_ap(model_dir, tmp_path) -> None:
    import shutil

    from xctreg.register import Registrar
    from xctreg.train import Trainer, TrainConfig

    m = tmp_path / "old"
    shutil.copytree(model_dir / "m", m)
    conf = json.loads((m / "config.json").read_text())
    del conf["train"]["view_deg"], conf["reference"]["view_deg"], conf["view"]
    (m / "config.json").write_text(json.dumps(conf))
    reg = Registrar(m)
    assert reg.space.reference.view_deg == (0.0, 0.0, 0.0)
    cfg = TrainConfig.from_dict(conf["train"])
    assert cfg.view_deg == (0.0, 0.0, 0.0)
    from xctreg.io import read_volume

    vol = read_volume(model_dir / "ct.nii.gz")
    res = Trainer(vol, m, cfg, ct_path=model_dir / "ct.nii.gz", log=lambda s: None).fit(resume=True)
    assert res.step == cfg.steps


def test_simulated_dicoms_carry_the_c_arm_angles_of_their_pose(tmp_path, cli, small_phantom) -> None:
    from xctreg.io import read_xray, write_volume

    ct = write_volume(small_phantom, tmp_path / "ct.nii.gz")
    res = cli("simulate", ct, "--random", "3", "--out", tmp_path / "o", "--view", "lat-left", "--format", "dcm",
              "--mode", "line", "--geometry", _geom(tmp_path))  # fmt: skip
    assert res.code == 0, res.err
    poses = json.loads((tmp_path / "o" / "poses.json").read_text())["poses"]
    for e in poses:
        xr = read_xray(tmp_path / "o" / e["file"])
        beam = np.asarray(e["T_cam_from_world"])[2, :3]  # camera z in world = the beam
        a, b = np.radians(xr.positioner_deg)
        assert np.allclose(beam, [np.sin(a) * np.cos(b), -np.cos(a) * np.cos(b), np.sin(b)], atol=1e-6)
        delta = view_rotation_delta(xr.view_deg, VIEWS["lat-left"])
        assert np.all(np.abs(delta[:2]) < 25.0)  # near the lateral view (rx, ry; rz is not in DICOM)
