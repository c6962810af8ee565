"""Draw the documentation figures: ``python docs/make_figures.py`` -> docs/img/*.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from xctreg.geometry import Camera, PoseReference, backproject, params_to_matrix

OUT = Path(__file__).parent / "img"


def camera_figure(path: Path) -> None:
    """The AP reference view in world (LPS) coordinates, with the camera axes."""
    ref = PoseReference((0.0, 0.0, 0.0), 750.0)
    cam = Camera(1020.0, 256, 256, (1.6, 1.6))
    T = params_to_matrix(torch.zeros(6, dtype=torch.float64), ref)
    corners = torch.tensor([[0.0, 0.0], [255.0, 0.0], [255.0, 255.0], [0.0, 255.0]], dtype=torch.float64)
    src, d = backproject(corners, T, cam)
    src = src.numpy()
    det = src + d.numpy() * (cam.sdd_mm / d.numpy()[:, 1:2].__abs__()) * 1.0  # detector corners (y = sdd from source)
    fig = plt.figure(figsize=(9, 7))
    ax = fig.add_subplot(projection="3d")
    # patient: an elliptical cylinder around the isocenter
    th = np.linspace(0, 2 * np.pi, 60)
    for z in (-180, 180):
        ax.plot(150 * np.cos(th), 105 * np.sin(th), z, color="tan")
    for a in np.linspace(0, 2 * np.pi, 9)[:-1]:
        ax.plot([150 * np.cos(a)] * 2, [105 * np.sin(a)] * 2, [-180, 180], color="tan", lw=0.6)
    ax.text(160, 0, 0, "patient L (+x)", color="saddlebrown")
    ax.text(0, 0, 200, "head S (+z)", color="saddlebrown")
    ax.text(0, 120, -180, "P (+y)", color="saddlebrown")
    # source, rays and detector
    ax.scatter(*src, color="red", s=40)
    ax.text(*src, "  source (camera origin)", color="red")
    for c in det:
        ax.plot(*zip(src, c, strict=True), color="orange", lw=0.7)
    poly = np.vstack([det, det[:1]])
    ax.plot(poly[:, 0], poly[:, 1], poly[:, 2], color="navy", lw=2)
    ax.text(*det[0], "image row 0, col 0", color="navy")
    ax.text(*det[1], "row 0, col W-1", color="navy")
    # camera axes drawn at the source, expressed in world
    R = T[:3, :3].numpy()
    for axis, col, name in zip(range(3), ("r", "g", "b"), ("x_cam = u (image right)", "y_cam = v (image down)", "z_cam (beam)"), strict=True):
        v = R[axis] * 220  # row i of R is the world direction of camera axis i
        ax.quiver(*src, *v, color=col)
        ax.text(*(src + v * 1.1), name, color=col)
    ax.set_xlabel("x (L) mm")
    ax.set_ylabel("y (P) mm")
    ax.set_zlabel("z (S) mm")
    ax.set_title("AP reference view (all parameters 0): source anterior, sid 750 mm, sdd 1020 mm")
    ax.set_xlim(-260, 260)
    ax.set_ylim(-800, 320)
    ax.set_zlim(-260, 260)
    ax.set_box_aspect((520, 1120, 520))
    ax.view_init(elev=20, azim=-35)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    camera_figure(OUT / "camera.png")
    print(f"wrote {OUT / 'camera.png'}")
