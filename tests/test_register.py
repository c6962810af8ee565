"""Refinement by differentiable rendering and `xctreg register`."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error
from xctreg.data.phantom import make_phantom
from xctreg.geometry import Camera, PoseReference, params_to_matrix
from xctreg.metrics import mtre, target_points
from xctreg.physics import DetectorConfig
from xctreg.register import RefineConfig, refine
from xctreg.render import RenderConfig, Renderer


def test_refinement_reaches_submillimetre_across_a_domain_gap() -> None:
    vol = make_phantom()
    cam = Camera(1020.0, 128, 128, (3.2, 3.2))
    ref = PoseReference(tuple(vol.center), 750.0)
    true = np.array([4.0, -6.0, 8.0, 12.0, -9.0, 25.0])
    # the target: polyenergetic at 100 kVp with noise and blur; refinement renders its own way (90 kVp, clean)
    target_r = Renderer(vol, cam, RenderConfig(kvp=100.0, detector=DetectorConfig(photons=1e4, blur_px=0.7)), reference=ref)
    img = target_r(torch.tensor(true[None], dtype=torch.float32), generator=torch.Generator().manual_seed(0))[0, 0].numpy()
    start = true + np.array([5.0, 5.0, 5.0, 10.0, 10.0, 20.0])
    pts = torch.as_tensor(target_points(vol, 2000))
    T = lambda p: params_to_matrix(torch.as_tensor(p, dtype=torch.float64), ref)  # noqa: E731
    before = float(mtre(T(start), T(true), pts))
    assert before > 20
    # the default (local gradient NCC) and patch NCC; on this noisy phantom (1e4 photons, flat
    # inside) local gradient NCC peaks lower, so each has its own score floor
    for cfg, floor in ((RefineConfig(), 0.35), (RefineConfig(objective="patch-ncc"), 0.8)):
        res = refine(vol, img, cam, ref, start, cfg)
        after = float(mtre(T(res.params), T(true), pts))
        assert after < 1.0, (cfg.objective, before, after)
        assert res.iterations > 0 and res.score > floor, (cfg.objective, res.score)


def test_register_cli_dicom_end_to_end(cli, model_dir, tmp_path) -> None:
    m = model_dir / "m"
    pose = {"params": {"rx_deg": 3, "ry_deg": -2, "rz_deg": 4, "tx_mm": 5, "ty_mm": -5, "tz_mm": 10}}
    (tmp_path / "p.json").write_text(json.dumps(pose))
    res = cli("simulate", model_dir / "ct.nii.gz", "--geometry", m / "geometry.json", "--pose", tmp_path / "p.json",
              "--out", tmp_path / "x.dcm", "--photons", "1e5")  # fmt: skip
    assert res.code == 0, res.err
    res = cli("register", m, tmp_path / "x.dcm", "--out", tmp_path / "r.json", "--overlay", tmp_path / "o.png")
    assert res.code == 0, res.err
    assert (tmp_path / "o.png").stat().st_size > 2000
    r = json.loads((tmp_path / "r.json").read_text())
    for key in ("T_cam_from_world", "params", "reference", "initial", "similarity", "timing_s", "iterations"):
        assert key in r
    assert set(r["similarity"]) == {"ncc", "ssim", "css"} and set(r["timing_s"]) == {"regress", "refine", "total"}
    assert r["iterations"] > 0
    assert r["similarity"]["ncc"] > 0.8  # refinement found an image that matches
    assert "blur_px" not in r
    res = cli("register", m, tmp_path / "x.dcm", "--no-refine", "--out", tmp_path / "r0.json")
    assert res.code == 0 and json.loads((tmp_path / "r0.json").read_text())["iterations"] == 0
    res = cli("register", m, tmp_path / "x.dcm", "--match-blur", "--out", tmp_path / "rb.json")
    assert res.code == 0 and json.loads((tmp_path / "rb.json").read_text())["blur_px"] >= 0


def test_register_bad_inputs(cli, model_dir, tmp_path) -> None:
    m = model_dir / "m"
    np.save(tmp_path / "blank.npy", np.zeros((32, 32), np.float32))
    assert_one_line_error(cli("register", m, tmp_path / "blank.npy"), "blank")
    np.save(tmp_path / "big.npy", np.random.rand(40, 32).astype(np.float32))
    assert_one_line_error(cli("register", m, tmp_path / "big.npy"), "geometry says")
    np.save(tmp_path / "x32.npy", np.random.rand(32, 32).astype(np.float32))
    np.save(tmp_path / "m16.npy", np.zeros((16, 16), np.float32))
    assert_one_line_error(cli("register", m, tmp_path / "x32.npy", "--mask", tmp_path / "m16.npy"), "mask is 16x16")
    np.save(tmp_path / "mall.npy", np.ones((32, 32), np.float32))
    assert_one_line_error(cli("register", m, tmp_path / "x32.npy", "--mask", tmp_path / "mall.npy"), "almost every pixel")
    # a model directory whose CT changed: refused (both paths named), a warning with --force
    cfg = json.loads((m / "config.json").read_text())
    cfg["ct_sha256"] = "0" * 64
    other = tmp_path / "other"
    other.mkdir()
    for f in ("best.pt", "last.pt", "geometry.json"):
        (other / f).write_bytes((m / f).read_bytes())
    (other / "config.json").write_text(json.dumps(cfg))
    np.save(tmp_path / "x.npy", np.random.rand(32, 32).astype(np.float32))
    res = cli("register", other, tmp_path / "x.npy", "--out", tmp_path / "w.json", "--force")
    assert res.code == 0 and "warning: the CT" in res.err
    for extra in ((), ("--strict",)):
        res = cli("register", other, tmp_path / "x.npy", *extra)
        assert_one_line_error(res, "SHA-256")
        assert str(other) in res.err and str(cfg["ct_path"]) in res.err and "--force" in res.err


@pytest.mark.parametrize("shutter", ["black", "white"])
def test_refinement_with_a_detected_collimator(shutter: str) -> None:
    """A circular collimator, black or saturated white, found by preprocessing and masked out."""
    from xctreg.preprocess import detect_field

    vol = make_phantom()
    cam = Camera(1020.0, 96, 96, (4.2, 4.2))
    ref = PoseReference(tuple(vol.center), 750.0)
    true = np.array([-3.0, 5.0, -6.0, -8.0, 6.0, -15.0])
    r = Renderer(vol, cam, RenderConfig(kvp=100.0, detector=DetectorConfig(photons=3e4, blur_px=0.5)), reference=ref)
    img = r(torch.tensor(true[None], dtype=torch.float32), generator=torch.Generator().manual_seed(3))[0, 0].numpy()
    v, u = np.mgrid[:96, :96]
    inside = ((u - 47.5) ** 2 + (v - 47.5) ** 2) <= 40**2
    img = np.where(inside, img, img.min() if shutter == "black" else img.max()).astype(np.float32)
    field = detect_field(img)
    assert not (field & ~inside).any() and field.sum() > 0.85 * inside.sum()
    start = true + np.array([4.0, -4.0, 4.0, 8.0, -8.0, 15.0])
    res = refine(vol, img, cam, ref, start, mask=field.astype(np.float32))
    pts = torch.as_tensor(target_points(vol, 2000))
    T = lambda p: params_to_matrix(torch.as_tensor(p, dtype=torch.float64), ref)  # noqa: E731
    assert float(mtre(T(res.params), T(true), pts)) < 1.0


def test_python_api_result(model_dir, tmp_path) -> None:
    """xctreg.Registrar(model_dir).register(image, geometry) -> Result, on an X-ray from another
    detector (resampled to the model's), given as a path and as an array."""
    import xctreg
    from xctreg.io import write_xray
    from xctreg.render import Renderer

    reg = xctreg.Registrar(model_dir / "m")
    dy, dx = reg.camera.pixel_spacing_mm
    other = Camera(reg.camera.sdd_mm, 48, 40, (dy * 32 / 48, dx * 32 / 40))  # the 32² model detector's field, finer
    geom = reg.camera.to_dict() | {"height": 48, "width": 40, "pixel_spacing_mm": list(other.pixel_spacing_mm)}
    assert Camera.from_dict(geom) == other
    true = np.array([2.0, -3.0, 4.0, 5.0, -5.0, 10.0])
    img = Renderer(reg.ct(), other, reference=reg.reference)(torch.tensor(true[None], dtype=torch.float32))[0, 0].numpy()
    write_xray(tmp_path / "x.npy", img)
    # patch NCC and no last level: on the 32² test model (6 mm voxels) depth is so flat that 10
    # unconverged steps of local gradient NCC per level, or the last level's Newton steps, turn the
    # raw intensities' float rounding into 0.1 mm of depth; this test is about the inputs
    fast = xctreg.register.RefineConfig(sizes=(16, 32), iterations=(10, 10), restarts=0, objective="patch-ncc", native_search="none")
    a = reg.register(tmp_path / "x.npy", geom, config=fast)
    b = reg.register(img, other, config=fast)
    c = reg.register(np.exp(-img / img.max() * 3), other, config=fast, transmission=True)  # raw intensities
    assert isinstance(a, xctreg.Result) and a.image.shape == (32, 32) and a.camera == reg.camera
    assert np.allclose(a.params, b.params) and np.allclose(a.params, c.params, atol=0.05)
    assert np.abs(a.image - c.image).max() < 1e-5  # raw intensities: the same image up to float rounding
    assert a.iterations == len(a.trajectory) > 0 and a.trajectory.shape[1] == 6
    d = a.to_dict()
    spec = {"T_cam_from_world", "params", "reference", "initial", "similarity", "timing_s", "iterations", "projection_matrix"}
    assert spec <= set(d) and set(d) - spec == {"geometry", "model_dir", "ct_path"}
    assert np.allclose(np.asarray(d["T_cam_from_world"]), a.pose.T_cam_from_world)
    # the projection matrix and geometry are those of the X-ray as given (48 x 40), not the model's detector
    assert Camera.from_dict(d["geometry"]) == other
    from xctreg.geometry import project

    pts = torch.tensor(reg.ct().center)[None] + torch.tensor([[0.0, 0, 0], [30, -20, 40]], dtype=torch.float64)
    uv, _ = project(pts, torch.as_tensor(a.pose.T_cam_from_world), other)
    h = np.c_[pts.numpy(), np.ones(2)] @ np.asarray(d["projection_matrix"]).T
    assert np.allclose(h[:, :2] / h[:, 2:], uv.numpy(), atol=1e-6)
    # refinement moved the regressor's pose towards a better match
    assert d["similarity"]["ncc"] > 0.5


def test_register_folder_summary_and_animation(cli, model_dir, tmp_path) -> None:
    m = model_dir / "m"
    xr = tmp_path / "xrays"
    xr.mkdir()
    for k, tz in enumerate((0, 20)):
        (tmp_path / f"p{k}.json").write_text(json.dumps({"params": {"rx_deg": 2, "ry_deg": 0, "rz_deg": 0, "tx_mm": 0, "ty_mm": 0, "tz_mm": tz}}))
        res = cli("simulate", model_dir / "ct.nii.gz", "--geometry", m / "geometry.json", "--pose", tmp_path / f"p{k}.json",
                  "--out", xr / f"x{k}.png", "--photons", "1e5")  # fmt: skip
        assert res.code == 0, res.err
    np.save(xr / "bad.npy", np.zeros((32, 32), np.float32))
    res = cli("register", m, xr, "--overlay", tmp_path / "ov", "--animate", tmp_path / "gif")
    assert res.code == 1 and "1 of 3 X-rays failed" in res.err and "bad.npy" in res.out
    import csv

    rows = list(csv.DictReader((xr / "results" / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["error", "ok", "ok"] and "blank" in rows[0]["error"]
    for r in rows[1:]:
        assert json.loads(open(r["result"]).read())["iterations"] == int(r["iterations"]) > 0
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == ["x0.overlay.png", "x1.overlay.png"]
    from PIL import Image

    gif = Image.open(tmp_path / "gif" / "x1.gif")
    assert gif.n_frames > 5 and gif.size[0] >= 256
    # a quoted glob, single X-ray: one result file and a GIF
    res = cli("register", m, str(xr / "x1.*"), "--out", tmp_path / "one.json", "--animate", tmp_path / "one.gif", "--no-refine")
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "one.json").read_text())["iterations"] == 0
    assert Image.open(tmp_path / "one.gif").n_frames == 2  # regressor and final, the same pose
    (tmp_path / "into").mkdir()  # --out an existing folder: the result goes inside it
    assert cli("register", m, xr / "x0.png", "--out", tmp_path / "into", "--no-refine").code == 0
    assert (tmp_path / "into" / "x0.result.json").is_file()
    assert_one_line_error(cli("register", m, str(xr / "*.tif")), "no X-ray files match")
    assert_one_line_error(cli("register", m, xr / "x0.png", "--similarity", "mi"), "unknown similarity")


def test_registrar_refines_last_on_a_finer_xray(model_dir, small_phantom) -> None:
    """Registrar.register runs the native level once, after the restarts, on a 2x finer X-ray."""
    from xctreg.register import RefineConfig, Registrar

    reg = Registrar(model_dir / "m", ct=small_phantom)
    fine_cam = reg.camera.resized(2 * reg.camera.height, 2 * reg.camera.width)
    p = reg.space.sample(1, seed=3)[0]
    r = Renderer(small_phantom, fine_cam, RenderConfig(detector=DetectorConfig(photons=3e4)), reference=reg.reference)
    img = r(torch.as_tensor(p[None], dtype=torch.float32), generator=torch.Generator().manual_seed(0))[0, 0].numpy()
    without = reg.register(img, fine_cam, config=RefineConfig(restarts=0, native_search="none"))
    runs = {}
    for search in ("depth", "adam", "adam+depth"):
        with_native = reg.register(img, fine_cam, config=RefineConfig(restarts=0, native_size=256, native_search=search))
        assert with_native.iterations > without.iterations
        moved = with_native.params - without.params
        if search == "depth":  # only tz moves
            assert np.all(moved[:5] == 0) and moved[5] != 0
        runs[search] = with_native
    # adam+depth: the Adam level's pose, then a line search along tz only
    both, adam = runs["adam+depth"], runs["adam"]
    assert both.iterations > adam.iterations
    assert np.allclose(both.params[:5], adam.params[:5]) and both.params[5] != adam.params[5]
    # the native level renders the finer detector from the finest model level's volume
    assert any(c.height == fine_cam.height and cf.voxel_mm != "auto" for c, cf, _ in reg._renderers)

def test_registrar_runs_the_last_level_on_the_model_detector_for_an_xray_at_the_model_size(model_dir, small_phantom) -> None:
    """With no finer native image the last level (Adam steps, then the depth line search) runs on
    the model's own detector after the restarts; "depth" moves only tz, and from a start 2 mm
    deep it comes back."""
    from xctreg.register import RefineConfig, Registrar

    reg = Registrar(model_dir / "m", ct=small_phantom)
    p = reg.space.sample(1, seed=4)[0]
    r = Renderer(small_phantom, reg.camera, RenderConfig(detector=DetectorConfig(photons=3e4)), reference=reg.reference)
    img = r(torch.as_tensor(p[None], dtype=torch.float32), generator=torch.Generator().manual_seed(0))[0, 0].numpy()
    # model levels on patch NCC, so that the last level's Adam steps (local gradient NCC) have another optimum to move to
    none = RefineConfig(objective="patch-ncc", restarts=0, native_search="none")
    without = reg.register(img, reg.camera, config=none)
    with_depth = reg.register(img, reg.camera, config=replace(none, native_search="depth"))
    assert with_depth.iterations > without.iterations
    moved = with_depth.params - without.params
    assert np.all(moved[:5] == 0) and moved[5] != 0
    n_renderers = len(reg._renderers)
    both = reg.register(img, reg.camera, config=replace(none, native_search="adam+depth"))
    assert both.iterations > with_depth.iterations and np.any(both.params[:5] != without.params[:5])
    assert len(reg._renderers) == n_renderers  # the model's finest level's renderer, reused
    # --native-size 0 on a finer X-ray: the last level on the model's detector, not on the fine one
    fine_cam = reg.camera.resized(2 * reg.camera.height, 2 * reg.camera.width)
    fine = Renderer(small_phantom, fine_cam, RenderConfig(detector=DetectorConfig(photons=3e4)), reference=reg.reference)
    fimg = fine(torch.as_tensor(p[None], dtype=torch.float32), generator=torch.Generator().manual_seed(0))[0, 0].numpy()
    reg.register(fimg, fine_cam, config=replace(none, native_size=0, native_search="adam+depth"))
    assert not any(c.height == fine_cam.height for c, _, _ in reg._renderers)
    # no refinement levels (iterations 0): the search alone, from the truth pushed 2 mm deeper
    only = replace(none, sizes=(reg.camera.height,), iterations=(0,))
    from xctreg.register import Refinement

    start = Refinement(p + np.array([0, 0, 0, 0, 0, 2.0]), 0.0, 0, 0.0)
    xr = reg.prepare(img, reg.camera)
    out = reg._search_depth(xr.image, xr.mask, xr.camera, start, only, reg.camera.height, "gradncc", only.render)
    assert abs(out.params[5] - p[5]) < 0.5 < abs(start.params[5] - p[5])



def test_last_level_objective_depends_on_where_it_runs(model_dir, small_phantom, monkeypatch) -> None:
    """On the model's detector the last level (Adam steps and depth search) uses
    ``last_objective``; on the X-ray's own finer pixels ``native_objective`` and ``depth_objective``."""
    import xctreg.register as R

    used: list[str] = []
    real = R.get_objective
    monkeypatch.setattr(R, "get_objective", lambda name: used.append(name) or real(name))
    reg = R.Registrar(model_dir / "m", ct=small_phantom)
    p = reg.space.sample(1, seed=4)[0]
    cfg = R.RefineConfig(objective="patch-ncc", restarts=0, sizes=(16,), iterations=(3,), last_iterations=3, native_iterations=3)
    for cam in (reg.camera, reg.camera.resized(2 * reg.camera.height, 2 * reg.camera.width)):
        r = Renderer(small_phantom, cam, RenderConfig(detector=DetectorConfig(photons=3e4)), reference=reg.reference)
        img = r(torch.as_tensor(p[None], dtype=torch.float32), generator=torch.Generator().manual_seed(0))[0, 0].numpy()
        used.clear()
        reg.register(img, cam, config=replace(cfg, native_objective="ncc", depth_objective="gradncc", last_objective="local-gradncc"))
        if cam is reg.camera:
            assert "local-gradncc" in used and "ncc" not in used and "gradncc" not in used
        else:
            assert "ncc" in used and "gradncc" in used and "local-gradncc" not in used


def test_parabola_peak() -> None:
    from xctreg.register import parabola_peak

    o = np.linspace(-1, 1, 5)
    assert parabola_peak(o, -((o - 0.3) ** 2)) == pytest.approx(0.3)
    assert parabola_peak(o, -((o - 3.0) ** 2)) == pytest.approx(1.0)  # kept within the samples
    assert parabola_peak(o, o**2) == pytest.approx(-1.0)  # not concave: the best sample (a tie: the first)
    o9 = np.linspace(-1, 1, 9)  # a least-squares fit: noise on the samples moves the peak a little
    noisy = -((o9 - 0.2) ** 2) + np.random.default_rng(0).normal(0, 0.01, 9)
    assert parabola_peak(o9, noisy) == pytest.approx(0.2, abs=0.05)


def test_search_depth_finds_tz_from_a_start_off_in_depth() -> None:
    """The line search moves only tz, and to within 0.1 mm of where the objective peaks."""
    from xctreg.register import search_depth

    vol = make_phantom()
    cam = Camera(1020.0, 96, 96, (4.0, 4.0))
    ref = PoseReference(tuple(vol.center), 750.0)
    r = Renderer(vol, cam, reference=ref)
    true = np.array([3.0, -2.0, 4.0, 5.0, -4.0, 10.0])
    y = r(torch.tensor(true[None], dtype=torch.float32))[0, 0]
    for dz in (-0.7, 0.8):
        start = true + np.array([0, 0, 0, 0, 0, dz])
        p, path, n = search_depth(r, y, None, start, "patch-ncc", half_mm=1.0, samples=5, rounds=3)
        assert n == 15 and path.shape == (3, 6) and np.array_equal(path[-1], p) and np.all(p[:5] == start[:5])
        assert abs(p[5] - true[5]) < 0.1, (dz, p[5] - true[5])
    # beyond the first range: the round is repeated around the edge's peak
    start = true + np.array([0, 0, 0, 0, 0, 2.6])
    p, path, n = search_depth(r, y, None, start, "patch-ncc", half_mm=1.0, samples=5, rounds=2, max_extend=2)
    assert n == 20 and len(path) == 4 and abs(p[5] - true[5]) < 0.15, (n, p[5] - true[5])
    p, _, n = search_depth(r, y, None, start, "patch-ncc", half_mm=1.0, samples=5, rounds=2, max_extend=0)
    assert n == 10 and p[5] - true[5] > 1.0  # without: stuck at the reach of the rounds


def test_inference_imports_no_training_code() -> None:
    """``register`` (the Python API a navigation system loads) pulls in no training,
    augmentation, dataset or plotting code: faster cold starts, and inference stays apart.
    Nor SimpleITK (0.13 s): it reads CTs and image files, and register reads stored levels."""
    import subprocess
    import sys

    code = (
        "import sys, xctreg.register, xctreg.models.checkpoint, xctreg.batch, xctreg.io\n"
        "bad = [m for m in ('xctreg.train', 'xctreg.data.augment', 'xctreg.data.dataset', 'matplotlib', 'xctreg.viz', 'SimpleITK') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_last_level_on_the_model_detector_takes_the_place_of_the_finest_model_level() -> None:
    """At the model's size the last level's Adam steps would repeat the model's 128 px level:
    the model levels stop below it. With a finer native image, or without Adam, they stay."""
    from xctreg.geometry import Camera
    from xctreg.preprocess import NativeXray, PreparedXray
    from xctreg.register import RefineConfig, Registrar

    cam = Camera(1020.0, 128, 128, (3.2, 3.2))
    img = np.zeros((128, 128), np.float32)
    xr = PreparedXray(img, np.ones_like(img), cam, 1.0)
    cfg = RefineConfig(sizes=(32, 64, 128), iterations=(60, 50, 40))
    on = Registrar._on_native(xr, cfg)
    assert not on
    trimmed = Registrar._levels_for(xr, cfg, on)
    assert trimmed.sizes == (32, 64) and trimmed.iterations == (60, 50)
    assert Registrar._levels_for(xr, replace(cfg, native_search="depth"), on) == replace(cfg, native_search="depth")
    fine = Camera(1020.0, 256, 256, (1.6, 1.6))
    xr_fine = PreparedXray(img, np.ones_like(img), cam, 1.0, native=NativeXray(np.zeros((256, 256), np.float32), np.ones((256, 256), np.float32), fine))
    assert Registrar._on_native(xr_fine, cfg)
    assert Registrar._levels_for(xr_fine, cfg, True) == cfg
    # --native-size below the finest level: never the native pixels, and the levels trimmed as above
    small = replace(cfg, native_size=100)
    assert not Registrar._on_native(xr_fine, small)
    assert Registrar._levels_for(xr_fine, small, False).sizes == (32, 64)


def test_estimate_blur_recovers_the_xrays_detector_blur() -> None:
    """The X-ray is the DRR blurred by σ px: ``estimate_blur`` finds σ (within 0.15 px) at the
    true pose and from a pose 1 mm / 0.5° off; an unblurred X-ray gives about 0."""
    from xctreg.register import estimate_blur
    from xctreg.objectives import blur

    vol = make_phantom()
    cam = Camera(1020.0, 96, 96, (4.0, 4.0))
    r = Renderer(vol, cam, reference=PoseReference(tuple(vol.center), 750.0))
    true = np.array([3.0, -2.0, 4.0, 5.0, -4.0, 10.0])
    drr = r(torch.tensor(true[None], dtype=torch.float32))[0, 0]
    assert estimate_blur(r, drr, None, true, "gradncc") < 0.15
    mask = torch.ones_like(drr)
    mask[:, :20] = 0
    for sigma in (0.8, 1.5):
        y = blur(drr, sigma)
        assert estimate_blur(r, y, mask, true, "gradncc") == pytest.approx(sigma, abs=0.15)
        off = true + np.array([0.5, 0, 0, 1.0, 0, 1.0])
        assert estimate_blur(r, y, mask, off, "gradncc") == pytest.approx(sigma, abs=0.3)


def test_match_blur_blurs_the_last_levels_drrs(model_dir, small_phantom) -> None:
    """``match_blur``: the last level estimates the X-ray's blur, reports it, and refines with
    it (another pose than without); off, nothing is estimated."""
    from xctreg.register import RefineConfig, Registrar
    from xctreg.objectives import blur

    reg = Registrar(model_dir / "m", ct=small_phantom)
    p = reg.space.sample(1, seed=5)[0]
    r = Renderer(small_phantom, reg.camera, RenderConfig(detector=DetectorConfig(photons=3e4)), reference=reg.reference)
    img = r(torch.as_tensor(p[None], dtype=torch.float32), generator=torch.Generator().manual_seed(0))[0, 0]
    img = blur(img, 1.2).numpy()
    cfg = RefineConfig(restarts=0)
    plain = reg.register(img, reg.camera, config=cfg)
    matched = reg.register(img, reg.camera, config=replace(cfg, match_blur=True))
    assert "blur_px" not in plain.extra
    assert 0.6 < matched.extra["blur_px"] < 1.8
    assert not np.allclose(matched.params, plain.params)


def test_restarts_are_decided_by_patch_ncc_not_by_the_objective(model_dir, small_phantom) -> None:
    """Local gradient NCC peaks low on a noisy X-ray even at the right pose; the restart check
    uses ``restart_objective`` (patch NCC), so a noisy but well-registered X-ray is not
    restarted, and an X-ray the CT cannot explain is."""
    from xctreg.register import RefineConfig, Registrar

    reg = Registrar(model_dir / "m", ct=small_phantom)
    p = reg.space.sample(1, seed=4)[0]
    r = Renderer(small_phantom, reg.camera, RenderConfig(detector=DetectorConfig(photons=3e3)), reference=reg.reference)
    img = r(torch.as_tensor(p[None], dtype=torch.float32), generator=torch.Generator().manual_seed(0))[0, 0].numpy()
    cfg = RefineConfig(native_search="none", restarts=2, restart_below=0.6)
    once = reg.register(img, reg.camera, config=replace(cfg, restarts=0))
    xr = reg.prepare(img, reg.camera)
    assert reg._restart_score(xr, once.params, cfg) > 0.6
    assert reg._restart_score(xr, once.params, replace(cfg, restart_objective="local-gradncc")) < 0.6  # the objective's own peak: low
    assert reg.register(img, reg.camera, config=cfg).iterations == once.iterations  # not restarted
    noise = np.random.default_rng(0).random(img.shape).astype(np.float32)
    lone = reg.register(noise, reg.camera, config=replace(cfg, restarts=0))
    assert reg.register(noise, reg.camera, config=cfg).iterations > lone.iterations  # restarted
