"""Energy-integrating detector: Beer–Lambert, noise, blur and scatter.

Input: material line integrals L (B, 3, H, W) in g/cm² (air, soft tissue,
bone). Output: attenuation images -log(I/I0) (B, 1, H, W), bone bright.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xctreg.physics.materials import attenuation_table
from xctreg.physics.spectrum import Spectrum


@dataclass(frozen=True)
class DetectorConfig:
    """Optional detector effects (all off by default, so rendering is deterministic).

    Attributes:
        photons: mean photon count per pixel of the unattenuated beam; None = no noise.
        blur_px: Gaussian detector blur sigma in pixels; 0 = none.
        scatter_fraction: share of the detected signal that is scatter (0..0.9),
            modelled as a heavily blurred copy of the primary image.
        scatter_sigma_frac: scatter kernel sigma as a fraction of the image size.
    """

    photons: float | None = None
    blur_px: float = 0.0
    scatter_fraction: float = 0.0
    scatter_sigma_frac: float = 0.15


def beer_lambert(line_integrals: torch.Tensor, spectrum: Spectrum) -> torch.Tensor:
    """Normalised detected intensity I/I0 (B, 1, H, W) from (B, 3, H, W) g/cm².

    I/I0 = Σ_E w_E exp(-Σ_m (μ/ρ)_m(E) L_m).
    """
    mu = torch.as_tensor(attenuation_table(spectrum.energies_kev), dtype=line_integrals.dtype, device=line_integrals.device)
    w = torch.as_tensor(spectrum.weights, dtype=line_integrals.dtype, device=line_integrals.device)
    att = torch.einsum("me,bmhw->behw", mu, line_integrals)  # (B, E, H, W)
    return torch.einsum("e,behw->bhw", w, torch.exp(-att)).unsqueeze(1)


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    import kornia

    k = int(2 * round(3 * sigma) + 1)
    return kornia.filters.gaussian_blur2d(img, (k, k), (sigma, sigma), border_type="replicate")


def _scatter(img: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    h, w = img.shape[-2:]
    small = F.interpolate(img, size=(max(4, h // 8), max(4, w // 8)), mode="area")
    sigma = max(0.5, sigma_frac * small.shape[-1])
    small = _gaussian_blur(small, sigma)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def apply_detector(
    intensity: torch.Tensor, config: DetectorConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Scatter, blur and Poisson noise on I/I0, then -log; returns attenuation (B, 1, H, W)."""
    img = intensity
    if config.scatter_fraction > 0:
        s = float(config.scatter_fraction)
        img = (1.0 - s) * img + s * _scatter(img, config.scatter_sigma_frac)
    if config.blur_px > 0:
        img = _gaussian_blur(img, float(config.blur_px))
    if config.photons is not None:
        n0 = float(config.photons)
        counts = torch.poisson((img * n0).clamp_min(0.0).float(), generator=generator).to(img.dtype)
        img = counts.clamp_min(0.5) / n0
    return -torch.log(img.clamp_min(1e-12))
