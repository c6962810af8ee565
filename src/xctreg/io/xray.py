"""X-ray images: read/write .npy, PNG (8/16-bit), TIFF and DICOM.

Images are 2D float32 arrays (height, width), row 0 at the top, in the SPEC's
attenuation convention (more attenuation is brighter) unless the caller says
the input is a raw transmission image.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from xctreg._fs import atomic_path
from xctreg.errors import XctregError
from xctreg.geometry import Camera

XRAY_SUFFIXES = (".npy", ".png", ".tif", ".tiff", ".dcm")

#: Digital X-Ray Image Storage - For Presentation
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
#: Secondary Capture Image Storage
SC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"


@dataclass
class XRay:
    """A 2D X-ray image and, when the file carries it, its geometry.

    Attributes:
        image: float32 (height, width), bone bright.
        camera: geometry read from DICOM tags, else None.
        path: source file.
    """

    image: np.ndarray
    camera: Camera | None = None
    path: Path | None = None


def _suffix(p: Path) -> str:
    s = p.suffix.lower()
    return ".dcm" if s in (".dcm", ".dicom") else s


def _is_dicom(p: Path) -> bool:
    if _suffix(p) == ".dcm":
        return True
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _to_2d(arr: np.ndarray, p: Path) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:  # RGB(A) -> gray
        arr = arr[..., :3].astype(np.float64).mean(-1)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise XctregError(f"X-ray {p} has shape {tuple(np.shape(arr))}; expected a 2D image")
    if min(arr.shape) < 2:
        raise XctregError(f"X-ray {p} is {arr.shape[0]}x{arr.shape[1]} px; too small")
    if arr.dtype.kind not in "uif b":
        raise XctregError(f"X-ray {p} has non-numeric pixels ({arr.dtype})")
    out = arr.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise XctregError(f"X-ray {p} has non-finite (NaN/inf) pixels")
    return out


def _read_dicom(p: Path) -> tuple[np.ndarray, Camera | None]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(p)
        arr = ds.pixel_array.astype(np.float64)
    except (InvalidDicomError, AttributeError, ValueError, KeyError, RuntimeError) as exc:
        raise XctregError(f"cannot read DICOM X-ray {p}: {str(exc).splitlines()[0][:200]}") from None
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    arr = arr * slope + intercept
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        arr = arr.max() - arr  # MONOCHROME1: low values are bright; flip to MONOCHROME2
    return arr, _camera_from_dicom(ds, p)


def _camera_from_dicom(ds, p: Path) -> Camera | None:  # noqa: ANN001 - pydicom Dataset
    sdd = getattr(ds, "DistanceSourceToDetector", None)
    spacing = getattr(ds, "ImagerPixelSpacing", None) or getattr(ds, "PixelSpacing", None)
    if sdd is None or spacing is None:
        return None
    try:
        sp = list(spacing) if isinstance(spacing, (list, tuple)) or hasattr(spacing, "__len__") else [spacing]
        if len(sp) == 1:
            sp = [sp[0], sp[0]]
        return Camera(
            sdd_mm=float(sdd),
            height=int(ds.Rows),
            width=int(ds.Columns),
            pixel_spacing_mm=(float(sp[0]), float(sp[1])),
        )
    except (TypeError, ValueError, IndexError):
        raise XctregError(f"DICOM X-ray {p} has unreadable geometry tags (spacing {spacing!r})") from None
    except XctregError as exc:
        raise XctregError(f"DICOM X-ray {p} has bad geometry tags: {exc}") from None


def read_xray(path: str | os.PathLike[str], transmission: bool = False) -> XRay:
    """Read an X-ray from .npy, PNG, TIFF or DICOM as float32 (H, W).

    DICOM: rescale slope/intercept applied, MONOCHROME1 inverted, geometry from
    DistanceSourceToDetector, ImagerPixelSpacing (or PixelSpacing), Rows, Columns.
    ``transmission``: the file holds detector intensities (bone dark); return
    -log(I / max I) so that bone is bright.
    """
    p = Path(path)
    if not p.is_file():
        raise XctregError(f"X-ray not found: {p}")
    camera = None
    s = _suffix(p)
    if s == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise XctregError(f"cannot read X-ray {p}: {str(exc).splitlines()[0][:200]}") from None
    elif _is_dicom(p):
        arr, camera = _read_dicom(p)
    elif s in (".png", ".tif", ".tiff"):
        try:
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        except RuntimeError as exc:
            reason = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "unknown reason")
            raise XctregError(f"cannot read X-ray {p}: {reason[:200]}") from None
    else:
        raise XctregError(f"unsupported X-ray format {p.name}; use .npy, .png, .tif/.tiff or .dcm")
    img = _to_2d(arr, p)
    if transmission:
        img = transmission_to_attenuation(img)
    return XRay(img, camera, p)


def transmission_to_attenuation(img: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """-log(I / max I), with I clipped to ``eps``·max (bone bright)."""
    img = np.asarray(img, dtype=np.float64)
    top = float(img.max())
    if top <= 0:
        raise XctregError("transmission image has no positive intensities")
    return (-np.log(np.clip(img / top, eps, 1.0))).astype(np.float32)


def _scale_u16(img: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = float(img.min()), float(img.max())
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    u16 = np.round((img - lo) / slope).clip(0, 65535).astype(np.uint16)
    return u16, slope, lo


def write_xray(
    path: str | os.PathLike[str],
    image: np.ndarray,
    camera: Camera | None = None,
    sop: str = "dx",
    sid_mm: float | None = None,
) -> Path:
    """Write a 2D image atomically; the format follows the suffix.

    .npy and .tif/.tiff keep float32 values. .png is 16-bit, min-max scaled to
    0..65535 (the SPEC allows any linear scaling). .dcm is 16-bit MONOCHROME2
    with RescaleSlope/Intercept restoring the values, as DX (``sop='dx'``) or
    Secondary Capture (``sop='sc'``); with a camera, DistanceSourceToDetector,
    ImagerPixelSpacing and PixelSpacing are filled in.
    """
    p = Path(path)
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise XctregError(f"can only write 2D X-rays, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise XctregError(f"refusing to write {p.name}: image has non-finite pixels")
    if camera is not None:
        camera.check_image(img.shape)
    s = _suffix(p)
    if s not in XRAY_SUFFIXES:
        raise XctregError(f"unsupported X-ray format {p.name}; use .npy, .png, .tif/.tiff or .dcm")
    with atomic_path(p) as tmp:
        if s == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, img)
        elif s == ".png":
            sitk.WriteImage(sitk.GetImageFromArray(_scale_u16(img)[0]), str(tmp))
        elif s in (".tif", ".tiff"):
            sitk.WriteImage(sitk.GetImageFromArray(img), str(tmp))
        else:
            _write_dicom(tmp, img, camera, sop, sid_mm)
    return p


def _write_dicom(tmp: Path, img: np.ndarray, camera: Camera | None, sop: str, sid_mm: float | None) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from xctreg import __version__

    if sop not in ("dx", "sc"):
        raise XctregError(f"unknown DICOM SOP kind {sop!r}; use 'dx' or 'sc'")
    sop_uid = DX_SOP_CLASS if sop == "dx" else SC_SOP_CLASS
    u16, slope, intercept = _scale_u16(img)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    now = _dt.datetime.now()
    ds.SOPClassUID = sop_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX" if sop == "dx" else "OT"
    ds.ConversionType = "SYN" if sop == "sc" else None
    if ds.ConversionType is None:
        del ds.ConversionType
    ds.PatientName = "xctreg^simulated"
    ds.PatientID = "xctreg"
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Manufacturer = "xctreg"
    ds.SoftwareVersions = __version__
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PresentationIntentType = "FOR PRESENTATION" if sop == "dx" else None
    if ds.PresentationIntentType is None:
        del ds.PresentationIntentType
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(img.shape[0]), int(img.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:.10g}"
    ds.RescaleIntercept = f"{intercept:.10g}"
    ds.RescaleType = "US"
    if camera is not None:
        spacing = [f"{camera.pixel_spacing_mm[0]:.10g}", f"{camera.pixel_spacing_mm[1]:.10g}"]
        ds.DistanceSourceToDetector = f"{camera.sdd_mm:.10g}"
        ds.ImagerPixelSpacing = spacing
        ds.PixelSpacing = spacing
        if sid_mm is not None:
            ds.DistanceSourceToPatient = f"{sid_mm:.10g}"
    ds.PixelData = u16.tobytes()
    ds.save_as(tmp, enforce_file_format=True)
