"""xctreg: automatic, patient-specific X-ray/CT registration.

Frames (docs/geometry.md explains them in full): world = CT physical space in
LPS millimetres, camera = C-arm source at the origin looking along +z towards
the detector, pose = ``T_cam_from_world``.
"""

from importlib.metadata import PackageNotFoundError, version

from xctreg.errors import XctregError

try:
    __version__ = version("xctreg")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["Registrar", "Result", "XctregError", "__version__"]


def __getattr__(name: str):  # noqa: ANN202 - lazy, so that `import xctreg` stays light
    if name in ("Registrar", "Result"):
        from xctreg import register

        return getattr(register, name)
    raise AttributeError(f"module 'xctreg' has no attribute {name!r}")
