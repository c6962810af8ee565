"""``xctreg register-multiview`` and ``xctreg simulate-multiview``: several X-rays of one patient
from C-arm positions with a known relative geometry, and one unknown patient pose."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _RANGES_HELP, _check_outputs, _echo, _preset_camera, _print_warnings
from xctreg.errors import XctregError
from xctreg.presets import DEFAULT_SID_MM


def _split(text: str | None, what: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise XctregError(f"{what} is empty")
    return items


@app.command("register-multiview")
def register_multiview(
    session: Annotated[Path, typer.Argument(help="Session JSON: {\"views\": [{\"model\", \"xray\", \"geometry\" (optional), \"T_cam_from_first\"}, ...]}.")],
    out: Annotated[Path | None, typer.Option("--out", help="Result JSON {\"joint\", \"views\"} (default: <session>.result.json beside it).")] = None,
    models: Annotated[str | None, typer.Option("--models", help="Comma-separated MODEL_DIRs, one per view, instead of the session's.")] = None,
    overlay: Annotated[Path | None, typer.Option("--overlay", help="Folder for one overlay PNG per view (DRR outlines at the initial and joint pose).")] = None,
    animate: Annotated[Path | None, typer.Option("--animate", help="Folder for one GIF per view of the joint refinement's trajectory.")] = None,
    no_refine: Annotated[bool, typer.Option("--no-refine", help="Combine the regressors' proposals only.")] = False,
    refine_rig: Annotated[bool, typer.Option("--refine-rig", help="Also refine each further view's rotation about the C-arm's axis (an approximate angle encoder).")] = False,
    rig_bound_deg: Annotated[float, typer.Option("--rig-bound-deg", help="The most --refine-rig may turn a view (degrees).")] = 3.0,
    transmission: Annotated[bool, typer.Option("--transmission", help="The X-rays hold raw intensities: apply -log.")] = False,
    no_collimator: Annotated[bool, typer.Option("--no-collimator", help="Do not detect and mask collimated borders.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Use a model's CT even when its SHA-256 differs from the one trained on.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Register several X-rays of one patient jointly: one pose, every view's similarity."""
    import warnings

    from xctreg.batch import write_figures
    from xctreg.multiview import MultiviewConfig, read_session, register_session
    from xctreg.preprocess import PreprocessConfig
    from xctreg.runtime import resolve_device
    from xctreg._fs import write_json

    cfg = MultiviewConfig(refine_rig=refine_rig, rig_bound_deg=rig_bound_deg)
    specs = read_session(session, _split(models, "--models"))
    out = out or session.with_name(session.name.split(".")[0] + ".result.json")
    _check_outputs(len(specs), out.parent, overlay, animate)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from rich.console import Console

        with Console(stderr=True).status(f"registering {len(specs)} views jointly ..."):
            res, regs = register_session(specs, cfg, resolve_device(device), strict=not force, refine_pose=not no_refine,
                                         preprocess=PreprocessConfig(collimator=not no_collimator), transmission=transmission)  # fmt: skip
        write_json(out, res.to_dict())
        stems = [s.xray.name.split(".")[0] for s in specs]
        for k, (r, reg, spec) in enumerate(zip(res.views, regs, specs, strict=True)):
            stem = stems[k] if stems.count(stems[k]) == 1 else f"view{k}_{stems[k]}"
            write_figures(r, reg, overlay and overlay / f"{stem}.png", animate and animate / f"{stem}.gif", title=f"view {k} ({spec.xray.name})")
    _print_warnings(caught)
    p = res.joint.to_dict()["params"]
    for k, rep in enumerate(res.reports):
        if rep.flag is not None:
            _echo(f"view {k} ({specs[k].xray.name}) flagged{' and left out' if rep.weight == 0 else ''}: {rep.flag}")
    _echo(f"{len(specs)} views: rx {p['rx_deg']:.2f} ry {p['ry_deg']:.2f} rz {p['rz_deg']:.2f} deg, tx {p['tx_mm']:.1f} "
          f"ty {p['ty_mm']:.1f} tz {p['tz_mm']:.1f} mm (first view); {res.joint.timing_s['total']:.1f} s -> {out}")  # fmt: skip


@app.command("simulate-multiview")
def simulate_multiview(
    ct: Annotated[Path, typer.Argument(help="CT volume: NIfTI, NRRD, MHA/MHD or a DICOM series folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: one X-ray per view, session.json and truth.json.")],
    views: Annotated[str, typer.Option("--views", help="Comma-separated views (ap, pa, lat-left, lat-right); the first is the reference.")] = "ap,lat-left",
    pose: Annotated[Path | None, typer.Option("--pose", help="The first view's pose JSON (default: random within --ranges).")] = None,
    ranges: Annotated[str | None, typer.Option("--ranges", help=_RANGES_HELP)] = None,
    models: Annotated[str | None, typer.Option("--models", help="Comma-separated MODEL_DIRs, one per view, written into session.json.")] = None,
    geometry: Annotated[Path | None, typer.Option("--geometry", help="Geometry JSON of every view's detector; default: the --preset camera.")] = None,
    preset: Annotated[str, typer.Option("--preset", help="Camera when no --geometry: quick (128², 3.2 mm) or paper (256², 1.6 mm).")] = "quick",
    fmt: Annotated[str, typer.Option("--format", help="Image format: png, npy, tiff or dcm.")] = "png",
    photons: Annotated[float | None, typer.Option("--photons", help="Photons per pixel for Poisson noise (default: none).")] = None,
    sid_mm: Annotated[float, typer.Option("--sid-mm", help="Source-isocenter distance of every view (mm).")] = DEFAULT_SID_MM,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random pose and the noise.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Accept a volume that does not look like a CT.")] = False,
) -> None:
    """Render a consistent set of X-rays of one CT pose from several C-arm views, with a session JSON and the truth."""
    from xctreg._fs import MIN_FREE_BYTES, check_writable
    from xctreg.geometry import parse_ranges, parse_view
    from xctreg.physics import DetectorConfig
    from xctreg.render import RenderConfig
    from xctreg.runtime import resolve_device
    from xctreg.simulate import SimulateConfig, simulate_views

    names = _split(views, "--views") or []
    if len(names) < 2:
        raise XctregError(f"--views needs at least two views, got {views!r}")
    view_degs = [parse_view(v) for v in names]
    model_dirs = _split(models, "--models")
    if model_dirs is not None and len(model_dirs) != len(names):
        raise XctregError(f"--models gives {len(model_dirs)} model folders for {len(names)} views")
    cam = _preset_camera(preset, geometry)
    cfg = SimulateConfig(render=RenderConfig(detector=DetectorConfig(photons=photons)), sid_mm=sid_mm, seed=seed)
    check_writable(out, MIN_FREE_BYTES + len(names) * cam.height * cam.width * 4)
    from xctreg.io import read_volume

    vol = read_volume(ct, force=force)
    session = simulate_views(vol, cam, view_degs, names, out, cfg, pose=pose, ranges=parse_ranges(ranges) if ranges else None,
                             models=model_dirs, fmt="." + fmt.lstrip("."), device=resolve_device(device))  # fmt: skip
    _echo(f"wrote {len(names)} X-rays ({cam.height}x{cam.width}, views {', '.join(names)}), {session} and {out / 'truth.json'}")
