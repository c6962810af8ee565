"""``xctreg export``: write the pose for another tool: an ITK transform, DiffDRR's pose or OpenCV's rvec/tvec/K."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _echo
from xctreg.errors import XctregError


@app.command("export")
def export_cmd(
    pose: Annotated[Path, typer.Argument(help="A result JSON from register (or any pose JSON).")],
    to: Annotated[str, typer.Option("--to", help="itk (.tfm for SimpleITK/3D Slicer), diffdrr or opencv.")],
    out: Annotated[Path | None, typer.Option("--out", help="Output file (default: beside the JSON, e.g. x.result.tfm).")] = None,
    geometry: Annotated[Path | None, typer.Option("--geometry", help="Geometry JSON (default: the result's).")] = None,
) -> None:
    """Write the pose for another tool: an ITK transform, DiffDRR's pose or OpenCV's rvec/tvec/K."""
    from xctreg.io.export import DEFAULT_SUFFIX, FORMATS, export_pose, load_pose_and_camera

    key = to.strip().lower()
    if key not in FORMATS:
        raise XctregError(f"unknown export format {to!r}; use one of: {', '.join(FORMATS)}")
    T, cam, ct_path = load_pose_and_camera(pose, geometry)
    stem = pose.name[: -len(".json")] if pose.name.lower().endswith(".json") else pose.stem
    dest = out or pose.with_name(stem + DEFAULT_SUFFIX[key])
    export_pose(T, cam, key, dest, ct_path)
    _echo(f"wrote {dest} ({key}); docs/export.md says how to load it")
