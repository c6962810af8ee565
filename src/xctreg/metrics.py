"""Registration metrics: mTRE, mPD, success rates, per-parameter errors, NCC, SSIM, CSS.

Poses are ``T_cam_from_world`` (…, 4, 4) in mm; targets are world points
(LPS mm); images are (…, H, W) tensors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xctreg.geometry import PARAM_NAMES, Camera, PoseSpace, project, transform_points
from xctreg.io.volume import Volume

SR_THRESHOLDS_MM = (10.0, 5.0, 2.0, 1.0)


def target_points(volume: Volume, n: int = 5000, seed: int = 0, hu_min: float = -200.0) -> np.ndarray:
    """Up to ``n`` voxel centres (world LPS mm, (N, 3)) with HU > ``hu_min``, subsampled with ``seed``."""
    k, j, i = np.nonzero(volume.hu > hu_min)
    idx = np.stack([i, j, k], -1)
    if len(idx) > n:
        idx = idx[np.random.default_rng(seed).choice(len(idx), n, replace=False)]
    return volume.index_to_world(idx.astype(np.float64))


def mtre(T_est: torch.Tensor, T_gt: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Mean target registration error (mm) per pose: mean ‖T_est x − T_gt x‖ over ``points``."""
    return (transform_points(T_est, points) - transform_points(T_gt, points)).norm(dim=-1).mean(-1)


def mpd(T_est: torch.Tensor, T_gt: torch.Tensor, points: torch.Tensor, camera: Camera) -> torch.Tensor:
    """Mean projection distance (mm on the detector) per pose."""
    a, _ = project(points, T_est, camera)
    b, _ = project(points, T_gt, camera)
    d = (a - b) * torch.tensor([camera.pixel_spacing_mm[1], camera.pixel_spacing_mm[0]], dtype=a.dtype, device=a.device)
    return d.norm(dim=-1).mean(-1)


def success_rates(mtre_mm: np.ndarray, thresholds: tuple[float, ...] = SR_THRESHOLDS_MM) -> dict[str, float]:
    """Share of cases with mTRE below each threshold, as ``{"sr_10mm": 0.95, ...}``."""
    m = np.asarray(mtre_mm, dtype=np.float64)
    return {f"sr_{t:g}mm": float(np.mean(m < t)) if m.size else float("nan") for t in thresholds}


def param_errors(p_est: np.ndarray, p_gt: np.ndarray) -> dict[str, float]:
    """Mean absolute error per parameter (deg / mm); angles wrapped to [-180, 180)."""
    d = np.abs(PoseSpace.difference(p_est, p_gt)).reshape(-1, len(PARAM_NAMES))
    return {name: float(v) for name, v in zip(PARAM_NAMES, d.mean(0), strict=True)}


def param_bias(p_est: np.ndarray, p_gt: np.ndarray) -> dict[str, float]:
    """Mean signed error (estimate − truth) per parameter (deg / mm); angles wrapped to [-180, 180)."""
    d = PoseSpace.difference(p_est, p_gt).reshape(-1, len(PARAM_NAMES))
    return {name: float(v) for name, v in zip(PARAM_NAMES, d.mean(0), strict=True)}


def ncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Global zero-normalised cross-correlation over the last two dims (optionally masked)."""
    if mask is None:
        mask = torch.ones_like(a)
    w = mask / mask.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    am = a - (a * w).sum(dim=(-2, -1), keepdim=True)
    bm = b - (b * w).sum(dim=(-2, -1), keepdim=True)
    num = (w * am * bm).sum(dim=(-2, -1))
    den = ((w * am * am).sum(dim=(-2, -1)) * (w * bm * bm).sum(dim=(-2, -1))).sqrt().clamp_min(1e-12)
    return num / den


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size, size) Gaussian weights (sigma in px) that sum to 1."""
    d = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-0.5 * (d / sigma) ** 2)
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_maps(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast–structure maps (B, 1, H-size+1, W-size+1) of images (B, 1, H, W), over
    Gaussian windows without padding (Wang et al. 2004, k1 = 0.01, k2 = 0.03). The same maps as
    MONAI's ``compute_ssim_and_cs`` (the test reference), without importing MONAI: about 3 s of
    a cold ``register``, whose result reports SSIM."""
    w = gaussian_window(size, sigma).to(x)[None, None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    vx, vy, cxy = F.conv2d(x * x, w) - mx * mx, F.conv2d(y * y, w) - my * my, F.conv2d(x * y, w) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    return (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs, cs


def ssim_css(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and CSS (mean contrast–structure) per image, Gaussian window 11, σ 1.5, on min–max [0, 1]
    images; with ``mask`` (H, W, 1 = use) the maps are averaged over windows centred inside it."""
    a4 = _minmax(a.float()).reshape(-1, 1, *a.shape[-2:])
    b4 = _minmax(b.float()).reshape(-1, 1, *b.shape[-2:])
    s, cs = ssim_maps(a4, b4)
    shape = a.shape[:-2]
    if mask is None:
        return s.mean(dim=(1, 2, 3)).reshape(shape), cs.mean(dim=(1, 2, 3)).reshape(shape)
    w = (mask.float()[..., 5:-5, 5:-5] > 0).float().expand_as(s)
    n = w.sum(dim=(1, 2, 3)).clamp_min(1)
    return ((s * w).sum(dim=(1, 2, 3)) / n).reshape(shape), ((cs * w).sum(dim=(1, 2, 3)) / n).reshape(shape)


def image_scores(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, float]:
    """{"ncc", "ssim", "css"} between two single images (H, W), inside ``mask`` (1 = use) if given.

    With a mask, pixels outside it are first set to the image's minimum inside it, so that
    collimated borders do not set SSIM's min–max scale.
    """
    if mask is not None:
        m = mask > 0
        a = torch.where(m, a, a[m].min())
        b = torch.where(m, b, b[m].min())
    s, c = ssim_css(a, b, mask)
    return {"ncc": float(ncc(a, b, None if mask is None else mask.float())), "ssim": float(s), "css": float(c)}
