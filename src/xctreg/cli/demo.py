"""``xctreg demo``: run the pipeline end to end on the embedded phantom (simulate, train, register, evaluate);"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _echo, _progress, _named_tasks
from xctreg.errors import XctregError


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
