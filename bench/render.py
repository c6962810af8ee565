"""Renderer benchmark on the chest CT: xctreg vs DiffDRR 0.6.1 (siddon, trilinear), same process tree.

    python bench/render.py [--sizes 128 256] [--batches 1 16] [--device auto] [--repeats 3]

Each (renderer, size, batch) cell runs in a fresh spawned process so that its
peak memory (VmHWM, CPU; max_memory_allocated, CUDA) is its own. Reports ms per
DRR for the forward pass and forward+backward (gradient w.r.t. the 6 pose
parameters), the error against xctreg's exact Siddon reference, and a final
JSON line with ``speedup_vs_diffdrr_256`` and ``rel_err_vs_siddon_256``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
import warnings


def _vmhwm_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _cell(kind: str, size: int, batch: int, device: str, repeats: int, q: mp.Queue) -> None:
    """Time one renderer at one size and batch; put a result dict on ``q``."""
    warnings.filterwarnings("ignore")
    import torch

    from xctreg.data.chest import fetch_chest
    from xctreg.geometry import Camera, sample_params
    from xctreg.io import read_volume

    torch.manual_seed(0)
    path = fetch_chest()
    dev = torch.device(device)
    spacing = 1.6 * 256 / size
    params = torch.tensor(sample_params(batch, seed=1), dtype=torch.float32, device=dev)
    try:
        if kind == "xctreg":
            from xctreg.render import Renderer

            vol = read_volume(path)
            r = Renderer(vol, Camera(1020.0, size, size, (spacing, spacing)), device=dev)

            def fwd(p: torch.Tensor) -> torch.Tensor:
                return r(p)
        else:
            from diffdrr.data import read
            from diffdrr.drr import DRR

            subject = read(str(path), orientation="AP")
            drr = DRR(subject, sdd=1020.0, height=size, delx=spacing, renderer=kind.split("-")[1]).to(dev)

            def fwd(p: torch.Tensor) -> torch.Tensor:
                rot = torch.deg2rad(p[:, :3])
                xyz = p[:, 3:] + torch.tensor([0.0, 750.0, 0.0], device=p.device)
                return drr(rot, xyz, parameterization="euler_angles", convention="ZXY")

        base = _vmhwm_mb()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def timed(backward: bool) -> float:
            ts = []
            for i in range(repeats + 1):
                p = params.clone().requires_grad_(backward)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                if backward:
                    fwd(p).mean().backward()
                else:
                    with torch.no_grad():
                        fwd(p)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if i > 0 or repeats == 0:  # first run warms up (kernel compile, caches)
                    ts.append(time.perf_counter() - t)
            return statistics.median(ts) * 1000.0 / batch

        fwd_ms = timed(False)
        bwd_ms = timed(True)
        peak = (torch.cuda.max_memory_allocated() / 2**20) if dev.type == "cuda" else _vmhwm_mb() - base
        q.put({"renderer": kind, "size": size, "batch": batch, "fwd_ms": fwd_ms, "fwd_bwd_ms": bwd_ms, "peak_mb": peak})
    except Exception as exc:  # noqa: BLE001 - report and go on (e.g. out of memory)
        q.put({"renderer": kind, "size": size, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:200]})


def _run_cell(kind: str, size: int, batch: int, device: str, repeats: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_cell, args=(kind, size, batch, device, repeats, q))
    proc.start()
    proc.join()
    if not q.empty():
        return q.get()
    return {"renderer": kind, "size": size, "batch": batch, "error": f"process died (exit {proc.exitcode}; out of memory?)"}


def _accuracy(size: int) -> dict:
    """Relative L1 of xctreg (defaults) and of DiffDRR trilinear against exact Siddon references."""
    warnings.filterwarnings("ignore")
    import torch

    from xctreg.data.chest import fetch_chest
    from xctreg.geometry import Camera, sample_params
    from xctreg.io import read_volume
    from xctreg.render import RenderConfig, Renderer

    path = fetch_chest()
    vol = read_volume(path)
    sp = 1.6 * 256 / size
    cam = Camera(1020.0, size, size, (sp, sp))
    p = torch.tensor(sample_params(2, seed=1), dtype=torch.float32)
    fast = Renderer(vol, cam)(p)
    exact = Renderer(vol, cam, RenderConfig(voxel_mm=None))
    ref = exact.intensity_to_image(exact.siddon_line_integrals(p.double()).float())
    out = {"xctreg_vs_siddon": float((fast - ref).abs().sum() / ref.abs().sum())}
    try:
        from diffdrr.data import read
        from diffdrr.drr import DRR

        subject = read(str(path), orientation="AP")
        rot, xyz = torch.deg2rad(p[:1, :3]), p[:1, 3:] + torch.tensor([0.0, 750.0, 0.0])
        imgs = {}
        for kind in ("siddon", "trilinear"):
            drr = DRR(subject, sdd=1020.0, height=size, delx=sp, renderer=kind)
            with torch.no_grad():
                imgs[kind] = drr(rot, xyz, parameterization="euler_angles", convention="ZXY")
        out["diffdrr_trilinear_vs_siddon"] = float(
            (imgs["trilinear"] - imgs["siddon"]).abs().sum() / imgs["siddon"].abs().sum()
        )
    except ImportError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--diffdrr-repeats", type=int, default=1)
    ap.add_argument("--no-diffdrr", action="store_true")
    args = ap.parse_args()

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        import diffdrr  # noqa: F401

        kinds = ["xctreg"] if args.no_diffdrr else ["xctreg", "diffdrr-siddon", "diffdrr-trilinear"]
    except ImportError:
        kinds = ["xctreg"]
    print(f"device {device}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    rows = []
    print(f"{'renderer':18s} {'size':>5s} {'batch':>5s} {'fwd ms/DRR':>11s} {'fwd+bwd ms':>11s} {'peak MB':>8s}")
    for size in args.sizes:
        for batch in args.batches:
            for kind in kinds:
                reps = args.repeats if kind == "xctreg" else args.diffdrr_repeats
                res = _run_cell(kind, size, batch, device, reps)
                rows.append(res)
                if "error" in res:
                    print(f"{kind:18s} {size:5d} {batch:5d}   {res['error']}")
                else:
                    print(
                        f"{kind:18s} {size:5d} {batch:5d} {res['fwd_ms']:11.1f} {res['fwd_bwd_ms']:11.1f} {res['peak_mb']:8.0f}",
                        flush=True,
                    )
    acc = {s: _accuracy(s) for s in args.sizes}
    for s, a in acc.items():
        print(f"relative L1 vs exact Siddon at {s}²: " + ", ".join(f"{k} {v:.4f}" for k, v in a.items()))

    def best(kind_prefix: str, size: int, key: str = "fwd_ms") -> float | None:
        vals = [r[key] for r in rows if r["renderer"].startswith(kind_prefix) and r["size"] == size and key in r]
        return min(vals) if vals else None

    summary: dict[str, object] = {"device": device}
    for size in args.sizes:
        ours, theirs = best("xctreg", size), best("diffdrr", size)
        summary[f"xctreg_fwd_ms_{size}"] = ours
        summary[f"diffdrr_best_fwd_ms_{size}"] = theirs
        summary[f"speedup_vs_diffdrr_{size}"] = (theirs / ours) if (ours and theirs) else None
        summary[f"rel_err_vs_siddon_{size}"] = acc[size]["xctreg_vs_siddon"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
