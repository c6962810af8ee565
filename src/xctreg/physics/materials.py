"""HU -> density, soft air/soft-tissue/bone decomposition, NIST mass attenuation.

The density map is the piecewise-linear one used in the field (DeepDRR):
ρ = 1.030 + 0.001029·HU below 0 HU and 1.030 + 0.0005886·HU above, clamped at 0.
Mass attenuation coefficients are mixed from xraydb's elemental (NIST/Elam)
data with ICRU-44 elemental mass fractions: μ/ρ = Σ wᵢ (μ/ρ)ᵢ.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from xctreg._fs import cache_dir, cached_arrays

#: Elemental mass fractions: dry air (NIST) and ICRU-44 soft tissue / cortical bone.
COMPOSITIONS: dict[str, dict[str, float]] = {
    "air": {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827},
    "soft_tissue": {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003, "S": 0.003, "Cl": 0.002, "K": 0.003},
    "water": {"H": 0.111894, "O": 0.888106},
    "bone": {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002, "P": 0.103, "S": 0.003, "Ca": 0.225},
}
#: Channel order of every material tensor in xctreg.
MATERIALS: tuple[str, ...] = ("air", "soft_tissue", "bone")


@dataclass(frozen=True)
class DecompositionConfig:
    """Soft thresholds (HU) between air|soft tissue and soft tissue|bone.

    Weights are logistic functions of HU with the given widths (HU), so they
    are smooth and sum to one: w_air = 1 - σ((HU - air_hu)/air_width),
    w_bone = σ((HU - bone_hu)/bone_width), w_soft = the rest.
    """

    air_hu: float = -800.0
    air_width_hu: float = 25.0
    bone_hu: float = 350.0
    bone_width_hu: float = 50.0


def hu_to_density(hu: torch.Tensor) -> torch.Tensor:
    """Mass density (g/cm³) from HU, piecewise linear, clamped at >= 0."""
    rho = torch.where(hu < 0, 1.030 + 0.001029 * hu, 1.030 + 0.0005886 * hu)
    return rho.clamp_min(0.0)


def decompose(hu: torch.Tensor, config: DecompositionConfig | None = None) -> torch.Tensor:
    """Soft material weights (…, 3) for (air, soft tissue, bone); they sum to 1."""
    c = config or DecompositionConfig()
    s_air = torch.sigmoid((hu - c.air_hu) / c.air_width_hu)
    w_bone = torch.sigmoid((hu - c.bone_hu) / c.bone_width_hu)
    w_soft = (s_air - w_bone).clamp_min(0.0)
    return torch.stack([1.0 - s_air, w_soft, w_bone], dim=-1)


def material_densities(hu: torch.Tensor, config: DecompositionConfig | None = None) -> torch.Tensor:
    """Per-material partial densities ρ·w_m (…, 3) in g/cm³ (air, soft tissue, bone)."""
    return hu_to_density(hu).unsqueeze(-1) * decompose(hu, config)


def attenuation_cache_path(material: str, energies_kev: tuple[float, ...]) -> Path:
    """Where μ/ρ of ``material`` at these energies is kept in the user cache (``_fs.cache_dir``)."""
    from importlib.metadata import version

    key = hashlib.sha256(np.asarray(energies_kev, dtype=np.float64).tobytes()).hexdigest()[:16]
    return cache_dir() / "attenuation" / f"xraydb-{version('xraydb')}-{material}-{key}.npz"


@lru_cache(maxsize=64)
def _mass_attenuation_cached(material: str, energies_kev: tuple[float, ...]) -> tuple[float, ...]:
    """From the user cache when there: importing xraydb takes 0.7-1.3 s of a fresh process."""

    def compute() -> dict[str, np.ndarray]:
        import xraydb

        comp = COMPOSITIONS[material]
        e_ev = np.asarray(energies_kev, dtype=np.float64) * 1e3
        return {"mu": sum(w * np.asarray(xraydb.mu_elam(el, e_ev, kind="total"), dtype=np.float64) for el, w in comp.items())}

    def valid(z: dict[str, np.ndarray]) -> bool:
        return set(z) == {"mu"} and np.atleast_1d(z["mu"]).shape == (len(energies_kev),)

    mu = cached_arrays(attenuation_cache_path(material, energies_kev), compute, valid)["mu"]
    return tuple(float(v) for v in np.atleast_1d(mu))


def mass_attenuation(material: str, energies_kev: np.ndarray | list[float] | float) -> np.ndarray:
    """Total mass attenuation μ/ρ (cm²/g, coherent scattering included) at energies in keV."""
    if material not in COMPOSITIONS:
        raise ValueError(f"unknown material {material!r}; choose from {sorted(COMPOSITIONS)}")
    e = tuple(float(v) for v in np.atleast_1d(np.asarray(energies_kev, dtype=np.float64)))
    return np.array(_mass_attenuation_cached(material, e))


def attenuation_table(energies_kev: np.ndarray) -> np.ndarray:
    """(3, n_energies) μ/ρ for MATERIALS at the given energies (cm²/g)."""
    return np.stack([mass_attenuation(m, energies_kev) for m in MATERIALS])
