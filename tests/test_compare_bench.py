"""bench/compare.py: two bench/realism.py results compared X-ray by X-ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from compare import compare, table  # noqa: E402


def _result(each: list[float], tz_bias: float = 0.0, n: int | None = None, seed: int = 2027) -> dict:
    e = np.asarray(each)
    refined = {"median": float(np.median(e)), "p95": float(np.quantile(e, 0.95)), "mtre_each": list(each),
               "params": {"tz_mm": {"bias": tz_bias}}}  # fmt: skip
    return {"n": len(each) if n is None else n, "seed": seed, "detector": [128, 128],
            "sets": {"clean": {"refined": refined, "seconds_per_xray": 1.0}}}  # fmt: skip


def test_paired_difference_counts_and_table() -> None:
    base = _result([0.2, 0.3, 0.4, 0.5])
    new = _result([0.2, 0.25, 0.45, 0.7], tz_bias=0.05)
    r = compare(base, new)["clean"]
    d = np.array([0.0, -0.05, 0.05, 0.2])
    assert r["mean_diff"] == pytest.approx(d.mean())
    assert r["se"] == pytest.approx(d.std(ddof=1) / 2)
    assert (r["better"], r["same"], r["worse"]) == (1, 1, 2)
    assert r["new"]["tz_bias"] == 0.05 and r["base"]["median"] == pytest.approx(0.35)
    text = table(compare(base, new))
    assert "| clean |" in text and "+0.050 (" in text and "1 / 1 / 2" in text
    text.encode("ascii")  # prints in an ASCII locale


def test_runs_on_other_xrays_are_refused_with_one_line(tmp_path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_result([0.2, 0.3])))
    b.write_text(json.dumps(_result([0.2, 0.3], seed=1234)))
    proc = subprocess.run([sys.executable, str(BENCH / "compare.py"), str(a), str(b)], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == ["error: the two runs differ in seed (2027 vs 1234): not the same X-rays"]
    b.write_text("{not json")
    proc = subprocess.run([sys.executable, str(BENCH / "compare.py"), str(a), str(b)], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    b.write_text(json.dumps(_result([0.2, 0.3])))
    proc = subprocess.run([sys.executable, str(BENCH / "compare.py"), str(a), str(b), "--sets", "realistic"], capture_output=True, text=True)
    assert proc.returncode == 1 and "not in both runs" in proc.stderr
    proc = subprocess.run([sys.executable, str(BENCH / "compare.py"), str(a), str(b)], capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[-1])["clean"]["same"] == 2
