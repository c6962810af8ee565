"""Draw the documentation figures: ``python docs/make_figures.py`` -> docs/img/*.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from xctreg.geometry import VIEWS, Camera, PoseReference, backproject, params_to_matrix, positioner_to_view

OUT = Path(__file__).parent / "img"

#: Patient directions of the LPS axes, for labels: (negative, positive) per axis.
ANATOMY = (("R", "L"), ("A", "P"), ("F", "H"))


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


def _anatomy(direction: np.ndarray) -> str:
    """The patient direction (R, L, A, P, F or H) closest to a world (LPS) direction."""
    axis = int(np.argmax(np.abs(direction)))
    return ANATOMY[axis][int(direction[axis] > 0)]


def _axial_patient(ax: plt.Axes) -> None:
    """A torso cross-section seen from the feet (x_plot = patient left, y_plot = anterior), in mm."""
    th = np.linspace(0, 2 * np.pi, 100)
    ax.fill(150 * np.cos(th), 105 * np.sin(th), color="bisque", ec="tan", lw=1.5, zorder=1)
    ax.fill(22 + 20 * np.cos(th), 45 + 20 * np.sin(th), color="indianred", alpha=0.7, zorder=2)  # heart: left anterior
    ax.fill(16 * np.cos(th), -60 + 16 * np.sin(th), color="white", ec="gray", zorder=2)  # spine: posterior
    for text, xy in (("A", (0, 80)), ("P", (0, -92)), ("L", (128, 0)), ("R", (-128, 0))):
        ax.text(*xy, text, ha="center", va="center", fontsize=11, weight="bold", color="saddlebrown", zorder=3)


def _axial_carm(ax: plt.Axes, beam: np.ndarray, right: np.ndarray | None = None) -> None:
    """Source (star), beam (arrow) and detector (bar) in the axial plane; distances not to scale.

    ``beam`` and ``right`` (the image's column direction) are world (LPS) vectors.
    """
    b = np.array([beam[0], -beam[1]])  # (x, y) LPS -> plot (left, anterior)
    b = b / np.linalg.norm(b)
    n = np.array([-b[1], b[0]])
    src, det = -240 * b, 190 * b
    ax.plot(*src, marker="*", ms=16, color="red", zorder=4)
    ax.annotate("", xy=det - 8 * b, xytext=src + 12 * b, arrowprops={"arrowstyle": "->", "color": "orange", "lw": 1.5}, zorder=3)
    ends = np.array([det - 110 * n, det + 110 * n])
    ax.plot(ends[:, 0], ends[:, 1], color="navy", lw=5, solid_capstyle="butt", zorder=4)
    if right is not None:  # mark the detector end where the image's last column is
        r = np.array([right[0], -right[1]])
        end = det + 110 * n * np.sign(n @ r)
        ax.plot(*end, marker="o", ms=7, color="deepskyblue", zorder=5)


def _render_views(size: int = 96) -> dict[str, np.ndarray]:
    """DRRs of the embedded phantom at each named view (line integrals, zero parameters)."""
    from xctreg.data.phantom import PhantomConfig, make_phantom
    from xctreg.render import RenderConfig, Renderer

    vol = make_phantom(PhantomConfig(size=(64, 64, 64), spacing_mm=(6.0, 6.0, 6.0)))
    cam = Camera(1020.0, size, size, (512.0 / size, 512.0 / size))
    centre = tuple(float(v) for v in vol.center)
    out = {}
    for name, view in VIEWS.items():
        ref = PoseReference(centre, 750.0, view)
        out[name] = Renderer(vol, cam, RenderConfig(mode="line"), reference=ref)(torch.zeros(1, 6))[0, 0].numpy()
    return out


def views_figure(path: Path) -> None:
    """The four named views (SPEC §4.1): the C-arm seen from the feet, and the image each gives."""
    images = _render_views()
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.8), gridspec_kw={"height_ratios": [1.05, 1]})
    for col, (name, view) in enumerate(VIEWS.items()):
        R = PoseReference((0.0, 0.0, 0.0), view_deg=view).rotation().numpy()
        ax = axes[0, col]
        _axial_patient(ax)
        _axial_carm(ax, R[2], R[0])
        ax.set_xlim(-300, 300)
        ax.set_ylim(-300, 300)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{name}  view_deg = {tuple(int(v) for v in view)}", fontsize=11)
        ax = axes[1, col]
        ax.imshow(images[name], cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        h, w = images[name].shape
        for text, xy, ha in (
            (_anatomy(R[0]), (w + 1, h / 2), "left"),
            (_anatomy(-R[0]), (-2, h / 2), "right"),
        ):
            ax.text(*xy, text, ha=ha, va="center", fontsize=12, weight="bold", color="saddlebrown")
        ax.text(w / 2, -2, _anatomy(-R[1]), ha="center", va="bottom", fontsize=12, weight="bold", color="saddlebrown")
        ax.text(w - 1, h - 1, "\u25cf", color="deepskyblue", ha="center", va="center", fontsize=9)
    fig.text(
        0.5, 0.935,
        "top: axial section seen from the feet (red star = source, orange = beam, blue bar = detector, "
        "blue dot = the image's right edge; not to scale)",
        ha="center", fontsize=10,
    )
    fig.text(0.5, 0.475, "bottom: the image at zero parameters, as the camera sees it (row 0 at the top); "
             "letters = the patient direction at each edge", ha="center", fontsize=10)
    fig.suptitle("Named reference views (SPEC §4.1), named by where the source is", fontsize=13, y=0.99)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.88, bottom=0.02, hspace=0.18, wspace=0.12)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _arc(ax: plt.Axes, r: float, a0: float, a1: float, label: str, at: float, **kw: object) -> None:
    """An arrowed arc of radius ``r`` from plot angle a0 to a1 (degrees, counter-clockwise from +x)."""
    t = np.radians(np.linspace(a0, a1, 40))
    ax.plot(r * np.cos(t[:-1]), r * np.sin(t[:-1]), **kw)
    ax.annotate("", xy=(r * np.cos(t[-1]), r * np.sin(t[-1])), xytext=(r * np.cos(t[-3]), r * np.sin(t[-3])),
                arrowprops={"arrowstyle": "->", "color": kw.get("color", "k"), "lw": 1.5})
    ta = np.radians(at)
    ax.text(1.12 * r * np.cos(ta), 1.12 * r * np.sin(ta), label, ha="center", va="center", fontsize=10, color=kw.get("color", "k"))


def _sagittal_patient(ax: plt.Axes) -> None:
    """A supine patient seen from the patient's left (x_plot = posterior, y_plot = head), in mm."""
    th = np.linspace(0, 2 * np.pi, 100)
    ax.fill(105 * np.cos(th), 230 * np.sin(th), color="bisque", ec="tan", lw=1.5, zorder=1)
    ax.fill(75 * np.cos(th), 250 + 80 * np.sin(th), color="bisque", ec="tan", lw=1.5, zorder=1)  # head
    ax.fill(50 + 14 * np.cos(th), 150 * np.sin(th), color="white", ec="gray", zorder=2)  # spine
    for text, xy in (("A", (-82, 0)), ("P", (85, 0)), ("H", (0, 250)), ("F", (0, -200))):
        ax.text(*xy, text, ha="center", va="center", fontsize=11, weight="bold", color="saddlebrown", zorder=3)


def dicom_angles_figure(path: Path, primary: float = 30.0, secondary: float = 25.0) -> None:
    """DICOM PositionerPrimaryAngle (RAO-/LAO+) and PositionerSecondaryAngle (CAU-/CRA+)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 6.4))
    _axial_patient(ax1)
    a = np.radians(primary)
    beam = np.array([np.sin(a), -np.cos(a), 0.0])
    _axial_carm(ax1, beam)
    ax1.text(*(215 * np.array([np.sin(a), np.cos(a)]) + (10, 25)), "detector", color="navy", fontsize=10)
    ax1.text(*(-255 * np.array([np.sin(a), np.cos(a)]) + (-10, -40)), "source", color="red", fontsize=10, ha="center")
    _arc(ax1, 270, 90, 90 - primary, f"+{primary:g}° LAO", 90 - primary / 2 - 12, color="purple", lw=1.5)
    for text, xy in (("0°: detector anterior\n(PA beam)", (0, 340)), ("LAO +90°\n(detector on\nthe left)", (345, 0)),
                     ("RAO −90°\n(detector on\nthe right)", (-345, 0)), ("±180°: detector posterior\n(AP beam)", (0, -340))):
        ax1.text(*xy, text, ha="center", va="center", fontsize=9, color="purple")
    ax1.plot(280 * np.cos(np.linspace(0, 2 * np.pi, 100)), 280 * np.sin(np.linspace(0, 2 * np.pi, 100)),
             color="purple", lw=0.5, ls=":")
    ax1.set_title(f"PositionerPrimaryAngle (seen from the feet)\nthe detector turns towards the patient's left: LAO +", fontsize=11)
    _sagittal_patient(ax2)
    b = np.radians(secondary)
    d = np.array([-np.cos(b), np.sin(b)])  # detector direction in (posterior, head) plot axes
    n = np.array([-d[1], d[0]])
    det, src = 190 * d, -240 * d
    ax2.plot(*src, marker="*", ms=16, color="red", zorder=4)
    ax2.annotate("", xy=det - 8 * d, xytext=src + 12 * d, arrowprops={"arrowstyle": "->", "color": "orange", "lw": 1.5}, zorder=3)
    ends = np.array([det - 110 * n, det + 110 * n])
    ax2.plot(ends[:, 0], ends[:, 1], color="navy", lw=5, solid_capstyle="butt", zorder=4)
    ax2.text(*(det + 110 * n + (0, -35)), "detector", color="navy", fontsize=10, ha="center")
    ax2.text(*(src + (30, -30)), "source", color="red", fontsize=10)
    _arc(ax2, 300, 180, 180 - secondary, f"+{secondary:g}° CRA", 180 - secondary / 2, color="purple", lw=1.5)
    ax2.plot([-330, 330], [0, 0], color="purple", lw=0.5, ls=":")
    ax2.text(-330, 30, "0°", color="purple", fontsize=9)
    ax2.text(-300, 260, "CRA +: detector\ntowards the head", color="purple", fontsize=9, ha="center")
    ax2.text(-300, -260, "CAU −: detector\ntowards the feet", color="purple", fontsize=9, ha="center")
    ax2.set_title("PositionerSecondaryAngle (seen from the patient's left, primary 0°)\n"
                  "the detector tilts towards the head: CRA +", fontsize=11)
    view = positioner_to_view(primary, secondary)
    fig.suptitle(
        f"DICOM positioner angles: beam d = (sin a cos b, −cos a cos b, sin b) in LPS.   "
        f"LAO {primary:g} / CRA {secondary:g}  ->  view_deg ({view[0]:.1f}, {view[1]:.1f}, 0)",
        fontsize=12,
    )
    for ax in (ax1, ax2):
        ax.set_xlim(-400, 400)
        ax.set_ylim(-380, 380)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.01, wspace=0.05)
    fig.savefig(path, dpi=90)
    plt.close(fig)


FIGURES = {"camera.png": camera_figure, "views.png": views_figure, "dicom_angles.png": dicom_angles_figure}


if __name__ == "__main__":
    import sys

    OUT.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:] or FIGURES:  # optional: only the named figures
        FIGURES[name](OUT / name)
        print(f"wrote {OUT / name}")
