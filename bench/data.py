"""Training-data benchmark: cached DRR generation (and augmentation) throughput on the chest CT.

    python bench/data.py [--n 256] [--sizes 128 256] [--device auto]

Prints DRRs/s for cached generation (rendering the material line integrals and
writing float16 shards) at each size, both steady-state (between the first and
the last shard) and overall (set-up included), plus augmentation images/s.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="DRRs per size (128²; a quarter at 256²)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    from xctreg.data.augment import AugmentConfig, augment, warm_spectra
    from xctreg.data.chest import fetch_chest
    from xctreg.data.dataset import DataConfig, ShardDataset, generate
    from xctreg.data.poses import SplitConfig
    from xctreg.geometry import Camera
    from xctreg.io import read_volume
    from xctreg.runtime import resolve_device

    dev = resolve_device(args.device)
    path = fetch_chest()
    vol = read_volume(path)
    print(f"device {dev}; threads {torch.get_num_threads()}; chest CT {vol.describe()}")
    summary: dict[str, object] = {"device": str(dev)}
    for size in args.sizes:
        n = args.n if size <= 128 else max(16, args.n // 4)
        cam = Camera(1020.0, size, size, (1.6 * 256 / size,) * 2)
        cfg = DataConfig(camera=cam, splits=SplitConfig(n, 0, 0, seed=0), shard_size=32, batch=16)
        stamps: list[tuple[float, int]] = []
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate(vol, Path(tmp) / "ds", cfg, device=dev, progress=lambda d, t: stamps.append((time.perf_counter(), d)))
            total = time.perf_counter() - t0
            steady = (stamps[-1][1] - stamps[0][1]) / (stamps[-1][0] - stamps[0][0])
            ds = ShardDataset(Path(tmp) / "ds")
            L = torch.stack([ds[i][0] for i in range(min(32, len(ds)))])
            p = torch.stack([ds[i][1] for i in range(len(L))])
        from xctreg.render import Renderer

        r = Renderer(vol, cam)
        T = r.poses_to_matrix(p)
        g = torch.Generator().manual_seed(0)
        iso, half = torch.tensor(r.reference.isocenter_mm), torch.tensor([170.0, 130.0, 160.0])
        warm_spectra()
        augment(L[:2], AugmentConfig(), g, T[:2], cam, iso, half)
        t = time.perf_counter()
        augment(L, AugmentConfig(), g, T, cam, iso, half)
        aug_rate = len(L) / (time.perf_counter() - t)
        print(
            f"{size}²: generation {steady:.1f} DRRs/s steady, {n / total:.1f} DRRs/s overall ({n} DRRs in {total:.1f} s); "
            f"augmentation {aug_rate:.1f} images/s",
            flush=True,
        )
        summary[f"drrs_per_s_{size}"] = steady
        summary[f"drrs_per_s_{size}_overall"] = n / total
        summary[f"augment_per_s_{size}"] = aug_rate
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
