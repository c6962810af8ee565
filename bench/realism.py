"""Refinement and regressor judged on realistic X-rays from an independent renderer.

No inverse crime. The X-rays come from DiffDRR 0.6.1's exact Siddon ray
tracer on the full-resolution CT, with DiffDRR's own HU -> density ramp (bone
contrast unlike xctreg's material decomposition) and a monoenergetic
Beer–Lambert law. Nothing here uses xctreg's renderer or physics: the poses
go to DiffDRR through ``xctreg.io.export.diffdrr_export`` (what a user would
pass), and the effects below are written from scratch in numpy/torch.

Each pose is rendered once (twice for ``bone``); then every *set* applies its
effects in the intensity domain, adds Poisson noise, blurs, takes -log and
quantises to 16 bits:

- ``clean``: 3e4 photons per pixel, Gaussian blur σ 0.8 px;
- ``instrument``: a steel rod (ø 2–3 mm, 80–150 mm long, μ 0.45/mm) near the
  isocentre, absent from the CT, traced with 3x3 rays per pixel;
- ``scatter``: a scatter-to-primary ratio of 0.2–0.5, as a wide blur of the primary;
- ``heel``: a ±10–20 % linear intensity gradient along the anode–cathode axis;
- ``collimator``: a circular collimator (radius 38–46 % of the width, off-centre);
- ``low-dose``: 3e3 photons per pixel;
- ``blur``: another detector blur (σ 1.6 px);
- ``bone``: DiffDRR's bone attenuation × 1.4;
- ``all``: everything above at once;
- ``realistic``: instrument, scatter, heel, collimator and low dose together (what
  intra-operative X-rays add and the CT lacks, without ``blur`` and ``bone``).

Poses are drawn around the model's view within its ranges with ``--seed``:
tune on one seed (e.g. 1234), report on another (2027, the default). Each set
reports, for the regressor alone and after refinement: mTRE median (with its 95 %
bootstrap interval) / mean / p95, SR@10 and SR@20, every parameter's mean signed
error (bias), its standard deviation and its mean absolute error (degrees and mm),
and each X-ray's mTRE and signed errors (``mtre_each``, ``error_each``), so that
``bench/compare.py`` can pair two runs X-ray by X-ray.

    python bench/realism.py MODEL_DIR [--n 20] [--seed 2027] [--sets clean,all]
        [--similarity NAME] [--out result.json]

``--size`` renders the X-rays on a finer detector of the same physical size
(e.g. 256 for 256²; the default is the model's own detector).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SETS = ("clean", "instrument", "scatter", "heel", "collimator", "low-dose", "blur", "bone", "all", "realistic")
EFFECTS = ("instrument", "scatter", "heel", "collimator", "low-dose", "blur", "bone")
#: What intra-operative X-rays add and the CT lacks, as issue #12 defines its "realistic set"
#: (``all`` adds the other detector blur and bone contrast on top).
REALISTIC = ("instrument", "scatter", "heel", "collimator", "low-dose")
MU_STEEL_PER_MM = 0.45  # iron near 80 keV: μ/ρ ≈ 0.6 cm²/g × 7.9 g/cm³


@dataclass
class Shot:
    """One pose: DiffDRR line integrals (plain and bone ×1.4), its projection matrix and truth."""

    L: np.ndarray
    L_bone: np.ndarray
    P: np.ndarray
    truth: np.ndarray
    iso: np.ndarray


# ------------------------------------------------------------------ rendering
def render_shots(model_dir: Path, n: int, seed: int, size: int | None, params: np.ndarray | None = None) -> tuple[list[Shot], object]:
    """DiffDRR Siddon line integrals at ``n`` poses drawn around the model's view (seeded), or
    at the given ``params`` (n, 6; deg, mm, relative to the model's view)."""
    from diffdrr.data import read
    from diffdrr.drr import DRR

    from xctreg.geometry import projection_matrix
    from xctreg.io.export import diffdrr_export
    from xctreg.register import Registrar

    reg = Registrar(model_dir)
    cam = reg.camera if size is None else reg.camera.resized(size, size)
    truth = reg.space.sample(n, seed=seed) if params is None else np.asarray(params, dtype=np.float64)
    ct_path = Path(reg.meta["ct_path"])
    first = diffdrr_export(reg.space.to_matrix(torch.as_tensor(truth[0])).numpy(), cam, ct_path)
    kw = {"orientation": first["read"]["orientation"], "center_volume": first["read"]["center_volume"]}
    drrs = [DRR(read(str(ct_path), bone_attenuation_multiplier=b, **kw), renderer="siddon", **first["drr"]) for b in (1.0, 1.4)]
    shots = []
    for p in truth:
        T = reg.space.to_matrix(torch.as_tensor(p)).numpy()
        m = torch.tensor(diffdrr_export(T, cam, ct_path)["matrix"], dtype=torch.float32)[None]
        with torch.no_grad():
            L, Lb = (d(m, parameterization="matrix")[0, 0].double().numpy() for d in drrs)
        iso = np.asarray(reg.reference.isocenter_mm, dtype=np.float64)
        shots.append(Shot(L, Lb, projection_matrix(T, cam), np.asarray(p, dtype=np.float64), iso))
    return shots, cam


# ------------------------------------------------------------------ effects
def rays(P: np.ndarray, h: int, w: int, ss: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Source (3,) and unit ray directions (h*ss, w*ss, 3), world mm, from a 3x4 projection
    matrix; ``ss`` x ``ss`` rays per pixel, at the centres of its sub-pixels."""
    M, p4 = P[:, :3], P[:, 3]
    Minv = np.linalg.inv(M)
    src = -Minv @ p4
    off = (np.arange(ss) + 0.5) / ss - 0.5
    v = (np.arange(h)[:, None] + off[None, :]).reshape(-1)[:, None] * np.ones((1, w * ss))
    u = (np.arange(w)[:, None] + off[None, :]).reshape(-1)[None, :] * np.ones((h * ss, 1))
    d = np.stack([u, v, np.ones_like(u)], -1) @ Minv.T
    return src, d / np.linalg.norm(d, axis=-1, keepdims=True)


def rod_chords(src: np.ndarray, d: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    """Length (mm) of each ray inside the finite cylinder from ``a`` to ``b`` of ``radius`` mm."""
    axis = (b - a) / np.linalg.norm(b - a)
    length = np.linalg.norm(b - a)
    oc = src - a
    dp = d - (d @ axis)[..., None] * axis  # ray direction and origin orthogonal to the axis
    op = oc - (oc @ axis) * axis
    A = (dp * dp).sum(-1)
    B = 2 * (dp @ op)
    C = op @ op - radius**2
    disc = np.maximum(B * B - 4 * A * C, 0.0)
    sq = np.sqrt(disc)
    t0 = (-B - sq) / (2 * np.maximum(A, 1e-12))
    t1 = (-B + sq) / (2 * np.maximum(A, 1e-12))
    # clip to the cylinder's length: axial coordinate s(t) = (oc + t d)·axis in [0, length]
    s0, ds = oc @ axis, d @ axis
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (0 - s0) / ds, (length - s0) / ds
    lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
    chord = np.minimum(t1, hi) - np.maximum(t0, lo)
    return np.where((B * B - 4 * A * C) > 0, np.maximum(chord, 0.0), 0.0)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (reflect borders), sigma in pixels."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma, mode="reflect")


def make_xray(shot: Shot, effects: set[str], rng: np.random.Generator, mu: float, mu_bone: float,
              radius: tuple[float, float] = (0.38, 0.46)) -> np.ndarray:
    """One 16-bit-quantised, bone-bright X-ray (H, W) in [0, 1] with the given effects;
    ``radius``: the collimator's radius range (a fraction of the width)."""
    h, w = shot.L.shape
    att = mu_bone * shot.L_bone if "bone" in effects else mu * shot.L
    primary = np.exp(-att)
    if "instrument" in effects:  # 3x3 rays per pixel: the rod is about one pixel wide
        src, d = rays(shot.P, h, w, ss=3)
        c = shot.iso + rng.uniform(-40, 40, 3)
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        half = rng.uniform(40, 75)
        chord = rod_chords(src, d, c - half * u, c + half * u, rng.uniform(1.0, 1.5))
        primary = primary * np.exp(-MU_STEEL_PER_MM * chord).reshape(h, 3, w, 3).mean((1, 3))
    intensity = primary.copy()
    if "scatter" in effects:
        wide = gaussian_blur(primary, 0.15 * w)
        intensity = intensity + rng.uniform(0.2, 0.5) * wide * primary.mean() / wide.mean()
    if "heel" in effects:
        x = np.linspace(-1, 1, w)[None, :]
        intensity = intensity * (1 + rng.uniform(0.1, 0.2) * rng.choice([-1, 1]) * x)
    if "collimator" in effects:
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx = h / 2 + rng.uniform(-0.05, 0.05) * h, w / 2 + rng.uniform(-0.05, 0.05) * w
        r = rng.uniform(*radius) * w
        intensity = np.where((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r, intensity, 0.02 * intensity)
    photons = 3e3 if "low-dose" in effects else 3e4
    counts = np.maximum(rng.poisson(photons * intensity), 1.0)
    img = gaussian_blur(-np.log(counts / photons), 1.6 if "blur" in effects else 0.8)
    lo, hi = float(img.min()), float(img.max())
    return (np.round((img - lo) / (hi - lo) * 65535.0) / 65535.0).astype(np.float32)


def set_rng(seed: int, name: str) -> np.random.Generator:
    """The effects' random stream of one set: seeded by the set's name, not its place in
    ``--sets``, so a set holds the same X-rays whichever other sets run beside it."""
    return np.random.default_rng([seed, SETS.index(name)])  # new sets go last: earlier sets keep their draws


def set_effects(name: str) -> set[str]:
    """The effects of one set: none (clean), all of them, the realistic five, or the one it names."""
    return {"all": set(EFFECTS), "realistic": set(REALISTIC), "clean": set()}.get(name, {name})


def save_png(path: Path, img: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, img, cmap="gray", vmin=0, vmax=1)


# ------------------------------------------------------------------ scoring
def median_ci(e: np.ndarray, level: float = 0.95, resamples: int = 2000) -> list[float]:
    """A percentile-bootstrap confidence interval (mm) of the median of ``e``, seeded: how far
    the median of these N X-rays could move on another N from the same distribution. With
    N = 40 and errors spread over a few mm it is about ±0.5 mm wide, which is what separates
    two models' medians from noise (bench/compare.py pairs them X-ray by X-ray instead)."""
    if len(e) < 2:
        return [float("nan"), float("nan")]
    idx = np.random.default_rng(0).integers(0, len(e), size=(resamples, len(e)))
    meds = np.median(e[idx], axis=1)
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(meds, tail)), float(np.percentile(meds, 100 - tail))]


def mtre_stats(e: list[float]) -> dict:
    """mTRE (mm) median with its 95 % bootstrap interval, mean, p95 and SR@10 / SR@20 of a set."""
    a = np.asarray(e)
    return {"median": float(np.median(a)), "median_ci95": median_ci(a), "mean": float(a.mean()), "p95": float(np.percentile(a, 95)),
            "sr_10mm": float(np.mean(a < 10)), "sr_20mm": float(np.mean(a < 20))}  # fmt: skip


def param_stats(d: np.ndarray) -> dict:
    """Per parameter of (N, 6) signed errors (deg, mm): the bias (mean), its standard error
    (sample std / √N: at N = 20 the bias of a ±0.1° parameter is known only to about ±0.02°),
    the std and the mean absolute error."""
    from xctreg.geometry import PARAM_NAMES

    n = len(d)
    se = d.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.full(d.shape[1], np.nan)
    return {k: {"bias": float(d[:, i].mean()), "se": float(se[i]), "std": float(d[:, i].std()), "mae": float(np.abs(d[:, i]).mean())}
            for i, k in enumerate(PARAM_NAMES)}  # fmt: skip


def summarise(e_reg: list[float], e_ref: list[float], d_reg: np.ndarray, d_ref: np.ndarray) -> dict:
    return {"regressor": {**mtre_stats(e_reg), "params": param_stats(d_reg)}, "refined": {**mtre_stats(e_ref), "params": param_stats(d_ref)}}


def _median_p95(stats: dict) -> str:
    """``mtre_stats``' "median [95% CI] / p95" (mm)."""
    lo, hi = stats["median_ci95"]
    return f"{stats['median']:.2f} [{lo:.2f}, {hi:.2f}] / {stats['p95']:.2f}"


def markdown(out: dict) -> str:
    """One table: per set, regressor and refined median [95% CI] / p95 mTRE, SR and every bias with its
    standard error in brackets. ASCII only: a console or CI log in an ASCII locale must print it."""
    from xctreg.geometry import PARAM_NAMES

    head = "| set | regressor median [95% CI] / p95 mm | SR@20 | refined median [95% CI] / p95 mm | SR@10 | " + " | ".join(f"bias (se) {k}" for k in PARAM_NAMES) + " |"
    rows = [head, "|" + "---|" * (5 + len(PARAM_NAMES))]
    for name, s in out["sets"].items():
        g, r = s["regressor"], s["refined"]
        bias = " | ".join(f"{r['params'][k]['bias']:+.3f} ({r['params'][k]['se']:.3f})" for k in PARAM_NAMES)
        rows.append(f"| {name} | {_median_p95(g)} | {g['sr_20mm']:.0%} | {_median_p95(r)} | {r['sr_10mm']:.0%} | {bias} |")
    return "\n".join(rows)


def override(cfg, pairs: list[str]):
    """``cfg`` (a dataclass) with FIELD=VALUE pairs applied, each VALUE read as its field's current
    type (bool: true/false; tuples: comma-separated). FIELD.SUB=VALUE sets a field of a nested
    dataclass (e.g. newton.iterations=6)."""
    from dataclasses import fields, is_dataclass, replace

    names = {f.name for f in fields(cfg)}
    changes = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        head, dot, rest = key.partition(".")
        if head not in names:
            raise SystemExit(f"error: --set {pair}: {type(cfg).__name__} has no field {head!r}")
        old = changes.get(head, getattr(cfg, head))
        if dot:
            if not is_dataclass(old):
                raise SystemExit(f"error: --set {pair}: {head!r} has no fields")
            changes[head] = override(old, [f"{rest}={text}"])
        elif isinstance(old, bool):
            changes[key] = text.lower() in ("1", "true", "yes")
        elif isinstance(old, tuple):
            changes[key] = tuple(type(old[0])(v) for v in text.split(","))
        else:
            changes[key] = type(old)(text)
    return replace(cfg, **changes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2027, help="Pose and effect seed (report split: 2027; tune on another).")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--size", type=int, default=None, help="Render on a SIZE² detector of the model's physical size.")
    ap.add_argument("--similarity", dest="objective", default=None, help="Override the refinement objective (RefineConfig.objective).")
    ap.add_argument("--native-size", type=int, default=None, help="Override RefineConfig.native_size (0: the last level on the model's detector).")
    ap.add_argument("--native-search", choices=("depth", "adam", "adam+depth"), default=None, help="Override RefineConfig.native_search.")
    ap.add_argument("--native-similarity", dest="native_objective", default=None, help="Override RefineConfig.native_objective.")
    ap.add_argument("--depth", default=None, help="Override the depth search: HALF_MM,SAMPLES,ROUNDS (e.g. 1.5,7,2).")
    ap.add_argument("--outliers", type=float, default=None, help="Override RefineConfig.native_outliers (k; 0 = off).")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                    help="Override any RefineConfig field (repeatable), e.g. --set native_iterations=20 --set depth_samples=7.")
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None, help="Save each set's first X-ray here (a figure of the sets).")
    args = ap.parse_args()
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        ap.error(f"unknown sets {unknown}; choose from {', '.join(SETS)}")

    from dataclasses import replace

    from xctreg.geometry import PoseSpace
    from xctreg.metrics import mtre, target_points
    from xctreg.register import RefineConfig, Registrar

    t0 = time.perf_counter()
    shots, cam = render_shots(args.model_dir, args.n, args.seed, args.size)
    t_render = time.perf_counter() - t0
    mu = 4.0 / float(np.quantile(np.stack([s.L for s in shots]), 0.99))  # attenuation up to ~4 (2 % transmission)
    mu_bone = 4.0 / float(np.quantile(np.stack([s.L_bone for s in shots]), 0.99))
    reg = Registrar(args.model_dir)
    cfg = RefineConfig() if args.objective is None else replace(RefineConfig(), objective=args.objective)
    if args.native_size is not None:
        cfg = replace(cfg, native_size=args.native_size)
    if args.native_search is not None:
        cfg = replace(cfg, native_search=args.native_search)
    if args.native_objective is not None:
        cfg = replace(cfg, native_objective=args.native_objective)
    if args.outliers is not None:
        cfg = replace(cfg, native_outliers=args.outliers)
    if args.depth is not None:
        half, samples, rounds = args.depth.split(",")
        cfg = replace(cfg, depth_half_mm=float(half), depth_samples=int(samples), depth_rounds=int(rounds))
    cfg = override(cfg, args.overrides)
    pts = torch.as_tensor(target_points(reg.ct(), 5000))
    T = lambda q: reg.space.to_matrix(torch.as_tensor(np.asarray(q), dtype=torch.float64))  # noqa: E731
    truth = np.stack([s.truth for s in shots])
    # the objectives' JSON keys keep their names (similarity, native_similarity, depth_similarity): saved results use them
    out: dict = {"model": str(args.model_dir), "n": args.n, "seed": args.seed, "detector": [cam.height, cam.width],
                 "similarity": cfg.objective, "native_size": cfg.native_size, "native_search": cfg.native_search, "native_similarity": cfg.native_objective, "depth_similarity": cfg.depth_objective, "outliers": cfg.native_outliers,
                 "depth": [cfg.depth_half_mm, cfg.depth_samples, cfg.depth_rounds], "overrides": args.overrides, "seconds_rendering": t_render, "sets": {}}  # fmt: skip
    for name in sets:
        rng = set_rng(args.seed, name)
        e_reg, e_ref, p_reg, p_ref, secs = [], [], [], [], []
        for shot in shots:
            img = make_xray(shot, set_effects(name), rng, mu, mu_bone)
            if args.png is not None and shot is shots[0]:
                save_png(args.png / f"{name}.png", img)
            r = reg.register(img, cam, refine_pose=not args.no_refine, config=cfg)
            secs.append(r.timing_s["total"])
            e_reg.append(float(mtre(T(r.initial.params), T(shot.truth), pts)))
            e_ref.append(float(mtre(T(r.params), T(shot.truth), pts)))
            p_reg.append(r.initial.params)
            p_ref.append(r.params)
        d_reg, d_ref = PoseSpace.difference(np.asarray(p_reg), truth), PoseSpace.difference(np.asarray(p_ref), truth)
        s = summarise(e_reg, e_ref, d_reg, d_ref)
        s["seconds_per_xray"] = float(np.mean(secs))
        for stage, e_each, d_each in (("regressor", e_reg, d_reg), ("refined", e_ref, d_ref)):
            s[stage]["mtre_each"] = [round(e, 3) for e in e_each]  # per X-ray: bench/compare.py pairs them
            s[stage]["error_each"] = np.round(d_each, 3).tolist()
        out["sets"][name] = s
        print(json.dumps({"set": name, "regressor_median": s["regressor"]["median"], "refined_median": s["refined"]["median"],
                          "refined_p95": s["refined"]["p95"], "tz_bias": s["refined"]["params"]["tz_mm"]["bias"],
                          "tz_std": s["refined"]["params"]["tz_mm"]["std"], "s_per_xray": s["seconds_per_xray"]}), flush=True)  # fmt: skip
    print(markdown(out))
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
