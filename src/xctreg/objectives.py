"""Refinement objectives: differentiable image similarities, higher is better, at most 1.

Each function takes two images ``a`` (moving: the DRR), ``b`` (fixed: the
X-ray), both (..., H, W), and an optional
``mask`` (..., H, W; 1 = use the pixel, 0 = ignore it) and returns a tensor of
the leading shape. ``get_objective(name)`` picks one by the names that
``RefineConfig.objective`` and ``xctreg register --similarity`` accept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from xctreg.errors import XctregError
from xctreg.metrics import ncc
from xctreg.physics.detector import gaussian_blur_per_sample

Objective = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along columns and rows, both cropped to (H-1, W-1)."""
    return x[..., :-1, 1:] - x[..., :-1, :-1], x[..., 1:, :-1] - x[..., :-1, :-1]


def _gradient_masks(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks of ``_gradients``' two differences: a difference counts only when both of its
    pixels are inside ``mask``."""
    return mask[..., :-1, :-1] * mask[..., :-1, 1:], mask[..., :-1, :-1] * mask[..., 1:, :-1]


def gradncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient NCC: the mean of the NCCs of the horizontal and the vertical image gradients."""
    ax, ay = _gradients(a)
    bx, by = _gradients(b)
    if mask is None:
        return 0.5 * (ncc(ax, bx) + ncc(ay, by))
    mx, my = _gradient_masks(mask)
    return 0.5 * (ncc(ax, bx, mx) + ncc(ay, by, my))


def local_gradncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, patch: int = 9,
                  weight_power: float = 0.0) -> torch.Tensor:  # fmt: skip
    """Local gradient NCC: ``patch_ncc`` of the horizontal and of the vertical image gradients,
    averaged. Each window is normalised on its own, so a smooth gain or offset that varies
    across the image (scatter, heel effect, local contrast from kVp and bone density) hardly
    moves it, and a linear intensity ramp not at all; what is left is where the edges fall,
    which is where magnification (depth) shows. Global gradient NCC lets the strongest edges
    (spine, diaphragm) outweigh the rest, and their contrast depends on the X-ray's physics.
    ``weight_power``: as ``patch_ncc``'s, on the DRR's gradients."""
    ax, ay = _gradients(a)
    bx, by = _gradients(b)
    mx, my = (None, None) if mask is None else _gradient_masks(mask)
    return 0.5 * (patch_ncc(ax, bx, mx, patch, weight_power) + patch_ncc(ay, by, my, patch, weight_power))


def weighted_local_gradncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``local_gradncc`` with each window weighted by the DRR's gradient strength there
    (``weight_power`` 1): the windows where the CT predicts edges decide, and windows that
    the CT leaves flat but the X-ray does not (an instrument, scatter-lifted noise) hardly
    count. An option, not a default: on independent realistic X-rays it gave a better p95 and
    a worse median than ``local_gradncc`` (docs/register.md, "Not kept")."""
    return local_gradncc(a, b, mask, weight_power=1.0)


def ncc_gradncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(NCC + gradient NCC) / 2: global intensity agreement plus edge alignment."""
    return 0.5 * ncc(a, b, mask) + 0.5 * gradncc(a, b, mask)


def patch_ncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, patch: int = 9,
              weight_power: float = 0.0) -> torch.Tensor:  # fmt: skip
    """Local NCC in ``patch`` x ``patch`` windows (stride patch // 2), averaged over the windows
    that are mostly inside the mask and not flat in ``b`` (the fixed image, the X-ray);
    insensitive to slow intensity trends (scatter, heel effect).

    ``weight_power`` p > 0 weighs each window by (its standard deviation in ``a``, the DRR,
    over ``a``'s) ** p, held constant under differentiation: windows where the CT predicts
    structure count more than those where it predicts none (an instrument, noise on a flat
    field). 0 is the plain mean."""
    shape = a.shape[:-2]
    a4 = a.reshape(-1, 1, *a.shape[-2:])
    b4 = b.reshape(-1, 1, *b.shape[-2:])
    m4 = torch.ones_like(a4) if mask is None else mask.reshape(-1, 1, *mask.shape[-2:]).expand_as(a4).to(a4)
    k, s = patch, max(1, patch // 2)

    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, k, s)

    w = pool(m4)
    wn = w.clamp_min(1e-6)
    ma, mb = pool(m4 * a4) / wn, pool(m4 * b4) / wn
    va = (pool(m4 * a4 * a4) / wn - ma * ma).clamp_min(0)
    vb = (pool(m4 * b4 * b4) / wn - mb * mb).clamp_min(0)
    cov = pool(m4 * a4 * b4) / wn - ma * mb
    # windows that are flat in the fixed image (air, shutters) carry no structure: left out;
    # a tiny floor keeps flat windows of the moving image finite
    ga = a4.flatten(1).var(1).reshape(-1, 1, 1, 1)
    gb = b4.flatten(1).var(1).reshape(-1, 1, 1, 1)
    local = cov / ((va + 1e-6 * ga) * (vb + 1e-6 * gb)).sqrt()
    keep = ((w > 0.75) & (vb > 1e-3 * gb)).to(a4)
    floor = 1.0  # no window kept: 0, not 0/0
    if weight_power > 0:
        keep = keep * (va / ga.clamp_min(1e-30)).detach().sqrt() ** weight_power
        floor = 1e-12  # the weights are fractions, not counts
    return ((local * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp_min(floor)).reshape(shape)


def patch_gradncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(patch NCC + gradient NCC) / 2: local structure, insensitive to smooth intensity trends,
    plus the placement of edges, which is where magnification (depth) shows."""
    return 0.5 * patch_ncc(a, b, mask) + 0.5 * gradncc(a, b, mask)


def multiscale_ncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, levels: int = 3) -> torch.Tensor:
    """The mean of the NCCs at full, half and quarter resolution (``levels`` scales)."""
    shape = a.shape[:-2]
    a4 = a.reshape(-1, 1, *a.shape[-2:])
    b4 = b.reshape(-1, 1, *b.shape[-2:])
    m4 = None if mask is None else mask.reshape(-1, 1, *mask.shape[-2:]).expand_as(a4).to(a4)
    total = torch.zeros(a4.shape[0], 1, dtype=a4.dtype, device=a4.device)
    for level in range(levels):
        if level:
            if min(a4.shape[-2:]) < 8:
                levels = level
                break
            a4, b4 = F.avg_pool2d(a4, 2), F.avg_pool2d(b4, 2)
            m4 = None if m4 is None else (F.avg_pool2d(m4, 2) > 0.999).to(a4)
        total = total + ncc(a4, b4, m4)
    return (total / levels).reshape(shape)


def local_zscore(x: torch.Tensor, patch: int = 9, floor: float = 1e-2) -> torch.Tensor:
    """(H, W) -> (H, W): each pixel minus its ``patch`` x ``patch`` mean, over that window's
    standard deviation; slow intensity trends and local contrast taken out. The variance
    has a floor of ``floor`` x the image's, so that noise in flat windows stays small."""
    x4 = x[None, None]
    pad = patch // 2
    m = F.avg_pool2d(F.pad(x4, (pad,) * 4, mode="replicate"), patch, 1)
    v = F.avg_pool2d(F.pad(x4 * x4, (pad,) * 4, mode="replicate"), patch, 1) - m * m
    return ((x4 - m) / (v.clamp_min(0) + floor * x.var() + 1e-12).sqrt())[0, 0]


@torch.no_grad()
def outlier_mask(drr: torch.Tensor, xray: torch.Tensor, mask: torch.Tensor | None = None, k: float = 4.0,
                 max_share: float = 0.15, patch: int = 9) -> torch.Tensor:  # fmt: skip
    """``mask`` (H, W; None = all) without the pixels the DRR cannot explain: instruments,
    implants, cables, anything the CT lacks.

    Both images are made locally comparable (``local_zscore``); a pixel whose difference
    exceeds ``k`` robust standard deviations (1.4826 x the median absolute difference
    inside the mask) is left out with its 3x3 neighbours, but never more than
    ``max_share`` of the mask (the largest differences go first). It is meant to be
    computed at a pose near the answer.
    """
    m = torch.ones_like(xray) if mask is None else (mask > 0.5).to(xray)
    r = (local_zscore(xray, patch) - local_zscore(drr, patch)).abs()
    inside = r[m > 0]
    if inside.numel() == 0:
        return m
    sigma = 1.4826 * float(inside.median())  # the differences' robust spread (the MAD's, for |r|)
    thr = max(k * sigma, float(torch.quantile(inside, 1.0 - max_share)))
    out = F.max_pool2d(((r > thr) & (m > 0)).to(xray)[None, None], 3, 1, 1)[0, 0]
    return m * (1.0 - out)


def blur(x: torch.Tensor, sigma_px: float | torch.Tensor) -> torch.Tensor:
    """(..., H, W) images blurred by a Gaussian of ``sigma_px`` pixels (one value, or one per
    image of the leading shape; <= 0 leaves an image unchanged), replicate borders."""
    x4 = x.reshape(-1, 1, *x.shape[-2:])
    s = torch.as_tensor(sigma_px, dtype=torch.float64).flatten().expand(x4.shape[0])
    return gaussian_blur_per_sample(x4, s).reshape(x.shape)


def with_blur(sim: Objective, sigma_px: float) -> Objective:
    """``sim`` with the moving image (the DRR) first blurred by ``sigma_px`` pixels: the
    X-ray's detector blur, which the DRR lacks (0: ``sim`` itself)."""
    if sigma_px <= 0:
        return sim

    def blurred(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return sim(blur(a, sigma_px), b, mask)

    return blurred


OBJECTIVES: dict[str, Objective] = {
    "ncc": ncc,
    "gradncc": gradncc,
    "local-gradncc": local_gradncc,
    "weighted-local-gradncc": weighted_local_gradncc,
    "ncc+gradncc": ncc_gradncc,
    "patch-ncc": patch_ncc,
    "patch-ncc+gradncc": patch_gradncc,
    "multiscale-ncc": multiscale_ncc,
}


def get_objective(name: str) -> Objective:
    """The objective called ``name`` (one of ``OBJECTIVES``)."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        # the message names what the user typed: ``xctreg register --similarity``
        raise XctregError(f"unknown similarity {name!r}; choose one of {', '.join(OBJECTIVES)}") from None
