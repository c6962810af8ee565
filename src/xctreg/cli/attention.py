"""``xctreg attention``: export the regressor's self-attention map for an X-ray: .npy array and PNG overlay."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _echo
from xctreg.errors import XctregError


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
