"""Energy-integrating detector: Beer–Lambert, noise, blur and scatter.

Input: material line integrals L (B, 3, H, W) in g/cm² (air, soft tissue,
bone). Output: attenuation images -log(I/I0) (B, 1, H, W), bone bright.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xctreg.errors import XctregError
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

    def __post_init__(self) -> None:
        """The same checks for the Python API and the command line (whose flags are named)."""
        if self.photons is not None and not (math.isfinite(self.photons) and self.photons > 0):
            raise XctregError(f"photons (--photons) must be positive, got {self.photons:g}")
        if not (math.isfinite(self.blur_px) and self.blur_px >= 0):
            raise XctregError(f"blur_px (--blur-px) must be non-negative, got {self.blur_px:g}")
        if not 0.0 <= self.scatter_fraction <= 0.9:
            raise XctregError(f"scatter_fraction (--scatter) must be in [0, 0.9], got {self.scatter_fraction:g}")
        if not (math.isfinite(self.scatter_sigma_frac) and self.scatter_sigma_frac > 0):
            raise XctregError(f"scatter_sigma_frac must be positive, got {self.scatter_sigma_frac:g}")


def beer_lambert(line_integrals: torch.Tensor, spectrum: Spectrum) -> torch.Tensor:
    """Normalised detected intensity I/I0 (B, 1, H, W) from (B, 3, H, W) g/cm².

    I/I0 = Σ_E w_E exp(-Σ_m (μ/ρ)_m(E) L_m).
    """
    mu = torch.as_tensor(attenuation_table(spectrum.energies_kev), dtype=line_integrals.dtype, device=line_integrals.device)
    w = torch.as_tensor(spectrum.weights, dtype=line_integrals.dtype, device=line_integrals.device)
    att = torch.einsum("me,bmhw->behw", mu, line_integrals)  # (B, E, H, W)
    return torch.einsum("e,behw->bhw", w, torch.exp(-att)).unsqueeze(1)


def beer_lambert_per_sample(line_integrals: torch.Tensor, spectra: Sequence[Spectrum]) -> torch.Tensor:
    """``beer_lambert`` with its own spectrum for each of the B images: (B, 3, H, W) g/cm² ->
    I/I0 (B, 1, H, W). The spectra's bins are padded with zero weights to a common count."""
    B = line_integrals.shape[0]
    if len(spectra) != B:
        raise ValueError(f"{len(spectra)} spectra for {B} images")
    n = max(len(sp.energies_kev) for sp in spectra)
    mu = torch.zeros(B, line_integrals.shape[1], n, dtype=torch.float64)
    w = torch.zeros(B, n, dtype=torch.float64)
    for b, sp in enumerate(spectra):
        k = len(sp.energies_kev)
        mu[b, :, :k] = torch.as_tensor(attenuation_table(sp.energies_kev))
        w[b, :k] = torch.as_tensor(sp.weights)
    mu = mu.to(device=line_integrals.device, dtype=line_integrals.dtype)
    w = w.to(device=line_integrals.device, dtype=line_integrals.dtype)
    att = torch.einsum("bme,bmhw->behw", mu, line_integrals)
    return torch.einsum("be,behw->bhw", w, torch.exp(-att)).unsqueeze(1)


def gaussian_blur_per_sample(img: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) images, each with its own sigma (B,) in pixels
    (<= 0: unchanged), replicate borders; one grouped convolution per axis for the batch."""
    B, C, H, W = img.shape
    sig = sigma_px.detach().to("cpu", torch.float64).reshape(B)
    r = int(round(3 * float(sig.max()))) if B else 0
    if r < 1:
        return img
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x[None] / sig.clamp_min(1e-6)[:, None]) ** 2)
    k = torch.where(sig[:, None] > 0, k, (x[None] == 0).double())
    k = (k / k.sum(1, keepdim=True)).to(img.device, img.dtype).repeat_interleave(C, 0)  # (B*C, K)
    y = F.pad(img.reshape(1, B * C, H, W), (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)
    y = F.conv2d(y, k[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


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
    """Scatter, blur and Poisson noise on I/I0, then -log; returns attenuation (B, 1, H, W).
    The same settings for every image (``apply_detector_per_sample`` does the work)."""
    B = intensity.shape[0]
    return apply_detector_per_sample(
        intensity,
        torch.full((B,), float(config.photons) if config.photons is not None else 0.0),
        torch.full((B,), float(config.blur_px)),
        torch.full((B,), float(config.scatter_fraction)),
        config.scatter_sigma_frac,
        generator,
    )


def apply_detector_per_sample(
    intensity: torch.Tensor,
    photons: torch.Tensor,
    blur_px: torch.Tensor,
    scatter_fraction: torch.Tensor,
    scatter_sigma_frac: float = 0.15,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scatter, blur and Poisson noise on I/I0 with settings per image, then -log: (B, 1, H, W)
    -> attenuation (B, 1, H, W). ``photons`` (B,): counts of the open beam (<= 0 or not
    finite: no noise); ``blur_px`` (B,) sigma in pixels; ``scatter_fraction`` (B,). The
    Poisson draws come from ``generator`` on its own device, so a CPU generator gives the
    same noise on any device."""
    B = intensity.shape[0]
    view = (B, 1, 1, 1)
    s = scatter_fraction.to(intensity.device, intensity.dtype).reshape(view)
    img = intensity
    if bool((s > 0).any()):
        img = (1.0 - s) * img + s * _scatter(img, scatter_sigma_frac)
    img = gaussian_blur_per_sample(img, blur_px)
    n0 = photons.to(intensity.device, torch.float32).reshape(view)
    noisy = torch.isfinite(n0) & (n0 > 0)
    if bool(noisy.any()):
        n0 = torch.where(noisy, n0, torch.ones_like(n0))
        rate = (img * n0).clamp_min(0.0).float()
        dev = generator.device if generator is not None else rate.device
        counts = torch.poisson(rate.to(dev), generator=generator).to(rate.device)
        img = torch.where(noisy, (counts.clamp_min(0.5) / n0).to(img.dtype), img)
    return -torch.log(img.clamp_min(1e-12))
