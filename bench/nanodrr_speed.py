"""Speed of xctreg's torch DRR renderer against nanodrr (a test-only reference), same scene, same process.

    python bench/nanodrr_speed.py [--device auto|cpu|cuda] [--quick] [--out FILE.jsonl]

nanodrr (``pip install --no-deps nanodrr``) is the fastest published differentiable
DRR renderer; it is never a runtime dependency of xctreg. Both renderers get the same
voxel grid (the phantom of ``bench/gpu_check.py``: the chest-like 306 x 306 x 133 voxels
of 1.18 x 1.18 x 2.5 mm; ``--quick``: 64³ voxels of 6 mm), the same detector (256² px
of 1.6 mm, SDD 1020 mm, source 750 mm from the volume centre; ``--quick``: 64² px of
6.4 mm) and the same random poses (``xctreg.geometry.sample_params``).

Output: one JSON line per result, to stdout and appended to ``--out``:

* ``{"kind": "env", ...}``: torch / nanodrr / triton versions, device name.
* ``{"kind": "sanity", ...}``: xctreg's line-mode DRR vs nanodrr's DRR at the same
  poses, nanodrr given the same density volume (g/cm³, ``convert_to_mu=False``) and
  the pose converted to its convention (see ``cam_to_world``). ``ncc_min``: the
  smallest per-image normalised cross-correlation (status PASS when > 0.9);
  ``rel_l1``: relative L1 of 0.1 x nanodrr (value·mm -> g/cm²) vs xctreg;
  ``grad_cos``: cosine between the two gradients of the same scalar loss (random
  pixel weights) w.r.t. the (B, 6) pose parameters, with ``grad_row0_*`` (reported
  only: both differentiate through the ray-box clipping, so where the CT is cut off
  at the box faces with tissue in it (the chest grid's z faces) the term of the faces
  is in both; this check found it missing in xctreg, see docs/renderer.md); ``ncc_min_nanodrr_mu``:
  the NCC against nanodrr's own HU -> mu conversion (reported only).
* ``{"kind": "cell", ...}``: one per renderer x variant x batch x pass.
  ``renderer`` xctreg (``mode`` line: one density channel, no spectrum; poly: the
  default, 3 material channels + 8-bin spectrum + Beer-Lambert) or nanodrr
  (``backend`` triton, its default on CUDA, or torch, its grid_sample fallback).
  ``pass`` fwd (no_grad) or fwd+bwd (gradient of mean(image) w.r.t. the (B, 6) pose
  parameters; for nanodrr the same parameters -> xctreg's ``T_cam_from_world`` ->
  its inverse as nanodrr's ``rt_inv``). ``ms_per_drr`` = median over ``repeats``
  timed calls (after ``warmup`` calls, torch.cuda.synchronize around each) / batch.
  ``samples_per_ray``: every ray of both renderers gets this many evenly spaced
  samples over its own chord through the volume box; xctreg's is
  N = ceil(longest chord of the batch / step), step = the smallest voxel spacing;
  nanodrr runs with ``n_samples`` = that N (``nsamp`` "matched") and with its
  default 500 (``nsamp`` "default"). A cell that raises is printed with status
  FAIL and its one-line error; the script goes on.
* ``{"summary": "DONE" | "SANITY_FAIL", ...}``: ``ratios_nanodrr_over_xctreg``:
  nanodrr ms / xctreg ms for each nanodrr cell against the xctreg line and poly
  cells of the same batch and pass (> 1: xctreg is faster), ``ms_per_drr`` of
  every cell, and the cells that failed.

Exit status 1 only when the sanity check could not run at all.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT / "bench"):
    if str(_p) not in sys.path:  # run from a source tree without installing
        sys.path.insert(0, str(_p))

import torch  # noqa: E402

from gpu_check import phantom, sync, timed  # noqa: E402  (bench/gpu_check.py: phantom cache, timing)

SDD_MM = 1020.0
SID_MM = 750.0
NANODRR_DEFAULT_SAMPLES = 500
NCC_MIN = 0.9


@dataclass(frozen=True)
class Sizes:
    vol: tuple[tuple[int, int, int], tuple[float, float, float]]
    det: int
    pix_mm: float
    batches: tuple[int, ...]
    warmup: int
    repeats: int


FULL = Sizes(vol=((306, 306, 133), (1.1765, 1.1765, 2.5)), det=256, pix_mm=1.6, batches=(1, 16), warmup=3, repeats=10)
QUICK = Sizes(vol=((64, 64, 64), (6.0, 6.0, 6.0)), det=64, pix_mm=6.4, batches=(1, 2), warmup=1, repeats=2)

_OUT_FH = None
_EMITTED: list[dict[str, Any]] = []


def emit(rec: dict[str, Any]) -> None:
    _EMITTED.append(rec)
    line = json.dumps(rec)
    print(line, flush=True)
    if _OUT_FH is not None:
        _OUT_FH.write(line + "\n")
        _OUT_FH.flush()


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:400]


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------- the two renderers
def cam_to_world(T: torch.Tensor) -> torch.Tensor:
    """xctreg's ``T_cam_from_world`` (B, 4, 4) -> nanodrr's ``rt_inv`` (camera -> world), differentiably.

    Both cameras are the same pinhole: source at the camera origin, +z along the beam to
    the detector plane z = SDD, +x along image columns, +y along rows, principal point
    at the image centre (xctreg: pixel u at (u - (W-1)/2)·dx, nanodrr: (u + 0.5 - W/2)·dx,
    the same point), world = the volume affine's frame (LPS mm, given to both). So
    nanodrr's pose is just the rigid inverse [Rᵀ | -Rᵀ t].
    """
    R, t = T[..., :3, :3], T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    top = torch.cat([Rt, -Rt @ t], dim=-1)
    bottom = torch.zeros_like(T[..., 3:, :])
    bottom[..., 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def xctreg_renderer(vol: Any, sz: Sizes, mode: str, dev: torch.device) -> Any:
    from xctreg.geometry import Camera
    from xctreg.render import RenderConfig, Renderer

    cam = Camera(SDD_MM, sz.det, sz.det, (sz.pix_mm, sz.pix_mm))
    # voxel_mm=None: render the grid as given (no pyramid level), the same grid nanodrr gets
    cfg = RenderConfig(mode=mode, backend="torch", voxel_mm=None)
    return Renderer(vol, cam, cfg, device=dev, sid_mm=SID_MM)


def nanodrr_subject(vol: Any, dev: torch.device, density: bool = True) -> Any:
    """nanodrr Subject of ``vol``: its density (g/cm³, as xctreg's line mode) or its HU (nanodrr's mu)."""
    import numpy as np
    import torchio
    from nanodrr.data import Subject

    from xctreg.physics.materials import hu_to_density

    hu = torch.from_numpy(np.ascontiguousarray(vol.hu))  # (nk, nj, ni)
    data = hu_to_density(hu) if density else hu
    image = torchio.ScalarImage(tensor=data.permute(2, 1, 0).unsqueeze(0).contiguous(), affine=vol.affine)  # (1, ni, nj, nk)
    subject = Subject.from_images(image, convert_to_mu=not density)
    return subject.to(dev)


def nanodrr_module(sz: Sizes, dev: torch.device) -> Any:
    from nanodrr.drr import DRR

    return DRR.from_carm_intrinsics(SDD_MM, sz.pix_mm, sz.pix_mm, 0.0, 0.0, sz.det, sz.det, dtype=torch.float32, device=dev)


def samples_per_ray(r: Any, params: torch.Tensor) -> int:
    """xctreg torch backend's N for this batch: ceil(longest chord / step) (march.py)."""
    with torch.no_grad():
        rays = r.rays(params)
        return max(1, int(math.ceil(float((rays.t1 - rays.t0).clamp_min(0).max()) / r.step_mm)))


def _ncc(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    a = a.detach().double().cpu().flatten(1)
    b = b.detach().double().cpu().flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1).div((a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)).tolist()


# ---------------------------------------------------------------------------- checks
def sanity(dev: torch.device, sz: Sizes, backends: list[str]) -> dict[str, Any]:
    from xctreg.geometry import sample_params

    vol = phantom(*sz.vol)
    r = xctreg_renderer(vol, sz, "line", dev)
    params = torch.tensor(sample_params(2, seed=7), dtype=torch.float32, device=dev)
    n = samples_per_ray(r, params)
    w = torch.rand((2, 1, sz.det, sz.det), generator=torch.Generator().manual_seed(0)).to(dev)

    p = params.clone().requires_grad_(True)
    img_x = r(p)
    (img_x * w).sum().backward()
    g_x = p.grad.detach().double().cpu().flatten()

    drr = nanodrr_module(sz, dev)
    subj = nanodrr_subject(vol, dev, density=True)
    subj_mu = nanodrr_subject(vol, dev, density=False)
    rec: dict[str, Any] = {"samples_per_ray": n, "poses": params.tolist()}
    worst = 1.0
    for backend in backends:
        try:
            worst = min(worst, _sanity_backend(rec, backend, r, drr, subj, subj_mu, params, w, n, img_x, g_x))
        except Exception as exc:  # noqa: BLE001 - e.g. the fused backend fails: the others still count
            rec[backend] = {"status": "FAIL", "error": _one_line(exc)}
    if not any("ncc_min" in v for v in rec.values() if isinstance(v, dict)):
        raise RuntimeError(f"no nanodrr backend rendered: {rec}")
    rec["ncc_min"] = round(worst, 5)
    rec["threshold"] = NCC_MIN
    rec["status"] = "PASS" if worst > NCC_MIN and all(
        v.get("status") != "FAIL" for v in rec.values() if isinstance(v, dict)) else "FAIL"
    return rec


def _sanity_backend(rec: dict[str, Any], backend: str, r: Any, drr: Any, subj: Any, subj_mu: Any, params: torch.Tensor,
                    w: torch.Tensor, n: int, img_x: torch.Tensor, g_x: torch.Tensor) -> float:  # fmt: skip
    """Compare nanodrr's ``backend`` with xctreg's line-mode image and gradient; store in ``rec``; min NCC."""
    p = params.clone().requires_grad_(True)
    img_n = drr(subj, cam_to_world(r.poses_to_matrix(p)), n_samples=n, backend=backend)
    (0.1 * img_n * w).sum().backward()
    g_n = p.grad.detach().double().cpu().flatten()
    ncc = _ncc(img_x, img_n)
    with torch.no_grad():
        img_mu = drr(subj_mu, cam_to_world(r.poses_to_matrix(params)), n_samples=n, backend=backend)
    a, b = img_x.detach().double().cpu(), 0.1 * img_n.detach().double().cpu()
    rec[backend] = {
        "ncc": [round(v, 5) for v in ncc],
        "ncc_min": round(min(ncc), 5),
        "rel_l1": round(float((a - b).abs().sum() / a.abs().sum()), 5),
        "grad_cos": round(float(g_x @ g_n / (g_x.norm() * g_n.norm()).clamp_min(1e-30)), 5),
        "grad_row0_xctreg": [round(float(v), 4) for v in g_x[:6]],
        "grad_row0_nanodrr": [round(float(v), 4) for v in g_n[:6]],
        "ncc_min_nanodrr_mu": round(min(_ncc(img_x, img_mu)), 5),
        "xctreg_mean_g_cm2": round(float(a.mean()), 4),
        "nanodrr_mean_x0.1": round(float(b.mean()), 4),
    }
    return min(ncc)


def time_cell(fn_fwd: Any, fn_bwd: Any, dev: torch.device, sz: Sizes, batch: int, base: dict[str, Any]) -> None:
    """Emit the fwd and fwd+bwd cells of one renderer variant at one batch size."""
    for pass_, fn in (("fwd", fn_fwd), ("fwd+bwd", fn_bwd)):
        rec = {"kind": "cell", **base, "batch": batch, "pass": pass_}
        try:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            med, mn = timed(fn, dev, sz.warmup, sz.repeats)
            rec.update(status="PASS", ms_per_drr=round(med / batch, 4), ms_per_drr_min=round(mn / batch, 4),
                       ms_per_batch=round(med, 3))  # fmt: skip
            if dev.type == "cuda":
                rec["peak_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other cells
            rec.update(status="FAIL", error=_one_line(exc))
        rec["repeats"], rec["warmup"] = sz.repeats, sz.warmup
        emit(rec)


def fail_cells(base: dict[str, Any], batch: int, exc: BaseException) -> None:
    """Emit the fwd and fwd+bwd cells of a variant whose set-up raised, as FAIL with the error."""
    for pass_ in ("fwd", "fwd+bwd"):
        emit({"kind": "cell", **base, "batch": batch, "pass": pass_, "status": "FAIL", "error": _one_line(exc)})


def bench_xctreg(dev: torch.device, sz: Sizes, mode: str, batch: int, common: dict[str, Any]) -> None:
    from xctreg.geometry import sample_params

    base = {**common, "renderer": "xctreg", "mode": mode, "backend": "torch"}
    try:
        r = xctreg_renderer(phantom(*sz.vol), sz, mode, dev)
        params = torch.tensor(sample_params(batch, seed=1), dtype=torch.float32, device=dev)
        base["samples_per_ray"] = samples_per_ray(r, params)
        base["channels"] = int(r.channels.shape[0])
    except Exception as exc:  # noqa: BLE001
        fail_cells(base, batch, exc)
        return

    def fwd() -> None:
        with torch.no_grad():
            r(params)

    def fwd_bwd() -> None:
        p = params.clone().requires_grad_(True)
        r(p).float().mean().backward()
        assert p.grad is not None

    time_cell(fwd, fwd_bwd, dev, sz, batch, base)


def bench_nanodrr(dev: torch.device, sz: Sizes, backend: str, batch: int, nsamp: str, n: int, common: dict[str, Any]) -> None:
    from xctreg.geometry import sample_params

    base = {**common, "renderer": "nanodrr", "mode": "line", "backend": backend, "nsamp": nsamp, "samples_per_ray": n}
    try:
        r = xctreg_renderer(phantom(*sz.vol), sz, "line", dev)  # only for its pose parameterisation
        drr = nanodrr_module(sz, dev)
        subj = nanodrr_subject(phantom(*sz.vol), dev)
        params = torch.tensor(sample_params(batch, seed=1), dtype=torch.float32, device=dev)
    except Exception as exc:  # noqa: BLE001
        fail_cells(base, batch, exc)
        return

    def fwd() -> None:
        with torch.no_grad():
            drr(subj, cam_to_world(r.poses_to_matrix(params)), n_samples=n, backend=backend)

    def fwd_bwd() -> None:
        p = params.clone().requires_grad_(True)
        drr(subj, cam_to_world(r.poses_to_matrix(p)), n_samples=n, backend=backend).float().mean().backward()
        assert p.grad is not None

    time_cell(fwd, fwd_bwd, dev, sz, batch, base)


# ---------------------------------------------------------------------------- main
def _env(dev: torch.device) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"kind": "env", "device": str(dev), "device_name": device_name(dev), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "nanodrr": ver("nanodrr"), "triton": ver("triton"),
            "python": platform.python_version()}  # fmt: skip


def _key(rec: dict[str, Any]) -> str:
    if rec["renderer"] == "xctreg":
        return f"xctreg:{rec['mode']}"
    return f"nanodrr:{rec['backend']}:{rec['nsamp']}(n={rec['samples_per_ray']})"


def summarize(cells: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [c for c in cells if c["status"] == "PASS"]
    ms = {(_key(c), c["batch"], c["pass"]): c["ms_per_drr"] for c in ok}
    ratios: dict[str, float] = {}
    for c in ok:
        if c["renderer"] != "nanodrr":
            continue
        for mode in ("line", "poly"):
            ref = ms.get((f"xctreg:{mode}", c["batch"], c["pass"]))
            if ref:
                ratios[f"{_key(c)} / xctreg:{mode} b{c['batch']} {c['pass']}"] = round(c["ms_per_drr"] / ref, 3)
    return {
        "ratios_nanodrr_over_xctreg": ratios,
        "ms_per_drr": {f"{k} b{b} {p}": v for (k, b, p), v in ms.items()},
        "failed": [f"{_key(c)} b{c['batch']} {c['pass']}: {c.get('error', '')}" for c in cells if c["status"] != "PASS"],
    }


def main(argv: list[str] | None = None) -> int:
    global _OUT_FH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke test of this script)")
    ap.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)

    from xctreg.errors import XctregError
    from xctreg.runtime import resolve_device

    try:
        dev = resolve_device(args.device)
    except XctregError as exc:
        print(json.dumps({"kind": "env", "status": "FAIL", "error": str(exc)}))
        return 1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _OUT_FH = open(args.out, "a", encoding="utf-8")  # noqa: SIM115
    sz = QUICK if args.quick else FULL
    t_all = time.perf_counter()
    try:
        env = _env(dev)
        emit(env)
        common = {"device_name": env["device_name"], "volume_xyz": list(sz.vol[0]), "voxel_mm": list(sz.vol[1]),
                  "detector": [sz.det, sz.det], "pixel_mm": sz.pix_mm}  # fmt: skip
        from nanodrr.drr.backends import DEVICE_BACKENDS, available

        fused = DEVICE_BACKENDS.get(dev.type)
        backends = ([fused] if fused else []) + ["torch"]
        notes = {}
        if fused and not available(fused):
            notes["fused_backend"] = f"nanodrr's {fused} backend does not import here; backend='auto' would fall back to torch"

        t = time.perf_counter()
        vol = phantom(*sz.vol)
        emit({"kind": "phantom", "shape_zyx": list(vol.hu.shape), "build_s": round(time.perf_counter() - t, 2)})

        sane_ok, sane_pass = True, False
        t = time.perf_counter()
        try:
            rec = sanity(dev, sz, [b for b in backends if b == "torch" or available(b)])
            sane_pass = rec["status"] == "PASS"
            emit({"kind": "sanity", **rec, "seconds": round(time.perf_counter() - t, 2)})
        except Exception as exc:  # noqa: BLE001
            sane_ok = False
            emit({"kind": "sanity", "status": "FAIL", "error": _one_line(exc)})

        start = len(_EMITTED)
        for batch in sz.batches:
            for mode in ("line", "poly"):
                bench_xctreg(dev, sz, mode, batch, common)
            from xctreg.geometry import sample_params

            try:
                r = xctreg_renderer(vol, sz, "line", dev)
                n = samples_per_ray(r, torch.tensor(sample_params(batch, seed=1), dtype=torch.float32, device=dev))
            except Exception:  # noqa: BLE001 - the xctreg cells already reported it
                n = NANODRR_DEFAULT_SAMPLES
            counts = [("matched", n)] + ([("default", NANODRR_DEFAULT_SAMPLES)] if n != NANODRR_DEFAULT_SAMPLES else [])
            for backend in backends:
                for nsamp, k in counts:
                    bench_nanodrr(dev, sz, backend, batch, nsamp, k, common)
        cells = [r for r in _EMITTED[start:] if r.get("kind") == "cell"]
        emit({"summary": "DONE" if sane_pass else "SANITY_FAIL", "sanity_ran": sane_ok, "device_name": env["device_name"], "quick": args.quick,
              **notes, **summarize(cells), "seconds": round(time.perf_counter() - t_all, 1)})  # fmt: skip
    finally:
        if _OUT_FH is not None:
            _OUT_FH.close()
            _OUT_FH = None
    return 0 if sane_ok else 1


if __name__ == "__main__":
    sys.exit(main())
