"""X-ray tube spectra from spekpy, binned for a fast polyenergetic detector model."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from xctreg._fs import cache_dir, cached_arrays


@dataclass(frozen=True)
class Spectrum:
    """A binned spectrum: bin energies (keV) and detector weights summing to 1.

    ``weights`` are for an energy-integrating detector: photon fluence × E.
    """

    energies_kev: np.ndarray
    weights: np.ndarray

    @property
    def mean_kev(self) -> float:
        return float(np.sum(self.energies_kev * self.weights))


def spectrum_cache_path(kvp: float, al_mm: float, anode_angle_deg: float) -> Path:
    """Where spekpy's spectrum for these settings is kept in the user cache (``_fs.cache_dir``)."""
    from importlib.metadata import version

    name = f"spekpy-{version('spekpy')}-{kvp:g}kV-{al_mm:g}mmAl-{anode_angle_deg:g}deg.npz"
    return cache_dir() / "spectra" / name


@lru_cache(maxsize=32)
def _spekpy(kvp: float, al_mm: float, anode_angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """spekpy's (energies keV, fluence), from the user cache when there: spekpy takes about a
    second, which a fresh ``xctreg register`` process would otherwise pay for every renderer."""

    def compute() -> dict[str, np.ndarray]:
        import spekpy

        s = spekpy.Spek(kvp=kvp, th=anode_angle_deg, dk=0.5)
        if al_mm > 0:
            s.filter("Al", al_mm)
        k, f = s.get_spectrum()
        return {"k": np.asarray(k), "f": np.asarray(f)}

    def valid(z: dict[str, np.ndarray]) -> bool:
        return set(z) == {"k", "f"} and z["k"].ndim == 1 and z["k"].shape == z["f"].shape and z["k"].size > 1

    z = cached_arrays(spectrum_cache_path(kvp, al_mm, anode_angle_deg), compute, valid)
    return z["k"], z["f"]


def tube_spectrum(kvp: float = 90.0, al_mm: float = 4.0, n_bins: int = 8, anode_angle_deg: float = 12.0) -> Spectrum:
    """Tube spectrum (spekpy, tungsten anode) filtered by ``al_mm`` of aluminium, in ``n_bins`` bins.

    Bins are equal in energy from the lowest energy that carries signal to kVp;
    each bin sits at its fluence×E-weighted mean energy.
    """
    if not 20.0 <= kvp <= 150.0:
        raise ValueError(f"kVp must be in [20, 150], got {kvp}")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    k, f = _spekpy(float(kvp), float(al_mm), float(anode_angle_deg))
    signal = f * k
    keep = signal > signal.max() * 1e-4
    k, signal = k[keep], signal[keep]
    edges = np.linspace(k.min() - 1e-9, k.max() + 1e-9, n_bins + 1)
    idx = np.clip(np.digitize(k, edges) - 1, 0, n_bins - 1)
    w = np.bincount(idx, weights=signal, minlength=n_bins)
    e = np.bincount(idx, weights=signal * k, minlength=n_bins) / np.maximum(w, 1e-30)
    good = w > 0
    return Spectrum(energies_kev=e[good], weights=w[good] / w[good].sum())


def monoenergetic(kev: float) -> Spectrum:
    """A single-energy 'spectrum' (for comparisons and beam-hardening tests)."""
    return Spectrum(np.array([float(kev)]), np.array([1.0]))
