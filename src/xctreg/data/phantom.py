"""A procedural, deterministic torso CT phantom in HU.

Anatomy is defined in millimetres in LPS world coordinates centred on the
volume (x Left, y Posterior, z Superior), so any size/spacing samples the same
body. It has skin, fat, muscle, two lungs, a heart, a liver, kidneys, a spine of
vertebrae with discs and spinous processes, ribs, a sternum and a pelvis.

Deliberate asymmetries make every pose in the default ranges unambiguous:

* left/right: the heart sits left-anterior, the liver right, the left lung is
  smaller than the right, the left kidney is higher and a 12th rib exists only
  on the left;
* head/foot: lungs, heart and sternum above, liver, kidneys and pelvis below;
* anterior/posterior: spine posterior, sternum anterior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from xctreg.errors import XctregError
from xctreg.io.volume import Volume

AIR, FAT, SOFT, SKIN, LUNG = -1000.0, -100.0, 45.0, 30.0, -820.0
BONE_CORTICAL, BONE_CANCELLOUS, RIB, DISC = 800.0, 250.0, 650.0, 90.0


@dataclass(frozen=True)
class PhantomConfig:
    """Phantom sampling: ``size`` in voxels (x, y, z) and ``spacing_mm`` (x, y, z).

    The default, 128³ at 3 mm, covers a 384 mm cube and keeps tests fast.
    """

    size: tuple[int, int, int] = (128, 128, 128)
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)
    smooth_mm: float = 1.0  # Gaussian partial-volume blur (sigma, mm); 0 disables

    def __post_init__(self) -> None:
        if len(self.size) != 3 or min(self.size) < 8:
            raise XctregError(f"phantom size must be 3 values >= 8 voxels, got {self.size}")
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise XctregError(f"phantom spacing must be 3 positive values in mm, got {self.spacing_mm}")


def _ellipsoid(X, Y, Z, c, r):  # noqa: ANN001, ANN202 - broadcast arrays
    return ((X - c[0]) / r[0]) ** 2 + ((Y - c[1]) / r[1]) ** 2 + ((Z - c[2]) / r[2]) ** 2


def _box(X, Y, Z, lo, hi):  # noqa: ANN001, ANN202
    return (X >= lo[0]) & (X <= hi[0]) & (Y >= lo[1]) & (Y <= hi[1]) & (Z >= lo[2]) & (Z <= hi[2])


def make_phantom(config: PhantomConfig | None = None) -> Volume:
    """Build the torso phantom (HU, float32) as a Volume centred on the world origin."""
    cfg = config or PhantomConfig()
    nx, ny, nz = cfg.size
    sx, sy, sz = cfg.spacing_mm
    x = ((np.arange(nx) - (nx - 1) / 2.0) * sx).astype(np.float32)
    y = ((np.arange(ny) - (ny - 1) / 2.0) * sy).astype(np.float32)
    z = ((np.arange(nz) - (nz - 1) / 2.0) * sz).astype(np.float32)
    X, Y, Z = x[None, None, :], y[None, :, None], z[:, None, None]
    full = np.broadcast_shapes(X.shape, Y.shape, Z.shape)
    hu = np.full(full, AIR, dtype=np.float32)

    # Body: an elliptical cylinder, slightly wider at the chest than the abdomen.
    ax = 150.0 + 10.0 * np.tanh(Z / 80.0)
    ay = 105.0 + 0.0 * Z
    rho_body = np.sqrt((X / ax) ** 2 + (Y / ay) ** 2)
    body = rho_body <= 1.0
    hu[body] = SKIN
    inner = np.sqrt((X / (ax - 3)) ** 2 + (Y / (ay - 3)) ** 2) <= 1.0
    hu[np.broadcast_to(inner, full)] = FAT
    muscle = np.sqrt((X / (ax - 18)) ** 2 + (Y / (ay - 16)) ** 2) <= 1.0
    texture = 8.0 * np.sin(X / 9.0) * np.sin(Y / 11.0) * np.sin(Z / 13.0)
    hu = np.where(muscle, SOFT + texture, hu).astype(np.float32)

    # Lungs (right larger), heart left-anterior, liver right, kidneys (left higher).
    lung_r = _ellipsoid(X, Y, Z, (-68, 0, 95), (58, 66, 82)) <= 1
    lung_l = _ellipsoid(X, Y, Z, (72, 0, 105), (46, 60, 70)) <= 1
    lung_tex = 35.0 * np.sin(X / 4.0 + Z / 7.0) * np.cos(Y / 5.0)
    hu = np.where(lung_r | lung_l, LUNG + lung_tex, hu).astype(np.float32)
    hu[_ellipsoid(X, Y, Z, (28, -38, 48), (52, 42, 48)) <= 1] = 40.0
    hu[(_ellipsoid(X, Y, Z, (-55, 5, -25), (78, 62, 45)) <= 1) & ~(lung_r | lung_l)] = 60.0
    hu[_ellipsoid(X, Y, Z, (62, 48, -60), (22, 18, 42)) <= 1] = 32.0
    hu[_ellipsoid(X, Y, Z, (-62, 48, -85), (22, 18, 42)) <= 1] = 32.0

    # Spine: vertebral bodies (cortical shell, cancellous core), discs, spinous processes.
    yc = 42.0
    rv = ((X / 20.0) ** 2 + ((Y - yc) / 16.0) ** 2) <= 1.0
    rv_core = ((X / 16.0) ** 2 + ((Y - yc) / 12.0) ** 2) <= 1.0
    canal = ((X / 8.0) ** 2 + ((Y - (yc + 26)) / 8.0) ** 2) <= 1.0
    for zc in np.arange(-150.0, 185.0, 28.0):
        dz = np.abs(Z - zc)
        hu[np.broadcast_to(rv & (dz <= 11), full)] = BONE_CORTICAL
        hu[np.broadcast_to(rv_core & (dz <= 9), full)] = BONE_CANCELLOUS
        hu[np.broadcast_to(rv & (dz > 11) & (dz <= 14), full)] = DISC
        arch = (((X / 16.0) ** 2 + ((Y - (yc + 26)) / 13.0) ** 2) <= 1.0) & ~canal & (dz <= 8)
        hu[np.broadcast_to(arch, full)] = 500.0
        hu[_box(X, Y, Z, (-5, yc + 36, zc - 7), (5, yc + 56, zc + 5))] = 500.0

    # Ribs: 11 pairs plus a 12th on the left only, sloping down towards the front.
    ra, rb = ax - 26.0, ay - 22.0
    rho = np.sqrt((X / ra) ** 2 + ((Y - 5.0) / rb) ** 2)
    sin_t = ((Y - 5.0) / rb) / np.maximum(rho, 1e-6)  # +1 posterior, -1 anterior
    radial = np.abs(rho - 1.0) * 0.5 * (ra + rb)
    not_front = ~((np.abs(X) < 30.0) & (Y < 0.0))
    not_spine = ~((np.abs(X) < 24.0) & (Y > 0.0))
    levels = [(z0, "both") for z0 in np.arange(160.0, -16.0, -16.0)] + [(-24.0, "left")]
    for z0, side in levels:
        zc_rib = z0 - 18.0 * (1.0 - sin_t)
        rib = (radial <= 5.0) & (np.abs(Z - zc_rib) <= 4.5) & not_front & not_spine
        if side == "left":
            rib &= (X > 0) & (sin_t > -0.2)
        hu[rib] = RIB

    # Sternum (manubrium wider on top), anterior midline.
    hu[_box(X, Y, Z, (-13, -(ay - 14), 20), (13, -(ay - 28), 125)) & (Z < 125)] = 450.0
    hu[_box(X, Y, Z, (-24, -(ay - 14), 125), (24, -(ay - 30), 150))] = 450.0

    # Pelvis: iliac wing shells, a sacrum and a pubic arch.
    for sgn in (-1.0, 1.0):
        e = _ellipsoid(X, Y, Z, (sgn * 82, 28, -150), (48, 24, 44))
        hu[(e <= 1.0) & (e >= 0.72) & (Z <= -118)] = 600.0
    hu[_box(X, Y, Z, (-32, 42, -190), (32, 72, -122))] = 420.0
    hu[(_ellipsoid(X, Y, Z, (0, -62, -188), (62, 14, 12)) <= 1) & (np.abs(X) > 8)] = 620.0

    hu = np.where(np.broadcast_to(body, full), hu, AIR).astype(np.float32)
    vol = Volume(hu=hu, spacing=np.array(cfg.spacing_mm), origin=np.array([x[0], y[0], z[0]], dtype=np.float64))
    if cfg.smooth_mm > 0:
        img = sitk.SmoothingRecursiveGaussian(vol.to_sitk(), float(cfg.smooth_mm))
        vol = Volume.from_sitk(img)
    return vol
