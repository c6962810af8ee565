"""CT volumes: reading with SimpleITK, validation, resampling and pyramids.

Array layout follows SimpleITK/NumPy: ``Volume.hu[k, j, i]`` where ``(i, j, k)``
is the ITK voxel index (``i`` fastest). The affine maps a continuous index
``(i, j, k)`` to the world, i.e. LPS millimetres exactly as SimpleITK reads
the file (origin, spacing and direction cosines honoured).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xctreg._fs import atomic_path
from xctreg.errors import XctregError
from xctreg.io._itk import itk_reason, truncation_hint

# SimpleITK is imported where it is used: ``register`` reads stored CT levels and .npy X-rays,
# not CT files, and the import costs about 0.13 s of a cold start
if TYPE_CHECKING:
    import SimpleITK as sitk

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


@dataclass
class Volume:
    """A CT volume in Hounsfield units.

    Attributes:
        hu: float32 array of shape (nk, nj, ni) = (z, y, x index), HU.
        spacing: voxel size (di, dj, dk) in mm.
        origin: world position (LPS mm) of voxel index (0, 0, 0).
        direction: 3x3 direction cosines; column c is the world direction of index axis c.
        path: where it was read from, if anywhere.
    """

    hu: np.ndarray
    spacing: np.ndarray
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    path: Path | None = None

    def __post_init__(self) -> None:
        self.hu = np.asarray(self.hu, dtype=np.float32)
        self.spacing = np.asarray(self.spacing, dtype=np.float64).reshape(3)
        self.origin = np.asarray(self.origin, dtype=np.float64).reshape(3)
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along index axes (i, j, k)."""
        nk, nj, ni = self.hu.shape
        return ni, nj, nk

    @property
    def affine(self) -> np.ndarray:
        """4x4 map from continuous voxel index (i, j, k, 1) to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction @ np.diag(self.spacing)
        a[:3, 3] = self.origin
        return a

    @property
    def center(self) -> np.ndarray:
        """Centre of the bounding box in world (LPS mm): the default isocenter."""
        half = (np.array(self.shape_ijk, dtype=np.float64) - 1.0) / 2.0
        return self.index_to_world(half)

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map (..., 3) continuous indices (i, j, k) to (..., 3) LPS mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ (self.direction @ np.diag(self.spacing)).T + self.origin

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Map (..., 3) LPS mm to continuous indices (i, j, k)."""
        xyz = np.asarray(xyz, dtype=np.float64)
        m = np.linalg.inv(self.direction @ np.diag(self.spacing))
        return (xyz - self.origin) @ m.T

    def corners_world(self) -> np.ndarray:
        """(8, 3) world positions of the outer corners of the voxel grid (LPS mm)."""
        n = np.array(self.shape_ijk, dtype=np.float64)
        lo, hi = -0.5 * np.ones(3), n - 0.5
        c = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        return self.index_to_world(c)

    def to_sitk(self) -> sitk.Image:
        """This volume as a SimpleITK image (float32)."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(self.hu)
        img.SetSpacing(tuple(float(s) for s in self.spacing))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection(tuple(float(d) for d in self.direction.reshape(-1)))
        return img

    @classmethod
    def from_sitk(cls, img: sitk.Image, path: Path | None = None) -> Volume:
        """Wrap a 3D scalar SimpleITK image (values taken as HU)."""
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
        return cls(
            hu=arr,
            spacing=np.array(img.GetSpacing()),
            origin=np.array(img.GetOrigin()),
            direction=np.array(img.GetDirection()).reshape(3, 3),
            path=path,
        )

    def describe(self) -> str:
        """One-line summary: shape, spacing and HU range."""
        ni, nj, nk = self.shape_ijk
        sx, sy, sz = self.spacing
        return (
            f"{ni}x{nj}x{nk} voxels, spacing {sx:.3f}x{sy:.3f}x{sz:.3f} mm, "
            f"HU [{float(self.hu.min()):.0f}, {float(self.hu.max()):.0f}]"
        )


def _read_error(path: Path, message: str) -> str:
    """One line for an ITK read error: "truncated or corrupt" when ITK says data were missing."""
    hint = truncation_hint(message) if path.is_file() else None
    if hint is not None:
        return f"CT {path} is truncated or corrupt ({hint}); download or export it again"
    return f"cannot read CT {path}: {itk_reason(message)}"


def _check_slice_gaps(folder: Path, files: tuple[str, ...] | list[str], tolerance: float = 0.01) -> None:
    """Refuse a DICOM series whose slices are unevenly spaced (a missing slice, or slices of
    several acquisitions): ITK would read it as if evenly spaced and put the anatomy in the wrong
    place. The gaps (mm) along the slices' normal may differ from their median by ``tolerance``
    of it (at least 0.01 mm). Slices without a position or orientation are not checked."""
    if len(files) < 3:
        return
    import SimpleITK as sitk

    info = sitk.ImageFileReader()
    pos = []
    for f in files:
        info.SetFileName(str(f))
        info.ReadImageInformation()
        if not (info.HasMetaDataKey("0020|0032") and info.HasMetaDataKey("0020|0037")):
            return
        try:
            pos.append([float(v) for v in info.GetMetaData("0020|0032").split("\\")])
            cos = [float(v) for v in info.GetMetaData("0020|0037").split("\\")]
        except ValueError:
            return
    normal = np.cross(cos[:3], cos[3:6])
    z = np.sort(np.asarray(pos) @ normal)
    gaps = np.diff(z)
    mid = float(np.median(gaps))
    if np.abs(gaps - mid).max() > max(tolerance * abs(mid), 0.01):
        k = int(np.argmax(np.abs(gaps - mid)))
        raise XctregError(
            f"the DICOM series in {folder} has uneven slice spacing: {gaps[k]:.2f} mm between slices {k + 1} and {k + 2}, "
            f"{mid:.2f} mm elsewhere (a missing slice?); give a complete series"
        )


def _read_sitk(path: Path) -> sitk.Image:
    import SimpleITK as sitk

    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise XctregError(f"no DICOM series found in directory {path}")
        if len(series) > 1:
            sizes = {s: len(reader.GetGDCMSeriesFileNames(str(path), s)) for s in series}
            raise XctregError(
                f"{path} holds {len(series)} DICOM series ({', '.join(f'{s}: {n} files' for s, n in sizes.items())}); "
                "give a folder with one series"
            )
        else:
            files = reader.GetGDCMSeriesFileNames(str(path), series[0])
        _check_slice_gaps(path, files)
        reader.SetFileNames(files)
        return reader.Execute()
    return sitk.ReadImage(str(path))


_NIFTI_BITPIX_OK = (8, 16, 32, 64, 128)


def _nifti_header(head: bytes) -> tuple[str, int, int, int, int] | None:
    """(byte order, header size, datatype code, voxel offset, data bytes) of a NIfTI-1/-2
    header, or None when ``head`` is not one."""
    for order in ("<", ">"):
        n = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
        if n == 348:
            dims = np.frombuffer(head[40:56], dtype=f"{order}i2").astype(np.int64)
            code, bitpix = (int(v) for v in np.frombuffer(head[70:74], dtype=f"{order}i2"))
            offset = int(np.frombuffer(head[108:112], dtype=f"{order}f4")[0])
        elif n == 540:
            dims = np.frombuffer(head[16:80], dtype=f"{order}i8").astype(np.int64)
            code, bitpix = (int(v) for v in np.frombuffer(head[12:16], dtype=f"{order}i2"))
            offset = int(np.frombuffer(head[168:176], dtype=f"{order}i8")[0])
        else:
            continue
        ndim = int(dims[0])
        if not 1 <= ndim <= 7 or bitpix not in _NIFTI_BITPIX_OK:
            return None
        voxels = int(np.prod(np.maximum(dims[1 : ndim + 1], 1)))
        return order, n, code, max(offset, n + 4), voxels * bitpix // 8
    return None


def _nifti_scan(path: Path) -> tuple[int, str | None]:
    """Read a NIfTI file's stored data as it is on disk: (the number of NaN/inf voxels, a
    problem or None).

    ITK's NIfTI reader reads a truncated file without complaint (the missing slices come
    back as zeros) and silently turns NaN into 0, so both are checked here: the gzip stream
    must end properly and hold all the voxels the header declares. NaN/inf are counted for
    float32/float64 data (others: 0).
    """
    import gzip
    import zlib

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        return 0, f"is truncated or corrupt ({type(exc).__name__}: {str(exc) or 'the compressed stream ends early'})"
    head = _nifti_header(raw[:544])
    if head is None:
        return 0, None
    order, n, code, offset, need = head
    if len(raw) < offset + need:
        have = max(0, len(raw) - offset)
        return 0, f"is truncated: its header declares {need} bytes of voxels, the file holds {have} ({have / need:.0%})"
    kind = {16: "f4", 64: "f8"}.get(code)
    if kind is None:
        return 0, None
    data = np.frombuffer(raw, dtype=f"{order}{kind}", count=need // np.dtype(kind).itemsize, offset=offset)
    return int(np.count_nonzero(~np.isfinite(data))), None


def check_ct(vol: Volume, name: str = "CT", force: bool = False) -> None:
    """Raise XctregError unless ``vol`` is a plausible CT in HU.

    Always checked: 3 non-empty axes, finite voxels, positive spacing.
    Checked unless ``force``: values look like HU (some air below -500 HU,
    a range of at least 500 HU, more than two distinct values, |HU| < 1e5).
    """
    if vol.hu.ndim != 3:
        raise XctregError(f"{name} must be a 3D volume, got {vol.hu.ndim}D")
    if min(vol.hu.shape) < 2:
        raise XctregError(f"{name} has shape {vol.shape_ijk}; a CT needs at least 2 voxels along each axis")
    if not np.all(np.isfinite(vol.spacing)) or np.any(vol.spacing <= 0):
        raise XctregError(f"{name} has non-positive spacing {tuple(vol.spacing)}")
    bad = int(np.count_nonzero(~np.isfinite(vol.hu)))
    if bad:
        raise XctregError(f"{name} has {bad} non-finite (NaN/inf) voxels")
    if force:
        return
    sample = vol.hu.reshape(-1)[:: max(1, vol.hu.size // 2_000_000)]
    lo, hi = float(sample.min()), float(sample.max())
    hint = "; pass --force to use it anyway"
    if np.unique(sample[:100_000]).size <= 2 and np.unique(sample).size <= 2:
        raise XctregError(f"{name} looks like a binary mask (values {lo:g}..{hi:g}), not a CT in HU{hint}")
    if hi - lo < 500:
        raise XctregError(f"{name} spans only {lo:g}..{hi:g}, not a CT in HU{hint}")
    if lo < -1e5 or hi > 1e5:
        raise XctregError(f"{name} has values {lo:g}..{hi:g}, outside any HU range{hint}")
    air = float(np.mean(sample < -500))
    if air < 1e-3:
        raise XctregError(
            f"{name} has no air (HU < -500) in {lo:g}..{hi:g}; it looks like an MR or an unscaled image, not a CT in HU{hint}"
        )


def read_volume(path: str | os.PathLike[str], force: bool = False) -> Volume:
    """Read a CT (NIfTI, NRRD, MHA/MHD or a DICOM series directory) as a validated Volume.

    Raises XctregError on a missing/unreadable file or a volume that is not a
    3D CT in HU (the latter unless ``force``).
    """
    p = Path(path)
    if not p.exists():
        raise XctregError(f"CT not found: {p}")
    try:
        img = _read_sitk(p)
    except RuntimeError as exc:
        raise XctregError(_read_error(p, str(exc))) from None
    if img.GetDimension() != 3:
        raise XctregError(f"{p} is a {img.GetDimension()}D image; a CT must be a 3D volume")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise XctregError(f"{p} has {img.GetNumberOfComponentsPerPixel()} components per voxel; a CT has one")
    if img.GetSize()[2] == 1:
        raise XctregError(f"{p} is a single slice (2D image); a CT must be a 3D volume")
    vol = Volume.from_sitk(img, path=p)
    if p.is_file() and (p.name.endswith(".nii") or p.name.endswith(".nii.gz")):
        bad, problem = _nifti_scan(p)
        if problem is not None:
            raise XctregError(f"CT {p} {problem}; download or export it again")
        if bad:
            raise XctregError(f"CT {p.name} has {bad} non-finite (NaN/inf) voxels")
    check_ct(vol, name=f"CT {p.name}", force=force)
    return vol


def write_volume(vol: Volume, path: str | os.PathLike[str]) -> Path:
    """Write ``vol`` to NIfTI/NRRD/MHA (by suffix) atomically; returns the path."""
    p = Path(path)
    if not any(p.name.endswith(s) for s in VOLUME_SUFFIXES if s != ".dcm"):
        raise XctregError(f"unsupported volume format {p.name}; use .nii.gz, .nii, .nrrd or .mha")
    with atomic_path(p) as tmp:
        import SimpleITK as sitk

        sitk.WriteImage(vol.to_sitk(), str(tmp), useCompression=True)
    return p


def resample(vol: Volume, spacing: float | tuple[float, float, float], smooth: bool = True) -> Volume:
    """Resample to a new voxel spacing (mm) covering the same physical box.

    With ``smooth``, a Gaussian (sigma = half the new spacing where it grows)
    anti-aliases before linear interpolation. Outside the box is -1000 HU.
    """
    import SimpleITK as sitk

    new_sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
    if np.any(new_sp <= 0):
        raise XctregError(f"resample spacing must be positive, got {tuple(new_sp)}")
    img = vol.to_sitk()
    old_sp = vol.spacing
    if smooth and np.any(new_sp > old_sp * 1.01):
        sigma = [float(0.5 * np.sqrt(max(n**2 - o**2, 0.0))) for n, o in zip(new_sp, old_sp, strict=True)]
        sigma = [s if s > 1e-3 else 1e-3 for s in sigma]
        img = sitk.SmoothingRecursiveGaussian(img, sigma)
    extent = np.array(vol.shape_ijk) * old_sp
    size = np.maximum(1, np.round(extent / new_sp)).astype(int)
    # keep the bounding-box centre fixed
    center = vol.center
    new_origin = center - vol.direction @ ((size - 1) / 2.0 * new_sp)
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing(tuple(float(s) for s in new_sp))
    f.SetSize([int(s) for s in size])
    f.SetOutputOrigin(tuple(float(o) for o in new_origin))
    f.SetOutputDirection(tuple(float(d) for d in vol.direction.reshape(-1)))
    f.SetInterpolator(sitk.sitkLinear)
    f.SetDefaultPixelValue(-1000.0)
    out = Volume.from_sitk(f.Execute(img), path=vol.path)
    return out


def downsample(vol: Volume, factor: float) -> Volume:
    """Downsample by ``factor`` (>= 1) along every axis, anti-aliased."""
    if factor < 1:
        raise XctregError(f"downsample factor must be >= 1, got {factor}")
    if factor == 1:
        return vol
    return resample(vol, tuple(vol.spacing * factor))


def pyramid(vol: Volume, levels: int, factor: float = 2.0) -> list[Volume]:
    """[full, 1/factor, 1/factor², ...] resolution copies, ``levels`` in all."""
    out = [vol]
    for _ in range(levels - 1):
        out.append(downsample(out[-1], factor))
    return out
