"""``xctreg check``: validate inputs (CT, X-ray, geometry, pose) and print what was understood."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _echo
from xctreg.errors import XctregError


@app.command("check")
def check(
    ct: Annotated[Path | None, typer.Argument(help="CT volume: NIfTI, NRRD, MHA/MHD or a DICOM series folder.")] = None,
    xray: Annotated[Path | None, typer.Option("--xray", help="X-ray image (.npy, .png, .tif, .dcm).")] = None,
    geometry: Annotated[Path | None, typer.Option("--geometry", help="Geometry JSON: sdd_mm, height, width, pixel_spacing_mm (see docs/geometry.md).")] = None,
    pose: Annotated[Path | None, typer.Option("--pose", help="Pose JSON: T_cam_from_world (4x4, mm) or the six parameters with their reference.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Accept a volume that does not look like a CT.")] = False,
    transmission: Annotated[bool, typer.Option("--transmission", help="The X-ray holds raw intensities.")] = False,
) -> None:
    """Validate inputs (CT, X-ray, geometry, pose) and print what was understood."""
    from xctreg.geometry import PoseReference, read_camera, read_pose
    from xctreg.io import read_volume, read_xray

    if ct is None and xray is None and geometry is None and pose is None:
        raise XctregError("nothing to check; give a CT and/or --xray, --geometry, --pose")
    reference = None
    if ct is not None:
        vol = read_volume(ct, force=force)
        reference = PoseReference.centred_on(vol)
        _echo(f"CT {ct}: {vol.describe()}, isocenter {[round(float(v), 2) for v in vol.center]} mm (LPS)")
    cam = None
    if geometry is not None:
        cam = read_camera(geometry)
        _echo(f"geometry {geometry}: {cam.height}x{cam.width} px, sdd {cam.sdd_mm:g} mm, spacing {cam.pixel_spacing_mm} mm")
    if xray is not None:
        xr = read_xray(xray, transmission=transmission)
        if cam is not None:
            cam.check_image(xr.image.shape, name=f"X-ray {xray}")
        elif xr.camera is not None:
            cam = xr.camera
        src = "from DICOM" if xr.camera is not None else "none in file"
        pos = ""
        if xr.positioner_deg is not None:
            from xctreg.geometry import view_name

            a, b = xr.positioner_deg
            pos = f", C-arm at primary {a:g} deg, secondary {b:g} deg = view {view_name(xr.view_deg)}"
        _echo(f"X-ray {xray}: {xr.image.shape[0]}x{xr.image.shape[1]} px, geometry {src}{pos}")
    if pose is not None:
        p = read_pose(pose, reference=reference)
        desc = "matrix only (no reference)"
        if p.reference is not None:
            desc = ", ".join(f"{v:.3f}" for v in p.params)
        _echo(f"pose {pose}: params (rx ry rz deg, tx ty tz mm) = {desc}")
