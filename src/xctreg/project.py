"""Draw what was planned on the CT (landmarks, trajectories, segmentations) onto the X-ray.

``xctreg project RESULT.json --xray XRAY [--points P.csv] [--labels SEG.nii.gz] --out PNG``

Frames and units (as in docs/geometry.md):

* world: the CT's LPS space in mm, as SimpleITK reads it (a segmentation saved
  from the same CT shares it). Points given in RAS (3D Slicer) are converted with
  (x, y, z)_LPS = (-x, -y, z)_RAS;
* pose: ``T_cam_from_world`` (4x4, mm) from a pose or result JSON;
* camera: source at the origin, principal ray +z, detector z = sdd; a point
  projects to u = fx·x/z + cx (column) and v = fy·y/z + cy (row) in pixels, pixel
  centres at integers, so pixel (row r, col k) covers u in [k-0.5, k+0.5],
  v in [r-0.5, r+0.5]. ``depth`` is the camera z (mm) along the principal ray.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from numba import njit

from xctreg._fs import atomic_path, read_json
from xctreg.errors import XctregError
from xctreg.geometry import Camera, Pose, project, projection_matrix, read_camera
from xctreg.io.volume import Volume, read_volume
from xctreg.io.xray import read_xray

#: Output columns of :func:`write_points_csv`.
POINT_COLUMNS = ("name", "u_px", "v_px", "row", "col", "depth_mm", "inside")

#: Label silhouettes are rasterised on a detector grid this many times finer, then
#: a pixel is set when 3 of its 2x2 sub-pixels are (see :func:`label_silhouette`).
_SUPER = 2
#: Largest projected sample spacing on a label's surface, in sub-pixels.
_SAMPLE_PX = 0.5
#: Cap on the samples per voxel edge (a voxel projecting to > 64 px is sampled coarser).
_MAX_SUB = 256


# --------------------------------------------------------------------------- points
def read_points_csv(path: str | os.PathLike[str], ras: bool = False) -> tuple[list[str], np.ndarray]:
    """Read named world points from a CSV with a header row.

    Columns ``name,x,y,z`` in any order (case-insensitive; ``label`` is accepted for
    ``name``), extra columns ignored. Without a name column the points are called
    p0, p1, ... Lines starting with ``#`` are skipped.

    Args:
        path: the CSV file.
        ras: the coordinates are RAS mm (3D Slicer's convention); they are converted
            to LPS by negating x and y.
    Returns:
        names (N) and points (N, 3) in world LPS mm.
    Raises:
        XctregError (one line): missing file, missing x/y/z columns, a non-numeric or
        non-finite value (with its line number), no data rows.
    """
    p = Path(path)
    if not p.is_file():
        raise XctregError(f"points CSV not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise XctregError(f"cannot read points CSV {p}: {str(exc).splitlines()[0][:200]}") from None
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise XctregError(f"points CSV {p} is empty; it needs a header name,x,y,z and one row per point")
    try:
        rows = list(csv.reader([ln for _, ln in lines], skipinitialspace=True))
    except csv.Error as exc:
        raise XctregError(f"points CSV {p} is not valid CSV: {exc}") from None
    header = [h.strip().lower() for h in rows[0]]
    col = {h: i for i, h in reversed(list(enumerate(header)))}  # first occurrence wins
    missing = [c for c in ("x", "y", "z") if c not in col]
    if missing:
        got = ",".join(rows[0])[:120]
        raise XctregError(f"points CSV {p} needs the columns name,x,y,z; got {got!r} (no {', '.join(missing)})")
    name_col = col.get("name", col.get("label"))
    names: list[str] = []
    pts: list[list[float]] = []
    for (line_no, _), row in zip(lines[1:], rows[1:], strict=True):
        vals = []
        for c in ("x", "y", "z"):
            i = col[c]
            cell = row[i].strip() if i < len(row) else ""
            try:
                v = float(cell)
            except ValueError:
                raise XctregError(f"points CSV {p} line {line_no}: {c} = {cell!r} is not a number") from None
            if not math.isfinite(v):
                raise XctregError(f"points CSV {p} line {line_no}: {c} = {cell!r} is not finite")
            vals.append(v)
        name = row[name_col].strip() if name_col is not None and name_col < len(row) else ""
        names.append(name or f"p{len(pts)}")
        pts.append(vals)
    if not pts:
        raise XctregError(f"points CSV {p} has a header but no points")
    xyz = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    if ras:
        xyz = xyz * np.array([-1.0, -1.0, 1.0])
    return names, xyz


def _as_matrix(T: Any) -> np.ndarray:
    if isinstance(T, Pose):
        T = T.T_cam_from_world
    if isinstance(T, torch.Tensor):
        T = T.detach().cpu().numpy()
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise XctregError(f"T_cam_from_world must be 4x4, got shape {T.shape}")
    return T


def project_points(points_lps: np.ndarray, T: Any, camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points onto the detector.

    Args:
        points_lps: (N, 3) world LPS mm.
        T: ``T_cam_from_world`` (4x4, mm), numpy, torch or a :class:`Pose`.
        camera: the detector.
    Returns:
        uv (N, 2) pixels (u = column, v = row; NaN for points at or behind the
        source, whose projection is meaningless), depth (N,) camera z in mm, and
        inside (N,) bool: in front of the source and within the image
        (-0.5 <= u <= width-0.5, -0.5 <= v <= height-0.5).
    """
    pts = np.asarray(points_lps, dtype=np.float64).reshape(-1, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv_t, z_t = project(torch.from_numpy(pts), torch.from_numpy(_as_matrix(T)), camera)
    uv, depth = uv_t.numpy().copy(), z_t.numpy().copy()
    front = depth > 0
    uv[~front] = np.nan
    with np.errstate(invalid="ignore"):
        inside = (
            front
            & (uv[:, 0] >= -0.5)
            & (uv[:, 0] <= camera.width - 0.5)
            & (uv[:, 1] >= -0.5)
            & (uv[:, 1] <= camera.height - 0.5)
        )
    return uv, depth, inside


def write_points_csv(
    path: str | os.PathLike[str], names: list[str], uv: np.ndarray, depth: np.ndarray, inside: np.ndarray
) -> Path:
    """Write projected points atomically as CSV: ``name,u_px,v_px,row,col,depth_mm,inside``.

    u_px / col is the column and v_px / row the row, in pixels (pixel centres at
    integers, sub-pixel values kept); depth_mm is the camera z (mm); inside is
    ``true`` or ``false``. Undefined values (points behind the source) are empty.
    """
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)

    def f(x: float, nd: int) -> str:
        return f"{x:.{nd}f}" if math.isfinite(x) else ""

    p = Path(path)
    with atomic_path(p) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(POINT_COLUMNS)
            for n, (u, v), d, ins in zip(names, uv, np.asarray(depth, dtype=np.float64), np.asarray(inside), strict=True):
                w.writerow([n, f(u, 4), f(v, 4), f(v, 4), f(u, 4), f(d, 3), "true" if ins else "false"])
    return p


# --------------------------------------------------------------------------- labels
def read_labels(path: str | os.PathLike[str]) -> Volume:
    """Read a label volume (segmentation: NIfTI, NRRD, MHA...) in world LPS mm; values unchecked.

    Raises XctregError (one line) for a missing or unreadable file, a multi-component
    image or one that is not 3D.
    """
    p = Path(path)
    if not p.exists():
        raise XctregError(f"labels not found: {p}")
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        reason = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "unknown reason")
        raise XctregError(f"cannot read labels {p}: {reason[:200]}") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise XctregError(f"labels {p.name} have {img.GetNumberOfComponentsPerPixel()} components per voxel; expected one label value")
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3 or min(img.GetSize()) < 1:
        raise XctregError(f"labels {p.name} are a {img.GetDimension()}D image; a segmentation must be a 3D volume")
    return Volume.from_sitk(img, path=p)


def _same_grid(a: Volume, b: Volume) -> bool:
    """Same size, and spacing, origin (to 1% of a voxel) and direction (1e-4) within tolerance."""
    return (
        a.hu.shape == b.hu.shape
        and np.allclose(a.spacing, b.spacing, rtol=1e-4, atol=1e-6)
        and np.all(np.abs(a.origin - b.origin) <= 0.01 * np.minimum(a.spacing, b.spacing).min())
        and np.allclose(a.direction, b.direction, atol=1e-4)
    )


def _describe_grid(v: Volume) -> str:
    ni, nj, nk = v.shape_ijk
    sp = "x".join(f"{s:g}" for s in v.spacing)
    org = ", ".join(f"{o:.1f}" for o in v.origin)
    return f"{ni}x{nj}x{nk} at {sp} mm, origin ({org})"


def _resample_labels(labels: Volume, ct: Volume, name: str) -> Volume:
    """Nearest-neighbour resampling of ``labels`` onto ``ct``'s grid (0 outside)."""
    lo_l, hi_l = labels.corners_world().min(0), labels.corners_world().max(0)
    lo_c, hi_c = ct.corners_world().min(0), ct.corners_world().max(0)
    if np.any(np.minimum(hi_l, hi_c) <= np.maximum(lo_l, lo_c)):
        box = lambda lo, hi: "..".join(f"({', '.join(f'{v:.0f}' for v in x)})" for x in (lo, hi))  # noqa: E731
        raise XctregError(
            f"{name} do not overlap the CT: labels span {box(lo_l, hi_l)} mm, the CT {box(lo_c, hi_c)} mm (LPS); "
            "are they from this CT?"
        )
    img = sitk.GetImageFromArray(labels.hu.astype(np.int32))
    img.SetSpacing(tuple(float(s) for s in labels.spacing))
    img.SetOrigin(tuple(float(o) for o in labels.origin))
    img.SetDirection(tuple(float(d) for d in labels.direction.reshape(-1)))
    f = sitk.ResampleImageFilter()
    f.SetSize([int(n) for n in ct.shape_ijk])
    f.SetOutputSpacing(tuple(float(s) for s in ct.spacing))
    f.SetOutputOrigin(tuple(float(o) for o in ct.origin))
    f.SetOutputDirection(tuple(float(d) for d in ct.direction.reshape(-1)))
    f.SetInterpolator(sitk.sitkNearestNeighbor)
    f.SetDefaultPixelValue(0)
    f.SetOutputPixelType(sitk.sitkInt32)
    out = Volume.from_sitk(f.Execute(img), path=labels.path)
    return out


def _check_labels(labels: Volume, name: str) -> np.ndarray:
    """The label values as int64 (…) after validation; raises XctregError."""
    hu = np.asarray(labels.hu)
    if hu.ndim != 3:
        raise XctregError(f"{name} are a {hu.ndim}D array; a segmentation must be a 3D volume")
    if hu.size == 0:
        raise XctregError(f"{name} are empty")
    if not np.all(np.isfinite(hu)):
        raise XctregError(f"{name} have non-finite (NaN/inf) values; a segmentation holds integer labels")
    if not np.all(labels.spacing > 0) or not np.all(np.isfinite(labels.spacing)):
        raise XctregError(f"{name} have non-positive spacing {tuple(labels.spacing)}")
    frac = hu != np.round(hu)
    if np.any(frac):
        bad = float(hu[frac].flat[0])
        raise XctregError(
            f"{name} have non-integer values (e.g. {bad:g}); give a label map (0 = background, 1, 2, ... = structures), "
            "not a probability map or an image"
        )
    if np.abs(hu).max() > 2**31 - 1:
        raise XctregError(f"{name} have label values beyond the 32-bit range")
    return hu.astype(np.int64)


@njit(cache=True)
def _splat(h0: np.ndarray, dh: np.ndarray, sup: float, fine: np.ndarray) -> None:
    """Set the sub-pixels hit by samples h0[f] + dh[s] (homogeneous z·(u, v, 1), pixels).

    A pixel coordinate u maps to the sub-pixel coordinate sup·u + (sup-1)/2; each
    sample marks its nearest sub-pixel. Samples at or behind the source are skipped.
    """
    hs, ws = fine.shape
    shift = (sup - 1.0) / 2.0 + 0.5
    for f in range(h0.shape[0]):
        for s in range(dh.shape[0]):
            z = h0[f, 2] + dh[s, 2]
            if z <= 1e-9:
                continue
            us = math.floor(sup * (h0[f, 0] + dh[s, 0]) / z + shift)
            vs = math.floor(sup * (h0[f, 1] + dh[s, 1]) / z + shift)
            if 0 <= us < ws and 0 <= vs < hs:
                fine[int(vs), int(us)] = True


def label_silhouette(mask: np.ndarray, affine: np.ndarray, T: Any, camera: Camera) -> np.ndarray:
    """The projection of the union of ``mask``'s voxels on the detector, (H, W) bool.

    A pixel is set when the projected solid covers its centre, to within a quarter
    pixel at the rim (so the 0.5-contour of the mask follows the true outline).

    The silhouette of a solid is the projection of its surface, so only the exposed
    voxel faces are sampled, each on a grid whose projected spacing is at most a
    quarter pixel: a voxel larger than a pixel leaves no gaps and one smaller no
    holes. The samples are rounded onto a detector grid twice as fine, a 3x3 closing
    there fills the remaining pin-holes, and a pixel is set when at least 3 of its
    2x2 sub-pixels are (a sub-pixel is set when the solid touches it, so this is
    the pixel-centre test). Samples at or behind the source are dropped.

    Args:
        mask: (nk, nj, ni) bool, the structure's voxels.
        affine: 4x4 continuous index (i, j, k) -> world LPS mm (``Volume.affine``).
        T: ``T_cam_from_world`` (4x4, mm).
        camera: the detector.
    """
    from scipy import ndimage

    H, W = camera.height, camera.width
    if not mask.any():
        return np.zeros((H, W), dtype=bool)
    Tm = _as_matrix(T)
    affine = np.asarray(affine, dtype=np.float64)
    M = Tm @ affine  # continuous index (i, j, k, 1) -> camera mm
    P = projection_matrix(Tm, camera) @ affine  # index -> z·(u, v, 1)
    # the nearest depth of the mask's box bounds the projected size of one index step
    n = np.array(mask.shape[::-1], dtype=np.float64)  # (ni, nj, nk)
    box = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5) for c in (-0.5, n[2] - 0.5)])
    depth = box @ M[2, :3] + M[2, 3]
    if depth.max() <= 0:
        return np.zeros((H, W), dtype=bool)
    z_min = max(float(depth.min()), 1e-3)
    step_px = max(camera.fx, camera.fy) * np.linalg.norm(M[:3, :3], axis=0) / z_min  # per index axis (i, j, k)
    n_sub = np.clip(np.ceil(step_px * _SUPER / _SAMPLE_PX), 1, _MAX_SUB).astype(int)
    fine = np.zeros((_SUPER * H, _SUPER * W), dtype=bool)  # sub-pixel s is centred at u = (s - (SUPER-1)/2) / SUPER
    pad = np.pad(mask, 1)
    for axis in range(3):  # index axis i, j, k (array axis 2, 1, 0)
        arr_ax = 2 - axis
        others = [a for a in range(3) if a != axis]
        g0 = np.linspace(-0.5, 0.5, n_sub[others[0]] + 1)
        g1 = np.linspace(-0.5, 0.5, n_sub[others[1]] + 1)
        off = np.zeros((g0.size * g1.size, 3))
        off[:, others[0]] = np.repeat(g0, g1.size)
        off[:, others[1]] = np.tile(g1, g0.size)
        for side in (-1, 1):
            nb = np.roll(pad, -side, axis=arr_ax)[1:-1, 1:-1, 1:-1]  # the neighbour at index + side
            faces = np.argwhere(mask & ~nb)[:, ::-1].astype(np.float64)  # (i, j, k) of exposed faces
            if faces.size == 0:
                continue
            faces[:, axis] += 0.5 * side
            _splat(faces @ P[:, :3].T + P[:, 3], off @ P[:, :3].T, float(_SUPER), fine)
    fine |= ndimage.binary_closing(np.pad(fine, 2), structure=np.ones((3, 3), dtype=bool))[2:-2, 2:-2]
    cover = fine.reshape(H, _SUPER, W, _SUPER).mean(axis=(1, 3))
    return cover > 0.5  # 3 of 4 sub-pixels touched: the solid reaches the pixel's centre


def label_outlines(
    labels: Volume, ct: Volume | None, T: Any, camera: Camera, name: str = "labels"
) -> dict[int, np.ndarray]:
    """The silhouette on the detector of each non-zero label: {value: (H, W) bool}.

    ``labels`` must lie on ``ct``'s grid (size, spacing, origin, direction); if not,
    and it overlaps the CT, it is resampled onto it with nearest neighbour and a
    warning. Without ``ct`` the labels' own grid is used. Frames: the volumes in
    world LPS mm, ``T`` = ``T_cam_from_world`` (4x4, mm).

    Raises XctregError (one line): not 3D, non-integer values, no non-zero label,
    no physical overlap with the CT (or no labelled voxel left inside it).
    """
    values = _check_labels(labels, name)
    if not np.any(values):
        raise XctregError(f"{name} hold no non-zero label; nothing to draw")
    if ct is not None and not _same_grid(labels, ct):
        if ct.hu.ndim != 3:
            raise XctregError(f"the CT must be a 3D volume, got {ct.hu.ndim}D")
        resampled = _resample_labels(labels, ct, name)
        warnings.warn(
            f"{name} ({_describe_grid(labels)}) are not on the CT's grid ({_describe_grid(ct)}); "
            "resampled onto it (nearest neighbour)",
            stacklevel=2,
        )
        before = set(np.unique(values[values != 0]).tolist())
        values = np.asarray(resampled.hu).astype(np.int64)
        after = set(np.unique(values[values != 0]).tolist())
        if not after:
            raise XctregError(f"no labelled voxel of {name} lies inside the CT; are they from this CT?")
        lost = sorted(before - after)
        if lost:
            warnings.warn(f"label(s) {', '.join(map(str, lost))} of {name} lie outside the CT and are left out", stacklevel=2)
        labels = resampled
    affine = labels.affine
    nz = values != 0
    uniq = np.unique(values[nz])
    out: dict[int, np.ndarray] = {}
    if uniq.min() > 0 and uniq.max() <= 1_000_000:
        from scipy import ndimage

        boxes = ndimage.find_objects(values.astype(np.int32))
    else:
        boxes = None
    for val in uniq.tolist():
        if boxes is not None:
            sl = boxes[val - 1]
        else:
            kk, jj, ii = np.nonzero(values == val)
            sl = (slice(kk.min(), kk.max() + 1), slice(jj.min(), jj.max() + 1), slice(ii.min(), ii.max() + 1))
        assert sl is not None
        sub = values[sl] == val
        shift = np.eye(4)
        shift[:3, 3] = [sl[2].start, sl[1].start, sl[0].start]  # (i, j, k) offset of the crop
        out[int(val)] = label_silhouette(sub, affine @ shift, T, camera)
    return out


# --------------------------------------------------------------------------- figure
def draw_projection(
    image: np.ndarray | None,
    camera: Camera,
    points: np.ndarray | None,
    names: list[str] | None,
    outlines: dict[int, np.ndarray] | None,
    out_png: str | os.PathLike[str],
    title: str | None = None,
    label_names: dict[int, str] | None = None,
) -> Path:
    """Save the X-ray (grey, min-max) with points and label outlines as a PNG, atomically.

    Args:
        image: (H, W) X-ray, or None for a blank detector.
        camera: its geometry (sets the size when ``image`` is None).
        points: (N, 2) pixels (u = column, v = row); points that are not finite or
            lie outside the image are not drawn.
        names: one per point, written beside its marker.
        outlines: {label: (H, W) bool silhouette}, each drawn as a contour in its own colour.
        out_png: the PNG to write.
        title: the figure's title.
        label_names: optional legend names per label (default "label N").
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patheffects
    from matplotlib.lines import Line2D

    H, W = camera.height, camera.width
    img = np.zeros((H, W)) if image is None else np.asarray(image, dtype=np.float64)
    camera.check_image(img.shape, "X-ray")
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)

    side = 6.5
    scale = side / max(H, W)
    fig, ax = plt.subplots(figsize=(max(W * scale, 3.5), H * scale + 0.5))
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest", extent=(-0.5, W - 0.5, H - 0.5, -0.5))
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.axis("off")
    stroke = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    handles: list[Any] = []
    palette = plt.get_cmap("tab10").colors
    colors = [c for i, c in enumerate(palette) if i not in (7, 8)]  # skip grey and olive (close to the points' yellow)
    for n, (lab, mask) in enumerate(sorted((outlines or {}).items())):
        color = colors[n % len(colors)]
        text = (label_names or {}).get(lab, f"label {lab}")
        if mask.any():
            m = np.pad(mask.astype(np.float64), 1)  # closed contours at the image border
            xs, ys = np.arange(-1, W + 1), np.arange(-1, H + 1)
            ax.contour(xs, ys, m, levels=[0.5], colors=[color], linewidths=1.6)
        else:
            text += " (not in view)"
        handles.append(Line2D([], [], color=color, lw=1.6, label=text))
    if points is not None and len(points):
        uv = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        with np.errstate(invalid="ignore"):
            vis = np.isfinite(uv).all(1) & (uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5)
        names = list(names) if names is not None else [f"p{i}" for i in range(len(uv))]
        ax.plot(uv[vis, 0], uv[vis, 1], "+", color="yellow", ms=11, mew=1.8, path_effects=stroke, ls="none")
        # names: the first of a few offsets that clears the names and markers placed so far
        # (boxes in points: x, y of the baseline, width; a 9 pt name is ~11 pt tall)
        pt_per_px = fig.get_size_inches()[0] * 72.0 / W  # about: the image spans the figure's width
        taken = [(u * pt_per_px - 5, -v * pt_per_px - 5, 10.0) for (u, v) in uv[vis]]
        spots = [(dx, dy) for dy in (5, -13, 16, -24) for dx in (6, -6)]
        for (u, v), nm, ok in zip(uv, names, vis, strict=True):
            if not ok:
                continue
            x0, y0, wd = u * pt_per_px, -v * pt_per_px, 5.5 * len(nm)

            def free(dx: float, dy: float) -> bool:
                x = x0 + dx - (wd if dx < 0 else 0.0)
                return all(abs(y0 + dy - ty) > 10 or x + wd < tx or x > tx + tw for tx, ty, tw in taken)

            dx, dy = next((s for s in spots if free(*s)), spots[0])
            taken.append((x0 + dx - (wd if dx < 0 else 0.0), y0 + dy, wd))
            ax.annotate(
                nm, (u, v), xytext=(dx, dy), textcoords="offset points", ha="right" if dx < 0 else "left",
                color="yellow", fontsize=9, path_effects=stroke, clip_on=True,
            )
        lab = f"points ({int(vis.sum())} of {len(uv)} in view)"
        handles.append(Line2D([], [], marker="+", color="yellow", ms=10, mew=1.8, ls="none", label=lab))
    if handles:
        leg = ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.75, facecolor="black", edgecolor="none")
        for t in leg.get_texts():
            t.set_color("white")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    p = Path(out_png)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return p


# --------------------------------------------------------------------------- the command
def _camera_for(
    pose_doc: dict[str, Any], pose_json: Path, geometry: Path | None, xray: Path | None, xray_camera: Camera | None
) -> tuple[Camera, str]:
    """The camera: --geometry, else the JSON's "geometry" (object, or a path to a geometry JSON), else DICOM tags."""
    if geometry is not None:
        return read_camera(geometry), f"--geometry {Path(geometry).name}"
    g = pose_doc.get("geometry")
    if isinstance(g, dict):
        return Camera.from_dict(g, name=f"geometry in {pose_json.name}"), pose_json.name
    if isinstance(g, str):
        gp = Path(g) if Path(g).is_absolute() else pose_json.parent / g
        return read_camera(gp), f"{gp.name} (named in {pose_json.name})"
    if xray_camera is not None:
        return xray_camera, "the X-ray's DICOM tags"
    why = "no X-ray is given" if xray is None else f"{Path(xray).name} has no DICOM geometry tags"
    raise XctregError(f"no camera geometry: {pose_json.name} has no \"geometry\" and {why}; pass --geometry GEOM.json")


def run_project(
    pose_json: Path,
    xray: Path | None,
    out_png: Path,
    points_csv: Path | None = None,
    labels: Path | None = None,
    ras: bool = False,
    csv_out: Path | None = None,
    geometry: Path | None = None,
    ct: Path | None = None,
) -> dict[str, Any]:
    """Project points and/or label silhouettes from the CT onto the X-ray and draw them.

    Args:
        pose_json: a pose or result JSON (``T_cam_from_world`` or ``params`` + ``reference``); a multi-view
            result's ``joint`` pose is used.
        xray: the X-ray to draw on; None draws on a blank detector.
        out_png: the overlay PNG.
        points_csv: world points ``name,x,y,z`` (LPS mm, or RAS with ``ras``).
        labels: a segmentation in the CT's world (integer labels, 0 = background).
        ras: the points are RAS (3D Slicer).
        csv_out: where to write the projected points (needs ``points_csv``).
        geometry: a geometry JSON; else the JSON's ``"geometry"``, else the X-ray's DICOM tags.
        ct: the CT whose grid the labels must lie on; else the JSON's ``"ct_path"``
            when that file exists, else the labels' own grid.
    Returns:
        A summary: n_points, n_inside, n_behind, labels (drawn), labels_out_of_view,
        camera_from, out_png, csv.
    """
    pose_json, out_png = Path(pose_json), Path(out_png)
    if points_csv is None and labels is None:
        raise XctregError("nothing to draw: give --points POINTS.csv and/or --labels SEG.nii.gz")
    if csv_out is not None and points_csv is None:
        raise XctregError("--csv writes the projected points; it needs --points POINTS.csv")
    doc = read_json(pose_json, "pose JSON")
    if isinstance(doc, dict) and "T_cam_from_world" not in doc and "params" not in doc and isinstance(doc.get("joint"), dict):
        doc = doc["joint"]
    if not isinstance(doc, dict):
        raise XctregError(f"pose JSON {pose_json} must hold a JSON object")
    pose = Pose.from_dict(doc, name=f"pose {pose_json.name}")
    T = pose.T_cam_from_world

    x = read_xray(xray) if xray is not None else None
    camera, camera_from = _camera_for(doc, pose_json, geometry, xray, x.camera if x is not None else None)
    if x is not None:
        camera.check_image(x.image.shape, name=f"X-ray {x.path.name if x.path else ''}".strip())

    summary: dict[str, Any] = {"camera_from": camera_from}
    names: list[str] = []
    uv = None
    if points_csv is not None:
        names, xyz = read_points_csv(points_csv, ras=ras)
        uv, depth, inside = project_points(xyz, T, camera)
        summary.update(n_points=len(names), n_inside=int(inside.sum()), n_behind=int(np.sum(depth <= 0)))
        if csv_out is not None:
            write_points_csv(csv_out, names, uv, depth, inside)
            summary["csv"] = str(csv_out)
    else:
        summary.update(n_points=0, n_inside=0, n_behind=0)

    outlines: dict[int, np.ndarray] = {}
    if labels is not None:
        lab = read_labels(labels)
        ct_path = ct
        if ct_path is None and isinstance(doc.get("ct_path"), str):
            if Path(doc["ct_path"]).exists():
                ct_path = Path(doc["ct_path"])
            else:
                warnings.warn(
                    f"the CT {doc['ct_path']} named in {pose_json.name} is not there; the labels' own grid is used "
                    "(pass --ct to check them against the CT)",
                    stacklevel=2,
                )
        ct_vol = read_volume(ct_path, force=True) if ct_path is not None else None
        outlines = label_outlines(lab, ct_vol, T, camera, name=f"labels {Path(labels).name}")
        summary["labels"] = [k for k, m in outlines.items() if m.any()]
        summary["labels_out_of_view"] = [k for k, m in outlines.items() if not m.any()]
    else:
        summary.update(labels=[], labels_out_of_view=[])

    title = f"{x.path.name if x is not None and x.path else 'blank detector'} at {pose_json.name}"
    draw_projection(x.image if x is not None else None, camera, uv, names, outlines, out_png, title=title)
    summary["out_png"] = str(out_png)
    return summary
