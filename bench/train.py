"""Training throughput of the pose regressor, per variant and input size (images/s).

    python bench/train.py [--sizes 128 256] [--batch 16] [--steps 3] [--device auto]

Times forward+backward+AdamW steps on random inputs (the network only; data
and augmentation are measured by bench/data.py). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    from xctreg.models import VARIANTS, ModelConfig, PoseRegressor
    from xctreg.runtime import resolve_device

    dev = resolve_device(args.device)
    print(f"device {dev}; threads {torch.get_num_threads()}; batch {args.batch}")
    summary: dict[str, object] = {"device": str(dev), "batch": args.batch}
    for size in args.sizes:
        for variant in VARIANTS:
            torch.manual_seed(0)
            m = PoseRegressor(ModelConfig(variant=variant, input_size=size)).to(dev).train()
            opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
            x = torch.rand(args.batch, 1, size, size, device=dev)
            times = []
            for i in range(args.steps + 1):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                out = m(x)
                loss = out["params"].pow(2).mean() + (out["recon"].mean() if "recon" in out else 0.0)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - t)
            rate = args.batch / (sum(times) / len(times))
            print(f"{variant:6s} {size:4d}²: {rate:7.1f} images/s", flush=True)
            summary[f"{variant}_{size}_images_per_s"] = rate
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
