"""``xctreg augment-preview``: save a grid of clean DRRs (top row) and augmented versions (two rows below)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _echo, _preset_camera
from xctreg.errors import XctregError


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
