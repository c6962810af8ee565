"""C-arm DICOMs vs PNG + geometry, and projection of planned points, with a trained model.

X-rays of the model's CT are rendered on *another* detector than the model's
(default 160 x 192 px at 2.6 mm, SDD 1100 mm) at held-out poses around the
model's view, polyenergetic with noise and blur. Each is written twice:

* as a DICOM (MONOCHROME1, LOG intensities, the C-arm's positioner angles,
  geometry in the tags) and registered with no geometry file;
* as a 16-bit PNG, registered with a geometry JSON.

It prints one JSON line: median/mean mTRE for both, the largest difference of
their parameters, and the projection error (px) of planned points drawn with
the registered pose against the truth (what ``xctreg project`` would draw).

    python bench/carm.py MODEL_DIR [--n 10] [--seed 31337]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=31337)
    ap.add_argument("--out", type=Path, default=None, help="Write the JSON line here too.")
    args = ap.parse_args()

    from xctreg.geometry import Camera, project, rotation_to_positioner, write_camera
    from xctreg.io import write_xray
    from xctreg.metrics import mtre, target_points
    from xctreg.physics import DetectorConfig
    from xctreg.register import Registrar
    from xctreg.render import RenderConfig, Renderer

    reg = Registrar(args.model_dir)
    vol = reg.ct()
    other = Camera(1100.0, 160, 192, (2.6, 2.6))
    truth = reg.space.sample(args.n, seed=args.seed)
    render = Renderer(vol, other, RenderConfig(kvp=100.0, detector=DetectorConfig(photons=1e5, blur_px=0.7)), reference=reg.reference)
    pts = torch.as_tensor(target_points(vol, 5000))
    planned = torch.as_tensor(target_points(vol, 20, seed=7))  # "planned" landmarks inside the body
    res: dict[str, list[float]] = {"dicom": [], "png": [], "dparam": [], "proj_px": [], "sec": []}
    g = torch.Generator().manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_camera(d / "g.json", other)
        for k, p in enumerate(truth):
            T = reg.space.to_matrix(torch.as_tensor(p))
            with torch.no_grad():
                img = render(T[None].float(), generator=g)[0, 0].numpy()
            write_xray(d / f"{k}.dcm", img, other, photometric="MONOCHROME1", intensity_relationship="LOG",
                       positioner_deg=rotation_to_positioner(T[:3, :3].numpy()), sid_mm=reg.reference.sid_mm)  # fmt: skip
            write_xray(d / f"{k}.png", img)
            t0 = time.perf_counter()
            a = reg.register(d / f"{k}.dcm")
            res["sec"].append(time.perf_counter() - t0)
            b = reg.register(d / f"{k}.png", d / "g.json")
            Ta, Tb = torch.as_tensor(a.pose.T_cam_from_world), torch.as_tensor(b.pose.T_cam_from_world)
            res["dicom"].append(float(mtre(Ta, T, pts)))
            res["png"].append(float(mtre(Tb, T, pts)))
            res["dparam"].append(float(np.abs(a.params - b.params).max()))
            uv_est, _ = project(planned, Ta, other)
            uv_true, _ = project(planned, T, other)
            res["proj_px"].append(float((uv_est - uv_true).norm(dim=-1).max()))
    out = {
        "model": str(args.model_dir),
        "n": args.n,
        "detector": other.to_dict(),
        "dicom_median_mtre_mm": float(np.median(res["dicom"])),
        "dicom_mean_mtre_mm": float(np.mean(res["dicom"])),
        "png_median_mtre_mm": float(np.median(res["png"])),
        "png_mean_mtre_mm": float(np.mean(res["png"])),
        "max_param_difference": float(np.max(res["dparam"])),
        "planned_points_max_px_median": float(np.median(res["proj_px"])),
        "planned_points_max_px_worst": float(np.max(res["proj_px"])),
        "seconds_per_dicom": float(np.mean(res["sec"])),
    }
    line = json.dumps(out)
    print(line)
    if args.out is not None:
        args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
