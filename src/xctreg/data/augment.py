"""Augmentation that makes DRRs look like intra-operative X-rays, without moving anatomy.

It works on material line integrals L (B, 3, H, W) in g/cm² (air, soft tissue,
bone), the cheap-to-store output of the renderer, in three levels:

1. *3D objects*: metal rods, screws, wires and a table edge, placed in world
   (CT) coordinates near the patient. Their exact line integrals (analytic
   ray–cylinder / ray–box chords) are added to L, which is the same as
   inserting them into the volume before rendering. They are attached to
   the CT, so they move with the pose like anatomy does.
2. *Physics*: per image kVp (70–120), bone/soft-tissue contrast, scatter
   fraction (up to 35 %, a scatter-to-primary ratio up to 0.54), the heel
   effect (a ±20 % intensity ramp), detector blur and photon count (Poisson noise).
3. *Image*: gamma, brightness/contrast, CLAHE, Gaussian noise, blur or
   sharpening, random erasing, collimation (circular or rectangular, black or
   saturated, the field stretched to [0, 1] as ``preprocess.prepare_xray``
   shows it) and saturation.

No spatial transform is applied, so pose labels stay exact. All randomness
comes from one torch Generator, so a seed fixes the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xctreg.geometry import Camera, backproject, pixel_grid, project
from xctreg.io.volume import Volume
from xctreg.physics.detector import DetectorConfig, apply_detector_per_sample, beer_lambert, beer_lambert_per_sample
from xctreg.physics.spectrum import Spectrum, tube_spectrum
from xctreg.render.drr import RenderConfig
from xctreg.render.rays import ray_box_interval

#: Equivalent density (g/cm³ of the bone channel) of titanium: ρ 4.5, μ/ρ close to bone's.
TITANIUM_AS_BONE = 4.5
#: Instruments: (name, radius range mm, length range mm).
OBJECT_KINDS = (("rod", (1.0, 2.5), (30.0, 120.0)), ("screw", (1.5, 3.0), (20.0, 50.0)), ("wire", (0.3, 0.6), (100.0, 300.0)))
#: Carbon-fibre table top as soft tissue (g/cm³).
TABLE_AS_SOFT = 0.8


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of every augmentation; ``strength`` in [0, 1] scales them all.

    strength 0 is the clean DRR (90 kVp, no effects) normalised to [0, 1];
    the curriculum of training raises it step by step.
    """

    strength: float = 1.0
    kvp_range: tuple[float, float] = (70.0, 120.0)
    bone_scale_range: tuple[float, float] = (0.8, 1.2)
    p_noise: float = 0.8
    photons_range: tuple[float, float] = (1e4, 3e5)
    blur_px_max: float = 1.5
    scatter_max: float = 0.35
    p_heel: float = 0.5
    heel_max: float = 0.2
    p_objects: float = 0.5
    max_objects: int = 3
    p_table: float = 0.3
    p_gamma: float = 0.5
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_contrast: float = 0.5
    p_clahe: float = 0.2
    p_gauss_noise: float = 0.3
    p_blur: float = 0.2
    p_sharpen: float = 0.2
    p_erase: float = 0.2
    p_collimate: float = 0.7
    collimator_radius: tuple[float, float] = (0.30, 0.55)
    p_circle: float = 0.6
    p_saturate: float = 0.2

    def scaled(self, strength: float) -> AugmentConfig:
        return replace(self, strength=float(min(max(strength, 0.0), 1.0)))


def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    """One uniform draw in [lo, hi) from ``g``; the arithmetic in Python floats (2 µs against
    13 µs in tensor arithmetic: a batch of 32 makes about 1000 of these draws)."""
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _hit(g: torch.Generator, p: float, strength: float) -> bool:
    return _u(g) < p * strength


# ------------------------------------------------------------------ 3D objects
def cylinder_chords(
    src: torch.Tensor, d: torch.Tensor, center: torch.Tensor, axis: torch.Tensor, radius: float | torch.Tensor, half_len: float | torch.Tensor
) -> torch.Tensor:
    """Chord length (mm) of rays src + t·d (d unit, (..., R, 3)) through a finite cylinder.

    ``src`` is (..., 1 or R, 3); ``center`` and ``axis`` are (..., 3) and ``radius`` and
    ``half_len`` (mm) floats or (..., 1), one per cylinder: K cylinders take rays (K, R, 3),
    sources (K, 1, 3), centres and axes (K, 3), radii and half lengths (K, 1)."""
    a = (axis / axis.norm(dim=-1, keepdim=True)).to(d.dtype).unsqueeze(-1)  # (..., 3, 1)
    w = (src - center.unsqueeze(-2)).to(d.dtype)  # (..., 1 or R, 3)
    da = (d @ a).squeeze(-1)  # products with matmul: sums over a last axis of 3 are slow
    wa = (w @ a).squeeze(-1)
    m = torch.linalg.cross(w, a.transpose(-1, -2).expand_as(w))  # |d⊥ × w⊥| = |d·(w × a)|
    if w.shape[-2] == 1:
        dw, dm = (d @ w.transpose(-1, -2)).squeeze(-1), (d @ m.transpose(-1, -2)).squeeze(-1)
    else:
        dw, dm = (d * w).sum(-1), (d * m).sum(-1)
    A = (1.0 - da * da).clamp_min(1e-12)  # |d⊥|², d unit
    half_b = dw - da * wa  # d⊥·w⊥
    disc = A * radius**2 - dm * dm  # (d⊥·w⊥)² - |d⊥|²(|w⊥|² - r²), without its cancellation
    sq = disc.clamp_min(0).sqrt()
    t1, t2 = (-half_b - sq) / A, (-half_b + sq) / A
    safe = torch.where(da.abs() < 1e-12, torch.full_like(da, 1e-12), da)
    s1, s2 = (-half_len - wa) / safe, (half_len - wa) / safe
    t3, t4 = torch.minimum(s1, s2), torch.maximum(s1, s2)
    inside_slab = (wa.abs() <= half_len) | (da.abs() >= 1e-12)
    chord = (torch.minimum(t2, t4) - torch.maximum(t1, t3)).clamp_min(0)
    return torch.where((disc > 0) & inside_slab, chord, torch.zeros_like(chord))


def box_chords(src: torch.Tensor, d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Chord length (mm) of rays through an axis-aligned box [lo, hi] (world mm); leading
    dimensions broadcast like ``cylinder_chords``'."""
    t0, t1 = ray_box_interval(src, d, lo, hi)
    return (t1 - t0).clamp_min(0)


def _draw_objects(B: int, iso: torch.Tensor, half: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> tuple[list, list]:
    """The random instruments and table edges of B images, drawn from ``g`` (float64, CPU):
    cylinders as (image, centre (3,), axis (3,), radius mm, half length mm) and tables as
    (image, lo (3,), hi (3,)) in world mm."""
    cylinders, tables = [], []
    for b in range(B):
        if _hit(g, cfg.p_objects, cfg.strength):
            for _ in range(1 + int(_u(g) * cfg.max_objects)):
                radius, length = OBJECT_KINDS[int(_u(g) * len(OBJECT_KINDS)) % len(OBJECT_KINDS)][1:]
                r = _u(g, *radius)
                ln = _u(g, *length)
                c = iso + half * 0.6 * (2 * torch.rand(3, generator=g, dtype=torch.float64) - 1)
                ax = torch.randn(3, generator=g, dtype=torch.float64)
                cylinders.append((b, c, ax, r, ln / 2))
        if _hit(g, cfg.p_table, cfg.strength):
            y0 = float(iso[1] + half[1] * _u(g, 0.7, 1.0))
            lo = torch.tensor([iso[0] - 250, y0, iso[2] - 1000], dtype=torch.float64)
            hi = torch.tensor([iso[0] + 250, y0 + _u(g, 10, 30), iso[2] + 1000], dtype=torch.float64)
            tables.append((b, lo, hi))
    return cylinders, tables


def _near_cylinders(T: torch.Tensor, camera: Camera, centre: torch.Tensor, axis: torch.Tensor, radius: torch.Tensor,
                    half_len: torch.Tensor, tile: int = 8) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(cylinder, pixel) index pairs of the pixels whose rays may cross each of K cylinders: the
    pixels of every ``tile`` x ``tile`` tile that comes within the cylinder's projected radius
    (+ 1.5 px) of its projected axis segment. Pixel r is row r // W, column r % W of the
    detector (``pixel_grid``'s order).

    ``T`` (K, 4, 4) each cylinder's pose, ``centre`` (world mm) and unit ``axis`` (K, 3),
    ``radius`` and ``half_len`` (K,) mm. A cylinder lies inside the balls of its radius centred
    on its axis, and a ball at depth z projects within f·r/(z - r) of its centre's image (x 1.2
    for the obliquity at the detector's corners). Tiles, not pixels: 64 times fewer distances
    (those took 6 ms of a training step's 14 at 128²)."""
    ends = torch.stack([centre - half_len[:, None] * axis, centre + half_len[:, None] * axis], dim=1)  # (K, 2, 3)
    px, z = project(ends, T, camera)  # (K, 2, 2), (K, 2)
    reach = 1.2 * max(camera.fx, camera.fy) * radius / (z.amin(dim=1) - radius).clamp_min(1.0) + 1.5  # (K,)
    H, W = camera.height, camera.width
    tw = -(-W // tile)
    corner = pixel_grid(Camera(camera.sdd_mm, -(-H // tile), tw, camera.pixel_spacing_mm), centre.dtype, centre.device) * tile
    a = px[:, 1] - px[:, 0]  # (K, 2)
    w = (corner + (tile - 1) / 2)[None] - px[:, :1]  # (K, tiles, 2) from each segment's start to each tile's centre
    t = ((w @ a[:, :, None]).squeeze(-1) / (a * a).sum(-1, keepdim=True).clamp_min(1e-9)).clamp(0, 1)
    off = w - t[..., None] * a[:, None]
    k, n = torch.nonzero((off * off).sum(-1) <= ((reach + 0.71 * tile) ** 2)[:, None], as_tuple=True)
    d = torch.arange(tile, device=centre.device)
    rows = (n // tw)[:, None, None] * tile + d[None, :, None]  # (pairs, tile, 1)
    cols = (n % tw)[:, None, None] * tile + d[None, None, :]  # (pairs, 1, tile)
    inside = ((rows < H) & (cols < W)).reshape(len(n), -1)
    pix = (rows * W + cols).reshape(len(n), -1)
    return k[:, None].expand_as(pix)[inside], pix[inside]


def _chords_at(near: tuple[torch.Tensor, torch.Tensor], src: torch.Tensor, dirs: torch.Tensor, image: torch.Tensor,
               centre: torch.Tensor, axis: torch.Tensor, radius: torch.Tensor, half_len: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Chords (n,) mm of the n (cylinder, pixel) pairs ``near``: the images' sources (U, 3) and
    rays (U, R, 3), each cylinder's image (K,) among them, and the cylinders' centres, axes
    (K, 3), radii and half lengths (K,). Only the n rays are gathered."""
    k, r = near
    u = image[k]
    chord = cylinder_chords(src[u][:, None], dirs[u, r][:, None], centre[k], axis[k], radius[k][:, None], half_len[k][:, None])
    return chord[:, 0]


def random_objects(
    T: torch.Tensor, camera: Camera, isocenter: torch.Tensor, body_half_mm: torch.Tensor, cfg: AugmentConfig, g: torch.Generator
) -> torch.Tensor:
    """Line integrals (B, 3, H, W) g/cm² of random instruments and a table edge, per pose T (B, 4, 4).

    The objects are drawn per image, then all their chords are computed in one batch."""
    B, dev = T.shape[0], T.device
    out = torch.zeros(B, 3, camera.height * camera.width, dtype=torch.float32, device=dev)
    cylinders, tables = _draw_objects(B, isocenter.double().cpu(), body_half_mm.double().cpu(), cfg, g)
    if not cylinders and not tables:
        return out.reshape(B, 3, camera.height, camera.width)
    # float32 (chords to about 1e-3 mm) and only the images that have objects: half the time of float64
    used = sorted({c[0] for c in cylinders} | {t[0] for t in tables})
    row = {b: k for k, b in enumerate(used)}
    uv = pixel_grid(camera, dtype=torch.float32, device=dev)
    src, dirs = backproject(uv, T[used].float(), camera)  # (U, 3), (U, R, 3)
    src = src - isocenter.to(dev, torch.float32)  # chords relative to the isocentre: small numbers
    if cylinders:
        k = torch.tensor([row[c[0]] for c in cylinders], device=dev)
        col = lambda i: torch.stack([torch.as_tensor(c[i], dtype=torch.float64) for c in cylinders]).float().to(dev)  # noqa: E731
        axis, radius, half_len = col(2), col(3), col(4)
        axis = axis / axis.norm(dim=-1, keepdim=True)
        near = _near_cylinders(T[used][k].float(), camera, col(1), axis, radius, half_len)
        centre = col(1) - isocenter.to(dev, torch.float32)
        chord = _chords_at(near, src, dirs, k, centre, axis, radius, half_len)
        img = torch.tensor([c[0] for c in cylinders], device=dev)[near[0]]
        out[:, 2].index_put_((img, near[1]), chord * (0.1 * TITANIUM_AS_BONE), accumulate=True)
    if tables:
        k = torch.tensor([row[t[0]] for t in tables], device=dev)
        lo = torch.stack([t[1] for t in tables]).float().to(dev).unsqueeze(1) - isocenter.to(dev, torch.float32)
        hi = torch.stack([t[2] for t in tables]).float().to(dev).unsqueeze(1) - isocenter.to(dev, torch.float32)
        chord = box_chords(src[k].unsqueeze(1), dirs[k], lo, hi)
        out[:, 1].index_add_(0, torch.tensor([t[0] for t in tables], device=dev), chord * (0.1 * TABLE_AS_SOFT))
    return out.reshape(B, 3, camera.height, camera.width)


# ------------------------------------------------------------------ physics
_SPECTRA: dict[int, Spectrum] = {}
#: The tube of the clean training image and the centre of the kVp draws: the renderer's default
#: (90 kVp, 4 mm Al), so training images and rendered DRRs share one spectrum.
TUBE = RenderConfig()
#: Energy bins of the training spectra: 6, not the renderer's 8 (one Beer–Lambert per image per step).
TRAIN_BINS = 6


def _spectrum(kvp: float) -> Spectrum:
    """Spectra on a 5 kV grid (spekpy takes ~0.3 s per spectrum; 11 cover 70-120 kVp)."""
    k = int(5 * round(kvp / 5))
    if k not in _SPECTRA:
        _SPECTRA[k] = tube_spectrum(float(k), TUBE.al_mm, TRAIN_BINS)
    return _SPECTRA[k]


def warm_spectra(kvp_range: tuple[float, float] = (70.0, 120.0)) -> None:
    """Precompute the spectra of the 5 kV grid over ``kvp_range`` (about 0.3 s each, once)."""
    for k in range(int(5 * round(kvp_range[0] / 5)), int(kvp_range[1]) + 1, 5):
        _spectrum(float(k))


def heel(intensity: torch.Tensor, amount: float, along_rows: bool) -> torch.Tensor:
    """The heel effect: I/I0 (B, 1, H, W) times 1 + ``amount`` x (-1 at one edge, +1 at the
    other), along the columns or, with ``along_rows``, down the rows (the anode-cathode axis)."""
    B = intensity.shape[0]
    return heel_per_sample(intensity, torch.full((B,), float(amount)), torch.full((B,), bool(along_rows)))


def heel_per_sample(intensity: torch.Tensor, amount: torch.Tensor, along_rows: torch.Tensor) -> torch.Tensor:
    """``heel`` with an amount (B,) and an axis (B,) bool per image (amount 0: unchanged)."""
    B, _, H, W = intensity.shape
    dev, dt = intensity.device, intensity.dtype
    rows = torch.linspace(-1.0, 1.0, H, dtype=dt, device=dev)[None, :, None].expand(B, H, W)
    cols = torch.linspace(-1.0, 1.0, W, dtype=dt, device=dev)[None, None, :].expand(B, H, W)
    ramp = torch.where(along_rows.to(dev).reshape(B, 1, 1), rows, cols)
    return intensity * (1.0 + amount.to(dev, dt).reshape(B, 1, 1) * ramp).unsqueeze(1)


def physics(L: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, pixel_scale: float = 1.0) -> torch.Tensor:
    """Attenuation images (B, 1, H, W) from line integrals with random tube, contrast and detector.

    The settings are drawn per image from ``g``; the images are then computed as one batch.
    ``pixel_scale``: the detector pixels the settings are drawn for, per pixel of ``L`` (0.5
    when ``L`` was averaged 2 x 2): blur sigmas shrink by it and photon counts per pixel grow
    by its inverse square, so the image is the one the finer detector would give, averaged."""
    s, B = cfg.strength, L.shape[0]
    spectra, bone, heel_amt, heel_rows, photons, blur, scatter = [], [], [], [], [], [], []
    for _ in range(B):
        spectra.append(_spectrum(TUBE.kvp + s * (_u(g, *cfg.kvp_range) - TUBE.kvp)))
        bone.append(1.0 + s * (_u(g, *cfg.bone_scale_range) - 1.0))
        on = _hit(g, cfg.p_heel, s)
        heel_amt.append(s * _u(g, -cfg.heel_max, cfg.heel_max) if on else 0.0)
        heel_rows.append(_u(g) < 0.5 if on else False)
        n0 = 0.0
        if _hit(g, cfg.p_noise, s):
            lo, hi = math.log(cfg.photons_range[0]), math.log(cfg.photons_range[1])
            n0 = math.exp(hi - s * (hi - lo) * _u(g))
        photons.append(n0 / pixel_scale**2)
        blur.append(s * _u(g, 0, cfg.blur_px_max) * pixel_scale)
        scatter.append(s * _u(g, 0, cfg.scatter_max))
    L = L.float()
    scale = torch.tensor(bone, dtype=L.dtype, device=L.device).reshape(B, 1, 1, 1)
    inten = beer_lambert_per_sample(torch.cat([L[:, :2], L[:, 2:] * scale], dim=1), spectra)
    inten = heel_per_sample(inten, torch.tensor(heel_amt), torch.tensor(heel_rows))
    f = torch.tensor
    return apply_detector_per_sample(inten, f(photons), f(blur), f(scatter), DetectorConfig().scatter_sigma_frac, g)


# ------------------------------------------------------------------ image level
def normalize(img: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1] (B, 1, H, W)."""
    lo = img.amin(dim=(-2, -1), keepdim=True)
    hi = img.amax(dim=(-2, -1), keepdim=True)
    return (img - lo) / (hi - lo).clamp_min(1e-6)


def collimate(img: torch.Tensor, g: torch.Generator, value: float) -> torch.Tensor:
    """Black (0) or saturated (1) borders: a circle or a rectangle of random size."""
    return torch.where(field_mask(img.shape[-2:], g, img.dtype, img.device), img, torch.full_like(img, value))


def field_mask(
    shape: tuple[int, int] | torch.Size,
    g: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    radius: tuple[float, float] = (0.30, 0.55),
    p_circle: float = 0.6,
) -> torch.Tensor:
    """(H, W) bool on ``device``, True inside a random collimator: with probability ``p_circle``
    an iris (a circle of ``radius`` x the image's shorter side, off-centre by up to 5 %), else
    a rectangle (each border up to 15 %)."""
    H, W = shape
    v, u = torch.meshgrid(torch.arange(H, dtype=dtype, device=device), torch.arange(W, dtype=dtype, device=device), indexing="ij")
    if _u(g) < p_circle:
        r = _u(g, *radius) * min(H, W)
        cu, cv = (W - 1) / 2 + _u(g, -0.05, 0.05) * W, (H - 1) / 2 + _u(g, -0.05, 0.05) * H
        keep = (u - cu) ** 2 + (v - cv) ** 2 <= r**2
    else:
        m = [int(_u(g, 0.0, 0.15) * n) for n in (W, W, H, H)]
        keep = (u >= m[0]) & (u < W - m[1]) & (v >= m[2]) & (v < H - m[3])
    return keep


def image_level(img: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, pixel_scale: float = 1.0) -> torch.Tensor:
    """Image-level augmentations on [0, 1] images (B, 1, H, W); returns [0, 1] images.

    ``pixel_scale`` as in ``physics``: blur and sharpening sigmas (pixels) and the Gaussian
    noise's standard deviation scale with it. Each image's settings are drawn from ``g`` first
    (``_ImageDraws``); each effect then runs once on the images it hit (a loop over 32 images
    of 64² cost 18 ms a training step)."""
    import kornia

    d = _ImageDraws(img.shape, cfg, g, pixel_scale)
    x = torch.where(_col(d.gamma, img) != 1.0, img.clamp(0, 1) ** _col(d.gamma, img), img)
    x = (x - 0.5) * _col(d.gain, x) + 0.5 + _col(d.offset, x)
    if d.clahe:  # one clip limit per call: the batch's hits share one
        x[d.clahe] = kornia.enhance.equalize_clahe(x[d.clahe].clamp(0, 1), clip_limit=d.clahe_clip, grid_size=(4, 4))
    if d.blur:
        idx, sig = _subset(d.blur, x)
        x[idx] = kornia.filters.gaussian_blur2d(x[idx], (7, 7), sig[:, None].expand(-1, 2), border_type="replicate")
    if d.sharpen:
        idx, v = _subset(d.sharpen, x)
        y = x[idx]
        x[idx] = y + v[:, 1].reshape(-1, 1, 1, 1) * (y - kornia.filters.gaussian_blur2d(y, (9, 9), v[:, :1].expand(-1, 2), border_type="replicate"))
    if d.noise:
        idx, sd = _subset(d.noise, x)
        x[idx] = x[idx] + sd.reshape(-1, 1, 1, 1) * torch.randn((len(idx), *x.shape[1:]), generator=g, dtype=x.dtype, device=g.device).to(x.device)
    x = normalize(torch.minimum(x, _col(d.saturate, x)).clamp(-1, 2))
    for b, (r0, c0, h, w, value) in d.erase:
        x[b, :, r0 : r0 + h, c0 : c0 + w] = value
    if d.collimate:
        # as registration's preprocessing shows a collimated X-ray: the field stretched to
        # [0, 1], the borders black (opaque shutters) or saturated (leaky ones, brighter)
        idx = [b for b, _ in d.collimate]
        keep = torch.stack([field_mask(x.shape[-2:], g, x.dtype, x.device, cfg.collimator_radius, cfg.p_circle) for _ in idx])[:, None]
        y = x[idx]
        lo = torch.where(keep, y, torch.full_like(y, math.inf)).amin(dim=(-2, -1), keepdim=True)
        hi = torch.where(keep, y, torch.full_like(y, -math.inf)).amax(dim=(-2, -1), keepdim=True)
        fill = torch.tensor([v for _, v in d.collimate], dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        x[idx] = torch.where(keep, ((y - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1), fill.expand_as(y))
    return x


class _ImageDraws:
    """Every image's image-level settings, drawn from ``g`` image by image in the order the
    effects run. Per-image values (gamma, gain, offset, saturation) are lists of B floats,
    identity where the effect missed; the rest (image index, settings) pairs for the images hit.
    CLAHE's hits share one clip limit (``clahe_clip``): kornia takes one per call, and a call
    per image cost 0.9 ms."""

    def __init__(self, shape: torch.Size, cfg: AugmentConfig, g: torch.Generator, pixel_scale: float) -> None:
        (B, _, H, W), s, ps = shape, cfg.strength, pixel_scale
        self.gamma, self.gain, self.offset, self.saturate = [1.0] * B, [1.0] * B, [0.0] * B, [math.inf] * B
        self.clahe: list[int] = []
        self.blur: list[tuple[int, float]] = []
        self.sharpen: list[tuple[int, tuple[float, float]]] = []
        self.noise: list[tuple[int, float]] = []
        self.erase: list[tuple[int, tuple[int, int, int, int, float]]] = []
        self.collimate: list[tuple[int, float]] = []
        for b in range(B):
            if _hit(g, cfg.p_gamma, s):
                self.gamma[b] = _u(g, *cfg.gamma_range)
            if _hit(g, cfg.p_contrast, s):
                self.gain[b], self.offset[b] = _u(g, 0.7, 1.3), _u(g, -0.1, 0.1)
            if _hit(g, cfg.p_clahe, s):
                self.clahe.append(b)
            if _hit(g, cfg.p_blur, s):
                self.blur.append((b, _u(g, 0.5, 1.5) * ps))
            elif _hit(g, cfg.p_sharpen, s):
                sig = _u(g, 0.8, 2.0) * ps
                self.sharpen.append((b, (sig, _u(g, 0.3, 1.0))))
            if _hit(g, cfg.p_gauss_noise, s):
                self.noise.append((b, _u(g, 0.005, 0.04) * ps))
            if _hit(g, cfg.p_saturate, s):
                self.saturate[b] = _u(g, 0.85, 0.98)
            if _hit(g, cfg.p_erase, s):
                h, w = int(_u(g, 0.05, 0.2) * H), int(_u(g, 0.05, 0.2) * W)
                self.erase.append((b, (int(_u(g) * (H - h)), int(_u(g) * (W - w)), h, w, _u(g))))
            if _hit(g, cfg.p_collimate, s):
                self.collimate.append((b, 0.0 if _u(g) < 0.5 else 1.0))
        self.clahe_clip = _u(g, 1.0, 4.0) if self.clahe else 0.0


def _col(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1) tensor of per-image values, on ``like``'s device and dtype."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).reshape(-1, 1, 1, 1)


def _subset(hits: list[tuple[int, Any]], like: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """The images hit and their settings as a tensor (n,) or (n, k)."""
    idx = [b for b, _ in hits]
    return idx, torch.tensor([v for _, v in hits], dtype=like.dtype, device=like.device)


def augment(
    L: torch.Tensor,
    cfg: AugmentConfig,
    g: torch.Generator,
    T: torch.Tensor | None = None,
    camera: Camera | None = None,
    isocenter: torch.Tensor | None = None,
    body_half_mm: torch.Tensor | None = None,
    size: int | None = None,
) -> torch.Tensor:
    """Full augmentation: (B, 3, h, w) g/cm² line integrals -> [0, 1] images (B, 1, S, S).

    ``camera``: the detector the X-rays come from (H x W pixels); ``L`` may be coarser (the
    same field of view averaged, e.g. a dataset rendered at the network's input size). With
    ``T``, ``camera``, ``isocenter`` and ``body_half_mm``, random 3D objects are added: drawn
    at H x W (a 1 mm wire is thinner than a pixel) and averaged to ``L``'s size. ``size``: S,
    else ``L``'s size. The physics and image effects run at S with the settings drawn for the
    H x W detector, as that detector would show them averaged (about 4x cheaper at half the size).
    """
    L = L.float()
    H, W = (camera.height, camera.width) if camera is not None else L.shape[-2:]
    if T is not None and camera is not None and isocenter is not None and body_half_mm is not None and cfg.strength > 0:
        obj = random_objects(T, camera, isocenter, body_half_mm, cfg, g).float()
        L = L + (F.interpolate(obj, size=L.shape[-2:], mode="area") if obj.shape[-2:] != L.shape[-2:] else obj)
    if size is not None and (size, size) != tuple(L.shape[-2:]):
        L = F.interpolate(L, size=(size, size), mode="area")
    scale = math.sqrt(L.shape[-2] * L.shape[-1] / (H * W))
    return image_level(normalize(physics(L, cfg, g, scale)), cfg, g, scale)


def clean_image(L: torch.Tensor) -> torch.Tensor:
    """The un-augmented image: the renderer's default tube (``TUBE``), no detector effects, normalised to [0, 1]."""
    return normalize(-torch.log(beer_lambert(L.float(), _spectrum(TUBE.kvp)).clamp_min(1e-12)))


def preview_rows(volume: Volume, camera: Camera, n: int = 8, strength: float = 1.0, seed: int = 0) -> list[list[np.ndarray]]:
    """Rows of (H, W) images for a preview grid: ``n`` clean DRRs at random poses, then two rows
    of augmented versions of the same poses (``strength`` 0..1, seeded)."""
    from xctreg.data.poses import sample_poses
    from xctreg.render import Renderer

    r = Renderer(volume, camera)
    p = torch.as_tensor(sample_poses(n, seed=seed), dtype=torch.float32)
    with torch.no_grad():
        L = r.line_integrals(p)
    T = r.poses_to_matrix(p)
    iso = torch.tensor(r.reference.isocenter_mm)
    half = torch.tensor(np.ptp(volume.corners_world(), axis=0) / 2.0)
    g = torch.Generator().manual_seed(seed)
    cfg = AugmentConfig().scaled(strength)
    rows = [clean_image(L)[:, 0].numpy()] + [augment(L, cfg, g, T, camera, iso, half)[:, 0].numpy() for _ in range(2)]
    return [list(x) for x in rows]
