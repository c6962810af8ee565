"""Determinism on the CPU (issue 14): the same seed gives byte-identical DRRs, training data and
registration results, whatever the global random state.

Already covered elsewhere, not repeated here:
* tests/test_physics.py::test_detector_effects: ``apply_detector`` alone, same generator seed,
  array_equal; tests/test_simulate.py::test_simulate_random_writes_poses_and_is_seeded: two
  ``xctreg simulate --random --seed 3 --photons`` runs write array_equal DRRs.
* tests/test_data.py::test_resumed_generation_equals_uninterrupted: every array of a generated
  dataset (shards and pose tables) equal, byte for byte, between two generations with the same
  seed (one of them interrupted and resumed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xctreg.data.dataset import DataConfig, generate
from xctreg.data.poses import SplitConfig
from xctreg.geometry import Camera, sample_params
from xctreg.physics import DetectorConfig
from xctreg.render import RenderConfig, Renderer

CAM = Camera(1020.0, 40, 48, (6.0, 5.0))
NOISY = RenderConfig(detector=DetectorConfig(photons=2e4, blur_px=0.7, scatter_fraction=0.1))


def _scramble_global_rngs(seed: int) -> None:
    """Move the global torch and numpy random states: seeded results must not depend on them."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.rand(17)


def test_noisy_drrs_are_byte_identical_for_a_seed_and_differ_for_another(small_phantom) -> None:
    """Renderer + Poisson/blur/scatter detector: the same generator seed gives torch.equal images (also from a new Renderer); another seed gives other noise."""
    p = torch.as_tensor(sample_params(3, seed=1), dtype=torch.float32)
    r = Renderer(small_phantom, CAM, NOISY)
    a = r(p, generator=torch.Generator().manual_seed(7))
    _scramble_global_rngs(1)
    b = r(p, generator=torch.Generator().manual_seed(7))
    _scramble_global_rngs(2)
    fresh = Renderer(small_phantom, CAM, NOISY)(p, generator=torch.Generator().manual_seed(7))
    other = r(p, generator=torch.Generator().manual_seed(8))
    clean = Renderer(small_phantom, CAM)(p)
    assert a.shape == (3, 1, 40, 48) and torch.isfinite(a).all()
    assert torch.equal(a, b) and torch.equal(a, fresh)
    assert (a != clean).float().mean() > 0.9  # the noise is on: equality is not that of clean images
    assert (a != other).float().mean() > 0.9  # the seed decides the noise
    # the noise-free part (the compiled ray march) is itself bit-reproducible
    assert torch.equal(r.line_integrals(p), r.line_integrals(p))


def test_training_batches_are_byte_identical_for_a_seed(small_phantom, tmp_path) -> None:
    """Trainer.make_batch (the augmented network input and clean target) gives torch.equal batches for the same generator seed, other ones for another."""
    from xctreg.train import Trainer, quick_test_config

    tr = Trainer(small_phantom, tmp_path / "m", quick_test_config(steps=2), log=lambda s: None)
    p = torch.as_tensor(tr.space.sample(4, seed=5), dtype=torch.float32)
    with torch.no_grad():
        L = Renderer(small_phantom, tr.cfg.camera, reference=tr.ref).line_integrals(p)
    x1, clean1 = tr.make_batch(L, p, 1.0, torch.Generator().manual_seed(9))
    _scramble_global_rngs(3)
    x2, clean2 = tr.make_batch(L, p, 1.0, torch.Generator().manual_seed(9))
    x3, _ = tr.make_batch(L, p, 1.0, torch.Generator().manual_seed(10))
    assert torch.equal(x1, x2) and torch.equal(clean1, clean2)
    assert not torch.equal(x1, x3)
    assert not torch.equal(x1, clean1)  # augmentation at full strength changes the input


def _files(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def test_generated_dataset_files_are_byte_identical_per_seed_and_the_seed_matters(tmp_path, small_phantom) -> None:
    """Two fresh generations with one seed write the same files byte for byte (meta.json, npy headers, shards); another seed writes other shards."""
    cam = Camera(1020.0, 24, 24, (16.0, 16.0))

    def cfg(seed: int) -> DataConfig:
        return DataConfig(camera=cam, splits=SplitConfig(5, 2, 0, seed=seed), shard_size=4, batch=3)

    a = _files(generate(small_phantom, tmp_path / "a", cfg(1)))
    _scramble_global_rngs(4)
    b = _files(generate(small_phantom, tmp_path / "b", cfg(1)))
    c = _files(generate(small_phantom, tmp_path / "c", cfg(2)))
    shards = [k for k in a if k.endswith(".npy") and "shard" in k]
    assert len(shards) == 3 and "meta.json" in a  # train: 4 + 1, val: 2
    assert a == b
    assert set(c) == set(a) and all(c[k] != a[k] for k in shards)


def test_registration_is_bit_identical_in_one_process_and_in_a_fresh_registrar(model_dir, small_phantom) -> None:
    """Registrar.register on the same X-ray twice, and in a new Registrar, gives np.array_equal params, matrices, trajectories and similarities."""
    from xctreg.register import RefineConfig, Registrar

    reg = Registrar(model_dir / "m", ct=small_phantom)
    true = reg.space.sample(1, seed=6)[0]
    r = Renderer(small_phantom, reg.camera, RenderConfig(detector=DetectorConfig(photons=3e4)), reference=reg.reference)
    img = r(torch.as_tensor(true[None], dtype=torch.float32), generator=torch.Generator().manual_seed(0))[0, 0].numpy()
    # tiny levels; restart_below above any score forces the seeded restart too, and the last
    # level (Adam steps, then the depth line search) runs on the model detector
    cfg = RefineConfig(sizes=(16, 32), iterations=(10, 10), restarts=1, restart_below=2.0, native_iterations=5, last_iterations=5)

    first = reg.register(img, reg.camera, config=cfg)
    _scramble_global_rngs(5)
    again = reg.register(img, reg.camera, config=cfg)
    _scramble_global_rngs(6)
    fresh = Registrar(model_dir / "m", ct=small_phantom).register(img, reg.camera, config=cfg)

    assert first.iterations > 0 and not np.array_equal(first.params, first.initial.params)  # refinement moved the pose
    for other in (again, fresh):
        assert np.array_equal(other.params, first.params), (other.params - first.params)
        assert np.array_equal(other.pose.T_cam_from_world, first.pose.T_cam_from_world)
        assert np.array_equal(other.initial.params, first.initial.params)
        assert np.array_equal(other.trajectory, first.trajectory)
        assert other.iterations == first.iterations and other.similarity == first.similarity
