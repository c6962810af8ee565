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


def _stage(each: list[float], tz_bias: float = 0.0) -> dict:
    e = np.asarray(each)
    return {"median": float(np.median(e)), "p95": float(np.quantile(e, 0.95)), "mtre_each": list(each),
            "params": {"tz_mm": {"bias": tz_bias}}}  # fmt: skip


def _result(each: list[float], tz_bias: float = 0.0, n: int | None = None, seed: int = 2027, regressor: list[float] | None = None) -> dict:
    reg = _stage(regressor if regressor is not None else [5.0] * len(each))
    return {"n": len(each) if n is None else n, "seed": seed, "detector": [128, 128],
            "sets": {"clean": {"refined": _stage(each, tz_bias), "regressor": reg, "seconds_per_xray": 1.0}}}  # fmt: skip


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


def test_stage_regressor_pairs_the_regressors_poses(tmp_path) -> None:
    """Two models on the same X-rays: --stage regressor pairs their regressor errors, not the
    refined ones; a result from before per-X-ray regressor errors is refused in one line."""
    base = _result([0.2, 0.3, 0.4], regressor=[4.0, 6.0, 5.0])
    new = _result([0.2, 0.3, 0.4], regressor=[3.0, 6.5, 4.0])
    r = compare(base, new, stage="regressor")["clean"]
    assert r["mean_diff"] == pytest.approx(-0.5) and (r["better"], r["same"], r["worse"]) == (2, 0, 1)
    assert r["base"]["median"] == pytest.approx(5.0) and r["new"]["median"] == pytest.approx(4.0)
    assert compare(base, new)["clean"]["same"] == 3  # the refined poses did not move
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(base))
    del new["sets"]["clean"]["regressor"]["mtre_each"]
    b.write_text(json.dumps(new))
    proc = subprocess.run([sys.executable, str(BENCH / "compare.py"), str(a), str(b), "--stage", "regressor"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: set 'clean' has no per-X-ray regressor errors in both runs (rerun bench/realism.py)"
    ]
