"""``xctreg demo``: the whole pipeline on the embedded phantom, with an HTML report.

Steps (each writes into ``DemoConfig.out``; a rerun reuses a finished or
interrupted training run):

1. ``phantom.nii.gz``: the procedural torso CT;
2. ``augmentation.png``: clean training DRRs next to augmented ones;
3. ``model/``: ``xctreg train`` (the quick preset shortened to 2000 steps; ``fast``: a tiny smoke configuration);
4. ``xrays/``: example X-rays simulated at random poses (polyenergetic at another kVp,
   noise, blur; one with a black circular collimator, one with a saturated
   rectangular one) with their true poses;
5. ``results/``: ``xctreg register`` of each: result JSON, overlay PNG, trajectory GIF,
   attention map, summary.csv;
6. ``eval/``: ``xctreg evaluate`` on held-out simulated X-rays;
7. ``report.html``: one self-contained page with all of it (images embedded).
"""

from __future__ import annotations

import base64
import csv
import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xctreg._fs import atomic_path, write_json

Log = Callable[[str], None]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoConfig:
    """``xctreg demo`` options.

    Attributes:
        out: the output folder.
        fast: a smoke run (64³ phantom, 32² X-rays, a few training steps; about a minute).
        n_xrays: example X-rays registered one by one (overlays, GIFs).
        n_eval: held-out simulated X-rays for the metrics.
        seed: seeds the poses, noise and training.
        device: torch device of the regressor and training.
    """

    out: Path = Path("xctreg-demo")
    fast: bool = False
    n_xrays: int = 3
    n_eval: int = 20
    seed: int = 0
    device: str = "cpu"


@dataclass
class DemoResult:
    """Where the report is, and the headline numbers."""

    report: Path
    metrics: dict[str, Any]
    examples: list[dict[str, Any]]
    seconds: float


#: Training steps of the demo's phantom model (the quick preset trains 4000 on a patient's CT).
DEMO_STEPS = 2000
#: Held-out X-rays that the report also refines with the conventional baselines (about 20 s each).
DEMO_BASELINES = 4


def _train_config(cfg: DemoConfig):  # noqa: ANN202 - TrainConfig, imported lazily
    from dataclasses import replace

    from xctreg.train import preset, quick_test_config

    # the quick preset with half its steps (a full, shorter schedule): a first look sooner
    base = quick_test_config(steps=8) if cfg.fast else replace(preset("quick"), steps=DEMO_STEPS)
    return replace(base, seed=cfg.seed)


def _example_xrays(vol: Any, camera: Any, reference: Any, out: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """Simulate ``n`` X-rays (100 kVp, noise, blur; collimated 2nd and 3rd) with their poses."""
    from xctreg.data.poses import sample_poses
    from xctreg.geometry import Pose
    from xctreg.io import write_xray
    from xctreg.physics import DetectorConfig
    from xctreg.render import RenderConfig, Renderer

    params = sample_poses(n, seed=seed + 2024)
    r = Renderer(vol, camera, RenderConfig(kvp=100.0, detector=DetectorConfig(photons=1e5, blur_px=0.5)), reference=reference)
    with torch.no_grad():
        imgs = r(torch.as_tensor(params, dtype=torch.float32), generator=torch.Generator().manual_seed(seed))[:, 0].numpy()
    h, w = imgs.shape[-2:]
    v, u = np.mgrid[:h, :w]
    shutters = [
        ("none", None, None),
        ("black circular collimator", (u - (w - 1) / 2) ** 2 + (v - (h - 1) / 2) ** 2 <= (0.46 * w) ** 2, "min"),
        ("saturated rectangular collimator", (u >= 0.1 * w) & (u < 0.88 * w) & (v >= 0.06 * h) & (v < 0.92 * h), "max"),
    ]
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for k, (img, p) in enumerate(zip(imgs, params, strict=True)):
        label, keep, fill = shutters[k % len(shutters)]
        if keep is not None:
            img = np.where(keep, img, img.min() if fill == "min" else img.max())
        path = out / f"xray_{k}.png"
        write_xray(path, img.astype(np.float32))
        pose = Pose.from_params(p, reference)
        write_json(out / f"xray_{k}.pose.json", pose.to_dict())
        cases.append({"name": path.name, "path": path, "true": p, "shutter": label})
    return cases


def _training_curve(log_csv: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(log_csv.open(encoding="utf-8")))
    step = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    val = [(int(r["step"]), float(r["val_median_mtre_mm"])) for r in rows if r.get("val_median_mtre_mm")]
    fig, ax = plt.subplots(1, 2, figsize=(8, 2.8))
    ax[0].plot(step, loss, lw=0.8)
    ax[0].set(xlabel="step", ylabel="training loss", yscale="log")
    if val:
        ax[1].plot(*zip(*val, strict=True), "o-", ms=3)
    ax[1].set(xlabel="step", ylabel="val median mTRE (mm), regressor")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def run_demo(cfg: DemoConfig, log: Log = print, progress: Progress | None = None) -> DemoResult:
    """Run the demo end to end; returns the report's path and the headline metrics."""
    from xctreg.batch import Outputs, summary_row, write_outputs, write_summary
    from xctreg.data.augment import preview_rows
    from xctreg.data.phantom import PhantomConfig, make_phantom
    from xctreg.evaluate import evaluate
    from xctreg.io import write_volume
    from xctreg.metrics import mtre, target_points
    from xctreg.register import Registrar
    from xctreg.train import Trainer
    from xctreg.viz import image_grid, overlay

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    vol = make_phantom(PhantomConfig(size=(64, 64, 64), spacing_mm=(6.0, 6.0, 6.0)) if cfg.fast else None)
    ct = write_volume(vol, out / "phantom.nii.gz")
    tcfg = _train_config(cfg)
    log(f"phantom: {tuple(vol.hu.shape)} voxels -> {ct}")
    image_grid(preview_rows(vol, tcfg.camera, 6, seed=cfg.seed), out / "augmentation.png", ["clean DRR", "augmented", "augmented"])

    model_dir = out / "model"
    trainer = Trainer(vol, model_dir, tcfg, ct_path=ct, device=cfg.device, log=log)
    resume = (model_dir / "last.pt").exists()
    if resume:
        log(f"continuing the training run in {model_dir}")
    trainer.fit(resume=resume, progress=progress)
    _training_curve(model_dir / "train_log.csv", out / "training.png")

    reg = Registrar(model_dir, device=cfg.device, ct=vol)
    cases = _example_xrays(vol, reg.camera, reg.reference, out / "xrays", cfg.n_xrays, cfg.seed)
    res_dir = out / "results"
    pts = torch.as_tensor(target_points(vol, 5000))
    rows = []
    for k, case in enumerate(cases):
        r = reg.register(case["path"])
        outs = Outputs(res_dir / f"xray_{k}.result.json", res_dir / f"xray_{k}.overlay.png", res_dir / f"xray_{k}.gif")
        write_outputs(r, reg, outs, title=case["name"])
        rows.append(summary_row(case["path"], r, outs.result))
        T = lambda q: reg.space.to_matrix(torch.as_tensor(np.asarray(q), dtype=torch.float64))  # noqa: E731
        case.update(result=r, initial_mtre=float(mtre(T(r.initial.params), T(case["true"]), pts)),
                    final_mtre=float(mtre(T(r.params), T(case["true"]), pts)), outputs=outs)  # fmt: skip
        log(f"{case['name']} ({case['shutter']}): mTRE {case['initial_mtre']:.2f} mm (regressor) -> "
            f"{case['final_mtre']:.2f} mm (refined) in {r.timing_s['total']:.1f} s")  # fmt: skip
        if progress is not None:
            progress("registering examples", k + 1, len(cases))
    write_summary(res_dir / "summary.csv", rows)
    if "C" in reg.model_config.variant:
        first = cases[0]["result"]
        overlay(first.image, reg.attention(first.image), res_dir / "attention.png", title="self-attention, xray_0")

    eval_dir = out / "eval"
    metrics = evaluate(model_dir, cfg.n_eval, eval_dir, cfg.device, progress=(lambda d, t: progress("evaluating", d, t)) if progress else None,
                       baselines=min(cfg.n_eval, 1 if cfg.fast else DEMO_BASELINES))  # fmt: skip
    report = write_report(out, cfg, metrics, cases, time.perf_counter() - t0)
    return DemoResult(report, metrics, [{k: v for k, v in c.items() if k not in ("result", "outputs")} for c in cases], time.perf_counter() - t0)


def _img(path: Path, alt: str, width: int | None = None) -> str:
    if not path.exists():
        return ""
    mime = "image/gif" if path.suffix == ".gif" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    w = f' width="{width}"' if width else ""
    return f'<img src="data:{mime};base64,{data}" alt="{html.escape(alt)}"{w}>'


def _baselines_html(metrics: dict[str, Any], out: Path) -> str:
    """The section comparing xctreg's refinement with the conventional baselines on the first X-rays."""
    from xctreg.evaluate import signed_errors

    rows = metrics.get("baselines")
    if not rows:
        return ""
    n = len(next(iter(rows.values()))["mtre_each"])
    body = [[name, f"{r['median_mtre_mm']:.2f}", f"{r['mean_mtre_mm']:.2f} ± {r['std_mtre_mm']:.2f}", f"{r['sr_10mm']:.0%}",
             f"{r['ncc']:.3f}", f"{r['ssim']:.3f}", f"{r['css']:.3f}", f"{r['seconds_per_xray']:.1f}",
             signed_errors(r, 0), signed_errors(r, 3)] for name, r in rows.items()]  # fmt: skip
    table = _table(["method", "mTRE median (mm)", "mean ± std", "SR@10", "NCC", "SSIM", "CSS", "s / X-ray",
                    "bias rx ry rz (°)", "bias tx ty tz (mm)"], body)  # fmt: skip
    return (f"<h3>Against the conventional refinement ({n} of these X-rays)</h3><p>The same start (the regressor's pose), "
            "levels and objective: gradient steps through the differentiable renderer, CMA-ES and Powell with forward "
            "renders only (to convergence, and stopped at the gradient run's time), and registration started from the "
            f"reference pose without the network.</p>{table}"
            f"<figure>{_img(out / 'eval' / 'baselines.png', 'baselines')}<figcaption>mTRE of each X-ray, per method."
            "</figcaption></figure>")


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def write_report(out: Path, cfg: DemoConfig, metrics: dict[str, Any], cases: list[dict[str, Any]], seconds: float) -> Path:
    """The self-contained HTML report (images embedded as data URIs), written atomically."""
    from xctreg import __version__
    from xctreg.evaluate import metrics_markdown

    first_table = metrics_markdown(metrics).split("\n\n")[0]  # the baselines' table follows, shown on its own
    md_rows = [ln.strip("|").split("|") for ln in first_table.splitlines()[2:]]
    metric_table = _table(["metric", "value"], [[a.strip(), b.strip()] for a, b in md_rows])
    ex_rows = []
    for c in cases:
        r = c["result"]
        ex_rows.append([
            c["name"], c["shutter"], " ".join(f"{v:.1f}" for v in c["true"]), " ".join(f"{v:.1f}" for v in r.params),
            f"{c['initial_mtre']:.2f}", f"{c['final_mtre']:.2f}", f"{r.similarity['ncc']:.3f}", f"{r.timing_s['total']:.2f}",
        ])  # fmt: skip
    ex_table = _table(["X-ray", "collimator", "true rx ry rz tx ty tz", "estimated", "mTRE regressor (mm)",
                       "mTRE refined (mm)", "NCC", "seconds"], ex_rows)  # fmt: skip
    figs = "".join(
        f"<figure>{_img(c['outputs'].overlay, 'overlay', 480)}{_img(c['outputs'].animation, 'trajectory', 230)}"
        f"<figcaption>{html.escape(c['name'])}: DRR outlines at the regressor's pose (red) and after refinement (green), "
        f"a checkerboard of the X-ray and the final DRR; the animation follows refinement.</figcaption></figure>"
        for c in cases
    )
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xctreg demo report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
figure{{display:inline-block;margin:0.5em;max-width:100%}}figcaption{{font-size:0.85em;max-width:640px}}
img{{max-width:100%;height:auto}}</style></head><body>
<h1>xctreg demo</h1>
<p>xctreg {html.escape(__version__)}: automatic X-ray/CT registration on the embedded phantom
({'fast smoke run' if cfg.fast else f'quick preset, {DEMO_STEPS} steps'}, device {html.escape(cfg.device)}), {seconds / 60:.1f} min in all.
Pose parameters are rx ry rz (degrees) and tx ty tz (mm) relative to the AP view
(source in front of the patient, head at the top of the image, the patient's left on the image's right).</p>
<h2>Held-out simulated X-rays ({metrics['n']})</h2>
<p>Polyenergetic, noisy DRRs at uniformly random poses, registered with no start pose:
regressor, then refinement by differentiable rendering.</p>
{metric_table}
{_img(out / 'eval' / 'errors.png', 'errors')}
{_baselines_html(metrics, out)}
<h2>Example X-rays</h2>
{ex_table}
{figs}
<figure>{_img(out / 'results' / 'attention.png', 'attention', 320)}<figcaption>The regressor's self-attention on xray_0.</figcaption></figure>
<h2>Training</h2>
<figure>{_img(out / 'training.png', 'training')}<figcaption>Training loss and the median mTRE of the regressor alone on
the augmented validation DRRs at the full pose range (harder than the held-out X-rays above). The quick preset trains
one stage; with the curriculum (<code>--curriculum</code>) the loss jumps where a stage widens the range.</figcaption></figure>
<figure>{_img(out / 'augmentation.png', 'augmentation')}<figcaption>Training data: clean DRRs (top) and augmented
ones (kVp, contrast, noise, blur, scatter, instruments, collimation).</figcaption></figure>
<h2>Files</h2>
<p><code>phantom.nii.gz</code> (the CT), <code>model/</code> (MODEL_DIR), <code>xrays/</code> (the examples and their
true poses), <code>results/</code> (result JSON, overlays, GIFs, summary.csv), <code>eval/</code> (metrics.json,
metrics.md, cases.json, errors.png).</p>
</body></html>
"""
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return path
