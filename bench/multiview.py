"""Biplane registration judged on X-rays from an independent renderer (issue #16).

Two models of one CT, trained around two views (e.g. AP and lateral, about one isocentre),
and X-ray pairs rendered by DiffDRR's Siddon tracer with ``realism.py``'s physics and effects
(no xctreg renderer, no inverse crime). Each pair is registered three ways: the first view
alone, the second view alone (mapped into the first view's frame through the rig), and
jointly (``xctreg.multiview.register_views``). Errors are taken in the first view's
parameters (deg, mm) and as mTRE (mm).

Sets:

- ``clean``, ``realistic``: as in ``realism.py``, applied to both views;
- ``wrong``: a realistic pair whose second X-ray belongs to another pose (a wrong X-ray);
- ``collimated``: a realistic pair whose second X-ray is collimated to a disc of 12-16 %
  of its width (a heavily collimated view).

Poses are drawn around the first view within its ranges, keeping those whose second-view
parameters lie within the second model's ranges. Tune on one seed, report on another.

    python bench/multiview.py AP_MODEL LAT_MODEL [--n 20] [--seed 2027] [--sets clean,realistic] [--out F.json]
        [--write DIR]

``--write DIR`` also saves every pair as a session (DIR/SET/NNN/session.json with the two X-rays,
geometry.json and truth.json), so that ``xctreg evaluate AP_MODEL --views ap,lat-left --models
LAT_MODEL --sessions DIR/SET`` judges the same independent X-rays from the command line.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from realism import make_xray, mtre_stats, param_stats, render_shots, set_effects

SETS = ("clean", "realistic", "wrong", "collimated")
METHODS = ("first", "second", "joint")


def stats(e: list[float], d: np.ndarray, secs: list[float]) -> dict:
    """``realism.py``'s mTRE and per-parameter statistics, plus SR@1, seconds and each case's mTRE."""
    a = np.asarray(e)
    return {**mtre_stats(e), "sr_1mm": float(np.mean(a < 1)), "seconds": float(np.mean(secs)), "params": param_stats(d),
            "mtre_each": [round(x, 3) for x in e]}  # fmt: skip


def markdown(out: dict) -> str:
    """The sets as a table, in ASCII (a console in an ASCII locale prints it): per parameter the
    bias and its sample std as '+0.01 (0.05)', then the mean absolute errors of tx, ty and tz
    (mm), which #16's 'tz no larger than tx and ty' compares."""
    from xctreg.geometry import PARAM_NAMES

    head = ("| set | method | median / p95 mm | SR@10 | " + " | ".join(f"{k} bias (sd)" for k in PARAM_NAMES)
            + " | MAE tx / ty / tz mm | s | flagged |")  # fmt: skip
    rows = [head, "|" + "---|" * (7 + len(PARAM_NAMES))]
    for name, s in out["sets"].items():
        for m in (m for m in METHODS if m in s):
            r = s[m]
            pp = " | ".join(f"{r['params'][k]['bias']:+.2f} ({r['params'][k]['std']:.2f})" for k in PARAM_NAMES)
            mae = " / ".join(f"{r['params'][k]['mae']:.3f}" for k in ("tx_mm", "ty_mm", "tz_mm"))
            fl = f"{s['flagged_second']:.0%} 2nd, {s['flagged_first']:.0%} 1st" if m == "joint" else ""
            rows.append(f"| {name} | {m} | {r['median']:.2f} / {r['p95']:.2f} | {r['sr_10mm']:.0%} | {pp} | {mae} | {r['seconds']:.1f} | {fl} |")
    return "\n".join(rows)


def write_session(folder: Path, models: list[Path], images: list[np.ndarray], rigs: list[np.ndarray], cam, truth) -> None:  # noqa: ANN001
    """One pair as a session folder: view{k}.npy (bone bright), geometry.json, session.json (the
    rigs as a user knows them) and truth.json (``{"first": POSE JSON}``, the first view's true pose)."""
    from xctreg._fs import write_json

    folder.mkdir(parents=True, exist_ok=True)
    views = []
    for k, (model, img, rig) in enumerate(zip(models, images, rigs, strict=True)):
        np.save(folder / f"view{k}.npy", img.astype(np.float32))
        views.append({"model": str(model.resolve()), "xray": f"view{k}.npy", "geometry": "geometry.json", "T_cam_from_first": rig.tolist()})
    write_json(folder / "geometry.json", cam.to_dict())
    write_json(folder / "session.json", {"views": views})
    write_json(folder / "truth.json", {"first": truth.to_dict()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_a", type=Path)
    ap.add_argument("model_b", type=Path)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2027, help="Pose and effect seed (report split: 2027; tune on another).")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--refine-rig", action="store_true")
    ap.add_argument("--rig-error-deg", type=float, default=0.0, help="Render the second view with its rig rotated by this much (the encoder's error).")
    ap.add_argument("--joint-only", action="store_true", help="Skip the single-view rows (tuning).")
    ap.add_argument("--final-iterations", type=int, default=None, help="Override MultiviewConfig.final_iterations.")
    ap.add_argument("--final-objective", default=None, help="Override RefineConfig.last_objective, the last joint level's objective.")
    ap.add_argument("--optimizer", choices=("newton", "adam"), default=None, help="Override RefineConfig.last_optimizer (single views and the last joint level).")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--write", type=Path, default=None, help="Also save each pair as a session folder under WRITE/SET/NNN (for xctreg evaluate --sessions).")
    args = ap.parse_args()
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if "wrong" in sets and args.n < 2:
        ap.error("the wrong set pairs each AP X-ray with another pose's lateral: --n must be at least 2")
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        ap.error(f"unknown sets {unknown}; choose from {', '.join(SETS)}")

    from xctreg.geometry import Pose, PoseSpace
    from xctreg.metrics import mtre, target_points
    from xctreg.multiview import MultiviewConfig, register_views, rig_axis, rig_between, rotation_about, sample_session_poses
    from xctreg.register import Registrar

    reg_a, reg_b = Registrar(args.model_a), Registrar(args.model_b)
    rig = rig_between(reg_a.reference, reg_b.reference)
    true_rig = rig
    if args.rig_error_deg:
        a, o = rig_axis(rig)
        true_rig = rig @ rotation_about(a, o, torch.tensor(np.radians(args.rig_error_deg), dtype=torch.float64)).numpy()
    pa, _ = sample_session_poses([reg_a.space, reg_b.space], [np.eye(4), rig], args.n, args.seed)
    pb = np.stack([reg_b.space.from_matrix(torch.as_tensor(true_rig @ reg_a.space.to_matrix(torch.as_tensor(p)).numpy())).numpy() for p in pa])
    t0 = time.perf_counter()
    shots_a, cam = render_shots(args.model_a, args.n, args.seed, None, params=pa)
    shots_b, _ = render_shots(args.model_b, args.n, args.seed, None, params=pb)
    t_render = time.perf_counter() - t0
    mus = [(4.0 / float(np.quantile(np.stack([s.L for s in sh]), 0.99)), 4.0 / float(np.quantile(np.stack([s.L_bone for s in sh]), 0.99)))
           for sh in (shots_a, shots_b)]  # fmt: skip
    pts = torch.as_tensor(target_points(reg_a.ct(), 5000))
    T_a = lambda q: reg_a.space.to_matrix(torch.as_tensor(np.asarray(q), dtype=torch.float64))  # noqa: E731
    cfg = MultiviewConfig(refine_rig=args.refine_rig)
    if args.final_iterations is not None:
        cfg = replace(cfg, final_iterations=args.final_iterations)
    if args.final_objective is not None:
        cfg = replace(cfg, refine=replace(cfg.refine, last_objective=args.final_objective))
    if args.optimizer is not None:
        cfg = replace(cfg, refine=replace(cfg.refine, last_optimizer=args.optimizer))
    methods = ("joint",) if args.joint_only else METHODS
    out: dict = {"models": [str(args.model_a), str(args.model_b)], "n": args.n, "seed": args.seed, "rig_error_deg": args.rig_error_deg,
                 "refine_rig": args.refine_rig, "optimizer": cfg.refine.last_optimizer, "seconds_rendering": t_render, "sets": {}}  # fmt: skip
    for name in sets:
        rng = np.random.default_rng([args.seed, 100 + SETS.index(name)])
        effects = set_effects("clean" if name == "clean" else "realistic")
        err: dict[str, list] = {m: [] for m in METHODS}
        par: dict[str, list] = {m: [] for m in METHODS}
        secs: dict[str, list] = {m: [] for m in METHODS}
        flagged = [0, 0]
        reports = []
        for i in range(args.n):
            img_a = make_xray(shots_a[i], effects, rng, *mus[0])
            j = (i + args.n // 2) % args.n if name == "wrong" else i
            radius = (0.12, 0.16) if name == "collimated" else (0.38, 0.46)
            img_b = make_xray(shots_b[j], effects | ({"collimator"} if name == "collimated" else set()), rng, *mus[1], radius=radius)
            if args.write is not None:
                write_session(args.write / name / f"{i:03d}", [args.model_a, args.model_b], [img_a, img_b], [np.eye(4), rig], cam,
                              Pose(T_a(pa[i]).numpy(), reg_a.reference))  # fmt: skip
            if not args.joint_only:
                ra = reg_a.register(img_a, cam, config=cfg.refine)
                rb = reg_b.register(img_b, cam, config=cfg.refine)
                Tb0 = np.linalg.inv(rig) @ rb.pose.T_cam_from_world
            t1 = time.perf_counter()
            xa, xb = reg_a.prepare(img_a, cam), reg_b.prepare(img_b, cam)
            mv = register_views([reg_a, reg_b], [xa, xb], [np.eye(4), rig], cfg)
            t_joint = time.perf_counter() - t1
            flagged[0] += mv.reports[0].flag is not None
            flagged[1] += mv.reports[1].flag is not None
            reports.append([r.to_dict() for r in mv.reports])
            rows = [("joint", mv.joint.pose.T_cam_from_world, t_joint)]
            if not args.joint_only:
                rows += [("first", ra.pose.T_cam_from_world, ra.timing_s["total"]), ("second", Tb0, rb.timing_s["total"])]
            for m, T, s in rows:
                err[m].append(float(mtre(torch.as_tensor(T), T_a(pa[i]), pts)))
                par[m].append(reg_a.space.from_matrix(torch.as_tensor(T)).numpy())
                secs[m].append(s)
            print(json.dumps({"set": name, "i": i, **{m: round(err[m][-1], 3) for m in methods},
                              "flags": [r.flag is not None for r in mv.reports], "s": round(t_joint, 2)}), flush=True)  # fmt: skip
        s = {m: stats(err[m], PoseSpace.difference(np.asarray(par[m]), pa), secs[m]) for m in methods}
        s["flagged_first"], s["flagged_second"] = flagged[0] / args.n, flagged[1] / args.n
        s["reports"] = reports
        out["sets"][name] = s
    print(markdown(out))
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
