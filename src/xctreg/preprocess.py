"""Real X-ray preprocessing before registration: field detection, resampling, normalisation.

The X-ray arrives as an (H, W) attenuation image (bone bright; ``io.read_xray``
has already applied −log to transmission images and honoured MONOCHROME1).
``prepare_xray`` then:

1. finds the collimated borders (``detect_field``) and masks them out of the
   refinement objective; systems show them black or saturated white, both are found;
2. combines that with an optional user mask;
3. resamples image and mask onto the model's detector (``resample_to_camera``)
   when the X-ray was taken with another detector size, pixel spacing, SDD
   or principal point (same source, so the pose is unchanged);
4. normalises the intensities inside the field to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from xctreg.errors import XctregError
from xctreg.geometry import Camera


@dataclass(frozen=True)
class PreprocessConfig:
    """Options of ``prepare_xray``.

    Attributes:
        collimator: detect collimated borders and mask them out.
        flat_tol: a border pixel is "flat" when its 3x3 neighbourhood varies by at most this
            fraction of the image's range, and "extreme" when it is this close to the min or max.
        min_area: the smallest collimated region, as a fraction of the image.
        margin_px: pixels of the field's edge (collimator penumbra) also left out.
        min_field: the field must keep at least this fraction of the image.
        leaky: also find collimators that let some radiation through (anatomy still shows
            behind them, brighter by a constant in this bone-bright, −log image): a circle or
            straight edges along which the image steps up outwards (``leaky_collimator``).
        leaky_step: the smallest such step, as a fraction of the image's range.
    """

    collimator: bool = True
    flat_tol: float = 5e-4
    min_area: float = 0.005
    margin_px: int = 2
    min_field: float = 0.05
    leaky: bool = True
    leaky_step: float = 0.15


@dataclass
class PreparedXray:
    """An X-ray ready for registration on the model's detector.

    Attributes:
        image: (H, W) float32 in [0, 1] inside the field, bone bright.
        mask: (H, W) float32, 1 where the objective may look (exposed field and not user-masked).
        camera: the model camera the image now lives on.
        field_fraction: the share of the image's pixels inside the mask.
        input_camera: the detector the X-ray came on (before resampling), when known.
        positioner_deg: the DICOM (primary, secondary) C-arm angles in degrees, when known.
        native: the X-ray on its own, finer detector (None when it is not finer).
    """

    image: np.ndarray
    mask: np.ndarray
    camera: Camera
    field_fraction: float
    input_camera: Camera | None = None
    positioner_deg: tuple[float, float] | None = None
    native: NativeXray | None = None


@dataclass(frozen=True)
class NativeXray:
    """The X-ray on its own detector, normalised like ``PreparedXray.image``: kept when that
    detector samples finer than the model's, for refinement's last, full-resolution level
    (depth shows as magnification, and edges place it better on finer pixels).

    Attributes:
        image: (H, W) float32 in [0, 1] inside the field, bone bright.
        mask: (H, W) float32, 1 where the objective may look.
        camera: the X-ray's detector.
    """

    image: np.ndarray
    mask: np.ndarray
    camera: Camera


def detect_field(image: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """(H, W) bool, True inside the exposed field, False on collimated borders.

    Collimated borders are flat regions at the image's minimum (black shutters) or
    maximum (saturated white) that touch the image's edge and cover at least
    ``min_area`` of it; textured regions (anatomy, noisy air) are never taken for them.
    """
    from scipy import ndimage

    cfg = config or PreprocessConfig()
    x = np.asarray(image, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo
    if not span > 0:
        return np.ones(x.shape, dtype=bool)
    tol = cfg.flat_tol * span
    flat = (ndimage.maximum_filter(x, 3) - ndimage.minimum_filter(x, 3)) <= tol
    outside = np.zeros(x.shape, dtype=bool)
    for extreme in (lo, hi):
        labels, n = ndimage.label(flat & (np.abs(x - extreme) <= tol))
        if n == 0:
            continue
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        for lab in edge[edge > 0]:
            if areas[lab] >= cfg.min_area * x.size:
                outside |= labels == lab
    if cfg.leaky:
        leak = leaky_collimator(x, cfg)
        if (leak & outside).sum() < 0.5 * leak.sum():  # not just the opaque shutter found above
            outside |= leak
    if not outside.any():
        return np.ones(x.shape, dtype=bool)
    # the 3x3 flatness test misses the shutter's last pixel row next to the field: add it back
    outside = ndimage.binary_dilation(outside, structure=np.ones((3, 3), dtype=bool))
    field = ~outside
    if cfg.margin_px > 0:
        field = ndimage.binary_erosion(field, iterations=cfg.margin_px, border_value=1)
    return field


def resample_to_camera(image: np.ndarray, source: Camera, target: Camera, order: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """Resample an (H, W) image taken with ``source`` onto the detector of ``target``.

    Both detectors see from the same source along the same principal ray, so a
    target pixel u maps to u_s = fx_s / fx_t · (u − cx_t) + cx_s (and likewise for v):
    the pose of the X-ray is unchanged. Returns the image (target.height, target.width)
    and a validity mask (1 where the target pixel falls on the source detector).
    Downsampling is anti-aliased with a Gaussian.
    """
    source.check_image(tuple(np.shape(image)), name="X-ray")
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    su, sv = source.fx / target.fx, source.fy / target.fy  # source pixels per target pixel
    if max(su, sv) > 1.25:
        import kornia

        sig = (max(0.5 * math.sqrt(max(su**2 - 1, 0)), 1e-3), max(0.5 * math.sqrt(max(sv**2 - 1, 0)), 1e-3))
        k = tuple(2 * math.ceil(3 * s) + 1 for s in (sig[1], sig[0]))
        x = kornia.filters.gaussian_blur2d(x, k, (sig[1], sig[0]), border_type="replicate")
    u = (torch.arange(target.width, dtype=torch.float64) - target.cx) * su + source.cx
    v = (torch.arange(target.height, dtype=torch.float64) - target.cy) * sv + source.cy
    gu = 2 * u / max(source.width - 1, 1) - 1
    gv = 2 * v / max(source.height - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gv, gu, indexing="ij")[::-1], dim=-1)[None].float()
    out = F.grid_sample(x, grid, mode=order, padding_mode="border", align_corners=True)[0, 0]
    valid = ((u >= -0.5) & (u <= source.width - 0.5))[None, :] & ((v >= -0.5) & (v <= source.height - 0.5))[:, None]
    return out.numpy(), valid.numpy().astype(np.float32)


def same_detector(a: Camera, b: Camera) -> bool:
    """True when the two cameras have the same size, pixel spacing, SDD and principal point."""
    return (a.height, a.width) == (b.height, b.width) and all(
        math.isclose(p, q, rel_tol=1e-6, abs_tol=1e-9)
        for p, q in [(a.sdd_mm, b.sdd_mm), (a.pixel_spacing_mm[0], b.pixel_spacing_mm[0]),
                     (a.pixel_spacing_mm[1], b.pixel_spacing_mm[1]), (a.cx, b.cx), (a.cy, b.cy)]
    )  # fmt: skip


def _edge_pixels(x: np.ndarray, share: float = 0.03) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns (float) and the smoothed image of the ``share`` strongest-gradient pixels."""
    from scipy import ndimage

    s = ndimage.gaussian_filter(x, 1.0)
    g = np.hypot(ndimage.sobel(s, 0), ndimage.sobel(s, 1))
    rr, cc = np.nonzero(g >= np.quantile(g, 1.0 - share))
    return rr.astype(np.float64), cc.astype(np.float64), s


def _circle(p: np.ndarray) -> tuple[float, float, float] | None:
    """(row, col, radius) of the circle through three points (3, 2), None when collinear."""
    (a, b), (c, d), (e, f) = p
    den = 2.0 * (a * (d - f) + c * (f - b) + e * (b - d))
    if abs(den) < 1e-9:
        return None
    q1, q2, q3 = a * a + b * b, c * c + d * d, e * e + f * f
    r0 = (q1 * (d - f) + q2 * (f - b) + q3 * (b - d)) / den
    c0 = (q1 * (e - c) + q2 * (a - e) + q3 * (c - a)) / den
    return r0, c0, float(np.hypot(a - r0, b - c0))


def _steps_outwards(s: np.ndarray, dist: np.ndarray, band: float, span: float, step: float) -> bool:
    """Whether the image is brighter just outside a boundary (``dist`` > 0, px) than just inside,
    by ``step`` x span on average and on at least 80 % of the boundary."""
    from scipy import ndimage

    near = np.abs(dist) <= band + 2
    if not near.any():
        return False
    out_band = (dist > 2) & (dist <= band + 2)
    in_band = (dist < -2) & (dist >= -band - 2)
    if out_band.sum() < 10 or in_band.sum() < 10:
        return False
    # compare each outside pixel with the mean of the inside band around it
    size = 4 * int(band) + 9  # reaches across the 2 px gap into the inside band
    ins = ndimage.uniform_filter(np.where(in_band, s, 0.0), size)
    cnt = ndimage.uniform_filter(in_band.astype(np.float64), size)
    ok = out_band & (cnt > 0.05)
    if ok.sum() < 10:
        return False
    local = s[ok] - ins[ok] / cnt[ok]
    return bool(local.mean() >= step * span and np.mean(local >= 0.5 * step * span) >= 0.8)


def leaky_collimator(image: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """(H, W) bool, True behind a collimator that still lets some radiation through.

    A C-arm's iris (a circle) or shutters (straight edges) add a constant to the −log image
    behind them, so anatomy stays visible there and no region is flat. They are found as a
    circle or lines (RANSAC on the strongest-gradient pixels, seeded, so deterministic)
    along which the image steps up outwards all the way round; anatomy's edges are neither
    that regular nor one-signed.
    """
    cfg = config or PreprocessConfig()
    x = np.asarray(image, dtype=np.float64)
    h, w = x.shape
    span = float(np.ptp(x))
    outside = np.zeros(x.shape, dtype=bool)
    if not span > 0 or min(h, w) < 16:
        return outside
    rr, cc, s = _edge_pixels(x)
    pts = np.stack([rr, cc], 1)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    best, best_n = None, 0
    for _ in range(300):  # a circle: the iris
        c = _circle(pts[rng.choice(len(pts), 3, replace=False)])
        # an iris is centred on the detector, give or take a quarter of it; anatomy's curves are not
        if c is None or not 0.3 * min(h, w) <= c[2] <= 1.5 * max(h, w) or abs(c[0] - h / 2) > h / 4 or abs(c[1] - w / 2) > w / 4:
            continue
        n = int((np.abs(np.hypot(rr - c[0], cc - c[1]) - c[2]) <= 1.5).sum())
        if n > best_n:
            best, best_n = c, n
    if best is not None:
        dist = np.hypot(yy - best[0], xx - best[1]) - best[2]
        arc = int((np.abs(dist) <= 1.0).sum()) // 2  # the circle's length inside the image, px
        if arc >= 20 and best_n >= 0.5 * arc and _steps_outwards(s, dist, 3.0, span, cfg.leaky_step):
            outside |= dist > 0
    for _ in range(4):  # straight shutters, one at a time
        free = ~outside[rr.astype(int), cc.astype(int)]
        if free.sum() < 20:
            break
        line, line_n, q = None, 0, pts[free]
        for _ in range(200):
            a, b = q[rng.choice(len(q), 2, replace=False)]
            nrm = np.array([b[1] - a[1], a[0] - b[0]])
            if np.linalg.norm(nrm) < 5:
                continue
            nrm /= np.linalg.norm(nrm)
            n = int((np.abs((q - a) @ nrm) <= 1.0).sum())
            if n > line_n:
                line, line_n = (a, nrm), n
        if line is None:
            break
        a, nrm = line
        if nrm @ (np.array([h / 2, w / 2]) - a) > 0:
            nrm = -nrm  # positive distances point away from the image centre
        dist = (yy - a[0]) * nrm[0] + (xx - a[1]) * nrm[1]
        length = int((np.abs(dist) <= 1.0).sum()) // 2
        if length < 20 or line_n < 0.7 * length or not _steps_outwards(s, dist, 3.0, span, cfg.leaky_step):
            break
        outside |= dist > 0
    return outside


def prepare_xray(
    image: np.ndarray,
    camera: Camera,
    model_camera: Camera,
    config: PreprocessConfig | None = None,
    mask: np.ndarray | None = None,
) -> PreparedXray:
    """Field detection, user mask (1 = use), resampling to ``model_camera`` and [0, 1] normalisation.

    Raises XctregError for a blank or non-finite image, or when almost nothing is left to compare.
    """
    cfg = config or PreprocessConfig()
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 2:
        raise XctregError(f"expected a 2D X-ray, got shape {x.shape}")
    camera.check_image(x.shape, name="X-ray")
    if not np.isfinite(x).all():
        raise XctregError("the X-ray has non-finite pixels (NaN or inf)")
    if float(np.ptp(x)) <= 1e-8 * max(1.0, float(np.abs(x).max())):
        raise XctregError("the X-ray is blank (constant)")
    keep = detect_field(x, cfg).astype(np.float32) if cfg.collimator else np.ones_like(x)
    if mask is not None:
        if np.shape(mask) != x.shape:
            raise XctregError(f"the mask is {np.shape(mask)[0]}x{np.shape(mask)[1]} px but the X-ray is {x.shape[0]}x{x.shape[1]}")
        keep = keep * (np.asarray(mask) > 0)
    native_x, native_keep = x, keep.astype(np.float32)
    if not same_detector(camera, model_camera):
        x, valid = resample_to_camera(x, camera, model_camera)
        keep, _ = resample_to_camera(keep, camera, model_camera)
        keep = (keep > 0.999) * valid
    keep = keep.astype(np.float32)
    frac = float(keep.mean())
    if frac < cfg.min_field:
        raise XctregError(f"only {frac:.1%} of the X-ray is left to compare after collimator and mask (need {cfg.min_field:.0%})")
    inside = x[keep > 0]
    lo, hi = float(inside.min()), float(inside.max())
    if hi - lo <= 1e-8 * max(1.0, abs(hi)):
        raise XctregError("the X-ray is blank (constant) inside its exposed field")
    y = np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    native = None
    if finer(camera, model_camera) and native_keep.mean() >= cfg.min_field:
        ny = np.clip((native_x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        native = NativeXray(ny, native_keep, camera)
    return PreparedXray(y, keep, model_camera, frac, native=native)


def finer(camera: Camera, model_camera: Camera) -> bool:
    """Whether ``camera`` samples the image plane more finely than ``model_camera`` (pixel size
    at the detector, both axes) with more pixels, i.e. has detail the model's size would lose."""
    a = np.asarray(camera.pixel_spacing_mm) / camera.sdd_mm
    b = np.asarray(model_camera.pixel_spacing_mm) / model_camera.sdd_mm
    return bool(np.all(a < 0.99 * b) and camera.height * camera.width > model_camera.height * model_camera.width)
