"""Training data: pose sampling and splits, cached shards (resume, corruption), augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xctreg.data.augment import AugmentConfig, augment, box_chords, clean_image, cylinder_chords
from xctreg.data.dataset import DataConfig, ShardDataset, generate
from xctreg.data.poses import SplitConfig, make_splits, sample_poses
from xctreg.errors import XctregError
from xctreg.geometry import Camera, PoseRanges
from xctreg.render import Renderer

CAM = Camera(1020.0, 32, 32, (12.0, 12.0))


def _ks(u: np.ndarray) -> float:
    u = np.sort(u)
    n = len(u)
    return float(np.max(np.maximum(np.arange(1, n + 1) / n - u, u - np.arange(n) / n)))


@pytest.mark.parametrize("method", ["uniform", "sobol"])
def test_poses_in_range_and_uniform(method) -> None:
    ranges = PoseRanges(rx_deg=(-5, 5), tz_mm=(-80, 20))
    p = sample_poses(2048, ranges, seed=4, method=method)
    lo, hi = ranges.bounds()
    assert p.shape == (2048, 6) and np.all(p >= lo) and np.all(p <= hi)
    for j in range(6):
        assert _ks((p[:, j] - lo[j]) / (hi[j] - lo[j])) < 1.63 / math.sqrt(2048)
    np.testing.assert_array_equal(p, sample_poses(2048, ranges, seed=4, method=method))


def test_sobol_is_more_even_than_uniform() -> None:
    u = sample_poses(1024, seed=1, method="uniform")[:, 0]
    s = sample_poses(1024, seed=1, method="sobol")[:, 0]
    assert _ks((s + 15) / 30) < _ks((u + 15) / 30)


@pytest.mark.parametrize("method", ["uniform", "sobol"])
def test_splits_are_disjoint(method) -> None:
    sp = make_splits(SplitConfig(n_train=500, n_val=50, n_test=50, method=method, seed=2))
    rows = [tuple(r) for k in ("train", "val", "test") for r in sp[k]]
    assert len(rows) == len(set(rows)) == 600
    assert {k: len(v) for k, v in sp.items()} == {"train": 500, "val": 50, "test": 50}


def test_inverted_ranges_refused() -> None:
    with pytest.raises(XctregError, match="inverted"):
        PoseRanges(tz_mm=(50.0, -50.0))
    with pytest.raises(XctregError, match="inverted"):
        PoseRanges(tx_mm=(float("nan"), 1.0))


def _cfg(n=(10, 3, 3)) -> DataConfig:
    return DataConfig(camera=CAM, splits=SplitConfig(*n, seed=1), shard_size=4, batch=3)


def test_shards_round_trip(tmp_path, small_phantom) -> None:
    cfg = _cfg()
    generate(small_phantom, tmp_path / "ds", cfg)
    ds = ShardDataset(tmp_path / "ds", "train")
    assert len(ds) == 10 and len(ShardDataset(tmp_path / "ds", "test")) == 3
    L, p = ds[6]
    assert L.shape == (3, 32, 32) and p.shape == (6,)
    r = Renderer(small_phantom, CAM, cfg.render)
    expected = r.line_integrals(p[None])[0]
    torch.testing.assert_close(L, expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(p.numpy(), make_splits(cfg.splits)["train"][6], rtol=1e-6)


def test_resumed_generation_equals_uninterrupted(tmp_path, small_phantom) -> None:
    cfg = _cfg()
    generate(small_phantom, tmp_path / "full", cfg)

    def die(done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(small_phantom, tmp_path / "part", cfg, progress=die)
    with pytest.raises(XctregError, match="incomplete"):
        ShardDataset(tmp_path / "part")
    calls = []
    generate(small_phantom, tmp_path / "part", cfg, progress=lambda d, t: calls.append(t))
    assert calls and calls[0] == 16 - 4  # only what was missing was rendered
    files = sorted(p.relative_to(tmp_path / "full") for p in (tmp_path / "full").rglob("*.npy"))
    assert len(files) == 3 + 3 + 1 + 1
    for f in files:
        np.testing.assert_array_equal(np.load(tmp_path / "full" / f), np.load(tmp_path / "part" / f))


def test_corrupt_shard_and_foreign_folder(tmp_path, small_phantom) -> None:
    cfg = _cfg()
    generate(small_phantom, tmp_path / "ds", cfg)
    shard = tmp_path / "ds" / "train" / "shard_00001.npy"
    shard.write_bytes(shard.read_bytes()[:300])
    with pytest.raises(XctregError, match="corrupt shard"):
        ShardDataset(tmp_path / "ds")
    generate(small_phantom, tmp_path / "ds", cfg)  # resuming repairs it
    assert len(ShardDataset(tmp_path / "ds")) == 10
    other = DataConfig(camera=CAM, splits=SplitConfig(10, 3, 3, seed=2), shard_size=4)
    with pytest.raises(XctregError, match="different dataset"):
        generate(small_phantom, tmp_path / "ds", other)


def test_bad_shard_size(tmp_path, small_phantom) -> None:
    with pytest.raises(XctregError, match="shard size"):
        generate(small_phantom, tmp_path / "ds", DataConfig(camera=CAM, splits=SplitConfig(4, 0, 0), shard_size=0))
    assert not (tmp_path / "ds").exists()


def test_disk_estimate_above_free_space(tmp_path, small_phantom, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    seen = []
    with pytest.raises(XctregError, match="GB are free"):
        generate(small_phantom, tmp_path / "ds", _cfg(), on_estimate=seen.append)
    assert seen and seen[0].bytes == 16 * 3 * 32 * 32 * 2 and seen[0].seconds > 0
    assert not (tmp_path / "ds").exists()


@pytest.fixture(scope="module")
def batch(small_phantom):
    cam = Camera(1020.0, 64, 64, (6.4, 6.4))
    r = Renderer(small_phantom, cam)
    p = torch.tensor(sample_poses(6, seed=3), dtype=torch.float32)
    return r, cam, p, r.line_integrals(p)


def _aug(batch, seed: int, strength: float = 1.0, **changes) -> torch.Tensor:
    from dataclasses import replace

    r, cam, p, L = batch
    T = r.poses_to_matrix(p)
    iso = torch.tensor(r.reference.isocenter_mm)
    half = torch.tensor([150.0, 100.0, 150.0])
    return augment(L, replace(AugmentConfig(), **changes).scaled(strength), torch.Generator().manual_seed(seed), T, cam, iso, half)


def test_augmentation_is_deterministic_under_a_seed(batch) -> None:
    a, b, c = _aug(batch, 5), _aug(batch, 5), _aug(batch, 6)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == (6, 1, 64, 64) and float(a.min()) >= 0 and float(a.max()) <= 1
    clean = clean_image(batch[3])
    torch.testing.assert_close(_aug(batch, 9, strength=0.0), clean, rtol=1e-5, atol=1e-5)


def test_augmentation_does_not_move_anatomy(batch) -> None:
    """Anatomy's edges stay in place: the high-passed augmented image correlates best with the
    high-passed clean image at zero shift (collimation and erasing only blank pixels; tested below)."""
    import kornia

    def highpass(x: torch.Tensor) -> torch.Tensor:
        return x - kornia.filters.gaussian_blur2d(x, (13, 13), (3.0, 3.0), border_type="replicate")

    clean = highpass(clean_image(batch[3]))
    total: dict[tuple[int, int], float] = {}
    for seed in range(4):
        # the heel ramp is pixel-wise (test_heel_ramp) but the high-pass leaves its slope at the borders
        aug = highpass(_aug(batch, seed, p_collimate=0.0, p_erase=0.0, p_heel=0.0))
        for i in range(aug.shape[0]):
            a, b = aug[i, 0], clean[i, 0]
            m, (H, W) = 4, a.shape
            ref = b[m : H - m, m : W - m]
            scores = {}
            for dy in range(-m, m + 1):
                for dx in range(-m, m + 1):
                    win = a[m + dy : H - m + dy, m + dx : W - m + dx]
                    x, y = win - win.mean(), ref - ref.mean()
                    scores[dy, dx] = float((x * y).sum() / ((x * x).sum() * (y * y).sum()).sqrt().clamp_min(1e-12))
            for k, v in scores.items():
                total[k] = total.get(k, 0.0) + v
            dy, dx = max(scores, key=scores.get)  # heavy noise plus CLAHE can tip one image by a pixel,
            assert abs(dy) <= 1 and abs(dx) <= 1, (seed, i, (dy, dx))  # a real shift moves them all:
    assert max(total, key=total.get) == (0, 0)


def test_collimation_only_blanks_pixels() -> None:
    from xctreg.data.augment import collimate

    img = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    for seed in range(6):
        out = collimate(img, torch.Generator().manual_seed(seed), 1.0 if seed % 2 else 0.0)
        changed = out != img
        assert changed.any() and torch.all(out[changed] == (1.0 if seed % 2 else 0.0))
        assert not changed[0, 0, 32, 32]  # the centre stays


def test_object_chords_are_exact() -> None:
    src = torch.tensor([[0.0, -100.0, 0.0]], dtype=torch.float64).expand(3, 3)
    d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    c = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    shift = torch.tensor([[0, 0, 0], [1.5, 0, 0], [0, 0, 0]], dtype=torch.float64)
    chord = cylinder_chords(src + shift, d, c, torch.tensor([0.0, 0, 1.0]), 2.0, 10.0)
    np.testing.assert_allclose(chord.numpy(), [4.0, 2 * math.sqrt(4 - 1.5**2), 0.0], atol=1e-9)
    box = box_chords(src[:2], d[:2], torch.tensor([-5.0, -5, -5]), torch.tensor([5.0, 15, 5]))
    np.testing.assert_allclose(box.numpy(), [20.0, 20.0], atol=1e-9)


def test_cli_generate_and_preview(cli, tmp_path, small_phantom) -> None:
    from conftest import assert_one_line_error
    from xctreg.io import write_volume

    ct = write_volume(small_phantom, tmp_path / "ct.nii.gz")
    res = cli("data", "generate", ct, "--out", tmp_path / "ds", "--n-train", "6", "--n-val", "2", "--n-test", "2", "--shard-size", "4")
    assert res.code == 0, res.err
    assert "GB on disk" in res.out and len(ShardDataset(tmp_path / "ds", "val")) == 2
    assert ShardDataset(tmp_path / "ds").meta["ct_sha256"]
    assert_one_line_error(cli("data", "generate", ct, "--out", tmp_path / "e", "--n-train", "0", "--n-val", "0", "--n-test", "0"), "empty")
    assert not (tmp_path / "e").exists()
    res = cli("augment-preview", ct, "--out", tmp_path / "grid.png", "--n", "3")
    assert res.code == 0, res.err
    from xctreg.io import read_xray

    assert read_xray(tmp_path / "grid.png").image.shape[1] > 200


def test_on_the_fly_dataset_renders_fresh_poses(small_phantom) -> None:
    from xctreg.data.dataset import OnTheFlyDataset

    r = Renderer(small_phantom, CAM)
    ds = OnTheFlyDataset(r, lambda n, rng: sample_poses(n, seed=int(rng.integers(1 << 30))), batch=3, seed=1)
    it = iter(ds)
    (L1, p1), (_, p2) = next(it), next(it)
    assert L1.shape == (3, 3, 32, 32) and p1.shape == (3, 6)
    assert not torch.equal(p1, p2)  # new poses every batch
    torch.testing.assert_close(L1, r.line_integrals(p1))  # the images are those of the labels
    (L1b, p1b) = next(iter(OnTheFlyDataset(r, ds.sampler, batch=3, seed=1)))
    torch.testing.assert_close(p1b, p1)  # seeded


def test_heel_ramp() -> None:
    from xctreg.data.augment import heel

    img = torch.ones(1, 1, 8, 10)
    cols = heel(img, 0.2, along_rows=False)[0, 0]
    assert torch.allclose(cols[:, 0], torch.full((8,), 0.8)) and torch.allclose(cols[:, -1], torch.full((8,), 1.2))
    rows = heel(img, -0.1, along_rows=True)[0, 0]
    assert torch.allclose(rows[0], torch.full((10,), 1.1)) and torch.allclose(rows[-1], torch.full((10,), 0.9))
    from xctreg.data.augment import heel_per_sample

    both = heel_per_sample(torch.ones(2, 1, 8, 10), torch.tensor([0.2, -0.1]), torch.tensor([False, True]))
    torch.testing.assert_close(both, torch.cat([heel(img, 0.2, False), heel(img, -0.1, True)]))


def test_collimated_training_image_looks_like_a_prepared_xray() -> None:
    """Collimation in training stretches the field to [0, 1] and fills the borders with 0 or 1,
    as preprocessing does at registration (bug: the field kept the whole image's range)."""
    from xctreg.data.augment import AugmentConfig, image_level

    x = 0.25 + 0.5 * torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    zero = dict.fromkeys(("p_gamma", "p_contrast", "p_clahe", "p_gauss_noise", "p_blur", "p_sharpen", "p_erase", "p_saturate"), 0.0)
    seen = 0
    for seed in range(6):
        out = image_level(x, AugmentConfig(p_collimate=1.0, **zero), torch.Generator().manual_seed(seed))[0, 0]
        border = (out == 0) | (out == 1)
        inside = out[~border]
        assert inside.numel() > 0.2 * out.numel()
        seen += 1
        assert float(inside.min()) < 0.02 and float(inside.max()) > 0.98  # stretched, not 0.25..0.75
    assert seen == 6


def test_cylinder_chords_batched_match_brute_force() -> None:
    """K cylinders at once (float32, as training computes them) against sampling each ray
    every 0.005 mm, including rays that graze the surface, where the quadratic's
    discriminant used to cancel in float32."""
    g = torch.Generator().manual_seed(3)
    K, R = 4, 400
    centre = torch.randn(K, 3, generator=g, dtype=torch.float64) * 20
    axis = torch.randn(K, 3, generator=g, dtype=torch.float64)
    radius = torch.tensor([[0.4], [1.0], [2.5], [3.0]], dtype=torch.float64)
    half = torch.tensor([[50.0], [20.0], [60.0], [10.0]], dtype=torch.float64)
    src = torch.tensor([0.0, -600.0, 0.0], dtype=torch.float64).expand(K, 1, 3)
    # aim at points on and near each cylinder's surface
    a = axis / axis.norm(dim=-1, keepdim=True)
    perp = torch.linalg.cross(a, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand(K, 3))
    perp = perp / perp.norm(dim=-1, keepdim=True)
    s = torch.linspace(-1.2, 1.2, R, dtype=torch.float64)
    target = centre[:, None] + perp[:, None] * radius[:, None] * s[None, :, None] + a[:, None] * half[:, None] * 0.3
    d = target - src
    d = d / d.norm(dim=-1, keepdim=True)
    got = cylinder_chords(src.float(), d.float(), centre.float(), axis.float(), radius.float(), half.float()).double()
    one = torch.stack([cylinder_chords(src[k], d[k], centre[k], axis[k], float(radius[k]), float(half[k])) for k in range(K)])
    t = torch.arange(500.0, 700.0, 0.005, dtype=torch.float64)
    for k in range(K):
        p = src[k, 0] + d[k][:, None, :] * t[None, :, None] - centre[k]  # (R, T, 3)
        along = p @ a[k]
        radial = (p - along[..., None] * a[k]).norm(dim=-1)
        brute = ((radial <= radius[k]) & (along.abs() <= half[k])).sum(-1) * 0.005
        np.testing.assert_allclose(one[k].numpy(), brute.numpy(), atol=0.02)
        np.testing.assert_allclose(got[k].numpy(), brute.numpy(), atol=0.02)


def test_image_effects_hit_only_their_own_images() -> None:
    """The image effects run once per batch, each on the images it was drawn for, with that
    image's setting (bug class: a batched effect applied to the wrong rows, or to all of them)."""
    from dataclasses import replace

    from xctreg.data.augment import AugmentConfig, _ImageDraws, image_level

    x = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    lo, hi = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
    x = (x - lo) / (hi - lo)
    off = dict.fromkeys(("p_gamma", "p_contrast", "p_clahe", "p_gauss_noise", "p_blur", "p_sharpen", "p_erase", "p_collimate", "p_saturate"), 0.0)
    cfg = replace(AugmentConfig(), **{**off, "p_gamma": 0.5})
    out = image_level(x, cfg, torch.Generator().manual_seed(3))
    gammas = _ImageDraws(x.shape, cfg, torch.Generator().manual_seed(3), 1.0).gamma
    assert 3 <= sum(v != 1.0 for v in gammas) <= 13 and len(set(gammas)) > 3
    for b in range(16):  # x ** gamma keeps 0 and 1, so the stretch to [0, 1] leaves it
        torch.testing.assert_close(out[b], x[b] ** gammas[b], atol=1e-5, rtol=1e-5)
    cfg = replace(AugmentConfig(), **{**off, "p_blur": 0.5})
    out = image_level(x, cfg, torch.Generator().manual_seed(4))
    hit = {b for b, _ in _ImageDraws(x.shape, cfg, torch.Generator().manual_seed(4), 1.0).blur}
    changed = {b for b in range(16) if not torch.allclose(out[b], x[b], atol=1e-6)}
    assert changed == hit and 3 <= len(hit) <= 13


def test_culled_object_chords_equal_every_ray(batch) -> None:
    """``random_objects`` traces each cylinder only through the pixels near its projection:
    the same line integrals as tracing every ray through every cylinder (bug class: a
    projected radius too small, which would cut thick or near rods and end-on screws)."""
    from unittest import mock

    import xctreg.data.augment as A

    r, cam, p, _ = batch
    T = r.poses_to_matrix(p)
    iso = torch.tensor(r.reference.isocenter_mm)
    half = torch.tensor([150.0, 100.0, 150.0])
    cfg = AugmentConfig(p_objects=1.0, max_objects=6, p_table=0.0)

    def everywhere(T, camera, centre, axis, radius, half_len):
        K, R = centre.shape[0], camera.height * camera.width
        return torch.arange(K).repeat_interleave(R), torch.arange(R).repeat(K)

    for seed, c in enumerate((cam, cam, Camera(1020.0, 60, 52, (6.4, 6.4)), Camera(1020.0, 37, 70, (5.0, 5.0)))):  # tiles cut at the edges too
        culled = A.random_objects(T, c, iso, half, cfg, torch.Generator().manual_seed(seed))
        with mock.patch.object(A, "_near_cylinders", everywhere):
            full = A.random_objects(T, c, iso, half, cfg, torch.Generator().manual_seed(seed))
        assert float(full.sum()) > 0
        torch.testing.assert_close(culled, full, atol=1e-5, rtol=1e-5)
    # an end-on screw (its axis along the central ray) projects to a disk, not a segment
    c = iso.double() + torch.tensor([5.0, 0.0, 3.0], dtype=torch.float64)
    beam = torch.linalg.inv(T[0].double())[:3, 2]  # the camera's z axis in world
    uv = A.pixel_grid(cam)
    near = A._near_cylinders(T[:1].float(), cam, c[None].float(), beam[None].float(), torch.tensor([3.0]), torch.tensor([20.0]))
    src, dirs = A.backproject(uv, T[:1].float(), cam)
    every = (torch.zeros(uv.shape[0], dtype=torch.long), torch.arange(uv.shape[0]))
    one = torch.zeros(1, dtype=torch.long)
    chords = A._chords_at(every, src - iso.float(), dirs, one, (c - iso.double())[None].float(), beam[None].float(), torch.tensor([3.0]), torch.tensor([20.0]))
    hit = set(torch.nonzero(chords > 0).flatten().tolist())
    assert hit and hit <= set(near[1].tolist())
