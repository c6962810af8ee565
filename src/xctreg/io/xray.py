"""X-ray images: read/write .npy, PNG (8/16-bit), TIFF and DICOM.

Images are 2D float32 arrays (height, width), row 0 at the top, in xctreg's
attenuation convention (more attenuation is brighter) unless the caller says
the input is a raw transmission image.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xctreg._fs import atomic_path
from xctreg.errors import XctregError
from xctreg.geometry import Camera, positioner_to_view

XRAY_SUFFIXES = (".npy", ".png", ".tif", ".tiff", ".dcm")

#: Digital X-Ray Image Storage - For Presentation
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
#: Secondary Capture Image Storage
SC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"

#: Recognised PixelIntensityRelationship (0028,1040) values.
INTENSITY_RELATIONSHIPS = ("LIN", "LOG")
#: The writer's LIN images span transmissions exp(-LIN_RANGE) .. 1 (attenuation 0 .. LIN_RANGE).
LIN_RANGE = 3.0
#: Tolerances of the geometry-tag consistency checks (relative).
SPACING_TOL = 0.01
MAGNIFICATION_TOL = 0.05


@dataclass
class XRay:
    """A 2D X-ray image and, when the file carries it, its geometry.

    Attributes:
        image: float32 (height, width), bone bright.
        camera: geometry read from DICOM tags, else None.
        path: source file.
        positioner_deg: DICOM (PositionerPrimaryAngle, PositionerSecondaryAngle) in
            degrees (RAO- / LAO+, CAU- / CRA+), else None.
        patient_orientation: DICOM PatientOrientation (0020,0020): the patient directions
            (letters of L, R, A, P, H, F; the first predominant) along a row (left to right)
            and down a column (top to bottom), else None.
    """

    image: np.ndarray
    camera: Camera | None = None
    path: Path | None = None
    positioner_deg: tuple[float, float] | None = None
    patient_orientation: tuple[str, str] | None = None

    @property
    def view_deg(self) -> tuple[float, float, float] | None:
        """The view (C-arm direction vx, vy, vz in degrees, as ``--view`` takes it) of the positioner angles, else None."""
        if self.positioner_deg is None:
            return None
        return positioner_to_view(*self.positioner_deg)


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


@dataclass(frozen=True)
class _DicomXRay:
    """What :func:`_read_dicom` found: the image and the tags that matter."""

    image: np.ndarray
    camera: Camera | None
    positioner_deg: tuple[float, float] | None
    relationship: str | None  # "LIN" or "LOG" when the tags decided the intensity mapping
    patient_orientation: tuple[str, str] | None = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _load_dicom(p: Path) -> tuple[Any, np.ndarray]:
    """The pydicom dataset and its raw stored pixel values (no LUT of any kind applied)."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns before failing on truncated pixel data
            ds = pydicom.dcmread(p)
            raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - any pydicom failure is a bad input file
        raise XctregError(f"cannot read DICOM X-ray {p}: {_first_line(exc)}") from None
    return ds, np.asarray(raw, dtype=np.float64)


def _tag_floats(ds: Any, keyword: str, p: Path) -> list[float] | None:
    """The numeric values of a tag, None when absent or empty; XctregError when not numbers."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about invalid DS/IS strings
            value = getattr(ds, keyword, None)
    except (TypeError, ValueError):  # pydicom converts DS/IS strings on access
        raise XctregError(f"DICOM X-ray {p}: {keyword} is not numeric") from None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    items = list(value) if hasattr(value, "__len__") and not isinstance(value, str) else [value]
    try:
        vals = [float(v) for v in items]
    except (TypeError, ValueError):
        raise XctregError(f"DICOM X-ray {p}: {keyword} is not numeric ({value!r})") from None
    if not vals or not all(math.isfinite(v) for v in vals):
        raise XctregError(f"DICOM X-ray {p}: {keyword} must be finite numbers, got {value!r}")
    return vals


def _tag_float(ds: Any, keyword: str, p: Path) -> float | None:
    vals = _tag_floats(ds, keyword, p)
    if vals is not None and len(vals) != 1:
        raise XctregError(f"DICOM X-ray {p}: {keyword} must be one number, got {len(vals)}")
    return None if vals is None else vals[0]


def _rescaled(ds: Any, raw: np.ndarray, p: Path) -> tuple[np.ndarray, float]:
    """Stored values -> RescaleSlope·v + RescaleIntercept, and the largest representable
    value after that rescale (from BitsStored and PixelRepresentation)."""
    slope = _tag_float(ds, "RescaleSlope", p) or 1.0
    intercept = _tag_float(ds, "RescaleIntercept", p) or 0.0
    bits = int(getattr(ds, "BitsStored", 16) or 16)
    if int(getattr(ds, "PixelRepresentation", 0) or 0):
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    else:
        lo, hi = 0.0, 2.0**bits - 1
    top = max(lo * slope + intercept, hi * slope + intercept)
    return raw * slope + intercept, top


def _intensity_tags(ds: Any, p: Path) -> tuple[str | None, int | None]:
    """(PixelIntensityRelationship if LIN/LOG else None, PixelIntensityRelationshipSign or None)."""
    rel = getattr(ds, "PixelIntensityRelationship", None)
    rel = str(rel).strip().upper() if rel not in (None, "") else None
    if rel is not None and rel not in INTENSITY_RELATIONSHIPS:
        warnings.warn(
            f"DICOM X-ray {p}: PixelIntensityRelationship {rel!r} is not LIN or LOG; taking the pixels as attenuation-like",
            stacklevel=4,
        )
        rel = None
    sign = _tag_float(ds, "PixelIntensityRelationshipSign", p)
    if sign is not None and sign not in (1.0, -1.0):
        raise XctregError(f"DICOM X-ray {p}: PixelIntensityRelationshipSign must be +1 or -1, got {sign:g}")
    return rel, None if sign is None else int(sign)


def _to_attenuation(v: np.ndarray, top: float, rel: str | None, sign: int | None, mono1: bool, p: Path) -> np.ndarray:
    """Rescaled values v -> attenuation-like image (bone bright, any linear scaling).

    "-v" is returned as max(v) - v, which keeps the images non-negative.

    Without a Sign tag, the sign implied is that of an uninverted MONOCHROME2 file
    (+1 for LIN: values are intensities; -1 otherwise: values are already bright where
    attenuating), flipped for MONOCHROME1. With the tag, PhotometricInterpretation is
    only a display matter.
    """
    if sign is None:
        sign = (1 if rel == "LIN" else -1) * (-1 if mono1 else 1)
    if rel != "LIN":  # LOG, or no relationship: linear in log(intensity)
        return v.max() - v if sign == 1 else v
    intensity = v if sign == 1 else top - v
    try:
        return transmission_to_attenuation(intensity)
    except XctregError:
        raise XctregError(f"DICOM X-ray {p} is LIN (intensities) but has no positive intensities") from None


def _read_dicom(p: Path) -> _DicomXRay:
    """Read a DICOM X-ray: rescale, intensity direction, geometry and positioner tags.

    Embedded VOI LUTs and WindowCenter/Width are display settings and never applied.
    """
    ds, raw = _load_dicom(p)
    v, top = _rescaled(ds, raw, p)
    rel, sign = _intensity_tags(ds, p)
    mono1 = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper() == "MONOCHROME1"
    img = _to_attenuation(v, top, rel, sign, mono1, p)
    return _DicomXRay(img, _camera_from_dicom(ds, p), _positioner_from_dicom(ds, p), rel, _patient_orientation(ds))


def _patient_orientation(ds: Any) -> tuple[str, str] | None:
    """PatientOrientation as two upper-case strings of L/R/A/P/H/F, None when absent or unusable."""
    vals = getattr(ds, "PatientOrientation", None)
    if vals is None or isinstance(vals, str) or len(vals) != 2:
        return None
    out = tuple(str(v).strip().upper() for v in vals)
    if not all(o and set(o) <= set("LRAPHF") for o in out):
        return None
    return (out[0], out[1])


def _positioner_from_dicom(ds: Any, p: Path) -> tuple[float, float] | None:
    """(PositionerPrimaryAngle, PositionerSecondaryAngle) in degrees, None when either is absent."""
    a = _tag_float(ds, "PositionerPrimaryAngle", p)
    b = _tag_float(ds, "PositionerSecondaryAngle", p)
    if a is None or b is None:
        return None
    if abs(a) > 180.0 or abs(b) > 90.0:
        raise XctregError(
            f"DICOM X-ray {p}: positioner angles out of range (primary -180..180, secondary -90..90 deg): {a:g}, {b:g}"
        )
    return (a + 0.0, b + 0.0)


def _positive(ds: Any, keyword: str, p: Path, count: int = 1) -> list[float] | None:
    """A tag's ``count`` positive values (a single value is repeated), None when absent."""
    vals = _tag_floats(ds, keyword, p)
    if vals is None:
        return None
    if len(vals) == 1:
        vals = vals * count
    if len(vals) != count:
        raise XctregError(f"DICOM X-ray {p}: {keyword} must have {count} values, got {len(vals)}")
    if min(vals) <= 0:
        raise XctregError(f"DICOM X-ray {p}: {keyword} must be positive, got {', '.join(f'{x:g}' for x in vals)}")
    return vals


def _magnification(ds: Any, p: Path, sdd: float | None) -> tuple[float | None, float | None]:
    """(EstimatedRadiographicMagnificationFactor, SDD/SID), each None when its tags are absent;
    XctregError when SID >= SDD or the two disagree by more than MAGNIFICATION_TOL."""
    sid = _positive(ds, "DistanceSourceToPatient", p)
    ermf = _positive(ds, "EstimatedRadiographicMagnificationFactor", p)
    ratio = None
    if sid is not None and sdd is not None:
        if sid[0] >= sdd:
            raise XctregError(
                f"DICOM X-ray {p}: DistanceSourceToPatient {sid[0]:g} mm is not less than "
                f"DistanceSourceToDetector {sdd:g} mm"
            )
        ratio = sdd / sid[0]
    if ermf is not None and ratio is not None and abs(ermf[0] / ratio - 1.0) > MAGNIFICATION_TOL:
        raise XctregError(
            f"DICOM X-ray {p}: EstimatedRadiographicMagnificationFactor {ermf[0]:g} contradicts "
            f"DistanceSourceToDetector/DistanceSourceToPatient = {ratio:.4g}"
        )
    return (None if ermf is None else ermf[0]), ratio


def _detector_spacing(ds: Any, p: Path, ermf: float | None, ratio: float | None) -> list[float] | None:
    """(dy, dx) mm on the detector: ImagerPixelSpacing, else PixelSpacing. Both present must
    agree to SPACING_TOL unless their ratio is the magnification (ERMF to SPACING_TOL, else
    SDD/SID to MAGNIFICATION_TOL)."""
    imager = _positive(ds, "ImagerPixelSpacing", p, 2)
    pixel = _positive(ds, "PixelSpacing", p, 2)
    if imager is None or pixel is None:
        return imager or pixel
    r = [i / q for i, q in zip(imager, pixel, strict=True)]

    def near(m: float | None, tol: float) -> bool:
        return m is not None and all(abs(x / m - 1.0) <= tol for x in r)

    if not (near(1.0, SPACING_TOL) or near(ermf, SPACING_TOL) or (ermf is None and near(ratio, MAGNIFICATION_TOL))):
        raise XctregError(
            f"DICOM X-ray {p}: ImagerPixelSpacing {imager} and PixelSpacing {pixel} mm differ "
            f"(ratio {r[0]:.4g}, {r[1]:.4g}) and no magnification tag explains it"
        )
    return imager


def _camera_from_dicom(ds: Any, p: Path) -> Camera | None:
    """Camera from DistanceSourceToDetector, the detector spacing, Rows and Columns; None when
    SDD or spacing is absent. Contradictory geometry tags raise XctregError (one line)."""
    sdd = _positive(ds, "DistanceSourceToDetector", p)
    ermf, ratio = _magnification(ds, p, None if sdd is None else sdd[0])
    spacing = _detector_spacing(ds, p, ermf, ratio)
    if sdd is None or spacing is None:
        return None
    try:
        return Camera(sdd_mm=sdd[0], height=int(ds.Rows), width=int(ds.Columns), pixel_spacing_mm=(spacing[0], spacing[1]))
    except (TypeError, ValueError, AttributeError):
        raise XctregError(f"DICOM X-ray {p} has unreadable Rows/Columns") from None
    except XctregError as exc:
        raise XctregError(f"DICOM X-ray {p} has bad geometry tags: {exc}") from None


def read_xray(path: str | os.PathLike[str], transmission: bool = False) -> XRay:
    """Read an X-ray from .npy, PNG, TIFF or DICOM as float32 (H, W), bone bright.

    ``transmission``: the file holds detector intensities (bone dark); return
    -log(I / max I) so that bone is bright.

    DICOM: RescaleSlope/Intercept are applied (VOI LUTs and windows never are),
    then the intensity direction is decided, in this order:

    1. PixelIntensityRelationship (0028,1040) LOG: values are linear in log(intensity);
       LIN: linear in intensity, and -log(I / max I) is applied here (so a caller's
       ``transmission`` is ignored with a warning; likewise for LOG). Other values are
       warned about and treated as absent.
    2. PixelIntensityRelationshipSign (0028,1041) +1: lower values mean less intensity
       (LOG -> -v; LIN -> I = v); -1: higher values mean less intensity (LOG -> v;
       LIN -> I = top - v, top the largest representable value); without a relationship
       it acts as for LOG. When present it decides the direction and
       PhotometricInterpretation is only a display matter.
    3. Without the Sign tag, MONOCHROME1 is inverted; without the relationship the
       values are taken as attenuation-like (bone bright in MONOCHROME2).

    Geometry (camera) comes from DistanceSourceToDetector, ImagerPixelSpacing (else
    PixelSpacing), Rows and Columns; None when SDD or spacing is absent. Contradictory
    geometry tags, out-of-range positioner angles and unreadable files raise XctregError.
    """
    p = Path(path)
    if not p.is_file():
        raise XctregError(f"X-ray not found: {p}")
    camera, positioner, rel, orient = None, None, None, None
    s = _suffix(p)
    if s == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise XctregError(f"cannot read X-ray {p}: {str(exc).splitlines()[0][:200]}") from None
    elif _is_dicom(p):
        d = _read_dicom(p)
        arr, camera, positioner, rel, orient = d.image, d.camera, d.positioner_deg, d.relationship, d.patient_orientation
    elif s in (".png", ".tif", ".tiff"):
        try:
            import SimpleITK as sitk  # on first use: a .npy X-ray does not need it

            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        except RuntimeError as exc:
            from xctreg.io._itk import itk_reason

            raise XctregError(f"cannot read X-ray {p} (truncated or corrupt?): {itk_reason(str(exc))}") from None
    else:
        raise XctregError(f"unsupported X-ray format {p.name}; use .npy, .png, .tif/.tiff or .dcm")
    img = _to_2d(arr, p)
    if transmission and rel is not None:
        warnings.warn(f"{p.name} says PixelIntensityRelationship {rel}; ignoring transmission (--transmission)", stacklevel=2)
    elif transmission:
        img = transmission_to_attenuation(img)
    return XRay(img, camera, p, positioner, orient)


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


@dataclass(frozen=True)
class DicomStyle:
    """How :func:`write_xray` encodes a DICOM's pixels and C-arm tags.

    Attributes:
        photometric: "MONOCHROME2" or "MONOCHROME1".
        intensity_relationship: None (attenuation-like values, no 0028,1040/1041 tags),
            "LOG" (values linear in log intensity) or "LIN" (values linear in intensity,
            transmissions exp(-LIN_RANGE) .. 1 for the image's min .. max).
        intensity_sign: PixelIntensityRelationshipSign, +1 (lower values = less intensity)
            or -1; None picks the sign that displays bone white under ``photometric``
            (-1 for MONOCHROME2, +1 for MONOCHROME1). Only with a relationship.
        positioner_deg: (PositionerPrimaryAngle, PositionerSecondaryAngle) in degrees, or None.
    """

    photometric: Literal["MONOCHROME2", "MONOCHROME1"] = "MONOCHROME2"
    intensity_relationship: Literal["LOG", "LIN"] | None = None
    intensity_sign: int | None = None
    positioner_deg: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.photometric not in ("MONOCHROME2", "MONOCHROME1"):
            raise XctregError(f"photometric must be MONOCHROME2 or MONOCHROME1, got {self.photometric!r}")
        if self.intensity_relationship not in (None, *INTENSITY_RELATIONSHIPS):
            raise XctregError(f"intensity_relationship must be None, LOG or LIN, got {self.intensity_relationship!r}")
        if self.intensity_sign not in (None, 1, -1):
            raise XctregError(f"intensity_sign must be +1 or -1, got {self.intensity_sign!r}")
        if self.intensity_sign is not None and self.intensity_relationship is None:
            raise XctregError("intensity_sign needs an intensity_relationship (LOG or LIN)")
        if self.positioner_deg is not None:
            try:
                a, b = (float(v) for v in self.positioner_deg)
            except (TypeError, ValueError):
                raise XctregError(f"positioner_deg must be (primary, secondary) in degrees, got {self.positioner_deg!r}") from None
            positioner_to_view(a, b)  # raises XctregError outside primary ±180, secondary ±90

    @property
    def sign(self) -> int:
        """The Sign tag written with a relationship."""
        if self.intensity_sign is not None:
            return self.intensity_sign
        return -1 if self.photometric == "MONOCHROME2" else 1


def write_xray(
    path: str | os.PathLike[str],
    image: np.ndarray,
    camera: Camera | None = None,
    sop: str = "dx",
    sid_mm: float | None = None,
    *,
    photometric: Literal["MONOCHROME2", "MONOCHROME1"] = "MONOCHROME2",
    intensity_relationship: Literal["LOG", "LIN"] | None = None,
    intensity_sign: int | None = None,
    positioner_deg: tuple[float, float] | None = None,
) -> Path:
    """Write a 2D image (bone bright) atomically; the format follows the suffix.

    .npy and .tif/.tiff keep float32 values. .png is 16-bit, min-max scaled to
    0..65535 (any linear scaling of an X-ray is accepted on reading). .dcm is 16-bit with
    RescaleSlope/Intercept, as DX (``sop='dx'``) or Secondary Capture (``sop='sc'``);
    with a camera, DistanceSourceToDetector (mm), ImagerPixelSpacing and PixelSpacing
    (mm) are filled in, and DistanceSourceToPatient from ``sid_mm`` (mm, < sdd).
    The keyword-only arguments shape the DICOM like a C-arm's (see :class:`DicomStyle`;
    ignored for other formats). With the defaults (MONOCHROME2, no relationship) the
    rescaled values are the image itself; otherwise :func:`read_xray` gives the image
    back up to a linear map.
    """
    p = Path(path)
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise XctregError(f"can only write 2D X-rays, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise XctregError(f"refusing to write {p.name}: image has non-finite pixels")
    if camera is not None:
        camera.check_image(img.shape)
        if sid_mm is not None and not 0 < sid_mm < camera.sdd_mm:
            raise XctregError(f"sid_mm {sid_mm:g} must lie between 0 and the sdd {camera.sdd_mm:g} mm")
    s = _suffix(p)
    if s not in XRAY_SUFFIXES:
        raise XctregError(f"unsupported X-ray format {p.name}; use .npy, .png, .tif/.tiff or .dcm")
    style = DicomStyle(photometric, intensity_relationship, intensity_sign, positioner_deg)
    with atomic_path(p) as tmp:
        if s == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, img)
        elif s in (".png", ".tif", ".tiff"):
            import SimpleITK as sitk  # on first use, as in read_xray

            out = _scale_u16(img)[0] if s == ".png" else img
            sitk.WriteImage(sitk.GetImageFromArray(out), str(tmp))
        else:
            _write_dicom(tmp, img, camera, sop, sid_mm, style)
    return p


def _stored_values(img: np.ndarray, style: DicomStyle) -> tuple[np.ndarray, float, float]:
    """uint16 stored values, RescaleSlope and RescaleIntercept encoding the attenuation
    image ``img`` as ``style`` says (see :func:`read_xray` for the decoding)."""
    rel = style.intensity_relationship
    if rel is None:
        return _scale_u16(img if style.photometric == "MONOCHROME2" else -img)
    if rel == "LOG":
        return _scale_u16(img if style.sign == -1 else -img)
    lo, hi = float(img.min()), float(img.max())
    att = (img.astype(np.float64) - lo) / (hi - lo) * LIN_RANGE if hi > lo else np.zeros(img.shape)
    intensity = np.exp(-att)  # 1 where the image is darkest, exp(-LIN_RANGE) where brightest
    value = intensity if style.sign == 1 else 1.0 - intensity  # rescaled top is 1.0
    return np.round(value * 65535.0).clip(0, 65535).astype(np.uint16), 1.0 / 65535.0, 0.0


def _dicom_dataset(sop: str) -> Any:
    """A DX or Secondary Capture dataset with its identifying header (no pixels yet)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from xctreg import __version__

    if sop not in ("dx", "sc"):
        raise XctregError(f"unknown DICOM SOP kind {sop!r}; use 'dx' or 'sc'")
    sop_uid = DX_SOP_CLASS if sop == "dx" else SC_SOP_CLASS
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
    if sop == "sc":
        ds.ConversionType = "SYN"
    ds.PatientName = "xctreg^simulated"
    ds.PatientID = "xctreg"
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Manufacturer = "xctreg"
    ds.SoftwareVersions = __version__
    ds.ImageType = ["DERIVED", "SECONDARY"]
    if sop == "dx":
        ds.PresentationIntentType = "FOR PRESENTATION"
    return ds


def _write_dicom(
    tmp: Path, img: np.ndarray, camera: Camera | None, sop: str, sid_mm: float | None, style: DicomStyle
) -> None:
    ds = _dicom_dataset(sop)
    u16, slope, intercept = _stored_values(img, style)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = style.photometric
    ds.Rows, ds.Columns = int(img.shape[0]), int(img.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:.10g}"
    ds.RescaleIntercept = f"{intercept:.10g}"
    ds.RescaleType = "US"
    if style.intensity_relationship is not None:
        ds.PixelIntensityRelationship = style.intensity_relationship
        ds.PixelIntensityRelationshipSign = style.sign
    if camera is not None:
        spacing = [f"{camera.pixel_spacing_mm[0]:.10g}", f"{camera.pixel_spacing_mm[1]:.10g}"]
        ds.DistanceSourceToDetector = f"{camera.sdd_mm:.10g}"
        ds.ImagerPixelSpacing = spacing
        ds.PixelSpacing = spacing
        if sid_mm is not None:
            ds.DistanceSourceToPatient = f"{sid_mm:.10g}"
    if style.positioner_deg is not None:
        ds.PositionerPrimaryAngle = f"{float(style.positioner_deg[0]):.10g}"
        ds.PositionerSecondaryAngle = f"{float(style.positioner_deg[1]):.10g}"
    ds.PixelData = u16.tobytes()
    ds.save_as(tmp, enforce_file_format=True)
