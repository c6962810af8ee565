"""Evaluation on held-out simulated X-rays: metrics.json, metrics.md and figures (mTRE, mPD, success rates, ...).

Test X-rays are rendered polyenergetically with Poisson noise and detector
blur at poses drawn with a seed the training never uses, then registered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xctreg._fs import atomic_path, write_json
from xctreg.geometry import Camera, Pose, view_name
from xctreg.metrics import mpd, mtre, param_bias, param_errors, success_rates, target_points
from xctreg.physics import DetectorConfig
from xctreg.preprocess import PreparedXray
from xctreg.register import Registrar
from xctreg.render import RenderConfig, Renderer

EVAL_SEED = 987_654


def evaluate(
    model_dir: str | Path,
    n: int = 100,
    out_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = EVAL_SEED,
    photons: float = 1e5,
    progress: Callable[[int, int], None] | None = None,
    refine: bool = True,
    targets: np.ndarray | None = None,
    baselines: bool | int = False,
) -> dict[str, Any]:
    """Register ``n`` held-out simulated X-rays (regression, then refinement unless ``refine`` is
    False); return (and write) the metrics.

    ``targets``: (N, 3) world points (LPS mm) for mTRE and mPD instead of the default targets
    (up to 5000 voxel centres of the CT with HU > -200, subsampled with a fixed seed).
    ``baselines``: also refine the same X-rays by ``BASELINES`` (the method's Table 2 and a start
    without the network): all of them (True) or the first ``baselines`` (an int), reported under
    ``metrics["baselines"]`` beside ``register`` on the same X-rays, with a box plot of the errors
    per method (baselines.png)."""
    n_base = n if baselines is True else max(0, min(int(baselines), n))
    reg = Registrar(model_dir, device=device)
    vol = reg.ct()
    params = reg.space.sample(n, seed=seed)  # around the model's view, within its ranges
    render = Renderer(vol, reg.camera, RenderConfig(detector=DetectorConfig(photons=photons, blur_px=0.5)), reference=reg.reference)
    g = torch.Generator().manual_seed(seed)
    pred, times, sims, t_reg, t_ref = [], [], [], [], []
    base: dict[str, dict[str, list[Any]]] = {}
    for s in range(0, n, 16):
        p = torch.as_tensor(params[s : s + 16], dtype=torch.float32)
        with torch.no_grad():
            imgs = render(p, generator=g)[:, 0].numpy()
        for img in imgs:
            r = reg.register(img, refine_pose=refine)
            pred.append(r.params)
            times.append(r.timing_s["total"])
            t_reg.append(r.timing_s["regress"])
            t_ref.append(r.timing_s["refine"])
            sims.append(r.similarity)
            if len(pred) <= n_base:
                for name, run in run_baselines(reg, img).items():
                    b = base.setdefault(name, {"params": [], "s": [], "sim": []})
                    b["params"].append(run.params)
                    b["s"].append(run.seconds)
                    b["sim"].append(run.similarity)
        if progress is not None:
            progress(min(n, s + 16), n)
    pred_a = np.asarray(pred, dtype=np.float64)
    pts = torch.as_tensor(target_points(vol, 5000, seed=0) if targets is None else np.asarray(targets, dtype=np.float64))
    Tp = reg.space.to_matrix(torch.as_tensor(pred_a))
    Tt = reg.space.to_matrix(torch.as_tensor(params))
    e = mtre(Tp, Tt, pts).numpy()
    d = mpd(Tp, Tt, pts, reg.camera).numpy()
    metrics: dict[str, Any] = {
        "n": n,
        "refine": refine,
        "median_mtre_mm": float(np.median(e)),
        "mean_mtre_mm": float(np.mean(e)),
        "std_mtre_mm": float(np.std(e)),
        "median_mpd_mm": float(np.median(d)),
        "mean_mpd_mm": float(np.mean(d)),
        **success_rates(e, (20.0, 10.0, 5.0, 2.0, 1.0)),
        "targets": "default (CT voxels, HU > -200)" if targets is None else f"{len(pts)} given points",
        "view": view_name(reg.reference.view_deg),
        "param_mae": param_errors(pred_a, params),
        "param_bias": param_bias(pred_a, params),
        "seconds_per_xray": float(np.mean(times)),
        "seconds_regress": float(np.mean(t_reg)),
        "seconds_refine": float(np.mean(t_ref)),
        "similarity_mean": {k: float(np.mean([s[k] for s in sims])) for k in ("ncc", "ssim", "css")},
    }
    if base:
        own = {"params": pred[:n_base], "s": times[:n_base], "sim": sims[:n_base]}
        metrics["baselines"] = {name: _row(reg, b, params[:n_base], pts) for name, b in {"register": own, **base}.items()}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", metrics)
        write_json(out / "cases.json", {"true_params": params.tolist(), "pred_params": pred_a.tolist(), "mtre_mm": e.tolist()})
        with atomic_path(out / "metrics.md") as tmp:
            tmp.write_text(metrics_markdown(metrics), encoding="utf-8")
        _figures(out, params, pred_a, e)
        if base:
            _baseline_figure(out / "baselines.png", metrics["baselines"])
    return metrics


def evaluate_views(
    model_dirs: list[str | Path],
    n: int = 20,
    out_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = EVAL_SEED,
    photons: float = 1e5,
    progress: Callable[[int, int], None] | None = None,
    sessions: list[Path] | None = None,
) -> dict[str, Any]:
    """Multi-view evaluation: every view registered alone and all jointly (``xctreg.multiview``).
    Errors are taken in the first view's parameters.

    Without ``sessions``: ``n`` held-out poses seen from every model's view (the first is the
    reference; the rigs turn the C-arm about the CT's centre), rendered by xctreg itself
    (polyenergetic, Poisson noise, blur): in-distribution, not an independent judge.
    With ``sessions`` (session JSON paths, each with a ``truth.json`` beside it holding the first
    view's true pose under ``"first"``, as ``simulate-multiview`` writes): those X-rays and rigs,
    from any renderer (``bench/multiview.py --write`` makes them with DiffDRR); ``n`` is unused.
    Returns (and writes as metrics.json / metrics.md) one row per method."""
    from xctreg.multiview import check_same_ct, register_views, rig_between, sample_session_poses

    regs = [Registrar(m, device=device) for m in model_dirs]
    check_same_ct(regs, [str(m) for m in model_dirs])
    cases: Iterator[tuple[list[PreparedXray], list[np.ndarray]]]
    if sessions is None:
        rigs = [rig_between(regs[0].reference, r.reference) for r in regs]
        truth = sample_session_poses([r.space for r in regs], rigs, n, seed)
        true_first, cases = truth[0], _simulated_cases(regs, rigs, truth, seed, photons)
        label = "xctreg's own renders (in-distribution)"
    else:
        true_first = np.stack([_session_truth(regs[0], p) for p in sessions])
        cases, n = _session_cases(regs, model_dirs, sessions), len(sessions)
        label = f"the X-rays of {n} sessions ({', '.join(sorted({str(p.parent.parent) for p in sessions}))})"
    names = [view_name(r.reference.view_deg) for r in regs]
    methods = [f"{v} alone" for v in names] + ["joint"]
    est: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    secs: dict[str, list[float]] = {m: [] for m in methods}
    flagged = 0
    for i, (xrays, rigs) in enumerate(cases):
        for k, (r, x) in enumerate(zip(regs, xrays, strict=True)):
            res = r.register(x)
            est[methods[k]].append(np.linalg.inv(rigs[k]) @ res.pose.T_cam_from_world)
            secs[methods[k]].append(res.timing_s["total"])
        mv = register_views(regs, xrays, rigs)
        est["joint"].append(mv.joint.pose.T_cam_from_world)
        secs["joint"].append(mv.joint.timing_s["total"])
        flagged += bool(mv.flagged)
        if progress is not None:
            progress(i + 1, n)
    pts = torch.as_tensor(target_points(regs[0].ct(), 5000, seed=0))
    Tt = regs[0].space.to_matrix(torch.as_tensor(true_first))
    rows = {}
    for m in methods:
        T = torch.as_tensor(np.stack(est[m]))
        e = mtre(T, Tt, pts).numpy()
        p = regs[0].space.from_matrix(T).numpy()
        rows[m] = {"median_mtre_mm": float(np.median(e)), "mean_mtre_mm": float(e.mean()), "std_mtre_mm": float(e.std()),
                   "p95_mtre_mm": float(np.percentile(e, 95)), **success_rates(e, (10.0, 1.0)),
                   "param_bias": param_bias(p, true_first), "param_mae": param_errors(p, true_first),
                   "seconds_each": float(np.mean(secs[m]))}  # fmt: skip
    metrics = {"n": n, "cases": "poses" if sessions is None else "sessions", "views": names, "models": [str(m) for m in model_dirs], "xrays": label,
               "sessions_with_a_flagged_view": flagged, "methods": rows}  # fmt: skip
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", metrics)
        with atomic_path(out / "metrics.md") as tmp:
            tmp.write_text(views_markdown(metrics), encoding="utf-8")
    return metrics


def _simulated_cases(regs: list[Registrar], rigs: list[np.ndarray], truth: list[np.ndarray], seed: int,
                     photons: float) -> Iterator[tuple[list[PreparedXray], list[np.ndarray]]]:  # fmt: skip
    """The poses ``truth`` (per view, (N, 6) deg, mm) rendered by xctreg (Poisson noise, blur):
    per case the prepared X-rays and the rigs."""
    det = RenderConfig(detector=DetectorConfig(photons=photons, blur_px=0.5))
    g = torch.Generator().manual_seed(seed)
    for i in range(len(truth[0])):
        with torch.no_grad():
            imgs = [r.renderer(r.camera, det)(torch.as_tensor(t[i : i + 1], dtype=torch.float32), generator=g)[0, 0].cpu().numpy()
                    for r, t in zip(regs, truth, strict=True)]  # fmt: skip
        yield [r.prepare(img) for r, img in zip(regs, imgs, strict=True)], rigs


def _session_cases(regs: list[Registrar], model_dirs: list[str | Path], sessions: list[Path]) -> Iterator[tuple[list[PreparedXray], list[np.ndarray]]]:
    """Each session's prepared X-rays (read with their geometry) and rigs, as written in it."""
    from xctreg.multiview import read_session

    for path in sessions:
        specs = read_session(path, models=model_dirs)
        xrays = [r.prepare(v.xray, v.geometry) for r, v in zip(regs, specs, strict=True)]
        yield xrays, [v.T_cam_from_first for v in specs]


def _session_truth(reg: Registrar, session: Path) -> np.ndarray:
    """The first view's true parameters (deg, mm, in ``reg``'s pose space) from ``truth.json``
    beside ``session``: ``{"first": POSE JSON}``."""
    from xctreg._fs import read_json
    from xctreg.errors import XctregError

    path = session.parent / "truth.json"
    if not path.is_file():
        raise XctregError(f"{session}: no truth.json beside it (the first view's true pose under \"first\")")
    d = read_json(path, "truth JSON")
    first = d.get("first") if isinstance(d, dict) else None
    pose = Pose.from_dict(first, reg.reference, name=f"{path}: first")
    return reg.space.from_matrix(torch.as_tensor(pose.T_cam_from_world)).numpy()


def views_markdown(m: dict[str, Any]) -> str:
    """The multi-view table: per method, mTRE and the signed errors in the first view's parameters."""
    head = (f"{m['n']} {m.get('cases', 'poses')}, views {', '.join(m['views'])}; {m['xrays']}; errors in the {m['views'][0]} view's parameters.\n\n"
            "| method | mTRE median / p95 (mm) | mean ± std | SR@10 | SR@1 | bias rx ry rz (°) | bias tx ty tz (mm) | s (joint: per session) |\n" + "|---" * 8 + "|\n")  # fmt: skip
    return head + "\n".join(
        f"| {name} | {r['median_mtre_mm']:.2f} / {r['p95_mtre_mm']:.2f} | {r['mean_mtre_mm']:.2f} ± {r['std_mtre_mm']:.2f} | "
        f"{r['sr_10mm']:.0%} | {r['sr_1mm']:.0%} | {signed_errors(r, 0)} | {signed_errors(r, 3)} | {r['seconds_each']:.1f} |"
        for name, r in m["methods"].items()
    ) + "\n"


BASELINES = ("gradient, model levels", "cma-es, model levels", "powell, model levels", "cma-es, equal time", "powell, equal time",
             "no network")  # fmt: skip
"""Rows of ``evaluate --baselines``: gradient refinement's model levels alone, CMA-ES and Powell on
the same levels, objective and start (``xctreg.baselines``) run to convergence and stopped at the
gradient run's wall time, and ``register`` from the reference pose instead of the regressor's."""


@dataclass
class BaselineRun:
    """One baseline on one X-ray: the parameters (deg, mm), the seconds it took, {"ncc", "ssim",
    "css"} between the X-ray and the final DRR, and its work (renders, or refinement steps)."""

    params: np.ndarray
    seconds: float
    similarity: dict[str, float]
    work: int


def run_baselines(reg: Registrar, img: np.ndarray, camera: Camera | None = None) -> dict[str, BaselineRun]:
    """Each of ``BASELINES`` on one X-ray (H, W; on ``camera``, by default the model's detector)."""
    from xctreg.baselines import SearchConfig, refine_derivative_free
    from xctreg.register import RefineConfig
    from xctreg.register import refine as refine_levels

    xr = reg.prepare(img, camera)
    start = reg.regress(xr).params
    args = (reg.volume_for, xr.image, xr.camera, reg.reference, start)
    cfg, out = RefineConfig(), {}
    kw = {"mask": xr.mask, "renderers": reg._renderers, "device": reg.device}
    runs = {
        BASELINES[0]: lambda: refine_levels(*args, cfg, xr.mask, reg._renderers, reg.device),
        BASELINES[1]: lambda: refine_derivative_free(*args, "cma-es", cfg, **kw),
        BASELINES[2]: lambda: refine_derivative_free(*args, "powell", cfg, **kw),
        # the gradient run's seconds, known once it has run (dicts keep their order)
        BASELINES[3]: lambda: refine_derivative_free(*args, "cma-es", cfg, SearchConfig(seconds=out[BASELINES[0]].seconds), **kw),
        BASELINES[4]: lambda: refine_derivative_free(*args, "powell", cfg, SearchConfig(seconds=out[BASELINES[0]].seconds), **kw),
    }
    for name, run in runs.items():
        t = time.perf_counter()
        r = run()
        out[name] = BaselineRun(r.params, time.perf_counter() - t, reg.scores_at(xr, r.params), r.iterations)
    full = reg.register(img, camera, start_params=np.zeros(6))
    out[BASELINES[5]] = BaselineRun(full.params, full.timing_s["total"], full.similarity, full.iterations)
    return out


def _row(reg: Registrar, b: dict[str, list[Any]], true: np.ndarray, pts: torch.Tensor) -> dict[str, Any]:
    """One baseline's summary: mTRE median, mean, std, SR@10, the mean signed error per parameter
    (deg, mm), mean NCC/SSIM/CSS, seconds per X-ray."""
    pred = np.asarray(b["params"], dtype=np.float64)
    e = mtre(reg.space.to_matrix(torch.as_tensor(pred)), reg.space.to_matrix(torch.as_tensor(true)), pts).numpy()
    return {"median_mtre_mm": float(np.median(e)), "mean_mtre_mm": float(e.mean()), "std_mtre_mm": float(e.std()),
            "sr_10mm": float(np.mean(e < 10)), "seconds_per_xray": float(np.mean(b["s"])), "param_bias": param_bias(pred, true),
            "mtre_each": [round(float(v), 4) for v in e],
            **{k: float(np.mean([s[k] for s in b["sim"]])) for k in ("ncc", "ssim", "css")}}  # fmt: skip


def metrics_markdown(m: dict[str, Any]) -> str:
    """A small Markdown report of the metrics."""
    rows = [
        ("cases", f"{m['n']}"),
        ("view", m.get("view", "ap")),
        ("refinement", "yes" if m["refine"] else "no (regressor only)"),
        ("median / mean mTRE", f"{m['median_mtre_mm']:.2f} / {m['mean_mtre_mm']:.2f} mm"),
        ("median / mean mPD", f"{m['median_mpd_mm']:.2f} / {m['mean_mpd_mm']:.2f} mm"),
    ]
    rows += [(f"SR < {k[3:-2]} mm", f"{v:.1%}") for k, v in m.items() if k.startswith("sr_")]
    rows += [(f"MAE {k}", f"{v:.2f}") for k, v in m["param_mae"].items()]
    rows += [(f"bias (mean signed) {k}", f"{v:+.3f}") for k, v in m.get("param_bias", {}).items()]
    rows += [(f"mean {k.upper()}", f"{v:.3f}") for k, v in m["similarity_mean"].items()]
    rows += [("time per X-ray (regress + refine)", f"{m['seconds_per_xray']:.2f} s ({m['seconds_regress']:.3f} + {m['seconds_refine']:.2f})")]
    text = "| metric | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"
    if m.get("baselines"):
        text += ("\n| refinement (same X-rays) | mTRE median | mean ± std (mm) | SR@10 | NCC | SSIM | CSS | s / X-ray | "
                 "bias rx ry rz (°) | bias tx ty tz (mm) |\n" + "|---" * 10 + "|\n")  # fmt: skip
        text += "\n".join(
            f"| {name} | {r['median_mtre_mm']:.2f} | {r['mean_mtre_mm']:.2f} ± {r['std_mtre_mm']:.2f} | {r['sr_10mm']:.0%} | "
            f"{r['ncc']:.3f} | {r['ssim']:.3f} | {r['css']:.3f} | {r['seconds_per_xray']:.1f} | {signed_errors(r, 0)} | {signed_errors(r, 3)} |"
            for name, r in m["baselines"].items()
        ) + "\n"
    return text


def _baseline_figure(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    """A box plot of the mTRE per X-ray of each method (log scale), as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.boxplot([np.maximum(rows[k]["mtre_each"], 1e-3) for k in names], showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), [k.replace(", ", ",\n") for k in names], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("mTRE (mm)")
    ax.set_title(f"the same {len(rows[names[0]]['mtre_each'])} X-rays, each method", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def signed_errors(row: dict[str, Any], first: int) -> str:
    """Three mean signed errors of a baseline row (deg or mm), from parameter ``first`` on, as text."""
    bias = list(row.get("param_bias", {}).values())[first : first + 3]
    return " ".join(f"{v:+.2f}" for v in bias) if bias else "—"


def _figures(out: Path, true: np.ndarray, pred: np.ndarray, e: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xctreg.geometry import PARAM_NAMES

    # two rows of four, so that the figure stays legible when a page fits it to its width
    fig, axes = plt.subplots(2, 4, figsize=(12, 5.6))
    axes = axes.ravel()
    axes[0].hist(e, bins=30)
    axes[0].set_xlabel("mTRE (mm)")
    axes[0].set_title("error per X-ray", fontsize=9)
    for j, name in enumerate(PARAM_NAMES):
        ax = axes[j + 1]
        ax.scatter(true[:, j], pred[:, j], s=4)
        lim = [true[:, j].min(), true[:, j].max()]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_title(f"{name}: estimated against true", fontsize=9)
    axes[7].axis("off")
    fig.tight_layout()
    with atomic_path(out / "errors.png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
