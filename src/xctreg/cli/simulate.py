"""``xctreg simulate``: render physics-based X-rays (DRRs) of a CT at a given pose or at N random poses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _echo, _preset_camera, _VIEW_HELP, _RANGES_HELP, _view_and_ranges, _progress
from xctreg.errors import XctregError
from xctreg.presets import DEFAULT_SID_MM


@app.command("simulate")
def simulate(
    ct: Annotated[Path, typer.Argument(help="CT volume: NIfTI, NRRD, MHA/MHD or a DICOM series folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output image (.npy/.png/.tiff/.dcm), or a folder with --random.")],
    geometry: Annotated[Path | None, typer.Option("--geometry", help="Geometry JSON; default: the --preset camera.")] = None,
    pose: Annotated[Path | None, typer.Option("--pose", help="Pose JSON (matrix or params).")] = None,
    random: Annotated[int, typer.Option("--random", help="Render N random poses from the sampling ranges around --view.")] = 0,
    view: Annotated[str | None, typer.Option("--view", help=_VIEW_HELP)] = None,
    ranges: Annotated[str | None, typer.Option("--ranges", help=_RANGES_HELP)] = None,
    fmt: Annotated[str, typer.Option("--format", help="Image format for --random: png, npy, tiff or dcm.")] = "png",
    preset: Annotated[str, typer.Option("--preset", help="Camera when no --geometry: paper (256², 1.6 mm) or quick (128², 3.2 mm).")] = "paper",
    mode: Annotated[str, typer.Option("--mode", help="poly (spectrum), mono or line (density line integral).")] = "poly",
    kvp: Annotated[float, typer.Option("--kvp", help="Tube voltage (kVp).")] = 90.0,
    al_mm: Annotated[float, typer.Option("--al-mm", help="Aluminium filtration (mm).")] = 4.0,
    photons: Annotated[float | None, typer.Option("--photons", help="Photons per pixel for Poisson noise (default: none).")] = None,
    blur_px: Annotated[float, typer.Option("--blur-px", help="Detector blur sigma (px).")] = 0.0,
    scatter: Annotated[float, typer.Option("--scatter", help="Scatter fraction 0..0.9.")] = 0.0,
    sid_mm: Annotated[float, typer.Option("--sid-mm", help="Source-isocenter distance of the reference view (mm).")] = DEFAULT_SID_MM,
    seed: Annotated[int, typer.Option("--seed", help="Seed for random poses and noise.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Accept a volume that does not look like a CT.")] = False,
) -> None:
    """Render physics-based X-rays (DRRs) of a CT at a given pose or at N random poses."""
    import time

    from xctreg._fs import MIN_FREE_BYTES, check_writable
    from xctreg.geometry import read_pose
    from xctreg.io import read_volume
    from xctreg.physics import DetectorConfig
    from xctreg.render import RenderConfig
    from xctreg.runtime import resolve_device
    from xctreg.simulate import SimulateConfig, simulate_one, simulate_random

    if (pose is None) == (random == 0):
        raise XctregError("give exactly one of --pose POSE.json or --random N")
    cam = _preset_camera(preset, geometry)
    # the configs check their ranges (one line naming the flag), before the output check and the CT
    det = DetectorConfig(photons=photons, blur_px=blur_px, scatter_fraction=scatter)
    rcfg = RenderConfig(mode=mode, kvp=kvp, al_mm=al_mm, detector=det)  # type: ignore[arg-type]
    view_deg, pose_ranges = _view_and_ranges(view, ranges)
    if ranges is not None and pose is not None:
        raise XctregError("--ranges applies to --random only")
    cfg = SimulateConfig(render=rcfg, sid_mm=sid_mm, seed=seed, view_deg=view_deg)
    check_writable(out if random else out.parent, MIN_FREE_BYTES + random * cam.height * cam.width * 4)
    dev = resolve_device(device)
    vol = read_volume(ct, force=force)
    p = read_pose(pose, reference=cfg.reference(vol)) if pose is not None else None
    t0 = time.perf_counter()
    if p is not None:
        img_path, pose_path = simulate_one(vol, cam, p, out, cfg, dev)
        _echo(f"wrote {img_path} ({cam.height}x{cam.width}, {mode}) and {pose_path} in {time.perf_counter() - t0:.2f} s")
        return
    with _progress("rendering") as bar:
        task = bar.add_task("render", total=random)
        pj = simulate_random(vol, cam, random, out, "." + fmt.lstrip("."), pose_ranges, cfg, dev,
                             progress=lambda k: bar.advance(task, k))  # fmt: skip
    dt = time.perf_counter() - t0
    _echo(f"wrote {random} DRRs ({cam.height}x{cam.width}, {mode}) and {pj} to {out} in {dt:.1f} s ({random / dt:.1f}/s)")
