"""Rays from the camera (source at the origin, one per detector pixel centre (u, v) = (column, row) on the plane
z = sdd) into a volume's index space, clipped to the volume box."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xctreg.geometry import Camera, backproject, pixel_grid


@dataclass
class IndexRays:
    """Rays p(t) = origin + t·direction in voxel-index space; t is world mm along the ray.

    origin, direction: (B, R, 3); t0, t1: (B, R) entry and exit distances (mm),
    t1 <= t0 for rays that miss the volume.
    """

    origin: torch.Tensor
    direction: torch.Tensor
    t0: torch.Tensor
    t1: torch.Tensor


def ray_box_interval(
    origin: torch.Tensor, direction: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab method: entry and exit t (…,) of rays origin + t·direction through the box [lo, hi].

    Entry is clamped at 0 (the ray starts at its origin); t1 <= t0 means a miss.
    """
    safe = torch.where(direction.abs() < 1e-12, torch.full_like(direction, 1e-12), direction)
    ta, tb = (lo - origin) / safe, (hi - origin) / safe
    t0 = torch.minimum(ta, tb).amax(-1).clamp_min(0.0)
    t1 = torch.maximum(ta, tb).amin(-1)
    return t0, t1


def world_to_index_matrix(affine: torch.Tensor) -> torch.Tensor:
    """Inverse of a (4, 4) index->world affine."""
    return torch.linalg.inv(affine)


def make_rays(
    T: torch.Tensor,
    camera: Camera,
    affine: torch.Tensor,
    shape_ijk: tuple[int, int, int],
    uv: torch.Tensor | None = None,
    face_gradient: bool = True,
) -> IndexRays:
    """Cast one ray per pixel (or per ``uv`` point) for poses T (B, 4, 4) and clip to the box.

    ``affine`` is the volume's index->world (4, 4) map. The box is
    [-0.5, n - 0.5] on each index axis. Differentiable in T, the entry and exit
    distances too: where a CT is cut off through tissue (its cranio-caudal faces), how
    the crossing of that face moves with the pose is part of the gradient (unless
    ``face_gradient`` is False: then t0 and t1 are held fixed).
    """
    dtype = T.dtype
    if uv is None:
        uv = pixel_grid(camera, dtype=dtype, device=T.device)
    src, dirs = backproject(uv.to(dtype), T, camera)  # (B, 3), (B, R, 3), world
    inv = world_to_index_matrix(affine.to(dtype=dtype, device=T.device))
    M, b = inv[:3, :3], inv[:3, 3]
    o_idx = src @ M.T + b  # (B, 3)
    d_idx = dirs @ M.T  # (B, R, 3): index units per mm
    o = o_idx.unsqueeze(1).expand_as(d_idx)
    n = torch.tensor(shape_ijk, dtype=dtype, device=T.device)
    with torch.set_grad_enabled(face_gradient and torch.is_grad_enabled()):
        t0, t1 = ray_box_interval(o, d_idx, torch.full_like(n, -0.5), n - 0.5)
    return IndexRays(o, d_idx, t0, t1)
