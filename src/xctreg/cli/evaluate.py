"""``xctreg evaluate``: register held-out simulated X-rays and report mTRE, mPD, SR, per-parameter errors, NCC/SSIM/CSS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xctreg.cli._app import app
from xctreg.cli._common import _echo, _progress
from xctreg.errors import XctregError


@app.command("evaluate")
def evaluate_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A trained MODEL_DIR.")],
    n: Annotated[int, typer.Option("--n", help="Number of held-out simulated X-rays.")] = 100,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for metrics.json, metrics.md and figures.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the held-out poses.")] = 987_654,
    no_refine: Annotated[bool, typer.Option("--no-refine", help="Regressor only.")] = False,
    targets: Annotated[Path | None, typer.Option("--targets", help="CSV of mTRE target points: name,x,y,z in LPS mm (default: up to 5000 CT voxels above -200 HU).")] = None,
    baselines: Annotated[bool, typer.Option("--baselines", help="Also refine the same X-rays by CMA-ES and Powell (same levels, objective and start) and without the network; a table in metrics.md.")] = False,
    views: Annotated[str | None, typer.Option("--views", help="Multi-view: the views to compare, e.g. ap,lat-left; the first is MODEL_DIR's, the others come from --models. Each view alone and all jointly.")] = None,
    models: Annotated[str | None, typer.Option("--models", help="With --views: a MODEL_DIR per further view, comma-separated, in --views order.")] = None,
    sessions: Annotated[Path | None, typer.Option("--sessions", help="With --views: register the sessions found under this folder (each session.json with a truth.json beside it, from any renderer, e.g. bench/multiview.py --write) instead of xctreg's own renders.")] = None,
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
    if sessions is not None and views is None:
        raise XctregError("--sessions needs --views (and --models): the views of the sessions, in order")
    if views is not None or models is not None:
        if no_refine or baselines or targets is not None:
            raise XctregError("--views does not go with --no-refine, --baselines or --targets")
        _evaluate_views(model_dir, views, models, n, out, device, seed, _find_sessions(sessions) if sessions is not None else None)
        return
    with _progress("evaluating") as bar:
        task = bar.add_task("eval", total=n)
        m = evaluate(model_dir, n, out, resolve_device(device), seed,
                     progress=lambda d, t: bar.update(task, completed=d), refine=not no_refine, targets=pts, baselines=baselines)  # fmt: skip
    _echo(
        f"{n} X-rays: median mTRE {m['median_mtre_mm']:.2f} mm, SR@10mm {m['sr_10mm']:.1%}, "
        f"SR@20mm {m['sr_20mm']:.1%} ({'with refinement' if m['refine'] else 'regressor only'}); wrote {out}/metrics.json"
    )


def _find_sessions(folder: Path) -> list[Path]:
    """Every session.json under ``folder`` (sorted); one error line when there is none."""
    if not folder.is_dir():
        raise XctregError(f"--sessions {folder} is not a folder")
    found = sorted(folder.rglob("session.json"))
    if not found:
        raise XctregError(f"--sessions {folder} holds no session.json")
    return found


def _evaluate_views(model_dir: Path, views: str | None, models: str | None, n: int, out: Path, device: str, seed: int,
                    sessions: list[Path] | None = None) -> None:  # fmt: skip
    """``evaluate --views``: every view alone and all jointly, on the same poses (or the given sessions)."""
    from xctreg._fs import read_json
    from xctreg.evaluate import evaluate_views
    from xctreg.geometry import parse_view, view_name
    from xctreg.runtime import resolve_device

    names = [v.strip() for v in (views or "").split(",") if v.strip()]
    dirs = [model_dir] + [Path(m.strip()) for m in (models or "").split(",") if m.strip()]
    if len(names) < 2 or len(dirs) != len(names):
        raise XctregError(f"--views needs two or more views and --models one MODEL_DIR per view after the first (got {len(names)} views, {len(dirs) - 1} models)")
    for name, d in zip(names, dirs, strict=True):
        cfg = d / "config.json"
        if not cfg.is_file():
            raise XctregError(f"{d} is not a model folder (no config.json)")
        conf = read_json(cfg, "model config")
        ref = conf.get("reference") if isinstance(conf, dict) else None
        have = parse_view(ref.get("view_deg", (0.0, 0.0, 0.0)) if isinstance(ref, dict) else (0.0, 0.0, 0.0))
        if view_name(have) != view_name(parse_view(name)):  # type: ignore[arg-type]
            raise XctregError(f"{d} was trained around the {view_name(have)} view, not {name}")
    total = n if sessions is None else len(sessions)
    with _progress("evaluating views") as bar:
        task = bar.add_task("eval", total=total)
        m = evaluate_views(dirs, n, out, resolve_device(device), seed, progress=lambda d, t: bar.update(task, completed=d), sessions=sessions)
    rows = m["methods"]
    alone = ", ".join(f"{k} {r['median_mtre_mm']:.2f}" for k, r in rows.items() if k != "joint")
    _echo(f"{total} {m['cases']}: median mTRE joint {rows['joint']['median_mtre_mm']:.2f} mm ({alone} mm); wrote {out}/metrics.md")
