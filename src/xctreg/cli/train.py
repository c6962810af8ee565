"""``xctreg train``: build the patient-specific model: cached training DRRs and the pose regressor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _echo, _VIEW_HELP, _RANGES_HELP, _view_and_ranges, _progress, _named_tasks
from xctreg.errors import XctregError


@app.command("train")
def train(
    ct: Annotated[Path, typer.Argument(help="The patient's CT.")],
    out: Annotated[Path, typer.Option("--out", help="MODEL_DIR: config, checkpoints, logs, cached data.")],
    preset: Annotated[str, typer.Option("--preset", help="quick (CPU, 128² X-rays) or paper (GPU, 256²).")] = "quick",
    variant: Annotated[str, typer.Option("--variant", help="Model: A, A+B, A+C or A+B+C.")] = "A+B+C",
    curriculum: Annotated[bool | None, typer.Option("--curriculum/--no-curriculum", help="The method's incremental curriculum (3 stages of widening ranges), or one stage at the full range; default: the preset's (quick: one stage, paper: the curriculum).")] = None,
    loss: Annotated[str, typer.Option("--loss", help="tre (parameters + target points) or geodesic (rotation angle + translation; the baseline after Salehi et al. 2018).")] = "tre",
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

    if loss not in ("tre", "geodesic"):
        raise XctregError(f"unknown --loss {loss!r}; use tre or geodesic")
    view_deg, pose_ranges = _view_and_ranges(view, ranges, view_from)
    cfg = get_preset(preset)
    cfg = replace(cfg, model=ModelConfig(**{**cfg.model.__dict__, "variant": variant}), seed=seed, view_deg=view_deg,
                  ranges=pose_ranges, curriculum=cfg.curriculum if curriculum is None else curriculum, steps=steps if steps is not None else cfg.steps, loss=loss)  # fmt: skip
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
