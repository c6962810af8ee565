"""``xctreg.io.export``: each format round-trips through the real library that reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xctreg._fs import write_json
from xctreg.data.phantom import PhantomConfig, make_phantom
from xctreg.errors import XctregError
from xctreg.geometry import Camera, Pose, PoseReference, PoseSpace, project
from xctreg.io import Volume, write_volume
from xctreg.io.export import FORMATS, diffdrr_pose, export_pose, load_pose_and_camera

ISO = (12.0, -8.0, 5.0)


def _pose(params: list[float], view: tuple[float, float, float] = (0.0, 0.0, 0.0), iso=ISO) -> np.ndarray:
    space = PoseSpace(PoseReference(iso, 750.0, view_deg=view))
    return space.to_matrix(torch.tensor(params, dtype=torch.float64)).numpy()


POSES = {
    "ap": _pose([0, 0, 0, 0, 0, 0]),
    "ap-moved": _pose([8, -6, 12, 15, -10, 30]),
    "lat-left": _pose([4, 7, -5, -12, 6, -20], view=(0, 90, 0)),
    "oblique": _pose([-10, 3, 20, 5, 5, 10], view=(20, -45, 0)),
}
CAM_SQUARE = Camera(1020.0, 64, 64, (3.2, 3.2))
CAM_RECT = Camera(1020.0, 72, 96, (2.8, 2.2))  # non-square, dy != dx
CAM_OFF = Camera(1020.0, 72, 96, (2.8, 2.2), principal_point_px=(58.25, 30.5))  # off-centre


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# --------------------------------------------------------------------------- itk
@pytest.mark.parametrize("suffix", [".tfm", ".txt", ".h5"])
@pytest.mark.parametrize("name", ["ap-moved", "lat-left", "oblique"])
def test_itk_transform_point_is_T_times_p(tmp_path: Path, name: str, suffix: str) -> None:
    sitk = pytest.importorskip("SimpleITK")
    T = POSES[name]
    out = export_pose(T, None, "itk", tmp_path / f"pose{suffix}")
    tx = sitk.ReadTransform(str(out))
    pts = np.random.default_rng(1).uniform(-400.0, 400.0, (200, 3))
    got = np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in pts])
    np.testing.assert_allclose(got, pts @ T[:3, :3].T + T[:3, 3], rtol=0, atol=1e-6)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left nothing behind


def test_itk_rejects_other_suffix(tmp_path: Path) -> None:
    with pytest.raises(XctregError, match=r"\.tfm"):
        export_pose(POSES["ap"], None, "itk", tmp_path / "pose.json")


# --------------------------------------------------------------------------- opencv
@pytest.mark.parametrize("cam", [CAM_SQUARE, CAM_RECT, CAM_OFF], ids=["square", "rect", "offcentre"])
@pytest.mark.parametrize("name", ["ap-moved", "lat-left", "oblique"])
def test_opencv_project_points_matches_spec(tmp_path: Path, name: str, cam: Camera) -> None:
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless not installed")
    T = POSES[name]
    d = json.loads(export_pose(T, cam, "opencv", tmp_path / "pose.opencv.json").read_text())
    assert d["image_size"] == [cam.width, cam.height]
    rng = np.random.default_rng(2)
    pts = np.asarray(ISO) + rng.uniform(-120.0, 120.0, (300, 3))
    uv_cv, _ = cv2.projectPoints(pts, np.array(d["rvec"]), np.array(d["tvec"]), np.array(d["K"]), np.array(d["dist"]))
    uv_ours, z = project(torch.as_tensor(pts), torch.as_tensor(T), cam)
    assert bool((z > 0).all())
    np.testing.assert_allclose(uv_cv.reshape(-1, 2), uv_ours.numpy(), rtol=0, atol=1e-6)
    # rvec is OpenCV's own Rodrigues vector of R, both ways
    rvec_cv, _ = cv2.Rodrigues(np.ascontiguousarray(T[:3, :3]))
    np.testing.assert_allclose(np.array(d["rvec"]), rvec_cv.reshape(3), atol=1e-9)
    R_cv, _ = cv2.Rodrigues(np.array(d["rvec"]))
    np.testing.assert_allclose(R_cv, T[:3, :3], atol=1e-12)


# --------------------------------------------------------------------------- diffdrr
@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Volume, Path]:
    """The embedded phantom, 64³ at 4 mm, with a non-trivial origin, as NIfTI."""
    vol = make_phantom(PhantomConfig(size=(64, 64, 64), spacing_mm=(4.0, 4.0, 4.0)))
    vol.origin = vol.origin + np.array(ISO) - vol.center  # centre the phantom on ISO (not the origin)
    path = write_volume(vol, tmp_path_factory.mktemp("ct") / "phantom.nii.gz")
    return vol, path


def _render_diffdrr(d: dict, vol: Volume, use_axis_angle: bool) -> np.ndarray:
    read = pytest.importorskip("diffdrr.data", reason="DiffDRR 0.6.1 not installed").read
    DRR = pytest.importorskip("diffdrr.drr", reason="DiffDRR 0.6.1 not installed").DRR
    from xctreg.physics import hu_to_density

    subject = read(d["read"]["volume"], orientation=d["read"]["orientation"], center_volume=d["read"]["center_volume"])
    drr = DRR(subject, renderer="siddon", **d["drr"])
    # Same quantity as ours (DiffDRR's own density is a normalised HU ramp): (k, j, i) -> (i, j, k).
    drr.density = hu_to_density(torch.from_numpy(vol.hu)).permute(2, 1, 0).contiguous()
    with torch.no_grad():
        if use_axis_angle:
            rot = torch.tensor([d["axis_angle"]["rotation"]], dtype=torch.float32)
            tra = torch.tensor([d["axis_angle"]["translation"]], dtype=torch.float32)
            img = drr(rot, tra, parameterization="axis_angle")
        else:
            img = drr(torch.tensor(d["matrix"], dtype=torch.float32)[None], parameterization=d["parameterization"])
    assert img.shape == (1, 1, d["drr"]["height"], d["drr"]["width"])
    return img[0, 0].numpy()


def _diffdrr_rays(d: dict) -> tuple[np.ndarray, np.ndarray]:
    """DiffDRR's source (3,) and pixel targets (H*W, 3) in its world, row-major, from the exported values."""
    read = pytest.importorskip("diffdrr.data", reason="DiffDRR 0.6.1 not installed").read
    DRR = pytest.importorskip("diffdrr.drr", reason="DiffDRR 0.6.1 not installed").DRR
    from diffdrr.pose import convert

    subject = read(d["read"]["volume"], orientation=d["read"]["orientation"], center_volume=d["read"]["center_volume"])
    drr = DRR(subject, **d["drr"])
    pose = convert(torch.tensor(d["matrix"], dtype=torch.float32)[None], parameterization=d["parameterization"])
    source, target = drr.detector(pose, None)
    return source[0, 0].double().numpy(), target[0].double().numpy()


def _our_rays(T: np.ndarray, cam: Camera, centre_lps: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Our source and pixel-centre detector points (SPEC §3), mapped to DiffDRR's world (RAS, maybe centred)."""
    v, u = np.meshgrid(np.arange(cam.height), np.arange(cam.width), indexing="ij")
    dy, dx = cam.pixel_spacing_mm
    pix = np.stack([(u.ravel() - cam.cx) * dx, (v.ravel() - cam.cy) * dy, np.full(u.size, cam.sdd_mm)], -1)
    R, t = T[:3, :3], T[:3, 3]
    shift = np.zeros(3) if centre_lps is None else centre_lps
    ras = np.array([-1.0, -1.0, 1.0])
    return (-(R.T @ t) - shift) * ras, ((pix - t) @ R - shift) * ras


CASES = [  # pose, camera, diffdrr read orientation, center_volume, use axis_angle
    ("ap-moved", CAM_SQUARE, None, False, False),
    ("lat-left", CAM_RECT, None, False, False),
    ("oblique", CAM_OFF, None, False, True),
    ("lat-left", CAM_OFF, "AP", True, False),  # DiffDRR's own read() defaults
]


@pytest.mark.parametrize(("name", "cam", "orientation", "centre", "axis_angle"), CASES,
                         ids=[f"{c[0]}-{c[1].height}x{c[1].width}-{c[2]}-{c[3]}-{'aa' if c[4] else 'mat'}" for c in CASES])
def test_diffdrr_renders_the_same_image(tmp_path: Path, phantom_file, name, cam, orientation, centre, axis_angle) -> None:
    pytest.importorskip("diffdrr", reason="DiffDRR 0.6.1 not installed")
    from xctreg.render import RenderConfig, Renderer

    vol, ct = phantom_file
    T = POSES[name]
    out = export_pose(T, cam, "diffdrr", tmp_path / "pose.diffdrr.json", ct_path=ct,
                      diffdrr_orientation=orientation, diffdrr_center_volume=centre)
    d = json.loads(out.read_text())
    assert d["read"] == {"volume": str(ct), "orientation": orientation, "center_volume": centre}
    # geometry: DiffDRR's source and pixel positions are ours (pixel centres, flips, x0/y0, frames)
    src_d, tgt_d = _diffdrr_rays(d)
    src_o, tgt_o = _our_rays(T, cam, vol.center if centre else None)
    np.testing.assert_allclose(src_d, src_o, rtol=0, atol=1e-3)
    np.testing.assert_allclose(tgt_d, tgt_o, rtol=0, atol=1e-3)
    theirs = _render_diffdrr(d, vol, axis_angle)
    ours = Renderer(vol, cam, RenderConfig(mode="line", voxel_mm=None))
    mine = (ours(torch.as_tensor(T)[None].float())[0, 0] * 10.0).numpy()  # g/cm² -> g/cm³·mm like DiffDRR
    ncc = _ncc(mine, theirs)
    print(f"NCC {name} {cam.height}x{cam.width} pp=({cam.cx:g},{cam.cy:g}) read=({orientation},{centre}): {ncc:.5f}")
    assert ncc > 0.99
    assert np.abs(mine - theirs).sum() / np.abs(theirs).sum() < 0.03
    # the check can tell a mirrored or shifted image apart
    assert _ncc(mine, theirs[:, ::-1]) < ncc - 0.01
    assert _ncc(mine[:, 2:], theirs[:, :-2]) < ncc - 0.005


def test_diffdrr_perspective_projection_is_half_pixel_shifted(tmp_path: Path, phantom_file) -> None:
    """DiffDRR's own projection puts pixel centres at half-integers: (u + 0.5, v + 0.5) (stated in the note)."""
    DRR = pytest.importorskip("diffdrr.drr", reason="DiffDRR 0.6.1 not installed").DRR
    from diffdrr.data import read
    from diffdrr.pose import convert

    vol, ct = phantom_file
    T, cam = POSES["oblique"], CAM_OFF
    d = json.loads(export_pose(T, cam, "diffdrr", tmp_path / "p.json", ct_path=ct).read_text())
    drr = DRR(read(d["read"]["volume"], orientation=None, center_volume=False), **d["drr"])
    pose = convert(torch.tensor(d["matrix"], dtype=torch.float32)[None], parameterization="matrix")
    pts = np.asarray(ISO) + np.random.default_rng(3).uniform(-100.0, 100.0, (50, 3))
    uv_ours, _ = project(torch.as_tensor(pts), torch.as_tensor(T), cam)
    ras = torch.tensor([-1.0, -1.0, 1.0])
    uv_d = drr.perspective_projection(pose, (torch.as_tensor(pts).float() * ras)[None])[0]
    np.testing.assert_allclose(uv_d.double().numpy(), uv_ours.numpy() + 0.5, atol=2e-3)


def test_diffdrr_pose_is_rigid_and_matches_axis_angle(tmp_path: Path) -> None:
    d = json.loads(export_pose(POSES["oblique"], CAM_OFF, "diffdrr", tmp_path / "p.json").read_text())
    E = np.array(d["matrix"])
    assert abs(np.linalg.det(E[:3, :3]) - 1.0) < 1e-12
    assert d["read"] == {"volume": None, "orientation": None, "center_volume": False}
    assert d["drr"]["x0"] == pytest.approx((58.25 - 47.5) * 2.2)
    assert d["drr"]["y0"] == pytest.approx((30.5 - 35.5) * 2.8)
    # DiffDRR's axis_angle: [R | R·translation] (diffdrr/pose.py convert)
    rot = torch.tensor(d["axis_angle"]["rotation"], dtype=torch.float64)
    import roma

    R = roma.rotvec_to_rotmat(rot).numpy()
    np.testing.assert_allclose(R, E[:3, :3], atol=1e-12)
    np.testing.assert_allclose(R @ np.array(d["axis_angle"]["translation"]), E[:3, 3], atol=1e-9)


def test_diffdrr_centre_needs_ct_and_pa_is_refused(tmp_path: Path) -> None:
    with pytest.raises(XctregError, match="CT path"):
        export_pose(POSES["ap"], CAM_SQUARE, "diffdrr", tmp_path / "p.json", diffdrr_center_volume=True)
    with pytest.raises(XctregError, match="orientation"):
        diffdrr_pose(POSES["ap"], orientation="PA")


# --------------------------------------------------------------------------- reading and bad input
def test_load_result_json_with_geometry_and_ct(tmp_path: Path) -> None:
    pose = Pose(POSES["lat-left"], PoseReference(ISO, 750.0, (0.0, 90.0, 0.0)))
    result = {**pose.to_dict(), "geometry": CAM_OFF.to_dict(), "ct_path": "ct/phantom.nii.gz", "similarity": {"ncc": 0.9}}
    write_json(tmp_path / "result.json", result)
    T, cam, ct = load_pose_and_camera(tmp_path / "result.json", None)
    np.testing.assert_allclose(T, POSES["lat-left"], atol=1e-12)
    assert cam == CAM_OFF
    assert ct == tmp_path / "ct" / "phantom.nii.gz"
    # --geometry overrides the result's geometry
    write_json(tmp_path / "geom.json", CAM_SQUARE.to_dict())
    assert load_pose_and_camera(tmp_path / "result.json", tmp_path / "geom.json")[1] == CAM_SQUARE
    # a multi-view result exports its joint pose
    write_json(tmp_path / "mv.json", {"joint": result, "views": [result]})
    np.testing.assert_allclose(load_pose_and_camera(tmp_path / "mv.json", None)[0], POSES["lat-left"], atol=1e-12)


def test_pose_json_without_camera(tmp_path: Path) -> None:
    write_json(tmp_path / "pose.json", {"T_cam_from_world": POSES["ap"].tolist()})
    T, cam, ct = load_pose_and_camera(tmp_path / "pose.json", None)
    assert cam is None and ct is None
    assert export_pose(T, cam, "itk", tmp_path / "pose.tfm").is_file()  # itk needs no camera
    for fmt in ("opencv", "diffdrr"):
        with pytest.raises(XctregError, match="--geometry") as exc:
            export_pose(T, cam, fmt, tmp_path / f"pose.{fmt}.json")
        assert "\n" not in str(exc.value)
        assert not (tmp_path / f"pose.{fmt}.json").exists()


def test_unknown_format_lists_formats(tmp_path: Path) -> None:
    with pytest.raises(XctregError) as exc:
        export_pose(POSES["ap"], CAM_SQUARE, "nifti", tmp_path / "x.json")
    msg = str(exc.value)
    assert "\n" not in msg and "nifti" in msg
    assert all(f in msg for f in FORMATS)
    assert not (tmp_path / "x.json").exists()


def test_bad_pose_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(XctregError, match="not found"):
        load_pose_and_camera(tmp_path / "nope.json", None)
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(XctregError, match="rigid"):
        export_pose(bad, CAM_SQUARE, "opencv", tmp_path / "x.json")
