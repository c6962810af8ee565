"""Pyramid levels of a model's CT kept in its folder, so that a fresh process refines without
reading and downsampling the full CT.

A level is the CT resampled (anti-aliased) to no axis finer than ``voxel_mm``, exactly what
``drr.pyramid_level`` computes. It is stored as ``MODEL_DIR/levels/level_<voxel>mm.npz``
(uncompressed arrays, loaded without pickle) with the SHA-256 of the CT it came from: a level
whose CT hash differs from the model's, or that does not load, is ignored and recomputed.

A level also keeps the renderer's material volumes of it (air, soft tissue and bone partial
densities, g/cm³, for the default decomposition): computing them takes a fresh ``register``
0.06–0.08 s, loading and checking them about half that (issue #13). A level without them, or
with those of another decomposition, still loads; its materials are then computed as before.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from xctreg._fs import atomic_path
from xctreg.io.volume import Volume
from xctreg.physics.materials import DecompositionConfig

LEVELS_DIR = "levels"
LEVEL_FORMAT = 1


def level_path(model_dir: str | Path, voxel_mm: float) -> Path:
    """Where the level of ``voxel_mm`` (mm) is kept in ``model_dir``."""
    return Path(model_dir) / LEVELS_DIR / f"level_{voxel_mm:.4f}mm.npz"


def save_level(path: str | Path, level: Volume, ct_sha256: str, voxel_mm: float, materials: np.ndarray | None = None) -> None:
    """Write ``level`` (HU float32, spacing, origin, direction; mm, LPS) atomically, with its
    default-decomposition ``materials`` ((nk, nj, ni, 3) float32 g/cm³) when given."""
    info = {"format": LEVEL_FORMAT, "ct_sha256": ct_sha256, "voxel_mm": float(voxel_mm)}
    arrays = {"hu": level.hu.astype(np.float32), "spacing": level.spacing, "origin": level.origin, "direction": level.direction}
    if materials is not None:
        if materials.shape != (*level.hu.shape, 3):
            raise ValueError(f"materials of shape {materials.shape} do not fit a level of shape {level.hu.shape}")
        arrays["materials"] = np.asarray(materials, dtype=np.float32)
        info["decomposition"] = asdict(DecompositionConfig())
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays, meta=np.frombuffer(json.dumps(info).encode(), dtype=np.uint8))


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
            mats = z["materials"] if _default_materials(z.files, meta) else None
    except Exception as exc:  # noqa: BLE001 - a damaged file is recomputed, whatever numpy raises
        warnings.warn(f"ignoring the damaged CT level {p} ({type(exc).__name__}); it will be recomputed", stacklevel=2)
        return None
    if vol.hu.ndim != 3 or not np.all(np.isfinite(vol.hu)) or not np.all(vol.spacing > 0):
        warnings.warn(f"ignoring the damaged CT level {p}; it will be recomputed", stacklevel=2)
        return None
    if mats is not None and mats.dtype == np.float32 and mats.shape == (*vol.hu.shape, 3) and np.all(np.isfinite(mats)):
        from xctreg.render.drr import keep_material_volume

        keep_material_volume(vol, np.ascontiguousarray(mats))
    return vol


def _default_materials(files: list[str], meta: dict) -> bool:
    """Whether a level's arrays (``files``) and ``meta`` hold materials of the default decomposition."""
    return "materials" in files and meta.get("decomposition") == asdict(DecompositionConfig())


def has_materials(path: str | Path) -> bool:
    """Whether the level stored at ``path`` keeps material volumes of the default decomposition."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            return _default_materials(z.files, json.loads(bytes(z["meta"]).decode()))
    except Exception:  # noqa: BLE001 - unreadable: it has none to offer
        return False
