"""Geometry: pose parameters, SE(3), projection/back-projection, JSON IO (SPEC §3-5)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_one_line_error
from xctreg.errors import XctregError
from xctreg.geometry import (
    Camera,
    Pose,
    PoseRanges,
    PoseReference,
    backproject,
    compose_se3,
    euler_to_rotmat,
    invert_se3,
    matrix_to_params,
    params_to_matrix,
    pixel_grid,
    project,
    read_camera,
    read_pose,
    rotation_error_deg,
    sample_params,
    translation_error_mm,
    write_camera,
    write_pose,
)

REF = PoseReference((12.0, -30.0, 105.0), 750.0)
CAM = Camera(1020.0, 128, 96, (3.2, 2.5))


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def test_euler_is_rz_ry_rx_about_camera_axes() -> None:
    ang = np.array([7.0, -11.0, 23.0])
    r = np.radians(ang)
    expected = _rz(r[2]) @ _ry(r[1]) @ _rx(r[0])
    got = euler_to_rotmat(torch.tensor(ang, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_params_formula_matches_spec() -> None:
    p = np.array([5.0, -3.0, 12.0, 4.0, -7.0, 20.0])
    T = params_to_matrix(torch.tensor(p), REF).numpy()
    r = np.radians(p[:3])
    R_ap = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float)
    R = _rz(r[2]) @ _ry(r[1]) @ _rx(r[0]) @ R_ap
    x = np.array([[40.0, -20.0, 150.0], [-100.0, 50.0, 0.0]])
    expected = (R @ (x - np.array(REF.isocenter_mm)).T).T + np.array([p[3], p[4], 750.0 + p[5]])
    got = x @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_params_matrix_params_round_trip_random_poses() -> None:
    wide = PoseRanges((-60, 60), (-60, 60), (-170, 170), (-200, 200), (-200, 200), (-300, 300))
    p = torch.tensor(sample_params(2000, wide, seed=1))
    back = matrix_to_params(params_to_matrix(p, REF), REF)
    assert (back - p).abs().max().item() < 1e-6


def test_params_to_matrix_is_differentiable() -> None:
    p = torch.tensor([[3.0, -4.0, 5.0, 1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: params_to_matrix(q, REF), (p,))


def test_ap_view_left_is_image_right_and_head_is_top() -> None:
    c = np.array(REF.isocenter_mm)
    T = params_to_matrix(torch.zeros(6, dtype=torch.float64), REF)
    pts = torch.tensor(np.stack([c, c + [80, 0, 0], c + [0, 0, 80], c + [0, -80, 0]]))
    uv, z = project(pts, T, CAM)
    u0, v0 = uv[0].tolist()
    assert abs(u0 - CAM.cx) < 1e-9 and abs(v0 - CAM.cy) < 1e-9  # isocenter on the principal ray
    assert z[0].item() == pytest.approx(750.0)
    assert uv[1, 0] > CAM.cx  # patient left -> image right
    assert uv[2, 1] < CAM.cy  # head (superior) -> image top
    assert z[3] < z[0]  # anterior is closer to the source


def test_backprojected_ray_projects_to_its_pixel() -> None:
    p = torch.tensor(sample_params(4, seed=3))
    T = params_to_matrix(p, REF)
    uv = pixel_grid(CAM, dtype=torch.float64)[::97]
    src, d = backproject(uv, T, CAM)
    assert src.shape == (4, 3) and d.shape == (4, uv.shape[0], 3)
    np.testing.assert_allclose(d.norm(dim=-1).numpy(), 1.0, atol=1e-12)
    for t in (300.0, 750.0, 1000.0):
        pts = src[:, None, :] + t * d
        uv2, _ = project(pts, T, CAM)
        assert (uv2 - uv).abs().max().item() < 1e-6
    # the source is where the camera origin is
    np.testing.assert_allclose(
        (src[:, None, :] @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]).numpy(), 0.0, atol=1e-9
    )


def test_se3_invert_and_compose() -> None:
    A = params_to_matrix(torch.tensor(sample_params(5, seed=4)), REF)
    B = params_to_matrix(torch.tensor(sample_params(5, seed=5)), REF)
    eye = torch.eye(4, dtype=torch.float64).expand(5, 4, 4)
    assert (compose_se3(A, invert_se3(A)) - eye).abs().max() < 1e-9
    assert (invert_se3(compose_se3(A, B)) - compose_se3(invert_se3(B), invert_se3(A))).abs().max() < 1e-9


def test_rotation_and_translation_error() -> None:
    T = params_to_matrix(torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0], dtype=torch.float64), REF)
    U = params_to_matrix(torch.tensor([1.0, 2.0, 10.0, 0.0, 0.0, 0.0], dtype=torch.float64), REF)
    assert rotation_error_deg(T, U).item() == pytest.approx(7.0, abs=1e-6)
    shift = torch.eye(4, dtype=torch.float64)
    shift[:3, 3] = torch.tensor([3.0, 4.0, 0.0])
    assert translation_error_mm(T, T @ shift).item() == pytest.approx(5.0, abs=1e-9)
    assert rotation_error_deg(T, T).item() == pytest.approx(0.0, abs=1e-4)


def test_sample_params_within_ranges_and_uniform() -> None:
    n = 4000
    ranges = PoseRanges()
    p = sample_params(n, ranges, seed=0)
    lo, hi = ranges.bounds()
    assert np.all(p >= lo) and np.all(p <= hi)
    for j in range(6):
        u = np.sort((p[:, j] - lo[j]) / (hi[j] - lo[j]))
        ks = np.max(np.maximum(np.arange(1, n + 1) / n - u, u - np.arange(n) / n))
        assert ks < 1.63 / math.sqrt(n)  # 1% level
    assert not np.allclose(sample_params(10, seed=1), sample_params(10, seed=2))
    np.testing.assert_array_equal(sample_params(10, seed=1), sample_params(10, seed=1))


def test_inverted_range_is_refused() -> None:
    with pytest.raises(XctregError, match="inverted"):
        PoseRanges(rx_deg=(10.0, -10.0))


def test_camera_json_round_trip_and_resize(tmp_path) -> None:
    cam = Camera(1000.0, 200, 100, (1.5, 2.0), (49.0, 101.0))
    write_camera(tmp_path / "g.json", cam)
    assert read_camera(tmp_path / "g.json") == cam
    small = cam.resized(100, 50)
    assert small.height * small.pixel_spacing_mm[0] == pytest.approx(cam.height * cam.pixel_spacing_mm[0])
    assert small.fx == pytest.approx(cam.fx / 2)
    d = Camera(1020.0, 256, 256, (1.6, 1.6)).to_dict()
    assert "principal_point_px" not in d
    assert Camera.from_dict(d).cx == pytest.approx(127.5)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"height": 10, "width": 10, "pixel_spacing_mm": [1, 1]}, "missing"),
        ({"sdd_mm": 1000, "height": 10, "width": 10, "pixel_spacing_mm": [-1, 1]}, "pixel_spacing_mm"),
        ({"sdd_mm": -5, "height": 10, "width": 10, "pixel_spacing_mm": [1, 1]}, "sdd_mm"),
        ({"sdd_mm": 1000, "height": 0, "width": 10, "pixel_spacing_mm": [1, 1]}, "height"),
        ({"sdd_mm": "far", "height": 10, "width": 10, "pixel_spacing_mm": [1, 1]}, "expected numbers"),
    ],
)
def test_bad_geometry_json_gives_one_line_error(tmp_path, cli, payload, fragment) -> None:
    g = tmp_path / "g.json"
    g.write_text(json.dumps(payload))
    assert_one_line_error(cli("check", "--geometry", g), fragment)


def test_geometry_json_not_json(tmp_path, cli) -> None:
    g = tmp_path / "g.json"
    g.write_text("{sdd_mm: 1020")
    assert_one_line_error(cli("check", "--geometry", g), "not valid JSON")


def test_pose_json_round_trip_and_either_field(tmp_path) -> None:
    pose = Pose.from_params([1, 2, 3, 4, 5, 6], REF)
    write_pose(tmp_path / "p.json", pose)
    back = read_pose(tmp_path / "p.json")
    np.testing.assert_allclose(back.T_cam_from_world, pose.T_cam_from_world, atol=1e-12)
    np.testing.assert_allclose(back.params, [1, 2, 3, 4, 5, 6], atol=1e-9)
    d = pose.to_dict()
    only_params = {"params": d["params"], "reference": d["reference"]}
    np.testing.assert_allclose(Pose.from_dict(only_params).T_cam_from_world, pose.T_cam_from_world, atol=1e-12)
    only_matrix = {"T_cam_from_world": d["T_cam_from_world"]}
    np.testing.assert_allclose(Pose.from_dict(only_matrix, reference=REF).params, [1, 2, 3, 4, 5, 6], atol=1e-9)


def test_pose_with_matrix_and_params_but_no_reference_uses_the_matrix() -> None:
    d = Pose.from_params([1, 2, 3, 4, 5, 6], REF).to_dict()
    d.pop("reference")
    pose = Pose.from_dict(d)
    np.testing.assert_allclose(pose.T_cam_from_world, np.array(d["T_cam_from_world"]))
    with pytest.raises(XctregError, match="no reference"):
        _ = pose.params


def test_pose_matrix_and_params_disagree(tmp_path, cli) -> None:
    d = Pose.from_params([1, 2, 3, 4, 5, 6], REF).to_dict()
    d["params"]["rz_deg"] = 3.01
    (tmp_path / "p.json").write_text(json.dumps(d))
    assert_one_line_error(cli("check", "--pose", tmp_path / "p.json"), "disagree")


def test_pose_not_rigid_and_incomplete(tmp_path, cli) -> None:
    d = Pose.from_params([1, 2, 3, 4, 5, 6], REF).to_dict()
    d.pop("params")
    d["T_cam_from_world"][0][0] *= 1.5
    (tmp_path / "p.json").write_text(json.dumps(d))
    assert_one_line_error(cli("check", "--pose", tmp_path / "p.json"), "not a rigid transform")
    (tmp_path / "q.json").write_text(json.dumps({"params": {"rx_deg": 1}}))
    assert_one_line_error(cli("check", "--pose", tmp_path / "q.json"), "missing")
    (tmp_path / "r.json").write_text(json.dumps({"reference": {"isocenter_mm": [0, 0, 0], "sid_mm": 750}}))
    assert_one_line_error(cli("check", "--pose", tmp_path / "r.json"), "needs T_cam_from_world or params")


# -------------------------------------------------------------- Euler angles against roma

_angle = st.floats(-179.0, 179.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.tuples(_angle, st.floats(-89.0, 89.0, allow_nan=False), _angle))
def test_euler_matches_roma_both_ways(ang: tuple[float, float, float]) -> None:
    """Own closed forms (roma's import pulls in torch._dynamo, 1.2 s of a cold start) agree
    with roma's extrinsic "xyz", which stays the reference."""
    import roma

    from xctreg.geometry import rotmat_to_euler

    a = torch.tensor(ang, dtype=torch.float64)
    R = euler_to_rotmat(a)
    np.testing.assert_allclose(R.numpy(), roma.euler_to_rotmat("xyz", a, degrees=True).numpy(), atol=1e-12)
    np.testing.assert_allclose(rotmat_to_euler(R).numpy(), roma.rotmat_to_euler("xyz", R, degrees=True).numpy(), atol=1e-7)
    np.testing.assert_allclose(rotmat_to_euler(R).numpy(), ang, atol=1e-7)


@pytest.mark.parametrize("ry", [90.0, -90.0])
def test_rotmat_to_euler_at_gimbal_lock_gives_the_same_matrix(ry: float) -> None:
    from xctreg.geometry import rotmat_to_euler

    R = euler_to_rotmat(torch.tensor([25.0, ry, -40.0], dtype=torch.float64))
    back = rotmat_to_euler(R)
    assert torch.isfinite(back).all()
    np.testing.assert_allclose(euler_to_rotmat(back).numpy(), R.numpy(), atol=1e-9)


def test_euler_is_differentiable_and_batched() -> None:
    a = torch.tensor([[3.0, -4.0, 5.0], [10.0, 20.0, -30.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(euler_to_rotmat, (a,))
    assert euler_to_rotmat(a).shape == (2, 3, 3)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d["params"].__setitem__("tx_mm", float("nan")), "finite"),
        (lambda d: d["params"].__setitem__("rx_deg", "ten"), "number"),
        (lambda d: d["reference"].__setitem__("sid_mm", 0), "sid_mm"),
        (lambda d: d["reference"].__setitem__("sid_mm", -750), "sid_mm"),
    ],
)
def test_bad_pose_values_give_one_line_error(tmp_path, cli, edit, fragment) -> None:
    """NaN, a wrong type or a non-positive source distance in a pose JSON: one error line."""
    d = Pose.from_params([1, 2, 3, 4, 5, 6], REF).to_dict()
    d.pop("T_cam_from_world")
    edit(d)
    (tmp_path / "p.json").write_text(json.dumps(d))  # json writes NaN as the bare token NaN
    assert_one_line_error(cli("check", "--pose", tmp_path / "p.json"), fragment)


def test_geometry_with_nan_gives_one_line_error(tmp_path, cli) -> None:
    g = {"sdd_mm": float("nan"), "height": 32, "width": 32, "pixel_spacing_mm": [1.0, 1.0]}
    (tmp_path / "g.json").write_text(json.dumps(g))
    assert_one_line_error(cli("check", "--geometry", tmp_path / "g.json"), "finite")


@pytest.mark.parametrize(
    "edit",
    [{"sdd_mm": "1020"}, {"height": True}, {"pixel_spacing_mm": ["1", "1"]}, {"principal_point_px": "ab"}, {"sdd_mm": 10**400}],
    ids=["string-sdd", "bool-height", "string-spacing", "string-principal-point", "huge-int"],
)
def test_geometry_wrong_types_are_refused(tmp_path, cli, edit) -> None:
    """Strings and booleans where numbers belong, and integers beyond a float, are refused in one line."""
    g = {"sdd_mm": 1020, "height": 32, "width": 32, "pixel_spacing_mm": [1.0, 1.0], **edit}
    (tmp_path / "g.json").write_text(json.dumps(g))
    res = cli("check", "--geometry", tmp_path / "g.json")
    assert res.code != 0 and res.err.startswith("error: ") and len(res.err.strip().splitlines()) == 1, res.err
