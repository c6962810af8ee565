"""The CT levels kept in MODEL_DIR/levels (render.levels) and how the Registrar uses them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from xctreg.io.volume import Volume
from xctreg.render.drr import pyramid_level
from xctreg.render.levels import level_path, load_level, save_level


def _vol() -> Volume:
    hu = np.random.default_rng(0).normal(0, 100, (6, 7, 8)).astype(np.float32)
    return Volume(hu, (1.0, 1.5, 2.0), (-3.0, 4.0, 5.0), np.eye(3)[[1, 0, 2]])


def test_level_round_trip_and_refusals(tmp_path) -> None:
    v = _vol()
    p = level_path(tmp_path, 2.5)
    save_level(p, v, "abc", 2.5)
    got = load_level(p, "abc", 2.5)
    assert got is not None and np.array_equal(got.hu, v.hu) and np.array_equal(got.affine, v.affine)
    assert load_level(p, "other-ct", 2.5) is None  # another CT's level
    assert load_level(p, "abc", 3.0) is None  # another voxel size
    assert load_level(tmp_path / "none.npz", "abc", 2.5) is None
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.warns(UserWarning, match="damaged CT level"):
        assert load_level(p, "abc", 2.5) is None


def test_a_pickled_level_is_refused_without_running_it(tmp_path) -> None:
    """A planted .npz whose arrays are pickled objects: refused (allow_pickle=False), nothing executed."""
    ran = tmp_path / "ran"

    class Boom:
        def __reduce__(self):  # noqa: ANN204
            return (open, (str(ran), "w"))

    p = level_path(tmp_path, 2.5)
    p.parent.mkdir(parents=True)
    np.savez(p, hu=np.array([Boom()], dtype=object), spacing=np.ones(3), origin=np.zeros(3), direction=np.eye(3),
             meta=np.frombuffer(b'{"format": 1, "ct_sha256": "abc", "voxel_mm": 2.5}', dtype=np.uint8))  # fmt: skip
    with pytest.warns(UserWarning, match="damaged CT level"):
        assert load_level(p, "abc", 2.5) is None
    assert not ran.exists()


def test_training_stores_levels_and_register_needs_no_ct_then(model_dir, tmp_path) -> None:
    """The trained model folder holds its levels; a copy of it registers the same without the CT."""
    from xctreg.register import RefineConfig, Registrar
    from xctreg.render import RenderConfig, Renderer

    m = model_dir / "m"
    stored = set((m / "levels").glob("level_*mm.npz"))
    reg = Registrar(m)
    # training stored every level register renders from (later registrations on other detectors may add more)
    assert reg.level_voxels() and {level_path(m, v) for v in reg.level_voxels()} <= stored
    # each stored level is what pyramid_level makes from the CT, at the renderer's exact voxel size
    for v in reg.level_voxels():
        want = pyramid_level(reg.ct(), v)
        got = load_level(level_path(m, v), reg.meta["ct_sha256"], v)
        assert got is not None and np.array_equal(got.hu, want.hu) and np.array_equal(got.affine, want.affine)
    # regression: levels made at a rounded voxel size sat on another grid, so DRRs differed
    q = torch.as_tensor(reg.space.sample(2, seed=6), dtype=torch.float32)
    fresh = Registrar(m)
    from_levels = fresh.renderer()(q)
    assert fresh._ct is None  # the CT was not read
    from_ct = Renderer(reg.ct(), reg.camera, RenderConfig(), reference=reg.reference)(q)
    assert torch.equal(from_levels, from_ct)
    p = reg.space.sample(1, seed=5)[0]
    img = Renderer(reg.ct(), reg.camera, RenderConfig(), reference=reg.reference)(torch.as_tensor(p[None], dtype=torch.float32))[0, 0].numpy()
    cfg = RefineConfig(restarts=0, iterations=(5, 5, 5))
    with_ct = Registrar(m).register(img, reg.camera, config=cfg)
    copy = tmp_path / "m"
    shutil.copytree(m, copy)
    import json

    meta = json.loads((copy / "config.json").read_text())
    meta["ct_path"] = str(tmp_path / "moved-away.nii.gz")
    (copy / "config.json").write_text(json.dumps(meta))
    without_ct = Registrar(copy).register(img, reg.camera, config=cfg)
    np.testing.assert_allclose(without_ct.params, with_ct.params, atol=1e-6)


def test_a_changed_ct_is_refused_even_when_levels_spare_reading_it(model_dir, tmp_path, cli) -> None:
    import json

    from conftest import assert_one_line_error

    copy = tmp_path / "m"
    shutil.copytree(model_dir / "m", copy)
    meta = json.loads((copy / "config.json").read_text())
    meta["ct_path"] = str(tmp_path / "changed.nii.gz")
    (tmp_path / "changed.nii.gz").write_bytes(b"another file")
    (copy / "config.json").write_text(json.dumps(meta))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    assert_one_line_error(cli("register", copy, tmp_path / "x.npy"), "SHA-256")
    res = cli("register", copy, tmp_path / "x.npy", "--out", tmp_path / "r.json", "--force")  # the stored levels suffice
    assert res.code == 0, res.err


def test_a_level_keeps_its_material_volumes(tmp_path) -> None:
    """Stored materials are what the renderer then uses (not recomputed); those of another
    decomposition or of the wrong shape are ignored and computed as before."""
    import json
    from dataclasses import asdict

    from xctreg.physics.materials import DecompositionConfig
    from xctreg.render.drr import material_volume
    from xctreg.render.levels import has_materials

    v = _vol()
    want = material_volume(v).copy()
    p = level_path(tmp_path, 2.5)
    save_level(p, v, "abc", 2.5)
    assert not has_materials(p)
    save_level(p, v, "abc", 2.5, materials=want)
    assert has_materials(p)
    got = load_level(p, "abc", 2.5)
    assert got is not None
    np.testing.assert_array_equal(material_volume(got), want)
    with np.load(p) as z:  # the very array loaded from the file is the one used
        stored = {k: z[k] for k in z.files}
    stored["materials"] = np.full_like(want, 0.5)
    meta = json.loads(bytes(stored["meta"]).decode())
    np.savez(p, **stored)
    assert np.all(material_volume(load_level(p, "abc", 2.5)) == 0.5)
    meta["decomposition"] = {**meta["decomposition"], "bone_hu": 300.0}  # another decomposition's
    stored["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(p, **stored)
    assert not has_materials(p)
    np.testing.assert_array_equal(material_volume(load_level(p, "abc", 2.5)), want)
    stored["materials"] = np.zeros((2, 2, 2, 3), np.float32)  # the wrong shape
    stored["meta"] = np.frombuffer(json.dumps({**meta, "decomposition": asdict(DecompositionConfig())}).encode(), dtype=np.uint8)
    np.savez(p, **stored)
    np.testing.assert_array_equal(material_volume(load_level(p, "abc", 2.5)), want)
    with pytest.raises(ValueError, match="do not fit"):
        save_level(p, v, "abc", 2.5, materials=want[:-1])


def test_register_stores_materials_and_a_fresh_process_does_not_compute_them(model_dir, tmp_path, monkeypatch) -> None:
    """A model folder whose levels predate the materials gets them on first use; a later
    Registrar renders from them without computing materials, to the same DRR."""
    import xctreg.render.drr as drr
    from xctreg.register import Registrar
    from xctreg.render.levels import has_materials

    m = tmp_path / "m"
    shutil.copytree(model_dir / "m", m)
    reg = Registrar(m)
    for v in reg.level_voxels():  # as stored before levels kept materials
        lv = load_level(level_path(m, v), reg.meta["ct_sha256"], v)
        save_level(level_path(m, v), lv, reg.meta["ct_sha256"], v)
        assert not has_materials(level_path(m, v))
    q = torch.as_tensor(reg.space.sample(2, seed=3), dtype=torch.float32)
    first = Registrar(m)
    before = first.renderer()(q)
    assert has_materials(level_path(m, first.renderer().voxel_mm))  # the level it rendered from, upgraded

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("material volumes computed although stored")

    monkeypatch.setattr(drr, "material_densities", refuse)
    assert torch.equal(Registrar(m).renderer()(q), before)


def test_an_unwritable_folder_warns_only_when_a_level_is_missing(model_dir, tmp_path, monkeypatch) -> None:
    """A level stored without its materials still serves: failing to add them is silent. A
    level that cannot be stored at all warns (each new process recomputes it)."""
    import warnings

    import xctreg.register as register_module
    from xctreg.register import Registrar

    m = tmp_path / "m"
    shutil.copytree(model_dir / "m", m)
    reg = Registrar(m)
    for v in reg.level_voxels():
        save_level(level_path(m, v), load_level(level_path(m, v), reg.meta["ct_sha256"], v), reg.meta["ct_sha256"], v)

    def unwritable(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(register_module, "save_level", unwritable)
    q = torch.as_tensor(reg.space.sample(1, seed=3), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Registrar(m).renderer()(q)
    for v in reg.level_voxels():
        level_path(m, v).unlink()
    with pytest.warns(UserWarning, match="cannot keep the CT's level"):
        Registrar(m).renderer()(q)
