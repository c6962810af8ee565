"""xctreg.project: CT points and labels drawn on the X-ray.

The acceptance test renders dense beads with ``simulate_one`` and checks that
``run_project`` puts them within 1 px of where the DRR shows them, for AP, lateral
and oblique views on a non-square detector with non-square pixels, from a CT whose
direction cosines are not the identity.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from matplotlib.path import Path as MplPath
from scipy import ndimage

from xctreg._fs import write_json
from xctreg.data.phantom import PhantomConfig, make_phantom
from xctreg.errors import XctregError
from xctreg.geometry import Camera, PoseReference, PoseSpace
from xctreg.io import Volume, read_xray, write_volume, write_xray
from xctreg.project import (
    label_outlines,
    project_points,
    read_points_csv,
    run_project,
    write_points_csv,
)
from xctreg.render import RenderConfig, Renderer
from xctreg.simulate import SimulateConfig, simulate_one

CAM = Camera(1020.0, 96, 128, (3.0, 2.5))  # H 96, W 128; dy 3.0 mm, dx 2.5 mm
LINE = RenderConfig(mode="line", voxel_mm=None)
# lower corners (i, j, k) of 2x2x2-voxel beads; distinct in i, j and k so that no two
# overlap in AP or lateral views
BEADS_IJK = np.array([(22, 30, 25), (38, 23, 36), (30, 40, 44), (27, 35, 17)])
BEAD_NAMES = ["b0", "b1", "b2", "b3"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_points(path: Path, names: list[str], xyz: np.ndarray) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x", "comment", "z", "name", "y"])  # any order, extra columns
        for n, (x, y, z) in zip(names, xyz, strict=True):
            w.writerow([repr(float(x)), "bead", repr(float(z)), n, repr(float(y))])
    return path


@pytest.fixture(scope="module")
def bead_cts() -> tuple[Volume, Volume, np.ndarray]:
    """(CT with beads, the same CT without, bead centres (4, 3) world LPS mm).

    The phantom's voxels are stored with direction diag(-1, -1, 1) (as a RAS-ordered
    file would be) and an offset origin, so index != world.
    """
    ph = make_phantom(PhantomConfig(size=(64, 64, 64), spacing_mm=(4.0, 4.0, 4.0)))
    plain = Volume(ph.hu, ph.spacing, origin=(130.0, 90.0, -40.0), direction=np.diag([-1.0, -1.0, 1.0]))
    hu = plain.hu.copy()
    for i, j, k in BEADS_IJK:
        hu[k : k + 2, j : j + 2, i : i + 2] = 3000.0
    beads = Volume(hu, plain.spacing, plain.origin, plain.direction)
    centres = beads.index_to_world(BEADS_IJK + 0.5)  # centre of the 2x2x2 block
    return beads, plain, centres


def _bead_centroids(diff: np.ndarray) -> np.ndarray:
    """(n, 2) (u, v) centroids of the positive blobs of a bead-only DRR."""
    lab, n = ndimage.label(diff > 0.1 * diff.max())
    rc = np.array(ndimage.center_of_mass(np.clip(diff, 0, None), lab, range(1, n + 1)))
    return rc[:, ::-1]


VIEWS = {
    # name: (view_deg, params (rx, ry, rz deg, tx, ty, tz mm), how the camera reaches run_project)
    "ap": ((0.0, 0.0, 0.0), (4.0, -6.0, 8.0, 10.0, -8.0, 25.0), "dicom"),
    "lat-left": ((0.0, 90.0, 0.0), (-5.0, 7.0, -10.0, -12.0, 6.0, -30.0), "json"),
    "oblique": ((20.0, -35.0, 0.0), (2.0, 3.0, 5.0, 5.0, 10.0, 0.0), "geometry"),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_points_land_on_simulated_beads(view: str, bead_cts, tmp_path: Path) -> None:
    beads, plain, centres = bead_cts
    view_deg, params, camera_from = VIEWS[view]
    space = PoseSpace(PoseReference(tuple(beads.center), 750.0, view_deg=view_deg))
    pose = space.pose(np.array(params))
    suffix = ".dcm" if camera_from == "dicom" else ".npy"
    img_path, pose_path = simulate_one(beads, CAM, pose, tmp_path / f"drr{suffix}", SimulateConfig(render=LINE))
    geometry = None
    if camera_from == "json":  # a result JSON carrying the X-ray's camera
        doc = json.loads(pose_path.read_text())
        doc["geometry"] = CAM.to_dict()
        write_json(pose_path, doc)
    elif camera_from == "geometry":
        geometry = tmp_path / "geom.json"
        write_json(geometry, CAM.to_dict())

    # where the DRR shows the beads: simulate's image minus the DRR of the CT without them
    with torch.no_grad():
        T = torch.as_tensor(pose.T_cam_from_world, dtype=torch.float32)[None]
        bg = Renderer(plain, CAM, LINE)(T)[0, 0].numpy()
    seen = _bead_centroids(read_xray(img_path).image - bg)
    assert len(seen) == len(BEADS_IJK)

    pts = _write_points(tmp_path / "beads.csv", BEAD_NAMES, centres)
    out_csv = tmp_path / "proj.csv"
    summary = run_project(pose_path, img_path, tmp_path / "overlay.png", pts, None, False, out_csv, geometry, None)
    assert summary["n_points"] == 4 and summary["n_inside"] == 4
    assert (tmp_path / "overlay.png").stat().st_size > 0
    rows = _read_csv(out_csv)
    assert [r["name"] for r in rows] == BEAD_NAMES
    uv = np.array([[float(r["u_px"]), float(r["v_px"])] for r in rows])
    assert np.allclose(uv, [[float(r["col"]), float(r["row"])] for r in rows])
    dist = np.linalg.norm(seen[None, :, :] - uv[:, None, :], axis=-1).min(axis=1)
    print(f"\n{view}: projected vs rendered bead centroids (px): {np.array2string(dist, precision=3)}")
    assert np.all(dist < 1.0), dist
    # each bead matched to a distinct blob
    assert len(set(np.linalg.norm(seen[None] - uv[:, None], axis=-1).argmin(axis=1).tolist())) == 4


# --------------------------------------------------------------------------- points
def test_read_points_ras_and_defaults(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("# exported\nZ, X ,Y,extra\n3,1,2,a\n-6,-4,-5.5,b\n", encoding="utf-8")
    names, lps = read_points_csv(f)
    assert names == ["p0", "p1"]
    assert np.allclose(lps, [[1, 2, 3], [-4, -5.5, -6]])
    _, ras = read_points_csv(f, ras=True)
    assert np.allclose(ras, [[-1, -2, 3], [4, 5.5, -6]])


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("name,x,y\np,1,2\n", "needs the columns name,x,y,z"),
        ("p,1,2,3\nq,4,5,6\n", "needs the columns name,x,y,z"),
        ("name,x,y,z\na,1,2,3\nb,1,two,3\n", "line 3: y = 'two' is not a number"),
        ("name,x,y,z\na,1,2,nan\n", "line 2: z = 'nan' is not finite"),
        ("name,x,y,z\na,1,2\n", "line 2: z = '' is not a number"),
        ("name,x,y,z\n", "no points"),
        ("", "empty"),
    ],
)
def test_read_points_errors(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "p.csv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(XctregError, match=None) as exc:
        read_points_csv(f)
    msg = str(exc.value)
    assert fragment in msg and "\n" not in msg


def test_read_points_missing_file(tmp_path: Path) -> None:
    with pytest.raises(XctregError, match="not found"):
        read_points_csv(tmp_path / "nope.csv")


def test_project_points_behind_source_and_outside() -> None:
    cam = Camera(1000.0, 50, 60, (1.0, 1.0))
    T = np.eye(4)
    pts = np.array([[0.0, 0.0, 500.0], [10.0, -5.0, 1000.0], [0.0, 0.0, -100.0], [1000.0, 0.0, 500.0]])
    uv, depth, inside = project_points(pts, T, cam)
    assert np.allclose(uv[0], [cam.cx, cam.cy])
    assert np.allclose(uv[1], [cam.cx + 10.0, cam.cy - 5.0])
    assert np.allclose(depth, [500, 1000, -100, 500])
    assert inside.tolist() == [True, True, False, False]
    assert np.all(np.isnan(uv[2]))


def test_write_points_csv(tmp_path: Path) -> None:
    f = write_points_csv(
        tmp_path / "o.csv", ["a", "b,c"], np.array([[1.5, 2.25], [np.nan, np.nan]]), np.array([800.0, -5.0]), np.array([True, False])
    )
    rows = _read_csv(f)
    assert list(rows[0]) == ["name", "u_px", "v_px", "row", "col", "depth_mm", "inside"]
    assert rows[0] == {"name": "a", "u_px": "1.5000", "v_px": "2.2500", "row": "2.2500", "col": "1.5000", "depth_mm": "800.000", "inside": "true"}
    assert rows[1]["name"] == "b,c" and rows[1]["u_px"] == "" and rows[1]["inside"] == "false"


# --------------------------------------------------------------------------- labels
def _grid(shape_ijk: tuple[int, int, int], spacing: float, origin, direction=None) -> Volume:
    ni, nj, nk = shape_ijk
    return Volume(np.zeros((nk, nj, ni), np.float32), (spacing,) * 3, origin, np.eye(3) if direction is None else direction)


def _rot(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = np.radians(deg_z), np.radians(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _hull_mask(vol: Volume, lo_ijk, hi_ijk, T: np.ndarray, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centres lie in the projection of the box of voxels lo..hi-1, and its corners (8, 2)."""
    lo, hi = np.asarray(lo_ijk) - 0.5, np.asarray(hi_ijk) - 0.5
    c = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    uv, _, _ = project_points(vol.index_to_world(c), T, cam)
    from scipy.spatial import ConvexHull

    hull = uv[ConvexHull(uv).vertices]
    vv, uu = np.mgrid[0 : cam.height, 0 : cam.width]
    inside = MplPath(hull).contains_points(np.c_[uu.ravel(), vv.ravel()]).reshape(cam.height, cam.width)
    return inside, uv


def _pose(vol: Volume, view=(0.0, 0.0, 0.0), params=(8.0, -12.0, 20.0, 5.0, -3.0, 0.0)) -> np.ndarray:
    return PoseSpace(PoseReference(tuple(vol.center), 750.0, view_deg=view)).pose(np.array(params)).T_cam_from_world


@pytest.mark.parametrize(
    "spacing, cam",
    [
        (4.0, Camera(1020.0, 200, 240, (1.0, 0.8))),  # a voxel covers ~5-7 px: no gaps
        (0.6, Camera(1020.0, 60, 80, (3.0, 2.5))),  # a voxel covers ~0.3 px: no holes
    ],
)
def test_box_label_silhouette_matches_projected_corners(spacing: float, cam: Camera) -> None:
    n = 40 if spacing > 1 else 120
    ct = _grid((n, n, n), spacing, origin=(-20.0, 35.0, 10.0), direction=_rot(25.0, -15.0))
    lab = Volume(np.zeros_like(ct.hu), ct.spacing, ct.origin, ct.direction)
    lo, hi = np.array([n // 4, n // 3, n // 5]), np.array([n // 2, n * 2 // 3, n * 3 // 4])
    lab.hu[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = 7
    T = _pose(ct, view=(0.0, 60.0, 0.0))
    out = label_outlines(lab, ct, T, cam)
    assert list(out) == [7]
    sil = out[7]
    expected, corners = _hull_mask(ct, lo, hi, T, cam)
    assert corners.min() > 0 and np.all(corners.max(0) < (cam.width - 1, cam.height - 1))  # in view
    rows, cols = np.nonzero(sil)
    assert abs(cols.min() - corners[:, 0].min()) <= 1.0 and abs(cols.max() - corners[:, 0].max()) <= 1.0
    assert abs(rows.min() - corners[:, 1].min()) <= 1.0 and abs(rows.max() - corners[:, 1].max()) <= 1.0
    assert np.array_equal(ndimage.binary_fill_holes(sil), sil)  # no holes
    iou = (sil & expected).sum() / (sil | expected).sum()
    assert iou > 0.9, iou
    # every disagreement lies on the rim (within 1 px of the expected silhouette's edge)
    rim = ndimage.binary_dilation(expected, iterations=1) & ~ndimage.binary_erosion(expected, iterations=1)
    assert not np.any((sil ^ expected) & ~rim)


def test_two_labels_and_out_of_view() -> None:
    ct = _grid((30, 30, 30), 3.0, origin=(0.0, 0.0, 0.0))
    lab = Volume(np.zeros_like(ct.hu), ct.spacing, ct.origin, ct.direction)
    lab.hu[5:10, 5:10, 5:10] = 1
    lab.hu[15:25, 15:25, 15:25] = 3
    cam = Camera(1020.0, 64, 64, (2.0, 2.0))
    out = label_outlines(lab, None, _pose(ct, params=(0, 0, 0, 0, 0, 0)), cam)
    assert sorted(out) == [1, 3]
    assert out[1].sum() < out[3].sum() and not np.any(out[1] & out[3])
    far = label_outlines(lab, None, _pose(ct, params=(0, 0, 0, 400, 0, 0)), cam)
    assert not far[1].any() and not far[3].any()


def test_label_on_another_grid_is_resampled() -> None:
    ct = _grid((40, 40, 40), 3.0, origin=(-60.0, -60.0, -60.0))
    cam = Camera(1020.0, 100, 100, (1.0, 1.0))
    # twice as fine, half-voxel aligned so that each CT voxel centre falls inside label voxel 2i
    fine = _grid((50, 50, 50), 1.5, origin=(-60.0 + 30.0 - 0.5, -60.0 + 24.0 - 0.5, -60.0 + 36.0 - 0.5))
    fine.hu[4:30, 6:26, 10:40] = 2  # label voxels (i 10..39, j 6..25, k 4..29)
    T = _pose(ct)
    with pytest.warns(UserWarning, match="resampled onto it"):
        out = label_outlines(fine, ct, T, cam)
    # CT voxel centre i falls in label voxel 2i - 20 (x), 2j - 16 (y), 2k - 24 (z)
    lo, hi = np.array([15, 11, 14]), np.array([30, 21, 27])
    ref = Volume(np.zeros_like(ct.hu), ct.spacing, ct.origin, ct.direction)
    ref.hu[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = label_outlines(ref, ct, T, cam)  # already on the grid: no warning
    assert np.array_equal(out[2], same[2])


def test_label_errors() -> None:
    ct = _grid((20, 20, 20), 3.0, origin=(0.0, 0.0, 0.0))
    cam = Camera(1020.0, 32, 32, (4.0, 4.0))
    T = _pose(ct)
    far = _grid((20, 20, 20), 3.0, origin=(1000.0, 0.0, 0.0))
    far.hu[5:10, 5:10, 5:10] = 1
    with pytest.raises(XctregError, match="do not overlap the CT"):
        label_outlines(far, ct, T, cam)
    frac = Volume(np.full_like(ct.hu, 0.5), ct.spacing, ct.origin, ct.direction)
    with pytest.raises(XctregError, match="non-integer"):
        label_outlines(frac, ct, T, cam)
    with pytest.raises(XctregError, match="no non-zero label"):
        label_outlines(Volume(np.zeros_like(ct.hu), ct.spacing, ct.origin, ct.direction), ct, T, cam)
    flat = Volume(np.ones((20, 20), np.float32), ct.spacing, ct.origin, ct.direction)
    with pytest.raises(XctregError, match="3D"):
        label_outlines(flat, None, T, cam)
    # overlapping bounding boxes, but the labelled voxels lie outside the CT
    part = _grid((40, 20, 20), 3.0, origin=(30.0, 0.0, 0.0))
    part.hu[5:10, 5:10, 30:35] = 4
    with pytest.raises(XctregError, match="inside the CT"), pytest.warns(UserWarning):
        label_outlines(part, ct, T, cam)


# --------------------------------------------------------------------------- run_project
@pytest.fixture
def small_case(tmp_path: Path) -> dict[str, Path]:
    """A 40³ CT on disk, a label on its grid, points, a pose JSON and an X-ray (.npy, no geometry)."""
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 50, (40, 40, 40)).astype(np.float32)
    hu[:, :, :3] = -1000
    ct = Volume(hu, (3.0, 3.0, 3.0), origin=(-60.0, -60.0, -60.0))
    lab = Volume(np.zeros_like(hu), ct.spacing, ct.origin, ct.direction)
    lab.hu[10:20, 10:20, 10:20] = 1
    lab.hu[22:30, 22:30, 22:30] = 2
    cam = Camera(1020.0, 48, 64, (3.0, 2.5))
    pose = PoseSpace(PoseReference(tuple(ct.center), 750.0)).pose(np.zeros(6))
    d = {
        "ct": write_volume(ct, tmp_path / "ct.nii.gz"),
        "labels": write_volume(lab, tmp_path / "seg.nii.gz"),
        "points": _write_points(tmp_path / "pts.csv", ["a", "b"], np.array([[0.0, 0.0, 0.0], [20.0, -10.0, 15.0]])),
        "pose": tmp_path / "pose.json",
        "xray": tmp_path / "x.npy",
        "geometry": tmp_path / "geom.json",
    }
    write_json(d["pose"], pose.to_dict())
    write_json(d["geometry"], cam.to_dict())
    write_xray(d["xray"], rng.random((48, 64)).astype(np.float32))
    return d


def test_run_project_labels_and_points(small_case: dict[str, Path], tmp_path: Path) -> None:
    c = small_case
    s = run_project(c["pose"], c["xray"], tmp_path / "o.png", c["points"], c["labels"], False, tmp_path / "o.csv", c["geometry"], c["ct"])
    assert s["n_points"] == 2 and s["n_inside"] == 2 and s["labels"] == [1, 2]
    assert (tmp_path / "o.png").is_file() and len(_read_csv(tmp_path / "o.csv")) == 2
    # no X-ray: a blank detector; labels alone; camera and CT from the JSON
    doc = json.loads(c["pose"].read_text())
    doc["geometry"] = json.loads(c["geometry"].read_text())
    doc["ct_path"] = str(c["ct"])
    write_json(c["pose"], doc)
    s = run_project(c["pose"], None, tmp_path / "blank.png", None, c["labels"], False, None, None, None)
    assert s["labels"] == [1, 2] and s["n_points"] == 0
    # a multi-view result: the joint (first view's) pose; a CT path that is gone falls back to the labels' grid
    doc["ct_path"] = str(tmp_path / "moved.nii.gz")
    write_json(tmp_path / "multi.json", {"joint": doc, "views": [doc]})
    with pytest.warns(UserWarning, match="is not there"):
        s = run_project(tmp_path / "multi.json", c["xray"], tmp_path / "m.png", c["points"], c["labels"], True, None, None, None)
    assert s["labels"] == [1, 2] and s["n_points"] == 2


def test_run_project_resamples_labels_onto_the_ct(small_case: dict[str, Path], tmp_path: Path) -> None:
    c = small_case
    img = sitk.ReadImage(str(c["labels"]))
    half = sitk.Resample(img, [20, 20, 20], sitk.Transform(), sitk.sitkNearestNeighbor, img.GetOrigin(), [6.0, 6.0, 6.0], img.GetDirection(), 0, img.GetPixelID())
    sitk.WriteImage(half, str(tmp_path / "coarse.nii.gz"))
    with pytest.warns(UserWarning, match="not on the CT's grid"):
        s = run_project(c["pose"], c["xray"], tmp_path / "o.png", None, tmp_path / "coarse.nii.gz", False, None, c["geometry"], c["ct"])
    assert s["labels"] == [1, 2]


def test_run_project_errors(small_case: dict[str, Path], tmp_path: Path) -> None:
    c = small_case
    out = tmp_path / "o.png"

    def err(fragment: str, **kw) -> None:
        args = {"pose_json": c["pose"], "xray": c["xray"], "out_png": out, "points_csv": c["points"], "labels": None,
                "ras": False, "csv_out": None, "geometry": None, "ct": None}
        args.update(kw)
        with pytest.raises(XctregError) as exc:
            run_project(**args)
        assert fragment in str(exc.value) and "\n" not in str(exc.value), str(exc.value)

    err("pass --geometry")  # .npy X-ray, pose JSON without geometry
    err("no X-ray is given", xray=None)
    wrong = tmp_path / "wrong.json"
    write_json(wrong, Camera(1020.0, 64, 64, (3.0, 3.0)).to_dict())
    err("geometry says 64x64", geometry=wrong)
    err("nothing to draw", points_csv=None, geometry=c["geometry"])
    err("needs --points", points_csv=None, labels=c["labels"], csv_out=tmp_path / "x.csv", geometry=c["geometry"])
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.uint8)), str(flat))
    err("3D", labels=flat, geometry=c["geometry"])
    err("not found", pose_json=tmp_path / "none.json")
    assert not out.exists()
