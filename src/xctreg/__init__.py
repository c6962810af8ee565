"""xctreg: automatic, patient-specific X-ray/CT registration.

See ``../shared/SPEC.md`` (mirrored in docs/geometry.md) for the frames:
world = CT physical space in LPS millimetres, camera = C-arm source at the
origin looking along +z, pose = ``T_cam_from_world``.
"""

from importlib.metadata import PackageNotFoundError, version

from xctreg.errors import XctregError

try:
    __version__ = version("xctreg")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["XctregError", "__version__"]
