"""``xctreg project``: project planned points and label outlines from the CT onto a registered X-ray."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _echo, _print_warnings
from xctreg.errors import XctregError


@app.command("project")
def project_cmd(
    pose: Annotated[Path, typer.Argument(help="A result JSON from register (or any pose JSON).")],
    out: Annotated[Path, typer.Option("--out", help="Overlay PNG.")],
    xray: Annotated[Path | None, typer.Option("--xray", help="The X-ray to draw on (default: a blank detector).")] = None,
    points: Annotated[Path | None, typer.Option("--points", help="CSV of world points: name,x,y,z in LPS mm (RAS with --ras).")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="Label volume on the CT's grid (e.g. SEG.nii.gz): outlines.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write the points' pixel positions here.")] = None,
    ras: Annotated[bool, typer.Option("--ras", help="POINTS.csv is in RAS (3D Slicer), not LPS.")] = False,
    geometry: Annotated[Path | None, typer.Option("--geometry", help="Geometry JSON (default: the result's, then the DICOM's).")] = None,
    ct: Annotated[Path | None, typer.Option("--ct", help="The CT whose grid the labels are on (default: the result's ct_path).")] = None,
) -> None:
    """Project planned points and label outlines from the CT onto a registered X-ray."""
    import warnings

    from xctreg.project import run_project

    if out.suffix.lower() != ".png":
        raise XctregError(f"--out must be a .png file, got {out.name}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = run_project(pose, xray, out, points, labels, ras, csv_out, geometry, ct)
    _print_warnings(caught)
    parts = []
    if points is not None:
        parts.append(f"{s['n_inside']} of {s['n_points']} points on the image")
    if labels is not None:
        parts.append(f"{len(s['labels'])} label outline(s)")
    extra = f", pixel positions in {csv_out}" if csv_out is not None else ""
    _echo(f"wrote {out}: {', '.join(parts)} (camera from {s['camera_from']}){extra}")
