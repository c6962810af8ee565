"""The default C-arm geometry and the detector presets, in one place.

Nothing heavy is imported here: the command line reads these for its defaults.
"""

from __future__ import annotations

#: Source-detector distance of every preset (mm).
DEFAULT_SDD_MM = 1020.0
#: Source-isocenter distance of the reference view (mm).
DEFAULT_SID_MM = 750.0
#: The detector presets: (height, width, pixel spacing (dy, dx) in mm), at DEFAULT_SDD_MM.
#: ``paper`` is the method's 256² detector; ``quick`` the 128² one for CPU training.
PRESET_DETECTORS: dict[str, tuple[int, int, tuple[float, float]]] = {
    "paper": (256, 256, (1.6, 1.6)),
    "quick": (128, 128, (3.2, 3.2)),
}
