"""Registration time per X-ray on the chest CT: regressor and refinement apart.

    python bench/register.py [--n 5] [--preset quick] [--model-dir DIR] [--device auto]
                             [--similarity local-gradncc[,patch-ncc,...]] [--collimator]
                             [--ct PATH] [--reference-device cpu] [--cold K] [--load N]

Targets are polyenergetic, noisy DRRs at random poses. Without --model-dir the
regressor's time is measured with an untrained network of the preset's shape
(time does not depend on the weights) and refinement starts from the true pose
perturbed by about the quick regressor's error (±3°, ±5 mm, ±10 mm in depth);
with --model-dir the trained model's own estimate is the start. Several
refinement objectives (comma-separated) are compared on the same X-rays and starts
(the summary's "similarity" key, by objective name).
--collimator blacks out the X-rays outside a circle (radius 0.45 of the width)
and lets refinement find and mask it (preprocess.detect_field). Refinement
keeps its renderers between X-rays (the warm case of a folder run or the Python
API). --ct replaces the chest CT (e.g. a phantom on a machine that cannot
download it). --reference-device refines the same X-rays from the same starts on
a second device too and prints the time ratio (e.g. --device cuda
--reference-device cpu). --load N registers N X-rays with one Registrar, as a folder
run does, and prints the resident memory at X-rays 10 and N and the time per X-ray
(issue #14: memory stays flat and time constant). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--similarity", default=None, help="comma-separated objective names; default: the refinement default (RefineConfig.objective)")
    ap.add_argument("--collimator", action="store_true")
    ap.add_argument("--lr-decay", type=float, default=None, help="RefineConfig.lr_decay (default: its default)")
    ap.add_argument("--ct", default=None, help="a CT instead of the chest CT")
    ap.add_argument("--reference-device", default=None, help="also refine on this device, for a time ratio")
    ap.add_argument("--cold", type=int, default=0, help="with --model-dir: also time COLD fresh `xctreg register` processes, and Registrar.register warm")
    ap.add_argument("--load", type=int, default=0, help="with --model-dir: register this many X-rays with one Registrar (the --n X-rays in turn) and print the resident memory at X-rays 10 and LOAD")
    args = ap.parse_args()
    if (args.cold or args.load) and not args.model_dir:
        ap.error("--cold and --load need --model-dir")
    warnings.filterwarnings("ignore")

    import numpy as np
    import torch

    from xctreg.data.chest import fetch_chest
    from xctreg.data.poses import sample_poses
    from xctreg.io import read_volume
    from xctreg.metrics import mtre, target_points
    from xctreg.models import PoseRegressor
    from xctreg.physics import DetectorConfig
    from xctreg.preprocess import detect_field, prepare_xray
    from xctreg.register import RefineConfig, Registrar, refine
    from xctreg.render import RenderConfig, Renderer
    from xctreg.runtime import resolve_device
    from xctreg.train import preset

    dev = resolve_device(args.device)
    vol = read_volume(args.ct or fetch_chest())
    cfg = preset(args.preset)
    cam = cfg.camera
    space = cfg.space(vol)
    ref = space.reference
    truth = sample_poses(args.n, seed=4242)
    target = Renderer(vol, cam, RenderConfig(detector=DetectorConfig(photons=1e5, blur_px=0.5)), reference=ref)
    with torch.no_grad():
        imgs = target(torch.as_tensor(truth, dtype=torch.float32), generator=torch.Generator().manual_seed(0))[:, 0].numpy()
    reg = Registrar(args.model_dir, device=dev, ct=vol) if args.model_dir else None
    net = None if reg else PoseRegressor(cfg.model).to(dev).eval()
    if args.collimator:
        v, u = np.mgrid[: cam.height, : cam.width]
        inside = (u - (cam.width - 1) / 2) ** 2 + (v - (cam.height - 1) / 2) ** 2 <= (0.45 * cam.width) ** 2
        imgs = np.where(inside, imgs, imgs.min()).astype(np.float32)
    rng = np.random.default_rng(0)
    pts = torch.as_tensor(target_points(vol, 5000))
    T = lambda q: space.to_matrix(torch.as_tensor(q, dtype=torch.float64))  # noqa: E731
    devices = [dev] + ([resolve_device(args.reference_device)] if args.reference_device else [])
    devices = list(dict.fromkeys(devices))
    caches: dict[str, dict] = {str(d): {} for d in devices}
    for d in devices:  # warm-up: kernel compilation, pyramid levels
        refine(vol, imgs[0], cam, ref, truth[0], renderers=caches[str(d)], device=d)
    t_reg, starts, masks = [], [], []
    for img, p in zip(imgs, truth, strict=True):
        t = time.perf_counter()
        if reg is not None:
            starts.append(reg.regress(img).params)
        else:
            with torch.no_grad():
                net(torch.as_tensor(prepare_xray(img, cam, cam).image)[None, None].to(dev))
            starts.append(p + rng.uniform(-1, 1, 6) * np.array([3, 3, 3, 5, 5, 10]))
        t_reg.append(time.perf_counter() - t)
        masks.append(detect_field(img).astype(np.float32) if args.collimator else None)
    summary = {"device": str(dev), "devices": [str(d) for d in devices], "preset": args.preset, "n": args.n,
               "collimator": args.collimator, "ct": args.ct or "chest", "seconds_regress": float(np.mean(t_reg)),
               "similarity": {}}  # fmt: skip
    rcfg = {} if args.lr_decay is None else {"lr_decay": args.lr_decay}
    for name in (args.similarity or RefineConfig().objective).split(","):
        for d in devices:
            t_ref, errs = [], []
            for img, p, start, mask in zip(imgs, truth, starts, masks, strict=True):
                res = refine(vol, img, cam, ref, start, RefineConfig(objective=name, **rcfg), mask=mask, renderers=caches[str(d)], device=d)
                t_ref.append(res.seconds)
                errs.append(float(mtre(T(res.params), T(p), pts)))
                print(f"{name} on {d}: mTRE {errs[-1]:.3f} mm; refine {t_ref[-1]:.2f} s ({res.iterations} it)", flush=True)
            e = np.asarray(errs)
            key = name if d == dev else f"{name}@{d}"
            summary["similarity"][key] = {
                "device": str(d),
                "seconds_refine": float(np.mean(t_ref)),
                "seconds_per_xray": float(np.mean(t_reg) + np.mean(t_ref)),
                "median_mtre_mm": float(np.median(e)),
                "mean_mtre_mm": float(np.mean(e)),
                "sr_2mm": float(np.mean(e < 2)),
                "sr_1mm": float(np.mean(e < 1)),
            }
            print(key, json.dumps(summary["similarity"][key]), flush=True)
        if len(devices) > 1:
            a, b = summary["similarity"][name], summary["similarity"][f"{name}@{devices[1]}"]
            a["speedup_vs_reference"] = b["seconds_refine"] / max(a["seconds_refine"], 1e-9)
            print(f"{name}: refinement on {dev} is {a['speedup_vs_reference']:.2f}x the speed of {devices[1]}", flush=True)
    if args.cold:
        summary["register"] = cold_and_warm(reg, args.model_dir, imgs, cam, args.cold)
    if args.load:
        summary["load"] = load_run(reg, imgs, cam, args.load)
    print(json.dumps(summary))


def rss_mb() -> float:
    """This process's resident memory (MB), from /proc/self/statm (Linux)."""
    import os

    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_run(reg, imgs, cam, n: int) -> dict:  # noqa: ANN001
    """``n`` X-rays through one Registrar (a folder run's loop; the images in turn): resident
    memory after X-ray 10 and after the last, and seconds per X-ray over the first and last 10."""
    import numpy as np

    secs, mem = [], {}
    for k in range(n):
        t = time.perf_counter()
        reg.register(imgs[k % len(imgs)], cam)
        secs.append(time.perf_counter() - t)
        if k + 1 in (10, n):
            mem[k + 1] = rss_mb()
            print(f"load: X-ray {k + 1}: resident {mem[k + 1]:.0f} MB, {np.mean(secs[-10:]):.2f} s per X-ray over the last 10", flush=True)
    out = {"n": n, "rss_mb": mem, "s_first10": float(np.mean(secs[:10])), "s_last10": float(np.mean(secs[-10:]))}
    if 10 in mem and n > 10:
        out["rss_growth_mb"] = mem[n] - mem[10]
    return out


def cold_and_warm(reg, model_dir: str, imgs, cam, runs: int) -> dict:  # noqa: ANN001
    """Wall seconds of ``runs`` fresh ``python -m xctreg register MODEL_DIR XRAY`` processes (process
    start to result JSON: imports, model, CT levels, regression, refinement) on the first X-ray,
    next to ``Registrar.register`` in this process (warm: renderers kept) on every X-ray."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import numpy as np

    from xctreg._fs import write_json

    out: dict = {"levels_stored": (Path(model_dir) / "levels").is_dir(), "cold_wall_s": [], "cold_timing_s": []}
    with tempfile.TemporaryDirectory() as d:
        x, g = Path(d) / "xray.npy", Path(d) / "geometry.json"
        np.save(x, imgs[0])
        write_json(g, cam.to_dict())
        for k in range(runs):
            res = Path(d) / f"r{k}.json"
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "xctreg", "register", str(model_dir), str(x), "--geometry", str(g),
                                   "--out", str(res), "--device", "cpu"], capture_output=True, text=True)  # fmt: skip
            wall = time.perf_counter() - t
            if done.returncode != 0:
                raise SystemExit(f"error: xctreg register failed: {done.stderr.strip()[-300:]}")
            out["cold_wall_s"].append(wall)
            out["cold_timing_s"].append(json.loads(res.read_text())["timing_s"])
            print(f"cold register {k}: {wall:.2f} s wall ({out['cold_timing_s'][-1]})", flush=True)
    from dataclasses import replace

    from xctreg.register import RefineConfig

    adam = replace(RefineConfig(), last_optimizer="adam")  # the reference: the last level's Adam steps
    reg.register(imgs[0], cam)  # warm-up
    reg.register(imgs[0], cam, config=adam)
    warm = [reg.register(img, cam).timing_s["total"] for img in imgs]
    warm_adam = [reg.register(img, cam, config=adam).timing_s["total"] for img in imgs]
    out["warm_s"], out["warm_adam_s"] = float(np.mean(warm)), float(np.mean(warm_adam))
    print(f"warm register: {out['warm_s']:.2f} s per X-ray ({out['warm_adam_s'] / out['warm_s']:.2f}x faster than with the "
          f"last level's Adam steps, {out['warm_adam_s']:.2f} s); cold {np.median(out['cold_wall_s']):.2f} s", flush=True)  # fmt: skip
    return out


if __name__ == "__main__":
    main()
