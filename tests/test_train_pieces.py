"""The named pieces of the training loop: schedule, curriculum sampler, state and log."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from xctreg.train import CurriculumSampler, Stage, TrainLog, TrainState, quick_test_config, stage_at, warmup_cosine


def test_warmup_cosine_schedule() -> None:
    cfg = quick_test_config(steps=100, warmup_steps=10, lr=1e-3)
    lrs = [warmup_cosine(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warm-up
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # then only down
    assert warmup_cosine(55, cfg) == pytest.approx(0.5e-3)  # half-way through the decay
    assert warmup_cosine(100, cfg) == pytest.approx(0.0, abs=1e-12) and warmup_cosine(500, cfg) == pytest.approx(0.0, abs=1e-12)


def test_stage_at_follows_the_step_shares() -> None:
    cfg = quick_test_config(steps=100, stages=(Stage(0.5, 0.0, 0.2, 4), Stage(1.0, 0.0, 0.3, 4), Stage(1.0, 0.0, 0.5, 4)))
    ks = [stage_at(s, cfg) for s in range(100)]
    assert ks.count(0) == 20 and ks.count(1) == 30 and ks.count(2) == 50 and ks == sorted(ks)
    assert stage_at(1000, cfg) == 2
    assert {stage_at(s, quick_test_config(steps=100, curriculum=False)) for s in range(100)} == {0}


class _Set:
    """A stand-in for a stage's ShardDataset: item i is (L filled with the stage number, params)."""

    def __init__(self, k: int, n: int) -> None:
        self.k, self.n = k, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((3, 2, 2), float(self.k)), torch.full((6,), float(i))


def test_curriculum_sampler_rehearses_earlier_stages() -> None:
    cfg = quick_test_config(batch=400, rehearsal=0.25, steps=30,
                            stages=(Stage(1.0, 0.0, 0.2, 5), Stage(1.0, 0.0, 0.3, 5), Stage(1.0, 0.0, 0.5, 5)))  # fmt: skip
    sample = CurriculumSampler([_Set(0, 5), _Set(1, 7), _Set(2, 9)], cfg, torch.Generator().manual_seed(0))
    k, L, p = sample(0)
    assert k == 0 and L.shape == (400, 3, 2, 2) and p.shape == (400, 6) and torch.all(L == 0)  # nothing earlier to rehearse
    k, L, p = sample(25)
    from_stage = L[:, 0, 0, 0]
    assert k == 2 and set(from_stage.tolist()) == {0.0, 1.0, 2.0}
    assert 0.18 < float((from_stage < 2).float().mean()) < 0.32  # about a quarter rehearsed
    again = CurriculumSampler([_Set(0, 5), _Set(1, 7), _Set(2, 9)], cfg, torch.Generator().manual_seed(0))
    again(0)
    assert torch.equal(again(25)[2], p)  # the generator alone fixes the draws


def test_train_state_round_trip_and_record(small_phantom) -> None:
    cfg = quick_test_config()
    a = TrainState.new(cfg, torch.device("cpu"))
    assert a.model.backbone._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert a.record({"median_mtre_mm": 5.0}) and not a.record({"median_mtre_mm": 6.0}) and a.bad_epochs == 1
    a.step = 7
    a.g_data.manual_seed(99)
    torch.rand(3, generator=a.g_aug)
    st = a.state_dict(cfg)
    b = TrainState.new(cfg, torch.device("cpu"))
    b.load_state_dict(st, cfg)
    assert (b.step, b.best, b.bad_epochs, b.history) == (7, 5.0, 1, a.history)
    assert torch.equal(b.g_data.get_state(), a.g_data.get_state()) and torch.equal(b.g_aug.get_state(), a.g_aug.get_state())
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    several = TrainState.new(cfg, torch.device("cpu"), rank=1)
    several.load_state_dict(st, cfg, rank=1, world=2)  # each rank reseeds from (seed, rank, step)
    assert not torch.equal(several.g_data.get_state(), a.g_data.get_state())


def test_train_log_writes_csv_rows_and_console_lines(tmp_path) -> None:
    cfg = quick_test_config(steps=60, warmup_steps=2)
    lines, ticks = [], []
    log = TrainLog(tmp_path, cfg, lines.append, lambda what, d, t: ticks.append((what, d, t)))
    for s in range(1, 51):
        log.step(s, 0, 1.0 / s, {"median_mtre_mm": 3.0, "sr_10mm": 0.9} if s == 30 else None)
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert rows[0] == TrainLog.HEADER.strip() and [r.split(",")[0] for r in rows[1:]] == ["25", "30", "50"]
    assert rows[2].split(",")[4] == "3.000" and len(lines) == 1 and "3.00 mm" in lines[0]
    assert ticks[-1] == ("train", 50, 60)
    assert math.isclose(float(rows[1].split(",")[3]), sum(1.0 / s for s in range(1, 26)) / 25, rel_tol=1e-4)


def test_geodesic_loss_is_the_rotation_angle_plus_the_translation_term() -> None:
    """The geodesic-loss baseline (``TrainConfig.loss="geodesic"``): zero at the truth, the
    rotation's geodesic angle over the ranges' half-width, no dependence on target points."""
    import numpy as np
    import torch

    from xctreg.geometry import PoseReference, PoseSpace
    from xctreg.train import TrainConfig, pose_loss

    space = PoseSpace(PoseReference((0.0, 0.0, 0.0), 750.0))
    p = torch.as_tensor(space.sample(4, seed=3), dtype=torch.float32)
    cfg = TrainConfig(loss="geodesic")
    q = space.normalize(p)
    assert float(pose_loss(q, p, space, torch.zeros(5, 3), cfg)) < 1e-6
    off = p.clone()
    off[:, 2] += 3.0  # 3° about the beam, nothing else
    got = float(pose_loss(space.normalize(off), p, space, torch.randn(5, 3) * 100, cfg))
    assert np.isclose(got, 3.0 / 15.0, rtol=1e-3)  # the default rotation half-width is 15°
    tre = float(pose_loss(space.normalize(off), p, space, torch.randn(5, 3) * 100, TrainConfig()))
    assert tre != got


def test_presets_choose_their_curriculum() -> None:
    """The quick preset trains one stage (measured better at its CPU budget); the paper preset
    keeps the method's incremental curriculum."""
    from xctreg.models import ModelConfig
    from xctreg.train import preset

    quick, paper = preset("quick"), preset("paper")
    assert not quick.curriculum and paper.curriculum
    assert [s.n_train for s in quick.effective_stages()] == [sum(s.n_train for s in quick.stages)]
    assert len(paper.effective_stages()) == 3
    # the quick preset's cheaper data and decoder (measured as accurate, docs/model.md); the
    # paper preset keeps its 256² data and full decoder
    assert quick.data_at_input and quick.model.recon_size == 32 and quick.model.decoder_stages < ModelConfig().decoder_stages
    assert not paper.data_at_input and paper.model.recon_size is None


@pytest.mark.parametrize("preset_name, flag, want", [("quick", None, False), ("quick", "--curriculum", True),
                                                     ("paper", None, True), ("paper", "--no-curriculum", False)])  # fmt: skip
def test_train_curriculum_flag_defaults_to_the_preset(cli, model_dir, tmp_path, monkeypatch, preset_name, flag, want) -> None:
    from xctreg.errors import XctregError

    seen = {}

    def stub(volume, out, cfg, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen["cfg"] = cfg
        raise XctregError("stopped before training")

    monkeypatch.setattr("xctreg.train.Trainer", stub)
    res = cli("train", model_dir / "ct.nii.gz", "--out", tmp_path / "m", "--preset", preset_name, *([flag] if flag else []))
    assert res.code != 0 and "stopped before training" in res.err
    assert seen["cfg"].curriculum is want


def test_data_rendered_at_the_input_size_trains_like_the_detector(tmp_path, small_phantom) -> None:
    """A 64² detector with a 32² input: the cached DRRs are 32² from the detector's volume level,
    and a batch is built from them (objects drawn at 64², averaged) like one from 64² DRRs."""
    from xctreg.geometry import DEFAULT_SDD_MM, Camera
    from xctreg.models import ModelConfig
    from xctreg.render.drr import auto_voxel_mm
    from xctreg.train import Trainer

    cam = Camera(DEFAULT_SDD_MM, 64, 64, (6.4, 6.4))
    cfg = quick_test_config(camera=cam, model=ModelConfig(input_size=32, embed_dim=32, heads=2, dropout=0.0), data_at_input=True)
    tr = Trainer(small_phantom, tmp_path / "m", cfg, log=lambda s: None)
    assert (tr.data_camera.height, tr.data_camera.width) == (32, 32)
    assert tr.data_render.voxel_mm == pytest.approx(auto_voxel_mm(cam, cfg.sid_mm))
    sets, val = tr.datasets()
    L, p = sets[-1][0]
    assert L.shape == (3, 32, 32) and len(val) == cfg.n_val
    x, clean = tr.make_batch(L[None].repeat(3, 1, 1, 1), p[None].repeat(3, 1), 1.0, torch.Generator().manual_seed(0))
    assert x.shape == clean.shape == (3, 1, 32, 32) and torch.isfinite(x).all()
    old = Trainer(small_phantom, tmp_path / "o", replace(cfg, data_at_input=False), log=lambda s: None)
    assert old.data_camera == cam and old.data_render.voxel_mm == "auto"  # what runs before this change rendered


def test_old_configs_keep_their_data_at_the_detector_size() -> None:
    from xctreg.train import TrainConfig

    d = quick_test_config(data_at_input=True).to_dict()
    assert TrainConfig.from_dict(d).data_at_input is True
    d.pop("data_at_input")
    assert TrainConfig.from_dict(d).data_at_input is False  # a run from before: resumes with its own data


def test_augmenting_averaged_line_integrals_equals_averaging_after_the_objects(small_phantom) -> None:
    """Objects are drawn at the detector's size and averaged: augmenting 2x2-averaged line
    integrals gives the image that augmenting the detector's gives (same draws), which fails
    if the physics' pixel scale were taken from the coarser input instead of the camera."""
    import numpy as np
    import torch.nn.functional as F

    from xctreg.data.augment import AugmentConfig, augment
    from xctreg.geometry import DEFAULT_SDD_MM, Camera, PoseReference, PoseSpace, PoseRanges
    from xctreg.render import Renderer

    cam = Camera(DEFAULT_SDD_MM, 64, 64, (6.4, 6.4))
    space = PoseSpace(PoseReference.centred_on(small_phantom, 750.0), PoseRanges())
    p = torch.as_tensor(space.sample(4, seed=3), dtype=torch.float32)
    with torch.no_grad():
        L = Renderer(small_phantom, cam, reference=space.reference).line_integrals(p)
    T = space.to_matrix(p.double())
    iso = torch.tensor(space.reference.isocenter_mm, dtype=torch.float32)
    half = torch.tensor(np.ptp(small_phantom.corners_world(), axis=0) / 2.0, dtype=torch.float32)
    cfg = AugmentConfig(p_objects=1.0, p_table=1.0, p_noise=0.0)  # no Poisson draws: they jump with the last bit
    a = augment(L, cfg, torch.Generator().manual_seed(4), T, cam, iso, half, size=32)
    b = augment(F.avg_pool2d(L.float(), 2), cfg, torch.Generator().manual_seed(4), T, cam, iso, half, size=32)
    assert a.shape == b.shape == (4, 1, 32, 32)
    assert (a - b).abs().max() < 1e-4
