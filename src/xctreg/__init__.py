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

__all__ = ["Registrar", "Result", "XctregError", "__version__"]


def __getattr__(name: str):  # noqa: ANN202 - lazy, so that `import xctreg` stays light
    if name in ("Registrar", "Result"):
        from xctreg import register

        return getattr(register, name)
    raise AttributeError(f"module 'xctreg' has no attribute {name!r}")
