"""Two bench/realism.py results on the same X-rays, compared X-ray by X-ray.

    python bench/compare.py BASE.json NEW.json [--sets clean,realistic] [--stage regressor]

Both runs must have the same detector, --n and --seed, and so the same poses and effects:
each X-ray's refined mTRE can then be compared with its own. For every set in both (or
those of --sets), it prints each run's refined median / p95 mTRE (mm), the paired difference
NEW - BASE (mean and its standard error, mm), on how many X-rays NEW is better, within 1 µm
or worse, the tz bias of each run (mm) and the seconds per X-ray. A median can move by a few
hundredths of a millimetre when a handful of X-rays change; the paired difference says
whether that is more than noise (issue #13 asks that a faster schedule "lose no accuracy").
The last line is JSON.

``--stage regressor`` pairs the regressor's poses instead of the refined ones: two models
(two builds, two training seeds) judged on the same X-rays. Their medians on 40 X-rays
move by about ±0.5 mm from the sample alone (bench/realism.py's ``median_ci95``); the
paired difference sees through most of that.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SAME_MM = 1e-3  # X-rays whose mTRE moved less than this count as unchanged


def load(path: Path) -> dict:
    """A bench/realism.py result (``--out``); one-line exit on anything else."""
    try:
        out = json.loads(path.read_text())
        out["sets"], out["n"], out["seed"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"error: {path} is not a bench/realism.py result ({type(exc).__name__})") from None
    return out


def paired(base: np.ndarray, new: np.ndarray) -> dict:
    """Paired statistics of ``new - base`` (mm), one entry per X-ray."""
    d = new - base
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean_diff": float(d.mean()), "se": se, "better": int((d < -SAME_MM).sum()),
            "same": int((np.abs(d) <= SAME_MM).sum()), "worse": int((d > SAME_MM).sum())}  # fmt: skip


def compare(a: dict, b: dict, sets: list[str] | None = None, stage: str = "refined") -> dict:
    """Per set in both results (or ``sets``): each run's median / p95 and tz bias of ``stage``
    ("refined" or "regressor"), and the paired difference of that stage's mTRE (``paired``)."""
    for key in ("n", "seed", "detector"):
        if a.get(key) != b.get(key):
            raise SystemExit(f"error: the two runs differ in {key} ({a.get(key)} vs {b.get(key)}): not the same X-rays")
    names = sets or [s for s in a["sets"] if s in b["sets"]]
    out = {}
    for name in names:
        if name not in a["sets"] or name not in b["sets"]:
            raise SystemExit(f"error: set {name!r} is not in both runs")
        ra, rb = a["sets"][name][stage], b["sets"][name][stage]
        if "mtre_each" not in ra or "mtre_each" not in rb:
            raise SystemExit(f"error: set {name!r} has no per-X-ray {stage} errors in both runs (rerun bench/realism.py)")
        ea, eb = np.asarray(ra["mtre_each"], dtype=float), np.asarray(rb["mtre_each"], dtype=float)
        out[name] = {
            "base": {"median": ra["median"], "p95": ra["p95"], "tz_bias": ra["params"]["tz_mm"]["bias"], "s": a["sets"][name].get("seconds_per_xray")},
            "new": {"median": rb["median"], "p95": rb["p95"], "tz_bias": rb["params"]["tz_mm"]["bias"], "s": b["sets"][name].get("seconds_per_xray")},
            **paired(ea, eb),
        }
    return out


def table(res: dict) -> str:
    """An ASCII table of ``compare``'s result."""
    rows = ["| set | base median / p95 | new median / p95 | new - base, mean (se) | better / same / worse | tz bias base, new | s per X-ray base, new |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in res.items():
        b, n = r["base"], r["new"]
        secs = "-" if b["s"] is None or n["s"] is None else f"{b['s']:.2f}, {n['s']:.2f}"
        rows.append(f"| {name} | {b['median']:.3f} / {b['p95']:.3f} | {n['median']:.3f} / {n['p95']:.3f} | "
                    f"{r['mean_diff']:+.3f} ({r['se']:.3f}) | {r['better']} / {r['same']} / {r['worse']} | "
                    f"{b['tz_bias']:+.3f}, {n['tz_bias']:+.3f} | {secs} |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--sets", default=None, help="Comma-separated sets (default: every set in both).")
    ap.add_argument("--stage", choices=("refined", "regressor"), default="refined", help="Pair the refined poses (default) or the regressor's.")
    args = ap.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else None
    res = compare(load(args.base), load(args.new), sets, args.stage)
    print(table(res))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
