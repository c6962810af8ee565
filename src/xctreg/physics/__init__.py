"""X-ray physics: HU -> density -> materials, NIST attenuation, tube spectra, detector.

Units: density g/cm³, mass attenuation cm²/g, line integrals of density g/cm²,
energies keV.
"""

from xctreg.physics.detector import DetectorConfig, apply_detector, beer_lambert
from xctreg.physics.materials import (
    MATERIALS,
    DecompositionConfig,
    decompose,
    hu_to_density,
    mass_attenuation,
    material_densities,
)
from xctreg.physics.spectrum import Spectrum, tube_spectrum

__all__ = [
    "MATERIALS",
    "DecompositionConfig",
    "DetectorConfig",
    "Spectrum",
    "apply_detector",
    "beer_lambert",
    "decompose",
    "hu_to_density",
    "mass_attenuation",
    "material_densities",
    "tube_spectrum",
]
