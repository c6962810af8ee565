"""How much a view's X-ray tells about each pose parameter: image sensitivity per view.

For random poses within the default ranges around each view, the clean quick-preset
DRR (128², normalised to [0, 1] like the network's input) is rendered at p ± δ along
each parameter; the RMS change of the image per degree or mm is that parameter's
sensitivity. A view whose images change less per millimetre carries less
information for the regressor (and for refinement) at the same noise. Also printed:
the share of the image covered by the body and the image's contrast (std).

Prints one JSON line per view and a last line with the lateral / AP ratios.

    python bench/view_information.py [--ct CT] [--views ap,lat-left] [--n 12]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def sensitivity(vol, view: tuple[float, float, float], n: int, seed: int) -> dict[str, object]:  # noqa: ANN001
    from xctreg.geometry import PARAM_NAMES, PoseReference, PoseSpace
    from xctreg.render import RenderConfig, Renderer
    from xctreg.train import preset

    cam = preset("quick").camera
    space = PoseSpace(PoseReference(tuple(float(v) for v in vol.center), 750.0, view))
    r = Renderer(vol, cam, RenderConfig(), reference=space.reference)
    steps = np.array([0.5, 0.5, 0.5, 1.0, 1.0, 2.0])  # deg, mm
    norm = lambda x: (x - x.amin(dim=(-2, -1), keepdim=True)) / (x.amax(dim=(-2, -1), keepdim=True) - x.amin(dim=(-2, -1), keepdim=True))  # noqa: E731
    sens, body, contrast = [], [], []
    for p in space.sample(n, seed=seed):
        batch = [p]
        for j in range(6):
            for s in (1, -1):
                q = p.copy()
                q[j] += s * steps[j]
                batch.append(q)
        with torch.no_grad():
            img = norm(r(torch.as_tensor(np.asarray(batch), dtype=torch.float32))[:, 0].double())
        body.append(float((img[0] > 0.05).double().mean()))
        contrast.append(float(img[0].std()))
        d = [(img[1 + 2 * j] - img[2 + 2 * j]).pow(2).mean().sqrt() / (2 * steps[j]) for j in range(6)]
        sens.append([float(v) for v in d])
    s = np.mean(sens, 0)
    return {
        "view": list(view),
        "rms_change_per_unit": {k: float(v) for k, v in zip(PARAM_NAMES, s, strict=True)},
        "body_fraction": float(np.mean(body)),
        "contrast_std": float(np.mean(contrast)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", default=None, help="CT volume (default: the example chest CT).")
    ap.add_argument("--views", default="ap,lat-left")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()

    from xctreg.geometry import parse_view
    from xctreg.io import read_volume

    if args.ct is None:
        from xctreg.data.chest import fetch_chest

        args.ct = fetch_chest()
    vol = read_volume(args.ct)
    rows = []
    for name in args.views.split(","):
        row = {"name": name, **sensitivity(vol, parse_view(name), args.n, args.seed)}
        rows.append(row)
        print(json.dumps(row))
    if len(rows) == 2:
        a, b = rows[0]["rms_change_per_unit"], rows[1]["rms_change_per_unit"]
        print(json.dumps({"ratio": f"{rows[1]['name']} / {rows[0]['name']}", **{k: b[k] / a[k] for k in a}}))


if __name__ == "__main__":
    main()
