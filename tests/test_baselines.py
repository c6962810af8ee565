"""Derivative-free refinement (the conventional baseline): CMA-ES and Powell."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xctreg.geometry import Camera, PoseReference, PoseSpace
from xctreg.metrics import mtre, target_points
from xctreg.register import RefineConfig, refine
from xctreg.render import Renderer


TRUE = np.array([2.0, -3.0, 4.0, 5.0, -4.0, 8.0])
START = TRUE + np.array([3.0, -3.0, 2.0, 6.0, -6.0, 6.0])  # 3° / 6 mm off


def _phantom_xray(volume, size: int) -> tuple[PoseReference, Camera, np.ndarray]:  # noqa: ANN001
    """The reference, a size² camera and the phantom's X-ray at TRUE on it."""
    ref = PoseReference(tuple(volume.center), 750.0)
    cam = Camera(1020.0, size, size, (6.4 * 64 / size, 6.4 * 64 / size))
    img = Renderer(volume, cam, reference=ref)(torch.tensor(TRUE[None], dtype=torch.float32))[0, 0].numpy()
    return ref, cam, img


@pytest.mark.parametrize("method", ["cma-es", "powell"])
def test_derivative_free_refinement_closes_in_from_a_perturbed_start(small_phantom, method: str) -> None:
    """From a start 3°/6 mm off, on the same levels and objective as gradient refinement, each
    method brings the pose within 1.5 mm mTRE (from about 10), using at most its budget of
    renders, and reports the same kind of Refinement."""
    from xctreg.baselines import SearchConfig, refine_derivative_free

    ref, cam, img = _phantom_xray(small_phantom, 64)
    true, start = TRUE, START
    cfg = RefineConfig(sizes=(32, 64), iterations=(40, 30), objective="ncc")
    search = SearchConfig(evaluations=(300, 200))
    out = refine_derivative_free(small_phantom, img, cam, ref, start, method, cfg, search)  # type: ignore[arg-type]
    pts = torch.as_tensor(target_points(small_phantom, 500))
    space = PoseSpace(reference=ref)
    T = lambda q: space.to_matrix(torch.as_tensor(q, dtype=torch.float64))  # noqa: E731
    before, after = float(mtre(T(start), T(true), pts)), float(mtre(T(out.params), T(true), pts))
    assert before > 8.0 and after < 2.5, (before, after)  # CMA-ES ends about 1.9 mm off, Powell under 1.5
    assert out.iterations <= 300 + 200 and out.trajectory.shape == (2, 6) and out.score > 0.99
    grad = refine(small_phantom, img, cam, ref, start, cfg)
    assert float(mtre(T(grad.params), T(true), pts)) < 1.5  # the gradient path, for comparison


@pytest.mark.parametrize("method", ["cma-es", "powell"])
def test_a_time_budget_stops_the_search(small_phantom, method: str) -> None:
    """``SearchConfig.seconds`` (the equal-time comparison) stops each method within its budget
    (plus the one evaluation under way), with fewer renders than without it, still improving
    on the start."""
    import time

    from xctreg.baselines import SearchConfig, refine_derivative_free

    ref, cam, img = _phantom_xray(small_phantom, 32)
    start = START
    cfg = RefineConfig(sizes=(16, 32), iterations=(40, 30), objective="ncc")
    renderers: dict = {}
    free = refine_derivative_free(small_phantom, img, cam, ref, start, method, cfg, SearchConfig(evaluations=(300, 200)), renderers=renderers)  # type: ignore[arg-type]
    per_render = free.seconds / free.iterations
    budget = 40 * per_render
    t = time.perf_counter()
    timed = refine_derivative_free(small_phantom, img, cam, ref, start, method, cfg,  # type: ignore[arg-type]
                                   SearchConfig(evaluations=(300, 200), seconds=budget), renderers=renderers)  # fmt: skip
    took = time.perf_counter() - t
    assert timed.iterations < free.iterations and timed.iterations >= 2
    assert took < budget + 30 * per_render + 0.5  # a CMA-ES generation may be under way at the deadline
    assert not np.allclose(timed.params, start)


def test_unknown_method_is_refused(small_phantom) -> None:
    from xctreg.baselines import refine_derivative_free

    with pytest.raises(ValueError, match="cma-es, powell"):
        refine_derivative_free(small_phantom, np.zeros((8, 8)), Camera(1020.0, 8, 8, (40.0, 40.0)), PoseReference((0, 0, 0)), np.zeros(6), "nelder")  # type: ignore[arg-type]


def test_evaluate_baselines_table(cli, model_dir, tmp_path) -> None:
    """``xctreg evaluate --baselines``: every baseline is scored on the same X-rays and written to
    metrics.json and metrics.md; it refuses --no-refine."""
    import json

    from conftest import assert_one_line_error
    from xctreg.evaluate import BASELINES

    res = cli("evaluate", model_dir / "m", "--n", "2", "--out", tmp_path / "e", "--baselines")
    assert res.code == 0, res.err
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert list(m["baselines"]) == ["register", *BASELINES]
    assert (tmp_path / "e" / "baselines.png").stat().st_size > 5000  # the box plot per method
    for row in m["baselines"].values():
        assert row["median_mtre_mm"] > 0 and row["std_mtre_mm"] >= 0 and 0 <= row["sr_10mm"] <= 1 and row["seconds_per_xray"] > 0
        assert list(row["param_bias"]) == ["rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm"]
    grad, equal = m["baselines"]["gradient, model levels"], m["baselines"]["cma-es, equal time"]
    assert equal["seconds_per_xray"] < grad["seconds_per_xray"] * 1.5 + 1.0  # stopped at the gradient run's time
    md = (tmp_path / "e" / "metrics.md").read_text()
    assert all(name in md for name in BASELINES) and "mean ± std" in md and "bias tx ty tz (mm)" in md
    assert_one_line_error(cli("evaluate", model_dir / "m", "--n", "2", "--baselines", "--no-refine"), "--no-refine")


def test_register_from_given_start_params(model_dir) -> None:
    """``Registrar.register(start_params=...)`` skips the regressor: the initial pose is the one given."""
    from xctreg.register import RefineConfig, Registrar

    reg = Registrar(model_dir / "m")
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    start = np.array([1.0, -2.0, 3.0, 4.0, -5.0, 6.0])
    r = reg.register(img, refine_pose=False, start_params=start)
    np.testing.assert_allclose(r.initial.params, start, atol=1e-9)
    np.testing.assert_allclose(r.params, start, atol=1e-9)
    assert r.timing_s["regress"] == 0.0
    r2 = reg.register(img, config=RefineConfig(sizes=(16,), iterations=(3,), restarts=0, native_search="none"), start_params=start)
    assert r2.iterations > 0


def test_evaluate_baselines_on_the_first_xrays_only(model_dir) -> None:
    """``evaluate(baselines=k)`` (what the demo's report uses) runs the baselines on the first k
    X-rays only; its ``register`` row is xctreg on those same X-rays."""
    from xctreg.evaluate import evaluate

    m = evaluate(model_dir / "m", 3, baselines=1)
    assert m["n"] == 3 and {len(r["mtre_each"]) for r in m["baselines"].values()} == {1}
    assert evaluate(model_dir / "m", 2).get("baselines") is None
