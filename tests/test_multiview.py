"""Multi-view registration (SPEC §7): sessions, rigs, combining proposals, joint refinement and the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error
from xctreg.geometry import PoseReference, params_to_matrix, parse_view, rigid_matrix
from xctreg.multiview import (
    MultiviewConfig,
    ViewReport,
    combine_proposals,
    register_views,
    rig_axis,
    rig_between,
    rotation_about,
)
from xctreg.errors import XctregError

C = (10.0, -20.0, 30.0)
AP, LAT = PoseReference(C, 750.0), PoseReference(C, 750.0, parse_view("lat-left"))


@pytest.fixture(scope="module")
def lat_model(model_dir):
    """A tiny lateral (lat-left) model of the same small phantom as ``model_dir``'s AP model."""
    from xctreg.io import read_volume
    from xctreg.train import Trainer, quick_test_config

    ct = model_dir / "ct.nii.gz"
    out = model_dir / "lat"
    if not (out / "config.json").exists():
        Trainer(read_volume(ct), out, quick_test_config(steps=2, view_deg=(0.0, 90.0, 0.0)), ct_path=ct, log=lambda s: None).fit()
    return out


def test_rig_between_maps_one_reference_pose_onto_the_other() -> None:
    rig = rig_between(AP, LAT)
    z = torch.zeros(6, dtype=torch.float64)
    assert np.allclose(rig @ params_to_matrix(z, AP).numpy(), params_to_matrix(z, LAT).numpy(), atol=1e-9)
    # AP and lateral about one isocentre: the C-arm turns about the image's vertical axis through it
    a, o = rig_axis(rig)
    assert np.allclose(np.abs(a), (0, 1, 0), atol=1e-9) and np.allclose(o, (0, 0, 750.0), atol=1e-6)


def test_rotation_about_keeps_its_axis_fixed() -> None:
    a, o = np.array([0.0, 0.6, 0.8]), np.array([5.0, -3.0, 700.0])
    assert torch.allclose(rotation_about(a, o, torch.tensor(0.0, dtype=torch.float64)), torch.eye(4, dtype=torch.float64))
    M = rotation_about(a, o, torch.tensor(0.3, dtype=torch.float64)).numpy()
    for x in (o, o + 40 * a):
        assert np.allclose(M[:3, :3] @ x + M[:3, 3], x, atol=1e-9)
    assert np.isclose(np.degrees(np.arccos((np.trace(M[:3, :3]) - 1) / 2)), np.degrees(0.3))


def test_rigid_matrix_refuses_what_is_not_rigid() -> None:
    assert np.array_equal(rigid_matrix(np.eye(4).tolist(), "T"), np.eye(4))
    bad = np.eye(4)
    bad[0, 0] = 1.2
    for T, fragment in ((bad, "not a rigid"), (np.eye(3), "4x4"), ([[1, 0, 0, 0]] * 3 + [["a", 0, 0, 1]], "numbers")):
        with pytest.raises(XctregError, match=fragment):
            rigid_matrix(np.asarray(T).tolist() if not isinstance(T, list) else T, "T")


def _off(T: np.ndarray, d_cam: np.ndarray) -> np.ndarray:
    """``T`` with its translation moved by ``d_cam`` (mm, the first camera's frame)."""
    U = T.copy()
    U[:3, 3] += d_cam
    return U


def test_combining_takes_each_views_in_plane_position_and_not_its_depth() -> None:
    """The AP proposal is 10 mm off in depth (its z), the lateral one 10 mm off in its own
    depth (the first camera's x): weighted by what each view sees, the combination is close to
    the truth on both axes, where a plain mean would be 5 mm off on each."""
    truth = params_to_matrix(torch.tensor([2.0, -3.0, 4.0, 5.0, -6.0, 7.0], dtype=torch.float64), AP).numpy()
    rigs = [np.eye(4), rig_between(AP, LAT)]
    props = [_off(truth, np.array([0.0, 0.0, 10.0])), _off(truth, np.array([10.0, 0.0, 0.0]))]
    T, w, d = combine_proposals(props, rigs, [1.0, 1.0], np.asarray(C), depth_weight=4.0)
    err = np.abs(T[:3, 3] - truth[:3, 3])
    assert err.max() < 1.0, err
    assert np.allclose(T[:3, :3], truth[:3, :3], atol=1e-9) and np.all(w > 0.5)


def test_combining_down_weights_a_proposal_that_disagrees() -> None:
    truth = params_to_matrix(torch.tensor([1.0, 2.0, -1.0, 3.0, 4.0, -5.0], dtype=torch.float64), AP).numpy()
    lat_r = PoseReference(C, 750.0, parse_view("lat-right"))
    rigs = [np.eye(4), rig_between(AP, LAT), rig_between(AP, lat_r)]
    props = [_off(truth, np.array([0.5, -0.3, 2.0])), _off(truth, np.array([1.5, 0.2, -0.4])), _off(truth, np.array([0.0, 60.0, 0.0]))]
    T, w, d = combine_proposals(props, rigs, [1.0, 1.0, 1.0], np.asarray(C))
    assert np.abs(T[:3, 3] - truth[:3, 3]).max() < 2.5
    assert w[2] < 0.1 * min(w[0], w[1]) and d[2] > 40


def _xray(reg, params, seed=0):  # noqa: ANN001, ANN202 - an xctreg DRR at the model's camera
    with torch.no_grad():
        return reg.renderer()(torch.as_tensor(params[None], dtype=torch.float32))[0, 0].numpy()


def test_the_second_view_sees_the_first_views_depth_through_the_rig(model_dir, lat_model) -> None:
    """Off in the AP view's depth (tz), the lateral view's objective pulls tz back 5x harder
    than the AP view's own: it sees that depth as an in-plane shift. The gradient reaches the
    first view's parameters through the rig and the lateral renderer."""
    from xctreg.multiview import _Joint, _level, _scores
    from xctreg.register import Registrar

    ra, rb = Registrar(model_dir / "m"), Registrar(lat_model)
    rig = rig_between(ra.reference, rb.reference)
    truth = np.array([2.0, -1.0, 1.5, 4.0, -3.0, 6.0])
    pb = rb.space.from_matrix(torch.as_tensor(rig @ ra.space.to_matrix(torch.as_tensor(truth)).numpy())).numpy()
    xa, xb = ra.prepare(_xray(ra, truth)), rb.prepare(_xray(rb, pb))
    joint = _Joint(ra, [np.eye(4), rig], MultiviewConfig())
    level = _level([ra, rb], [xa, xb], 32, MultiviewConfig().refine)
    grads = []
    for view in (0, 1):
        p = torch.as_tensor(truth + np.array([0, 0, 0, 0, 0, 6.0])).requires_grad_(True)
        _scores(level, joint.poses(p), "gradncc", [view])[0].backward()
        grads.append(p.grad.numpy())
    assert grads[1][5] < 0 and abs(grads[1][5]) > 5 * abs(grads[0][5]), grads  # towards the truth, and mostly from the lateral
    assert abs(grads[1][3]) < abs(grads[1][5])  # the lateral view's depth is the AP's x: little pull there


def test_joint_newton_terms_are_the_weighted_views_through_the_rig(model_dir, lat_model) -> None:
    """The joint Newton terms' gradient is what autograd gives for the weighted mean of the views'
    objectives through the rig (what the joint Adam steps follow); their Hessian is the weighted
    sum of the views' own."""
    from xctreg.multiview import _Joint, _level, _scores, joint_terms
    from xctreg.register import Registrar

    ra, rb = Registrar(model_dir / "m"), Registrar(lat_model)
    rig = rig_between(ra.reference, rb.reference)
    truth = np.array([2.0, -1.0, 1.5, 4.0, -3.0, 6.0])
    pb = rb.space.from_matrix(torch.as_tensor(rig @ ra.space.to_matrix(torch.as_tensor(truth)).numpy())).numpy()
    xa, xb = ra.prepare(_xray(ra, truth)), rb.prepare(_xray(rb, pb))
    cfg = MultiviewConfig()
    joint = _Joint(ra, [np.eye(4), rig], cfg)
    level = _level([ra, rb], [xa, xb], 32, cfg.refine)
    start = truth + np.array([0.5, -0.5, 0.3, 1.0, -1.0, 3.0])
    weights = [0.25, 0.75]
    value, g, H = joint_terms(joint, level, weights, "local-gradncc")(start)
    p = torch.as_tensor(start).requires_grad_(True)
    s = sum(w * v for w, v in zip(weights, _scores(level, joint.poses(p), "local-gradncc", [0, 1]), strict=True))
    s.backward()
    assert value == pytest.approx(float(s.detach()), abs=1e-5)
    np.testing.assert_allclose(g.numpy(), p.grad.numpy(), rtol=5e-3, atol=1e-3 * float(np.abs(p.grad.numpy()).max()))
    _, _, Ha = joint_terms(joint, level, [1.0, 0.0], "local-gradncc")(start)
    _, _, Hb = joint_terms(joint, level, [0.0, 1.0], "local-gradncc")(start)
    torch.testing.assert_close(H, 0.25 * Ha + 0.75 * Hb)


def test_a_view_its_ct_cannot_explain_is_left_out_and_the_other_registered_alone(model_dir, lat_model) -> None:
    from xctreg.register import Registrar

    ra, rb = Registrar(model_dir / "m"), Registrar(lat_model)
    truth = np.array([1.0, 2.0, -1.0, 3.0, 2.0, -4.0])
    xa = ra.prepare(_xray(ra, truth))
    noise = np.random.default_rng(0).random((32, 32)).astype(np.float32)  # a wrong X-ray: nothing of the CT in it
    xb = rb.prepare(noise)
    res = register_views([ra, rb], [xa, xb], [np.eye(4), rig_between(ra.reference, rb.reference)])
    assert res.flagged == [1] and res.reports[1].weight == 0 and "poorly explained" in res.reports[1].flag
    alone = ra.register(xa)
    assert np.allclose(res.joint.params, alone.params, atol=1e-9)  # exactly the good view alone
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["views"][1]["multiview"]["left_out"] is True and d["joint"]["flagged_views"] == [1]


def test_view_report_json_has_no_nan() -> None:
    d = ViewReport(0.0, "left out", None, 0.5, float("nan")).to_dict()
    json.dumps(d, allow_nan=False)
    assert d["score_alone"] is None and d["proposal_disagreement_mm"] is None and d["left_out"] is True


def test_simulate_and_register_multiview_cli(cli, model_dir, lat_model, tmp_path) -> None:
    m = model_dir / "m"
    out = tmp_path / "mv"
    res = cli("simulate-multiview", model_dir / "ct.nii.gz", "--out", out, "--views", "ap,lat-left", "--geometry", m / "geometry.json",
              "--models", f"{m},{lat_model}", "--ranges", "3,3,3,5,5,5", "--seed", "1")  # fmt: skip
    assert res.code == 0, res.err
    session = json.loads((out / "session.json").read_text())
    truth = json.loads((out / "truth.json").read_text())
    assert len(session["views"]) == 2 and session["views"][0]["T_cam_from_first"] == np.eye(4).tolist()
    T0, T1 = np.asarray(truth["first"]["T_cam_from_world"]), np.asarray(truth["views"][1]["T_cam_from_world"])
    assert np.allclose(np.asarray(session["views"][1]["T_cam_from_first"]) @ T0, T1)
    res = cli("register-multiview", out / "session.json", "--overlay", tmp_path / "ov")
    assert res.code == 0, res.err
    r = json.loads((out / "session.result.json").read_text())
    assert set(r) == {"joint", "views"} and len(r["views"]) == 2
    for k, v in enumerate(r["views"]):  # every view's result is the joint pose seen through its rig
        assert np.allclose(np.asarray(session["views"][k]["T_cam_from_first"]) @ np.asarray(r["joint"]["T_cam_from_world"]),
                           np.asarray(v["T_cam_from_world"]), atol=1e-6)  # fmt: skip
        assert {"ncc", "ssim", "css"} <= set(v["similarity"]) and "multiview" in v
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == ["view0_ap.png", "view1_lat-left.png"]
    res = cli("register-multiview", out / "session.json", "--no-refine", "--out", tmp_path / "start.json")
    assert res.code == 0, res.err
    start = json.loads((tmp_path / "start.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert start["joint"]["iterations"] == 0 and start["views"][0]["multiview"]["score_alone"] is None


def test_register_multiview_refuses_bad_sessions(cli, model_dir, lat_model, tmp_path) -> None:
    m = model_dir / "m"
    cli("simulate-multiview", model_dir / "ct.nii.gz", "--out", tmp_path, "--geometry", m / "geometry.json",
        "--models", f"{m},{lat_model}", "--ranges", "2,2,2,3,3,3")  # fmt: skip
    good = json.loads((tmp_path / "session.json").read_text())

    def session(views, name="s.json"):  # noqa: ANN001, ANN202
        p = tmp_path / name
        p.write_text(json.dumps({"views": views}))
        return p

    bent = json.loads(json.dumps(good["views"]))
    bent[1]["T_cam_from_first"][0][0] = 1.3
    assert_one_line_error(cli("register-multiview", session(bent)), "not a rigid")
    assert_one_line_error(cli("register-multiview", session(good["views"][:1])), "at least two views")
    missing = json.loads(json.dumps(good["views"]))
    missing[1]["xray"] = "nowhere.png"
    assert_one_line_error(cli("register-multiview", session(missing)), "not found")
    moved = json.loads(json.dumps(good["views"]))
    moved[0]["T_cam_from_first"][0][3] = 5.0
    assert_one_line_error(cli("register-multiview", session(moved)), "identity")
    other = tmp_path / "other_ct_model"
    shutil.copytree(lat_model, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["ct_sha256"] = "0" * 64
    (other / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(cli("register-multiview", session(good["views"]), "--models", f"{m},{other}"), "different CTs")
    assert_one_line_error(cli("register-multiview", session(good["views"]), "--models", f"{m}"), "2 views")
    assert_one_line_error(cli("simulate-multiview", model_dir / "ct.nii.gz", "--out", tmp_path / "x", "--views", "ap"), "at least two")


def test_evaluate_views_compares_each_view_alone_with_the_joint(cli, model_dir, lat_model, tmp_path) -> None:
    m = model_dir / "m"
    res = cli("evaluate", m, "--views", "ap,lat-left", "--models", lat_model, "--n", "1", "--out", tmp_path / "ev")
    assert res.code == 0, res.err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["ap alone", "lat-left alone", "joint"] and metrics["n"] == 1
    assert "in-distribution" in (tmp_path / "ev" / "metrics.md").read_text(encoding="utf-8")
    assert_one_line_error(cli("evaluate", m, "--views", "ap,lat-right", "--models", lat_model, "--n", "2"), "not lat-right")
    assert_one_line_error(cli("evaluate", m, "--views", "ap", "--n", "2"), "two or more views")


def test_evaluate_views_on_given_sessions_reads_their_truth(cli, model_dir, lat_model, tmp_path) -> None:
    m = model_dir / "m"
    one = tmp_path / "sessions" / "000"
    res = cli("simulate-multiview", model_dir / "ct.nii.gz", "--out", one, "--views", "ap,lat-left", "--geometry", m / "geometry.json",
              "--models", f"{m},{lat_model}", "--ranges", "3,3,3,5,5,5", "--seed", "3")  # fmt: skip
    assert res.code == 0, res.err

    def run(out):  # noqa: ANN001, ANN202
        res = cli("evaluate", m, "--views", "ap,lat-left", "--models", lat_model, "--sessions", tmp_path / "sessions", "--out", out)
        assert res.code == 0, res.err
        return json.loads((out / "metrics.json").read_text())

    first = run(tmp_path / "ev1")
    assert first["n"] == 1 and "sessions" in first["xrays"] and "in-distribution" not in first["xrays"]
    assert (tmp_path / "ev1" / "metrics.md").read_text(encoding="utf-8").startswith("1 sessions, views ap, lat-left")
    truth = json.loads((one / "truth.json").read_text())
    T = np.asarray(truth["first"]["T_cam_from_world"])
    T[0, 3] += 20.0  # a truth 20 mm off across the beam: every method's error grows by about that much
    (one / "truth.json").write_text(json.dumps({"first": {"T_cam_from_world": T.tolist(), "reference": truth["first"]["reference"]}}))
    moved = run(tmp_path / "ev2")
    for name, r in moved["methods"].items():
        assert abs(r["median_mtre_mm"] - 20.0) < first["methods"][name]["median_mtre_mm"] + 0.5, name
        assert r["param_bias"]["tx_mm"] == pytest.approx(first["methods"][name]["param_bias"]["tx_mm"] - 20.0, abs=0.5), name
    (one / "truth.json").unlink()
    assert_one_line_error(cli("evaluate", m, "--views", "ap,lat-left", "--models", lat_model, "--sessions", tmp_path / "sessions"), "no truth.json")
    assert_one_line_error(cli("evaluate", m, "--views", "ap,lat-left", "--models", lat_model, "--sessions", tmp_path / "ev1"), "no session.json")
    assert_one_line_error(cli("evaluate", m, "--sessions", tmp_path / "sessions"), "needs --views")


def test_the_rigs_degree_of_freedom_turns_it_about_its_own_axis_within_the_bound() -> None:
    from xctreg.multiview import _Joint

    class _First:  # the only thing _Joint reads of the first view's Registrar
        reference = AP

    rig = rig_between(AP, LAT)
    joint = _Joint(_First(), [np.eye(4), rig], MultiviewConfig(refine_rig=True, rig_bound_deg=2.0))
    assert torch.allclose(joint.rig(1), torch.as_tensor(rig))
    u = torch.tensor([0.0, 5.0], dtype=torch.float64, requires_grad=True)  # tanh(5) ≈ 1: at the bound
    R = joint.rig(1, u)
    turn = (R[:3, :3] @ torch.as_tensor(rig[:3, :3]).T).detach().numpy()
    assert np.isclose(np.degrees(np.arccos((np.trace(turn) - 1) / 2)), 2.0, atol=1e-3)
    iso = np.array([0.0, 0.0, 750.0, 1.0])  # the isocentre stays where the rig puts it
    assert np.allclose(R.detach().numpy() @ iso, rig @ iso, atol=1e-9)
    R[0, 2].backward()
    assert u.grad is not None and u.grad[1] != 0


def _run_with_scores(model_dir, lat_model, alone: list[float], at_joint: list[float]):  # noqa: ANN001, ANN202
    """A _JointRun over ``len(alone)`` views (the two tiny models, repeated) whose scores alone and
    at the joint pose are given: for the leave-out rule alone."""
    from xctreg.multiview import _JointRun
    from xctreg.register import Refinement, Registrar

    ra, rb = Registrar(model_dir / "m"), Registrar(lat_model)
    regs = [ra, rb, rb][: len(alone)]
    rigs = [np.eye(4)] + [rig_between(ra.reference, r.reference) for r in regs[1:]]
    run = _JointRun(regs, [None] * len(regs), rigs, MultiviewConfig())
    run.alone = [Refinement(np.zeros(6), a, 0, 0.0) for a in alone]
    run.weights = np.ones(len(alone))
    run.p = np.zeros(6)
    run._scores_at = lambda p: list(at_joint)  # type: ignore[method-assign]
    return run


def test_the_view_that_drops_most_is_left_out_but_of_two_the_first_is_kept(model_dir, lat_model) -> None:
    run = _run_with_scores(model_dir, lat_model, [0.95, 0.9, 0.92], [0.94, 0.6, 0.9])
    assert run.check() and run.weights.tolist() == [1.0, 0.0, 1.0] and "disagrees" in run.flags[1]
    assert not run.check()  # the others agree: nothing more to leave out
    run = _run_with_scores(model_dir, lat_model, [0.95, 0.9], [0.6, 0.85])  # two views: the first dropped most, yet is kept
    assert run.check() and run.weights.tolist() == [1.0, 0.0]
    run = _run_with_scores(model_dir, lat_model, [0.95, 0.9], [0.9, 0.8])  # within flag_drop: both stay
    assert not run.check() and run.weights.tolist() == [1.0, 1.0]


def test_combining_views_that_all_scored_nothing_does_not_fail(model_dir, lat_model) -> None:
    run = _run_with_scores(model_dir, lat_model, [0.0, -0.2], [0.0, 0.0])
    run.T0s = [np.eye(4), np.eye(4)]
    run.T0s[0][:3, 3] = run.T0s[1][:3, 3] = (0.0, 0.0, 750.0)
    weights, _ = run._combine(np.zeros(2))
    assert np.all(weights > 0) and np.all(np.isfinite(run.p))


def test_a_rig_without_a_turn_has_no_axis_to_refine() -> None:
    from xctreg.multiview import _Joint

    class _First:
        reference = AP

    shift = np.eye(4)
    shift[0, 3] = 40.0  # the table moved, the C-arm did not turn
    joint = _Joint(_First(), [np.eye(4), shift], MultiviewConfig(refine_rig=True))
    assert joint.axes[1] is None
    assert torch.allclose(joint.rig(1, torch.tensor([0.0, 3.0], dtype=torch.float64)), torch.as_tensor(shift))


def test_models_given_on_the_command_line_are_read_from_the_working_folder(cli, model_dir, lat_model, tmp_path, monkeypatch) -> None:
    m = model_dir / "m"
    assert cli("simulate-multiview", model_dir / "ct.nii.gz", "--out", tmp_path / "s", "--geometry", m / "geometry.json").code == 0
    session = tmp_path / "s" / "session.json"
    assert "model" not in json.loads(session.read_text())["views"][0]
    assert_one_line_error(cli("register-multiview", session), "has no \"model\"")
    monkeypatch.chdir(model_dir)
    res = cli("register-multiview", session, "--models", f"m,{lat_model.name}", "--no-refine")
    assert res.code == 0, res.err
