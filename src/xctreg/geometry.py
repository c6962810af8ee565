"""C-arm geometry: camera intrinsics, pose parameters, projection and rays.

Frames and units (explained with pictures in docs/geometry.md):

* world: the CT's LPS space in mm (x Left, y Posterior, z Superior);
* camera: X-ray source at the origin, principal ray +z, detector plane z = sdd;
  image row r / column k has pixel coordinates (u, v) = (k, r);
* pose: ``T_cam_from_world`` (4x4, mm), x_cam = R x_world + t;
* parameters (rx, ry, rz in degrees, tx, ty, tz in mm) relative to a reference
  view, the C-arm direction (vx, vy, vz) in degrees (AP by default, R_view = I):
  x_cam = Rz(rz) Ry(ry) Rx(rx) R_view R_ap (x_world - c) + (tx, ty, sid + tz),
  R_view = Rz(vz) Ry(vy) Rx(vx).

:class:`PoseSpace` owns the parameterisation: names, units, order, the
reference (isocenter, sid, view), matrix <-> params and the normalisation to
the sampling ranges. Everything else calls it.

All torch functions are batched over a leading dimension and differentiable.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from xctreg._fs import read_json, write_json
from xctreg.errors import XctregError
from xctreg.presets import DEFAULT_SDD_MM, DEFAULT_SID_MM, PRESET_DETECTORS

PARAM_NAMES = ("rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm")
PARAM_UNITS = ("deg", "deg", "deg", "mm", "mm", "mm")
#: Where the rotations (deg) and the translations (mm) sit in a parameter vector.
ROT, TRANS = slice(0, 3), slice(3, 6)

#: Named reference views, the C-arm directions parameters are relative to: (vx, vy, vz) in degrees,
#: named by where the source is.
VIEWS: dict[str, tuple[float, float, float]] = {
    "ap": (0.0, 0.0, 0.0),
    "pa": (0.0, 180.0, 0.0),
    "lat-left": (0.0, 90.0, 0.0),
    "lat-right": (0.0, -90.0, 0.0),
}

#: Rotation of the anterior-posterior reference view: world LPS -> camera axes.
#: Camera x = patient left (image right), camera y = inferior (image down),
#: camera z = posterior (source anterior of the patient, beam goes A->P).
R_AP = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))



# --------------------------------------------------------------------------- camera
@dataclass(frozen=True)
class Camera:
    """Pinhole C-arm camera, built from the geometry JSON: source at the origin, +z along the beam to
    the detector plane z = sdd, u = column, v = row (pixel centres at integers), image seen from the source.

    Attributes:
        sdd_mm: source-to-detector distance (mm).
        height, width: image size in pixels (rows, columns).
        pixel_spacing_mm: (dy, dx) detector pixel size (mm) along rows and columns.
        principal_point_px: (cx, cy) in pixels; None means the image centre.
    """

    sdd_mm: float = DEFAULT_SDD_MM
    height: int = 256
    width: int = 256
    pixel_spacing_mm: tuple[float, float] = (1.6, 1.6)
    principal_point_px: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        validate_camera_fields(self.sdd_mm, self.height, self.width, self.pixel_spacing_mm, self.principal_point_px)

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2.0 if self.principal_point_px is None else float(self.principal_point_px[0])

    @property
    def cy(self) -> float:
        return (self.height - 1) / 2.0 if self.principal_point_px is None else float(self.principal_point_px[1])

    @property
    def fx(self) -> float:
        """Focal length in column pixels: sdd / dx."""
        return self.sdd_mm / self.pixel_spacing_mm[1]

    @property
    def fy(self) -> float:
        """Focal length in row pixels: sdd / dy."""
        return self.sdd_mm / self.pixel_spacing_mm[0]

    def intrinsics(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """3x3 intrinsic matrix K (pixels)."""
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=dtype, device=device
        )

    def resized(self, height: int, width: int) -> Camera:
        """The same physical detector sampled with ``height`` x ``width`` pixels."""
        dy = self.pixel_spacing_mm[0] * self.height / height
        dx = self.pixel_spacing_mm[1] * self.width / width
        pp = None
        if self.principal_point_px is not None:
            # keep the principal point at the same physical detector position
            cx = (self.cx + 0.5) * width / self.width - 0.5
            cy = (self.cy + 0.5) * height / self.height - 0.5
            pp = (cx, cy)
        return Camera(self.sdd_mm, height, width, (dy, dx), pp)

    def check_image(self, shape: tuple[int, ...], name: str = "image") -> None:
        """Raise XctregError unless ``shape`` is (height, width)."""
        if tuple(shape[-2:]) != (self.height, self.width) or len(shape) < 2:
            raise XctregError(
                f"{name} is {shape[-2] if len(shape) > 1 else '?'}x{shape[-1]} px but the geometry says "
                f"{self.height}x{self.width} (height x width)"
            )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "sdd_mm": float(self.sdd_mm),
            "height": int(self.height),
            "width": int(self.width),
            "pixel_spacing_mm": [float(self.pixel_spacing_mm[0]), float(self.pixel_spacing_mm[1])],
        }
        if self.principal_point_px is not None:
            d["principal_point_px"] = [float(self.principal_point_px[0]), float(self.principal_point_px[1])]
        return d

    @classmethod
    def from_dict(cls, d: Any, name: str = "geometry") -> Camera:
        """Build from the geometry JSON object, with one-line errors for bad fields."""
        if not isinstance(d, dict):
            raise XctregError(f"{name} must be a JSON object")
        missing = [k for k in ("sdd_mm", "height", "width", "pixel_spacing_mm") if k not in d]
        if missing:
            raise XctregError(f"{name} is missing field(s): {', '.join(missing)}")
        try:
            sp = d["pixel_spacing_mm"]
            if isinstance(sp, (int, float)) and not isinstance(sp, bool):
                sp = [sp, sp]
            sp = json_numbers(sp, 2)
            pp = d.get("principal_point_px")
            if pp is not None:
                try:
                    pp = json_numbers(pp, 2)
                except (TypeError, ValueError):
                    raise XctregError(f"{name}: principal_point_px must be [cx, cy]") from None
            h, w = json_number(d["height"]), json_number(d["width"])
            if not (math.isfinite(h) and math.isfinite(w)) or h != int(h) or w != int(w):
                raise XctregError(f"{name}: height and width must be integers, got {d['height']!r}, {d['width']!r}")
            return cls(
                sdd_mm=json_number(d["sdd_mm"]),
                height=int(h),
                width=int(w),
                pixel_spacing_mm=(sp[0], sp[1]),
                principal_point_px=None if pp is None else (pp[0], pp[1]),
            )
        except (TypeError, ValueError):
            raise XctregError(
                f"{name}: expected numbers for sdd_mm, height, width and pixel_spacing_mm [dy, dx]"
            ) from None


def validate_camera_fields(
    sdd_mm: float,
    height: int,
    width: int,
    pixel_spacing_mm: tuple[float, float],
    principal_point_px: tuple[float, float] | None,
) -> None:
    """Raise XctregError for a non-physical geometry."""
    vals = [sdd_mm, *pixel_spacing_mm] + ([] if principal_point_px is None else list(principal_point_px))
    if not all(math.isfinite(float(v)) for v in vals):
        raise XctregError("geometry has non-finite values")
    if sdd_mm <= 0:
        raise XctregError(f"geometry: sdd_mm must be positive, got {sdd_mm:g}")
    if height <= 0 or width <= 0:
        raise XctregError(f"geometry: height and width must be positive, got {height}x{width}")
    if pixel_spacing_mm[0] <= 0 or pixel_spacing_mm[1] <= 0:
        raise XctregError(f"geometry: pixel_spacing_mm must be positive, got {list(pixel_spacing_mm)}")
    if principal_point_px is not None:
        cx, cy = principal_point_px
        if not (-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5):
            raise XctregError(
                f"geometry: principal point ({cx:g}, {cy:g}) px lies outside the {height}x{width} image"
            )


#: The preset cameras, by name (paper 256² at 1.6 mm, quick 128² at 3.2 mm; sdd 1020 mm).
PRESET_CAMERAS: dict[str, Camera] = {k: Camera(DEFAULT_SDD_MM, h, w, px) for k, (h, w, px) in PRESET_DETECTORS.items()}


def read_camera(path: str | os.PathLike[str]) -> Camera:
    """Read and validate a geometry JSON file (sdd_mm, height, width, pixel_spacing_mm [dy, dx], principal_point_px)."""
    return Camera.from_dict(read_json(path, "geometry JSON"), name=f"geometry {os.fspath(path)}")


def write_camera(path: str | os.PathLike[str], camera: Camera) -> None:
    """Write a geometry JSON file atomically."""
    write_json(path, camera.to_dict())


# --------------------------------------------------------------------------- SE(3)
def _as_tensor(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float64)


def make_se3(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(…,3,3) rotation and (…,3) translation -> (…,4,4) homogeneous transform."""
    bottom = torch.zeros(*R.shape[:-2], 1, 4, dtype=R.dtype, device=R.device)
    bottom[..., 0, 3] = 1.0
    top = torch.cat([R, t.unsqueeze(-1)], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def invert_se3(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms (…,4,4): [R t]^-1 = [Rᵀ -Rᵀt]."""
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = R.transpose(-1, -2)
    return make_se3(Rt, -(Rt @ t.unsqueeze(-1)).squeeze(-1))


def compose_se3(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A ∘ B: apply B first, then A (broadcast over leading dims)."""
    return A @ B


def transform_points(T: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply (B,4,4) or (4,4) transforms to (N,3) or (B,N,3) points -> (B,N,3) or (N,3)."""
    R, t = T[..., :3, :3], T[..., :3, 3]
    return pts @ R.transpose(-1, -2) + t.unsqueeze(-2)


def json_number(v: Any) -> float:
    """A JSON number as a float: ints and floats only (a string or a boolean is a wrong type:
    TypeError), and an integer too large for a float is a ValueError, as a bad value."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected a number, got {type(v).__name__}")
    try:
        return float(v)
    except OverflowError:
        raise ValueError(f"number out of range: {str(v)[:20]}...") from None


def json_numbers(v: Any, n: int | None = None) -> list[float]:
    """A JSON array of numbers (``json_number`` each); ``n``: its required length (ValueError)."""
    if not isinstance(v, (list, tuple, np.ndarray)):
        raise TypeError(f"expected an array of numbers, got {type(v).__name__}")
    out = [json_number(x) for x in v]
    if n is not None and len(out) != n:
        raise ValueError(f"expected {n} numbers, got {len(out)}")
    return out


def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """The rotation matrix (3x3, det +1) nearest to ``R`` in the Frobenius norm (SVD)."""
    U, _, Vt = np.linalg.svd(np.asarray(R, dtype=np.float64))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def is_rigid(T: np.ndarray, tol: float = 1e-4) -> bool:
    """True if T is a finite 4x4 proper rigid transform (RᵀR = I, det R = 1, last row 0 0 0 1)."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return (
        np.allclose(R.T @ R, np.eye(3), atol=tol)
        and abs(np.linalg.det(R) - 1.0) < tol
        and np.allclose(T[3], [0, 0, 0, 1], atol=tol)
    )


def rigid_matrix(v: Any, name: str) -> np.ndarray:
    """A JSON 4x4 rigid transform (rows of numbers, mm) as float64, or one error line naming it.

    A matrix rigid only to ``is_rigid``'s 1e-4 (e.g. printed to a few decimals) is made exactly
    rigid, so that parameters derived from it agree with it and a pose written back reads back;
    an exactly rigid matrix is kept bit for bit."""
    try:
        T = np.asarray([json_numbers(r) for r in json_rows(v)], dtype=np.float64)
    except (TypeError, ValueError):
        raise XctregError(f"{name} must be a 4x4 array of numbers") from None
    if T.shape != (4, 4):
        raise XctregError(f"{name} must be 4x4, got shape {T.shape}")
    if not is_rigid(T):
        raise XctregError(f"{name} is not a rigid transform (orthonormal R, det 1, last row 0 0 0 1)")
    if np.abs(T[:3, :3].T @ T[:3, :3] - np.eye(3)).max() > 1e-12 or np.any(T[3] != (0.0, 0.0, 0.0, 1.0)):
        T[:3, :3] = nearest_rotation(T[:3, :3])
        T[3] = (0.0, 0.0, 0.0, 1.0)
    return T


# --------------------------------------------------------------------------- pose parameters
@dataclass(frozen=True)
class PoseReference:
    """The reference view that parameters are relative to: isocenter, sid and C-arm direction.

    Attributes:
        isocenter_mm: c, the point the C-arm turns about (world LPS mm).
        sid_mm: source-isocenter distance of the reference view (mm).
        view_deg: (vx, vy, vz), R_view = Rz(vz) Ry(vy) Rx(vx) in degrees; (0, 0, 0) is AP.
    """

    isocenter_mm: tuple[float, float, float]
    sid_mm: float = DEFAULT_SID_MM
    view_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _rotation: torch.Tensor = field(init=False, repr=False, compare=False)

    @classmethod
    def centred_on(cls, volume: Any, sid_mm: float = DEFAULT_SID_MM, view_deg: Any = (0.0, 0.0, 0.0)) -> PoseReference:
        """The reference whose isocenter is the centre of ``volume`` (a CT ``Volume``, world mm)."""
        return cls(tuple(float(v) for v in volume.center), sid_mm, view_deg)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        vals = [*self.isocenter_mm, self.sid_mm]
        if len(self.isocenter_mm) != 3 or not all(math.isfinite(float(v)) for v in vals) or self.sid_mm <= 0:
            raise XctregError(f"pose reference needs a finite isocenter and a positive sid, got {self.isocenter_mm}, {self.sid_mm}")
        object.__setattr__(self, "view_deg", parse_view(self.view_deg))
        # computed once: params_to_matrix runs on every refinement step and training batch
        object.__setattr__(self, "_rotation", view_rotmat(self.view_deg) @ torch.tensor(R_AP, dtype=torch.float64))

    def rotation(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """R_view · R_ap (3x3): world LPS axes -> camera axes of the reference view."""
        return self._rotation.to(dtype=dtype, device=device)

    def to_dict(self) -> dict[str, Any]:
        return {
            "isocenter_mm": [float(v) for v in self.isocenter_mm],
            "sid_mm": float(self.sid_mm),
            "view_deg": [float(v) for v in self.view_deg],
        }

    @classmethod
    def from_dict(cls, d: Any, name: str = "pose reference") -> PoseReference:
        """Parse ``{"isocenter_mm": [x, y, z], "sid_mm": s, "view_deg": [vx, vy, vz]}`` (view optional)."""
        try:
            c = json_numbers(d["isocenter_mm"], 3)
            sid = json_number(d.get("sid_mm", DEFAULT_SID_MM))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise XctregError(f"{name}: expected {{'isocenter_mm': [x, y, z], 'sid_mm': s}}") from None
        if len(c) != 3 or not all(math.isfinite(v) for v in [*c, sid]) or sid <= 0:
            raise XctregError(f"{name}: isocenter_mm must be 3 finite numbers and sid_mm positive")
        view = d.get("view_deg", (0.0, 0.0, 0.0))
        if isinstance(view, str):
            raise XctregError(f"{name}: view_deg must be [vx, vy, vz] in degrees, got {view!r}")
        try:
            view = parse_view(view)
        except XctregError as exc:
            raise XctregError(f"{name}: {exc}") from None
        return cls((c[0], c[1], c[2]), sid, view)


def json_rows(v: Any) -> list[Any]:
    """A JSON array of rows (TypeError otherwise)."""
    if not isinstance(v, (list, tuple, np.ndarray)):
        raise TypeError(f"expected an array of rows, got {type(v).__name__}")
    return list(v)


def parse_view(view: str | Any) -> tuple[float, float, float]:
    """A view, the C-arm direction (vx, vy, vz) in degrees that pose parameters are relative to, from
    a name (ap, pa, lat-left, lat-right: where the source is), "VX,VY,VZ" or 3 numbers (degrees).

    Each angle must be finite and within [-180, 180].
    """
    if isinstance(view, str):
        key = view.strip().lower()
        if key in VIEWS:
            return VIEWS[key]
        if "," not in key:
            raise XctregError(f"unknown view {view!r}; use {', '.join(VIEWS)} or VX,VY,VZ in degrees")
        parts: Any = key.split(",")
    else:
        parts = list(view) if hasattr(view, "__len__") else [view]
    try:
        vals = [float(v) for v in parts] if isinstance(view, str) else [json_number(v) for v in parts]
    except (TypeError, ValueError, OverflowError):
        raise XctregError(f"view {view!r} must be a name or three angles VX,VY,VZ in degrees") from None
    if len(vals) != 3:
        raise XctregError(f"view {view!r} must have three angles VX,VY,VZ (degrees), got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise XctregError(f"view angles must be finite, got {vals}")
    if any(abs(v) > 180.0 for v in vals):
        raise XctregError(f"view angles must lie within [-180, 180] degrees, got {vals}")
    return (vals[0] + 0.0, vals[1] + 0.0, vals[2] + 0.0)


def view_rotmat(view_deg: Any) -> torch.Tensor:
    """R_view = Rz(vz) Ry(vy) Rx(vx) (3x3, float64) of a view (vx, vy, vz) in degrees."""
    return euler_to_rotmat(torch.tensor(tuple(view_deg), dtype=torch.float64))


def view_name(view_deg: tuple[float, float, float]) -> str:
    """The name of a view if it has one, else "VX,VY,VZ"."""
    R = view_rotmat(view_deg)
    for name, v in VIEWS.items():
        if torch.allclose(view_rotmat(v), R, atol=1e-9):
            return name
    return ",".join(f"{a:g}" for a in view_deg)


def euler_to_rotmat(angles_deg: torch.Tensor) -> torch.Tensor:
    """(…,3) angles (rx, ry, rz) in degrees -> Rz(rz) Ry(ry) Rx(rx), (…,3,3).

    Each is a right-handed rotation about the fixed camera axis (extrinsic xyz).
    """
    a = torch.deg2rad(angles_deg)
    c, s = torch.cos(a), torch.sin(a)
    cx, cy, cz, sx, sy, sz = c[..., 0], c[..., 1], c[..., 2], s[..., 0], s[..., 1], s[..., 2]
    rows = (
        (cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx),
        (sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx),
        (-sy, cy * sx, cy * cx),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def rotmat_to_euler(R: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_to_rotmat`: (…,3,3) -> (…,3) degrees (rx, ry, rz)."""
    r00, r10, r20, r21, r22 = R[..., 0, 0], R[..., 1, 0], R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    cy = torch.hypot(r00, r10)
    ry = torch.atan2(-r20, cy)
    lock = cy < 1e-9  # ry = ±90°: only rx ∓ rz is defined; rz = 0 by convention
    rx = torch.where(lock, torch.atan2(-R[..., 1, 2], R[..., 1, 1]), torch.atan2(r21, r22))
    rz = torch.where(lock, torch.zeros_like(r00), torch.atan2(r10, r00))
    return torch.rad2deg(torch.stack([rx, ry, rz], dim=-1))


def params_to_matrix(params: torch.Tensor, ref: PoseReference) -> torch.Tensor:
    """(B,6) or (6,) parameters (deg, mm) -> ``T_cam_from_world`` (B,4,4) or (4,4).

    x_cam = Rz Ry Rx R_view R_ap (x - c) + (tx, ty, sid + tz). Differentiable.
    Prefer ``PoseSpace.to_matrix``; this is its implementation.
    """
    params = _as_tensor(params)
    R = euler_to_rotmat(params[..., :3]) @ ref.rotation(params.dtype, params.device)
    c = torch.tensor(ref.isocenter_mm, dtype=params.dtype, device=params.device)
    shift = torch.tensor([0.0, 0.0, ref.sid_mm], dtype=params.dtype, device=params.device)
    t = params[..., 3:] + shift - (R @ c.unsqueeze(-1)).squeeze(-1)
    return make_se3(R, t)


def matrix_to_params(T: torch.Tensor, ref: PoseReference) -> torch.Tensor:
    """``T_cam_from_world`` (…,4,4) -> parameters (…,6) (deg, mm); inverse of :func:`params_to_matrix`."""
    T = _as_tensor(T)
    R = T[..., :3, :3] @ ref.rotation(T.dtype, T.device).transpose(-1, -2)
    ang = rotmat_to_euler(R)
    c = torch.tensor(ref.isocenter_mm, dtype=T.dtype, device=T.device)
    shift = torch.tensor([0.0, 0.0, ref.sid_mm], dtype=T.dtype, device=T.device)
    t = T[..., :3, 3] + (T[..., :3, :3] @ c.unsqueeze(-1)).squeeze(-1) - shift
    return torch.cat([ang, t], dim=-1)


@dataclass
class Pose:
    """A C-arm pose: ``T_cam_from_world`` (4x4 float64) and its reference view.

    ``params`` (rx, ry, rz deg, tx, ty, tz mm) are derived from the matrix.
    """

    T_cam_from_world: np.ndarray
    reference: PoseReference | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> np.ndarray:
        if self.reference is None:
            raise XctregError("pose has no reference (isocenter_mm, sid_mm); parameters are undefined")
        return matrix_to_params(torch.as_tensor(self.T_cam_from_world), self.reference).numpy()

    @classmethod
    def from_params(cls, params: Any, reference: PoseReference) -> Pose:
        T = params_to_matrix(torch.as_tensor(np.asarray(params, dtype=np.float64)), reference)
        return cls(T.numpy(), reference)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"T_cam_from_world": [[float(v) for v in row] for row in self.T_cam_from_world]}
        if self.reference is not None:
            d["params"] = {k: float(v) for k, v in zip(PARAM_NAMES, self.params, strict=True)}
            d["reference"] = self.reference.to_dict()
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Any, reference: PoseReference | None = None, name: str = "pose") -> Pose:
        """Parse a pose JSON object (``T_cam_from_world``, ``params``, ``reference``). Needs the matrix
        or the params (+ a reference).

        ``reference`` is used when the object has none. Matrix and params, when
        both present, must agree to 1e-6 (rotation entries; translation relative).
        """
        if not isinstance(d, dict):
            raise XctregError(f"{name} must be a JSON object")
        if "reference" in d:
            reference = PoseReference.from_dict(d["reference"], name=f"{name} reference")
        T = rigid_matrix(d["T_cam_from_world"], f"{name}: T_cam_from_world") if "T_cam_from_world" in d else None
        p = None
        if "params" in d:
            pd = d["params"]
            missing = [k for k in PARAM_NAMES if not isinstance(pd, dict) or k not in pd]
            if missing:
                raise XctregError(f"{name}: params is missing {', '.join(missing)}")
            try:
                p = np.array([json_number(pd[k]) for k in PARAM_NAMES])
            except (TypeError, ValueError):
                raise XctregError(f"{name}: params must be numbers") from None
            if not np.all(np.isfinite(p)):
                raise XctregError(f"{name}: params must be finite")
        if T is None and p is None:
            raise XctregError(f"{name} needs T_cam_from_world or params")
        if p is not None and reference is None:
            if T is None:
                raise XctregError(f"{name} gives params but no reference (isocenter_mm, sid_mm)")
            p = None  # the matrix alone defines the pose; params cannot be checked without a reference
        if p is not None:
            assert reference is not None
            Tp = params_to_matrix(torch.as_tensor(p), reference).numpy()
            if T is not None:
                dR = np.abs(Tp[:3, :3] - T[:3, :3]).max()
                dt = np.abs(Tp[:3, 3] - T[:3, 3]).max() / max(1.0, np.abs(T[:3, 3]).max())
                if dR > 1e-6 or dt > 1e-6:
                    raise XctregError(
                        f"{name}: T_cam_from_world and params disagree (rotation by {dR:.2g}, translation by {dt:.2g} relative)"
                    )
            else:
                T = Tp
        if not np.all(np.isfinite(T)):
            raise XctregError(f"{name}: the pose is out of range (its matrix is not finite)")
        extra = {k: v for k, v in d.items() if k not in ("T_cam_from_world", "params", "reference")}
        return cls(T, reference, extra)


def read_pose(path: str | os.PathLike[str], reference: PoseReference | None = None) -> Pose:
    """Read and validate a pose JSON file (``T_cam_from_world`` and/or ``params``, ``reference``)."""
    return Pose.from_dict(read_json(path, "pose JSON"), reference=reference, name=f"pose {os.fspath(path)}")


def write_pose(path: str | os.PathLike[str], pose: Pose) -> None:
    """Write a pose JSON file atomically."""
    write_json(path, pose.to_dict())


# --------------------------------------------------------------------------- projection and rays
def project(points_world: torch.Tensor, T: torch.Tensor, camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points (LPS mm) to pixels.

    Args:
        points_world: (N,3) or (B,N,3).
        T: (4,4) or (B,4,4) ``T_cam_from_world``.
    Returns:
        uv (…,N,2) pixel coordinates (u = column, v = row) and depth z (…,N) in mm.
    """
    pc = transform_points(T, points_world)
    z = pc[..., 2]
    u = camera.fx * pc[..., 0] / z + camera.cx
    v = camera.fy * pc[..., 1] / z + camera.cy
    return torch.stack([u, v], dim=-1), z


def projection_matrix(T: Any, camera: Camera) -> np.ndarray:
    """The 3x4 projection matrix P = K [R | t] (pixels; the result JSON's ``projection_matrix``).

    For a world point x (LPS mm), P·(x, 1) = z·(u, v, 1): u is the column and v the row of
    the pixel (pixel centres at integers), z the depth along the beam (mm).
    """
    T = np.asarray(T.detach().cpu() if isinstance(T, torch.Tensor) else T, dtype=np.float64)
    return camera.intrinsics().numpy() @ T[:3, :4]


def pixel_grid(camera: Camera, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """(H*W, 2) pixel centres (u, v) in row-major image order."""
    v, u = torch.meshgrid(
        torch.arange(camera.height, dtype=dtype, device=device),
        torch.arange(camera.width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def backproject(uv: torch.Tensor, T: torch.Tensor, camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixels, in world coordinates.

    Args:
        uv: (N,2) pixel coordinates (u = column, v = row).
        T: (4,4) or (B,4,4) ``T_cam_from_world``.
    Returns:
        source (…,3): the X-ray source in world (LPS mm);
        direction (…,N,3): unit ray directions in world.
    """
    d_cam = torch.stack(
        [(uv[..., 0] - camera.cx) / camera.fx, (uv[..., 1] - camera.cy) / camera.fy, torch.ones_like(uv[..., 0])],
        dim=-1,
    )
    d_cam = d_cam / d_cam.norm(dim=-1, keepdim=True)
    R, t = T[..., :3, :3].to(uv.dtype), T[..., :3, 3].to(uv.dtype)
    source = -(R.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)
    direction = d_cam @ R  # row-vector form of Rᵀ d
    return source, direction


# --------------------------------------------------------------------------- errors and sampling
def rotation_error_deg(T_a: torch.Tensor, T_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (degrees) between the rotations of two (…,4,4) poses."""
    R = T_a[..., :3, :3].transpose(-1, -2) @ T_b[..., :3, :3]
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def translation_error_mm(T_a: torch.Tensor, T_b: torch.Tensor) -> torch.Tensor:
    """Distance (mm) between the X-ray source positions of two (…,4,4) poses."""
    return (invert_se3(T_a)[..., :3, 3] - invert_se3(T_b)[..., :3, 3]).norm(dim=-1)


@dataclass(frozen=True)
class PoseRanges:
    """Closed sampling ranges (low, high) per parameter: degrees and mm (defaults ±15°, ±30 mm, tz ±50 mm)."""

    rx_deg: tuple[float, float] = (-15.0, 15.0)
    ry_deg: tuple[float, float] = (-15.0, 15.0)
    rz_deg: tuple[float, float] = (-15.0, 15.0)
    tx_mm: tuple[float, float] = (-30.0, 30.0)
    ty_mm: tuple[float, float] = (-30.0, 30.0)
    tz_mm: tuple[float, float] = (-50.0, 50.0)

    def __post_init__(self) -> None:
        for name in PARAM_NAMES:
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise XctregError(f"pose range {name} = [{lo:g}, {hi:g}] is empty or inverted")

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([getattr(self, n)[0] for n in PARAM_NAMES])
        hi = np.array([getattr(self, n)[1] for n in PARAM_NAMES])
        return lo, hi

    def to_dict(self) -> dict[str, list[float]]:
        return {n: [float(v) for v in getattr(self, n)] for n in PARAM_NAMES}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoseRanges:
        try:
            return cls(**{n: (float(d[n][0]), float(d[n][1])) for n in PARAM_NAMES if n in d})
        except (TypeError, ValueError, IndexError, KeyError):
            raise XctregError("pose ranges must map parameter names to [low, high]") from None

    @classmethod
    def from_half_widths(cls, half: Any) -> PoseRanges:
        """Symmetric ranges [-h, h] from six half-widths (rx, ry, rz deg, tx, ty, tz mm)."""
        return cls(**{n: (-float(h), float(h)) for n, h in zip(PARAM_NAMES, half, strict=True)})

    def scaled(self, factor: float) -> PoseRanges:
        """The same centres with half-widths times ``factor`` (the curriculum's narrower stages)."""
        lo, hi = self.bounds()
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * factor
        return PoseRanges(**{n: (float(m - h), float(m + h)) for n, m, h in zip(PARAM_NAMES, mid, half, strict=True)})

    def contains(self, params: Any, slack: float = 0.0) -> np.ndarray:
        """(…,) True where every parameter lies within the ranges widened by ``slack`` (deg / mm)."""
        lo, hi = self.bounds()
        p = np.asarray(params, dtype=np.float64)
        return np.all((p >= lo - slack) & (p <= hi + slack), axis=-1)


def parse_ranges(text: str) -> PoseRanges:
    """``--ranges RX,RY,RZ,TX,TY,TZ``: six positive half-widths of the sampling ranges, in degrees and mm."""
    parts = [t for t in str(text).replace(" ", "").split(",")]
    try:
        vals = [float(t) for t in parts]
    except ValueError:
        raise XctregError(f"--ranges must be six numbers RX,RY,RZ,TX,TY,TZ (deg, mm), got {text!r}") from None
    if len(vals) != 6:
        raise XctregError(f"--ranges must be six numbers RX,RY,RZ,TX,TY,TZ (deg, mm), got {len(vals)}")
    if not all(math.isfinite(v) and v > 0 for v in vals):
        raise XctregError(f"--ranges half-widths must be positive and finite, got {vals}")
    if any(v > 90.0 for v in vals[:3]):
        raise XctregError(f"--ranges rotation half-widths must be at most 90 degrees (use --view for other views), got {vals[:3]}")
    return PoseRanges.from_half_widths(vals)


def sample_params(n: int, ranges: PoseRanges | None = None, seed: int | None = 0) -> np.ndarray:
    """``n`` parameter vectors (n,6) drawn uniformly and independently within ``ranges``."""
    lo, hi = (ranges or PoseRanges()).bounds()
    rng = np.random.default_rng(seed)
    return lo + (hi - lo) * rng.random((n, 6))


# --------------------------------------------------------------------------- the parameterisation
@dataclass(frozen=True)
class PoseSpace:
    """The pose parameterisation, in one place (see docs/geometry.md).

    Parameters are (rx, ry, rz) in degrees and (tx, ty, tz) in mm, small deltas
    around the reference view: T = [Rz(rz) Ry(ry) Rx(rx) R_view R_ap | ...], so
    the Euler angles stay far from gimbal lock for any view. Networks see them
    normalised to the sampling ranges: q = (p - centre) / half-width, the
    training range mapping to [-1, 1].

    Attributes:
        reference: isocenter (LPS mm), sid (mm) and view (deg).
        ranges: the sampling ranges (deg, mm).
    """

    reference: PoseReference
    ranges: PoseRanges = field(default_factory=PoseRanges)

    names = PARAM_NAMES
    units = PARAM_UNITS

    def to_matrix(self, params: Any) -> torch.Tensor:
        """(…,6) parameters (deg, mm) -> ``T_cam_from_world`` (…,4,4) (mm). Differentiable."""
        return params_to_matrix(params, self.reference)

    def from_matrix(self, T: Any) -> torch.Tensor:
        """``T_cam_from_world`` (…,4,4) -> (…,6) parameters (deg, mm)."""
        return matrix_to_params(T, self.reference)

    def pose(self, params: Any) -> Pose:
        """A :class:`Pose` (matrix + this reference) from (6,) parameters."""
        return Pose.from_params(params, self.reference)

    def _centre_half(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.ranges.bounds()
        mid = torch.as_tensor((lo + hi) / 2, dtype=like.dtype, device=like.device)
        half = torch.as_tensor(np.maximum((hi - lo) / 2, 1e-6), dtype=like.dtype, device=like.device)
        return mid, half

    def normalize(self, params: torch.Tensor) -> torch.Tensor:
        """(…,6) parameters (deg, mm) -> normalised q, the ranges mapping to [-1, 1]."""
        mid, half = self._centre_half(params)
        return (params - mid) / half

    def denormalize(self, q: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: normalised q -> (…,6) parameters (deg, mm)."""
        mid, half = self._centre_half(q)
        return q * half + mid

    @staticmethod
    def difference(p_est: Any, p_ref: Any) -> np.ndarray:
        """Signed parameter errors (…,6) ``p_est − p_ref`` (deg, mm), angles wrapped to [−180, 180)."""
        d = np.asarray(p_est, dtype=np.float64) - np.asarray(p_ref, dtype=np.float64)
        d[..., ROT] = (d[..., ROT] + 180.0) % 360.0 - 180.0
        return d

    def sample(self, n: int, seed: int | None = 0) -> np.ndarray:
        """``n`` parameter vectors (n,6) drawn uniformly within the ranges."""
        return sample_params(n, self.ranges, seed)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference.to_dict(), "ranges": self.ranges.to_dict()}

    @classmethod
    def from_dict(cls, d: Any, name: str = "pose space") -> PoseSpace:
        if not isinstance(d, dict) or "reference" not in d:
            raise XctregError(f"{name} needs a reference")
        ranges = PoseRanges.from_dict(d["ranges"]) if "ranges" in d else PoseRanges()
        return cls(PoseReference.from_dict(d["reference"], name=f"{name} reference"), ranges)


def view_rotation_delta(view_a: tuple[float, float, float], view_b: tuple[float, float, float]) -> np.ndarray:
    """(rx, ry, rz) in degrees that take reference view ``view_b`` to ``view_a``:
    R_view(a) = Rz Ry Rx · R_view(b)."""
    return rotmat_to_euler(view_rotmat(view_a) @ view_rotmat(view_b).T).numpy()


# --------------------------------------------------------------------------- DICOM positioner angles
def positioner_to_view(primary_deg: float, secondary_deg: float) -> tuple[float, float, float]:
    """The view (vx, vy, vz, degrees) of a C-arm at DICOM positioner angles (XA/RF positioner module).

    DICOM gives the position of the image detector (intensifier) about the patient:
    ``PositionerPrimaryAngle`` from RAO (-) to LAO (+), 0 with the detector over the
    patient's chest (anterior); ``PositionerSecondaryAngle`` from CAU (-) to CRA (+).
    The beam runs from the source to the detector, along
    d = (sin a cos b, -cos a cos b, sin b) in LPS. So (0, 0) is a posterior-anterior
    beam: the ``pa`` view (0, 180, 0); LAO 90 (detector on the patient's left)
    is ``lat-right`` (source on the right); RAO 90 is ``lat-left``.

    DICOM leaves the in-plane rotation of the image open; the view returned keeps
    the patient's head towards the top of the image (vz = 0, |vx| <= 90).
    """
    if not (math.isfinite(primary_deg) and math.isfinite(secondary_deg)):
        raise XctregError("positioner angles must be finite")
    if abs(primary_deg) > 180.0 or abs(secondary_deg) > 90.0:
        raise XctregError(
            f"positioner angles out of the DICOM ranges (primary ±180, secondary ±90): {primary_deg:g}, {secondary_deg:g}"
        )
    a, b = math.radians(primary_deg), math.radians(secondary_deg)
    d = (math.sin(a) * math.cos(b), -math.cos(a) * math.cos(b), math.sin(b))
    return beam_to_view(d)


def beam_to_view(direction: Any) -> tuple[float, float, float]:
    """The view (vx, vy, vz = 0, |vx| <= 90, degrees) whose beam (source -> detector) runs along
    ``direction`` (world LPS). The beam of view (vx, vy, 0) is (-sin vy, cos vy cos vx, -cos vy sin vx)."""
    dx, dy, dz = (float(v) for v in np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction))
    k = math.sqrt(max(0.0, 1.0 - dx * dx))  # |cos vy|
    best = None
    for cos_vy in (k, -k):
        vy = math.degrees(math.atan2(-dx, cos_vy))
        vx = math.degrees(math.atan2(-dz * cos_vy, dy * cos_vy)) if k > 1e-12 else 0.0
        if best is None or abs(vx) < abs(best[0]) - 1e-9:
            best = (vx, vy)
    assert best is not None
    vx, vy = (round(v, 9) + 0.0 for v in best)
    return (vx, 180.0 if vy <= -180.0 else vy, 0.0)


_LPS_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))


def direction_letter(v: Any) -> str:
    """The patient direction (L, R, A, P, H or F) that a world (LPS) vector mostly points to."""
    v = np.asarray(v, dtype=np.float64)
    k = int(np.argmax(np.abs(v)))
    return _LPS_LETTERS[k][int(v[k] > 0)]


def image_orientation_check(R: Any, patient_orientation: tuple[str, str]) -> str | None:
    """Compare a DICOM PatientOrientation with the image axes of a camera rotation (world -> camera).

    Returns None when they agree, else a one-line description: the image is mirrored
    left-right or top-bottom, turned 180°, or its axes differ. The xctreg camera's rows run
    along camera +x and its columns along camera +y.
    """
    R = np.asarray(R, dtype=np.float64)
    want = (direction_letter(R[0]), direction_letter(R[1]))
    got = (patient_orientation[0][0], patient_orientation[1][0])
    if got == want:
        return None
    opposite = {a: b for pair in _LPS_LETTERS for a, b in (pair, pair[::-1])}
    flips = [g == opposite[w] for g, w in zip(got, want, strict=True)]
    same = [g == w for g, w in zip(got, want, strict=True)]
    if flips[0] and same[1]:
        kind = "mirrored left-right"
    elif same[0] and flips[1]:
        kind = "mirrored top-bottom"
    elif all(flips):
        kind = "turned by 180 degrees"
    else:
        kind = "not oriented like the model's view"
    return (f"the image is {kind}: PatientOrientation says rows run towards {got[0]} and columns towards {got[1]}, "
            f"the camera expects {want[0]} and {want[1]} (the image as seen from the source, looking along the beam)")


def view_to_positioner(view_deg: tuple[float, float, float]) -> tuple[float, float]:
    """DICOM (primary, secondary) angles in degrees of a view's beam direction (inverse of
    :func:`positioner_to_view` up to the in-plane rotation vz)."""
    return rotation_to_positioner((view_rotmat(view_deg) @ torch.tensor(R_AP, dtype=torch.float64)).numpy())


def rotation_to_positioner(R: Any) -> tuple[float, float]:
    """DICOM (primary, secondary) angles in degrees of the beam of a pose's rotation
    (``T_cam_from_world[:3, :3]``): the camera's z axis in world LPS is the beam."""
    d = np.asarray(R, dtype=np.float64)[2]
    b = math.degrees(math.asin(max(-1.0, min(1.0, float(d[2])))))
    a = math.degrees(math.atan2(float(d[0]), -float(d[1])))
    return round(a, 9) + 0.0, round(b, 9) + 0.0
