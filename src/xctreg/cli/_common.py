"""Helpers the commands share: console output, progress bars, presets, views and output checks."""

from __future__ import annotations

import sys
from pathlib import Path

from xctreg.errors import XctregError


def _echo(msg: str) -> None:
    from rich.console import Console

    Console(highlight=False, soft_wrap=True).print(msg)


def _preset_camera(preset: str, geometry: Path | None = None):  # noqa: ANN202 - Camera, imported lazily
    """The camera of a geometry JSON if given, else of the named preset (quick or paper)."""
    from xctreg.geometry import read_camera
    from xctreg.geometry import PRESET_CAMERAS

    if preset not in PRESET_CAMERAS:
        raise XctregError(f"unknown preset {preset!r}; use paper or quick")
    return read_camera(geometry) if geometry is not None else PRESET_CAMERAS[preset]


_VIEW_HELP = (
    "Reference view that the pose parameters are relative to: ap, pa, lat-left, lat-right, or VX,VY,VZ "
    "(degrees: camera rotations Rz(VZ)·Ry(VY)·Rx(VX) from AP; lat-left is 0,90,0, source on the patient's left)."
)
_RANGES_HELP = "Sampling half-widths RX,RY,RZ,TX,TY,TZ (deg, mm); default 15,15,15,30,30,50."


def _view_and_ranges(view: str | None, ranges: str | None, view_from: Path | None = None):  # noqa: ANN202
    """(view_deg, PoseRanges) from --view / --view-from and --ranges, with one-line errors."""
    from xctreg.geometry import PoseRanges, parse_ranges, parse_view

    if view is not None and view_from is not None:
        raise XctregError("give --view or --view-from, not both")
    v = parse_view(view) if view is not None else (0.0, 0.0, 0.0)
    if view_from is not None:
        v = _view_from_xray(view_from)
    return v, (parse_ranges(ranges) if ranges is not None else PoseRanges())


def _view_from_xray(path: Path) -> tuple[float, float, float]:
    """The view of a DICOM X-ray's C-arm, from its positioner angles."""
    from xctreg.io import read_xray

    view = read_xray(path).view_deg
    if view is None:
        raise XctregError(f"{path} has no PositionerPrimaryAngle/PositionerSecondaryAngle; use --view instead")
    return view


def _progress(label: str | None, transient: bool = True):  # noqa: ANN202 - rich Progress, imported lazily
    """A rich progress bar: label (or each task's description), bar, done/total, time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    text = TextColumn(label if label is not None else "{task.description}")
    return Progress(text, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=transient)


def _named_tasks(bar):  # noqa: ANN001, ANN202 - rich Progress -> progress(name, done, total)
    """A progress callback that opens one bar per task name."""
    tasks: dict[str, int] = {}

    def progress(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=done, total=total)

    return progress


def _check_outputs(n: int, results: Path, overlays: Path | None, animations: Path | None) -> None:
    """Refuse, before the model is loaded, output folders that cannot be written or lack room
    for ``n`` X-rays' results, overlays and GIFs (``None``: not written)."""
    from xctreg._fs import MIN_FREE_BYTES, check_writable
    from xctreg.batch import OUTPUT_BYTES

    for kind, folder in (("result", results), ("overlay", overlays), ("animation", animations)):
        if folder is not None:
            check_writable(folder, MIN_FREE_BYTES + n * OUTPUT_BYTES[kind])


def _print_warnings(caught: list) -> None:  # noqa: ANN001 - warnings.WarningMessage
    """Each distinct warning once, as one ``warning:`` line on stderr."""
    for w in dict.fromkeys(str(w.message).splitlines()[0] for w in caught):
        print(f"warning: {w}", file=sys.stderr)
