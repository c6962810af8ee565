"""Pyramid levels of a model's CT kept in its folder, so that a fresh process refines without
reading and downsampling the full CT.

A level is the CT resampled (anti-aliased) to no axis finer than ``voxel_mm``, exactly what
``drr.pyramid_level`` computes. It is stored as ``MODEL_DIR/levels/level_<voxel>mm.npz``
(uncompressed arrays, loaded without pickle) with the SHA-256 of the CT it came from: a level
whose CT hash differs from the model's, or that does not load, is ignored and recomputed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from xctreg._fs import atomic_path
from xctreg.io.volume import Volume

LEVELS_DIR = "levels"
LEVEL_FORMAT = 1


def level_path(model_dir: str | Path, voxel_mm: float) -> Path:
    """Where the level of ``voxel_mm`` (mm) is kept in ``model_dir``."""
    return Path(model_dir) / LEVELS_DIR / f"level_{voxel_mm:.4f}mm.npz"


def save_level(path: str | Path, level: Volume, ct_sha256: str, voxel_mm: float) -> None:
    """Write ``level`` (HU float32, spacing, origin, direction; mm, LPS) atomically."""
    meta = json.dumps({"format": LEVEL_FORMAT, "ct_sha256": ct_sha256, "voxel_mm": float(voxel_mm)})
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, hu=level.hu.astype(np.float32), spacing=level.spacing, origin=level.origin,
                 direction=level.direction, meta=np.frombuffer(meta.encode(), dtype=np.uint8))  # fmt: skip


def load_level(path: str | Path, ct_sha256: str | None, voxel_mm: float) -> Volume | None:
    """The level stored at ``path`` when it was made from the CT with ``ct_sha256`` at
    ``voxel_mm``; None when it is absent, from another CT or unreadable (warned)."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            if meta.get("format") != LEVEL_FORMAT or meta.get("ct_sha256") != ct_sha256 or abs(meta.get("voxel_mm", -1) - voxel_mm) > 1e-6:
                return None
            vol = Volume(z["hu"], z["spacing"], z["origin"], z["direction"])
    except Exception as exc:  # noqa: BLE001 - a damaged file is recomputed, whatever numpy raises
        warnings.warn(f"ignoring the damaged CT level {p} ({type(exc).__name__}); it will be recomputed", stacklevel=2)
        return None
    if vol.hu.ndim != 3 or not np.all(np.isfinite(vol.hu)) or not np.all(vol.spacing > 0):
        warnings.warn(f"ignoring the damaged CT level {p}; it will be recomputed", stacklevel=2)
        return None
    return vol
