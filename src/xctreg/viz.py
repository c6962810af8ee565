"""Figures: image grids (augmentation previews) written as PNG with matplotlib."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from xctreg._fs import atomic_path


def image_grid(
    rows: Sequence[Sequence[np.ndarray]], path: str | os.PathLike[str], row_titles: Sequence[str] | None = None, cell_in: float = 1.8
) -> None:
    """Save a grid of 2D images (rows x columns, grey, each min-max scaled) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(cell_in * nc, cell_in * nr), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(np.asarray(row[j]), cmap="gray")
        if row_titles is not None:
            axes[i][0].set_title(row_titles[i], fontsize=8, loc="left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def edges(x: np.ndarray, keep: float = 0.05, sigma_frac: float = 1 / 128, min_frac: float = 0.3) -> np.ndarray:
    """(H, W) bool: contours of the strongest edges of ``x``, for overlays.

    The image is smoothed (Gaussian, sigma ``sigma_frac`` of its larger side: 1 px at 128),
    the ``keep`` fraction of pixels with the strongest gradient is taken, and of those only the
    connected pieces at least ``min_frac`` of the image's larger side long (in pixels) are kept:
    bone and body outlines stay, the speckle of lung texture goes."""
    from scipy import ndimage

    x = np.asarray(x, dtype=np.float64)
    x = (x - x.min()) / max(float(np.ptp(x)), 1e-12)
    side = max(x.shape)
    xs = ndimage.gaussian_filter(x, sigma_frac * side)
    g = np.hypot(ndimage.sobel(xs, axis=0), ndimage.sobel(xs, axis=1))
    strong = g > np.quantile(g, 1.0 - keep)
    labels, n = ndimage.label(strong, structure=np.ones((3, 3)))
    if n == 0:
        return strong
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    big = sizes >= max(4.0, min_frac * side)
    big[0] = False
    return big[labels]


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """(H, W) in [0, 1]: ``a`` and ``b`` (each scaled to its 1st-99th percentile) in alternating
    tiles, ``tiles`` per side; where the two are registered, anatomy runs on across the tiles."""
    def scaled(x: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(x, [1, 99])
        return np.clip((np.asarray(x, dtype=np.float64) - lo) / max(hi - lo, 1e-12), 0, 1)

    h, w = a.shape
    r = (np.arange(h)[:, None] * tiles // h + np.arange(w)[None, :] * tiles // w) % 2 == 0
    return np.where(r, scaled(a), scaled(b))


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, dtype=np.float64)
    x = (x - x.min()) / max(float(np.ptp(x)), 1e-12)
    return np.repeat((x * 255).astype(np.uint8)[..., None], 3, axis=-1)


def registration_animation(
    image: np.ndarray, drrs: Sequence[np.ndarray], labels: Sequence[str], path: str | os.PathLike[str], min_size: int = 256, ms_per_frame: int = 120
) -> None:
    """An animated GIF: the X-ray (grey) with the edges of each DRR in turn (green, the first in red
    throughout), one frame per DRR with its label, written atomically."""
    from PIL import Image, ImageDraw

    base = _grey_rgb(image)
    first = edges(np.asarray(drrs[0]))
    zoom = max(1, -(-min_size // max(base.shape[:2])))
    frames = []
    for drr, label in zip(drrs, labels, strict=True):
        rgb = base.copy()
        rgb[first] = (0.5 * rgb[first] + 0.5 * np.array([255, 60, 60])).astype(np.uint8)
        e = edges(np.asarray(drr))
        rgb[e] = (60, 255, 60)
        im = Image.fromarray(np.kron(rgb, np.ones((zoom, zoom, 1), dtype=np.uint8)))
        ImageDraw.Draw(im).text((4, 4), label, fill=(255, 255, 0))
        frames.append(im.convert("P", palette=Image.Palette.ADAPTIVE))
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)


def registration_overlay(
    image: np.ndarray, drr_initial: np.ndarray, drr_final: np.ndarray, path: str | os.PathLike[str], title: str = ""
) -> None:
    """Two panels as a PNG: the X-ray (grey) with the outlines of the DRR at the initial (red) and
    final (green) pose, and a checkerboard of the X-ray and the final DRR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    axes[0].imshow(np.asarray(image), cmap="gray")
    for drr, color in ((drr_initial, (1.0, 0.25, 0.25)), (drr_final, (0.2, 1.0, 0.2))):
        e = edges(np.asarray(drr))
        rgba = np.zeros((*e.shape, 4))
        rgba[..., :3] = color
        rgba[..., 3] = e * 0.9
        axes[0].imshow(rgba)
    axes[0].set_title(title or "DRR outlines: initial (red), final (green)", fontsize=8)
    axes[1].imshow(checkerboard(np.asarray(image), np.asarray(drr_final)), cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("checkerboard: X-ray / final DRR", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def overlay(image: np.ndarray, heat: np.ndarray, path: str | os.PathLike[str], title: str = "") -> None:
    """Save an X-ray (grey) with a heat map (e.g. attention, [0, 1]) blended on top, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(np.asarray(image), cmap="gray")
    ax.imshow(np.asarray(heat), cmap="jet", alpha=0.4, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
