"""``xctreg register``: estimate the pose of X-rays: preprocessing, regression, then refinement by differentiable rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _echo, _progress, _check_outputs, _print_warnings
from xctreg.errors import XctregError


@app.command("register")
def register_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A trained MODEL_DIR.")],
    xray: Annotated[str, typer.Argument(help="X-ray file (.npy, .png, .tif, DICOM; bone bright unless --transmission), or a folder or quoted glob of them.")],
    geometry: Annotated[Path | None, typer.Option("--geometry", help="Geometry JSON (overrides DICOM tags).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Result JSON (one X-ray; default <xray>.result.json beside it) or folder (several; default <folder>/results).")] = None,
    no_refine: Annotated[bool, typer.Option("--no-refine", help="Regressor only.")] = False,
    transmission: Annotated[bool, typer.Option("--transmission", help="The X-ray holds raw intensities: apply -log.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Use the model's CT even when its SHA-256 differs from the one trained on (refused otherwise).")] = False,
    strict: Annotated[bool, typer.Option("--strict", hidden=True, help="The default now; kept for old scripts.")] = False,
    overlay_png: Annotated[Path | None, typer.Option("--overlay", help="PNG with DRR edges at the initial and final pose (a folder for several X-rays).")] = None,
    animate: Annotated[Path | None, typer.Option("--animate", help="GIF of the refinement trajectory (a folder for several X-rays).")] = None,
    mask: Annotated[Path | None, typer.Option("--mask", help="Image of pixels to ignore (non-zero = ignore), same size as the X-ray.")] = None,
    objective: Annotated[str, typer.Option("--similarity", help="The refinement objective of the model levels: local-gradncc (default), weighted-local-gradncc, patch-ncc, patch-ncc+gradncc, ncc, gradncc, ncc+gradncc or multiscale-ncc (the last level uses gradient NCC on finer X-rays, local gradient NCC on the model's detector).")] = "local-gradncc",
    native_size: Annotated[int, typer.Option("--native-size", help="When the X-ray is finer than the model's detector, a last level on its own pixels (Newton steps, then a line search along depth), at up to this many px (0: on the model's detector).", min=0)] = 256,
    match_blur: Annotated[bool, typer.Option("--match-blur", help="Fit the X-ray's detector blur in the last level and blur the DRRs by it (reported as blur_px): better on strongly blurred X-rays, depth biased short on sharp ones (docs/register.md).")] = False,
    no_collimator: Annotated[bool, typer.Option("--no-collimator", help="Do not detect and mask collimated borders.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the X-rays whose result (and overlay/GIF when asked for) an earlier run already wrote.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Estimate the pose of X-rays: preprocessing, regression, then refinement by differentiable rendering."""
    import warnings

    from xctreg.batch import Outputs, find_xrays, register_files, resumed_row, write_outputs
    from xctreg.geometry import read_camera
    from xctreg.io import read_xray
    from xctreg.preprocess import PreprocessConfig
    from xctreg.register import RefineConfig, Registrar
    from xctreg.runtime import resolve_device
    from xctreg.objectives import get_objective

    get_objective(objective)  # an unknown name fails before any work
    files = find_xrays(xray)
    keep = None
    if mask is not None:
        keep = (read_xray(mask).image == 0).astype("float32")
        if keep.mean() < 0.05:
            raise XctregError("--mask ignores almost every pixel")
    kwargs = dict(
        geometry=read_camera(geometry) if geometry is not None else None,
        refine_pose=not no_refine,
        config=RefineConfig(objective=objective, native_size=native_size, match_blur=match_blur),
        mask=keep,
        preprocess=PreprocessConfig(collimator=not no_collimator),
        transmission=transmission,
    )
    single = len(files) == 1 and not Path(xray).is_dir()
    if single:
        f = files[0]
        name = f.name.split(".")[0] + ".result.json"
        out = out / name if out is not None and out.is_dir() else (out or f.with_name(name))
        _check_outputs(1, out.parent, overlay_png and overlay_png.parent, animate and animate.parent)
        if resume and resumed_row(f, Outputs(out, overlay_png, animate)) is not None:
            _echo(f"skipped 1 of 1 X-rays that already had a result: {out} (--resume)")
            return
    else:
        base = Path(xray) if Path(xray).is_dir() else files[0].parent
        out_dir = out or base / "results"
        for opt, val in (("--out", out), ("--overlay", overlay_png), ("--animate", animate)):
            if val is not None and val.suffix and not val.is_dir():
                raise XctregError(f"{opt} must be a folder when registering several X-rays, got {val}")
        _check_outputs(len(files), out_dir, overlay_png, animate)
    skipped: list[Path] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = Registrar(model_dir, device=resolve_device(device), strict=strict or not force)
        if single:
            from rich.console import Console

            with Console(stderr=True).status(f"registering {f.name} ..."):
                res = reg.register(f, **kwargs)
            write_outputs(res, reg, Outputs(out, overlay_png, animate), title=f.name)
        else:
            with _progress("registering") as bar:
                task = bar.add_task("register", total=len(files))
                rows = register_files(reg, files, out_dir, on_done=lambda f, row: bar.advance(task), **kwargs,
                                      overlay_dir=overlay_png, animate_dir=animate, resume=resume, on_skip=skipped.append)  # fmt: skip
    _print_warnings(caught)
    if resume and not single:
        _echo(f"skipped {len(skipped)} of {len(files)} X-rays that already had a result in {out_dir} (--resume)")
    if single:
        p = res.to_dict()["params"]
        _echo(
            f"{f.name}: rx {p['rx_deg']:.2f} ry {p['ry_deg']:.2f} rz {p['rz_deg']:.2f} deg, "
            f"tx {p['tx_mm']:.1f} ty {p['ty_mm']:.1f} tz {p['tz_mm']:.1f} mm; NCC {res.similarity['ncc']:.3f}; "
            f"{res.timing_s['total']:.1f} s -> {out}"
        )
        return
    failed = [r for r in rows if r["status"] != "ok"]
    _echo(f"registered {len(rows) - len(failed)} of {len(rows)} X-rays -> {out_dir}/summary.csv")
    if failed:
        for r in failed:
            _echo(f"  failed: {r['xray']}: {r['error']}")
        raise XctregError(f"{len(failed)} of {len(rows)} X-rays failed (see {out_dir}/summary.csv)")
