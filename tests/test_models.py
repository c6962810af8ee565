"""Pose regressor variants, loss, training loop, checkpoints and resume."""

from __future__ import annotations

import json

import pytest
import torch

from xctreg.errors import XctregError
from xctreg.models import VARIANTS, ModelConfig, PoseRegressor, attention_map
from xctreg.models.checkpoint import load_checkpoint, load_model
from xctreg.train import Trainer, quick_test_config


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_shapes(variant) -> None:
    m = PoseRegressor(ModelConfig(variant=variant, input_size=64, embed_dim=32, heads=2))
    out = m(torch.rand(3, 1, 64, 64))
    assert out["params"].shape == (3, 6)
    assert out["latent"].shape == (3, 32, 4, 4)
    assert ("recon" in out) == ("B" in variant)
    assert ("attention" in out) == ("C" in variant)
    if "B" in variant:
        assert out["recon"].shape == (3, 1, 64, 64)
    if "C" in variant:
        assert out["attention"].shape == (3, 16, 16)
        amap = attention_map(out, 64)
        assert amap.shape == (3, 1, 64, 64) and float(amap.max().detach()) == pytest.approx(1.0)
    else:
        with pytest.raises(XctregError):
            attention_map(out, 64)
    assert m(torch.rand(2, 1, 128, 128))["params"].shape == (2, 6)  # other sizes are resampled


def test_normalisation_does_not_depend_on_the_batch() -> None:
    """GroupNorm + per-image standardisation: no batch statistics, so train and eval normalise alike
    and an image's prediction does not depend on the rest of its batch."""
    m = PoseRegressor(ModelConfig(variant="A+B+C", input_size=64, embed_dim=32, heads=2, dropout=0.0)).eval()
    assert not any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in m.modules())
    x = torch.rand(4, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x)["params"][:1], m(x[:1])["params"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m(x * 3 + 1)["params"], m(x)["params"], rtol=1e-3, atol=1e-4)


def test_backbone_stops_after_the_levels_asked_for() -> None:
    """The attention variants run the trunk only to stride 16: the same maps as the full trunk,
    without the stride-32 stacks (which no loss reads)."""
    m = PoseRegressor(ModelConfig(variant="A+B+C", input_size=64, embed_dim=32, heads=2)).eval()
    x = torch.rand(2, 1, 64, 64)
    calls = []
    last = m.backbone._blocks[-1]
    hook = last.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        full = m.backbone(x)
        part = m.backbone(x, levels=4)
        out = m(x)
    hook.remove()
    assert len(full) == 5 and len(part) == 4 and calls == [1]  # only the full trunk ran the last stack
    for a, b in zip(full, part, strict=False):
        assert torch.equal(a, b)
    assert out["latent"].shape == (2, 32, 4, 4)


def test_bad_variant() -> None:
    with pytest.raises(XctregError, match="variant"):
        ModelConfig(variant="B")


@pytest.fixture
def trainer(tmp_path, small_phantom):
    return Trainer(small_phantom, tmp_path / "model", quick_test_config(), log=lambda s: None)


def test_one_step_lowers_the_loss_and_tiny_set_overfits(trainer) -> None:
    stage_sets, _ = trainer.datasets()
    ds = stage_sets[-1]
    torch.manual_seed(0)
    model = PoseRegressor(trainer.cfg.model)
    L = torch.stack([ds[i][0] for i in range(4)])
    p = torch.stack([ds[i][1] for i in range(4)])
    x, clean = trainer.make_batch(L, p, 0.0, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        loss = trainer.loss(model, x, clean, p)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[1] < losses[0]
    assert losses[-1] < 0.2 * losses[0]


def test_resume_gives_the_same_weights(tmp_path, small_phantom) -> None:
    cfg = quick_test_config()
    full = Trainer(small_phantom, tmp_path / "full", cfg, log=lambda s: None)
    full.fit()
    part = Trainer(small_phantom, tmp_path / "part", cfg, log=lambda s: None)
    part.fit(max_steps=3)  # stops like a killed run would after its step-3 checkpoint
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step"] == 3
    Trainer(small_phantom, tmp_path / "part", cfg, log=lambda s: None).fit(resume=True)
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    meta = json.loads((tmp_path / "full" / "config.json").read_text())
    assert meta["reference"]["sid_mm"] == 750.0 and meta["camera"]["height"] == 32
    model, _, _ = load_model(tmp_path / "full")
    assert model(torch.rand(1, 1, 32, 32))["params"].shape == (1, 6)
    log = (tmp_path / "full" / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,") and len(log) >= 3


def test_refuses_to_clobber_or_resume_wrongly(tmp_path, small_phantom) -> None:
    cfg = quick_test_config(steps=3)
    Trainer(small_phantom, tmp_path / "m", cfg, log=lambda s: None).fit()
    with pytest.raises(XctregError, match="--resume"):
        Trainer(small_phantom, tmp_path / "m", cfg, log=lambda s: None).fit()
    with pytest.raises(XctregError, match="another configuration"):
        Trainer(small_phantom, tmp_path / "m", quick_test_config(steps=3, seed=9), log=lambda s: None).fit(resume=True)
    with pytest.raises(XctregError, match="nothing to resume"):
        Trainer(small_phantom, tmp_path / "new", cfg, log=lambda s: None).fit(resume=True)


def test_resume_refuses_a_run_from_another_version_clearly(tmp_path, small_phantom) -> None:
    """A last.pt whose model no longer fits (here: the MONAI head keys of runs begun before the
    backbone became xctreg's own) is refused with one line, not a traceback."""
    from xctreg.models.checkpoint import save_checkpoint

    cfg = quick_test_config(steps=4)
    Trainer(small_phantom, tmp_path / "m", cfg, log=lambda s: None).fit(max_steps=3)
    st = load_checkpoint(tmp_path / "m" / "last.pt")
    st["model"]["backbone._fc.weight"] = torch.zeros(1000, 1280)
    save_checkpoint(tmp_path / "m" / "last.pt", st)
    with pytest.raises(XctregError, match="another xctreg version") as e:
        Trainer(small_phantom, tmp_path / "m", cfg, log=lambda s: None).fit(resume=True)
    assert "\n" not in str(e.value)


def test_corrupt_and_foreign_checkpoints(tmp_path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage")
    with pytest.raises(XctregError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(XctregError, match="not an xctreg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(XctregError, match="not an xctreg model directory"):
        load_model(tmp_path)


def test_registrar_and_evaluate_end_to_end(tmp_path, small_phantom, cli) -> None:
    from conftest import assert_one_line_error
    from xctreg.evaluate import evaluate
    from xctreg.io import write_volume
    from xctreg.register import Registrar

    ct = write_volume(small_phantom, tmp_path / "ct.nii.gz")
    Trainer(small_phantom, tmp_path / "m", quick_test_config(steps=3), ct_path=ct, log=lambda s: None).fit()
    reg = Registrar(tmp_path / "m")
    r = reg.regress(torch.rand(32, 32).numpy())
    assert r.pose.T_cam_from_world.shape == (4, 4) and r.params.shape == (6,)
    with pytest.raises(XctregError, match="blank"):
        reg.regress(torch.zeros(32, 32).numpy())
    with pytest.raises(XctregError, match="geometry says"):
        reg.regress(torch.rand(30, 32).numpy())
    m = evaluate(tmp_path / "m", n=5, out_dir=tmp_path / "eval", refine=False)
    assert m["n"] == 5 and m["median_mtre_mm"] > 0 and 0 <= m["sr_10mm"] <= 1
    assert set(m["param_mae"]) == {"rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm"}
    for f in ("metrics.json", "metrics.md", "errors.png", "cases.json"):
        assert (tmp_path / "eval" / f).is_file()
    res = cli("evaluate", tmp_path / "m", "--n", "2", "--out", tmp_path / "e2")  # with refinement
    assert res.code == 0, res.err
    assert "median mTRE" in res.out
    assert_one_line_error(cli("evaluate", tmp_path / "nothing"), "not an xctreg model directory")
    import numpy as np

    from xctreg.io import write_xray

    write_xray(tmp_path / "x.png", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    res = cli("attention", tmp_path / "m", tmp_path / "x.png", "--out", tmp_path / "att.png")
    assert res.code == 0, res.err
    amap = np.load(tmp_path / "att.npy")
    assert amap.shape == (32, 32) and amap.min() >= 0 and amap.max() == pytest.approx(1.0)
    assert (tmp_path / "att.png").stat().st_size > 1000


def test_tensorboard_logging_or_a_clear_error(tmp_path, small_phantom) -> None:
    import importlib.util

    t = Trainer(small_phantom, tmp_path / "m", quick_test_config(steps=3), log=lambda s: None)
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(XctregError, match="pip install tensorboard"):
            t.fit(tensorboard=True)
    else:
        t.fit(tensorboard=True)
        assert list((tmp_path / "m" / "tensorboard").glob("events.*"))


class _Planted:
    """A pickled object whose unpickling would create a file: the marker of code that ran."""

    marker = ""

    def __reduce__(self):  # noqa: ANN204
        import os

        return (os.mkdir, (self.marker,))


def test_checkpoint_that_carries_a_pickled_object_is_refused_without_running_it(tmp_path) -> None:
    """Loading stays ``weights_only``: a .pt whose pickle would run code (here os.mkdir) is
    refused with an XctregError and nothing runs; a real checkpoint cut short is 'corrupt'."""
    planted = _Planted()
    planted.marker = str(tmp_path / "code_ran")
    torch.save({"xctreg_checkpoint": 1, "model": planted}, tmp_path / "evil.pt")
    with pytest.raises(XctregError, match="pickled Python objects"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "code_ran").exists()
    assert not any("code_ran" in p.name for p in tmp_path.iterdir())


def test_truncated_real_checkpoint_is_corrupt(tmp_path, small_phantom) -> None:
    Trainer(small_phantom, tmp_path / "m", quick_test_config(steps=2), log=lambda s: None).fit()
    data = (tmp_path / "m" / "best.pt").read_bytes()
    for keep in (len(data) // 3, len(data) - 100):
        (tmp_path / "cut.pt").write_bytes(data[:keep])
        with pytest.raises(XctregError, match="corrupt"):
            load_checkpoint(tmp_path / "cut.pt")


@pytest.mark.slow
def test_fault_demo_script_kill_and_resume() -> None:
    """scripts/fault_demo.sh: a real process killed with SIGKILL after a checkpoint, resumed,
    ends with bitwise the weights of an uninterrupted run (about a minute on 2 cores)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "STEPS": "40"}
    out = subprocess.run(["bash", str(root / "scripts" / "fault_demo.sh")], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "bitwise equal" in out.stdout and "killed; its last checkpoint is at step" in out.stdout


def test_checkpoint_of_another_variant_in_a_model_dir_is_refused(model_dir, tmp_path, cli) -> None:
    """A model folder whose config.json names another variant (or size) than its checkpoint was
    trained as: `register` refuses it in one line instead of a traceback."""
    import shutil

    from conftest import assert_one_line_error

    m = tmp_path / "m"
    shutil.copytree(model_dir / "m", m)
    meta = json.loads((m / "config.json").read_text())
    meta["train"]["model"]["embed_dim"] = 2 * meta["train"]["model"]["embed_dim"]
    (m / "config.json").write_text(json.dumps(meta))
    with pytest.raises(XctregError, match="does not fit the model in config.json"):
        load_model(m)
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    assert_one_line_error(cli("register", m, tmp_path / "x.npy", "--no-refine"), "does not fit")


def test_a_shorter_decoder_reconstructs_at_recon_size_and_trains(trainer) -> None:
    """ModelConfig.recon_size: (B) stops upsampling early; the loss compares it with the clean
    image averaged to its size. Old configs (no recon_size) keep the full decoder."""
    cfg = ModelConfig(input_size=32, embed_dim=32, heads=2, dropout=0.0, recon_size=8)
    model = PoseRegressor(cfg)
    assert model(torch.rand(2, 1, 32, 32))["recon"].shape == (2, 1, 8, 8)
    assert PoseRegressor(ModelConfig(input_size=32, embed_dim=32, heads=2))(torch.rand(1, 1, 32, 32))["recon"].shape == (1, 1, 32, 32)
    with pytest.raises(XctregError, match="recon_size"):
        ModelConfig(input_size=64, recon_size=48)
    x = torch.rand(2, 1, 32, 32)
    p = torch.as_tensor(trainer.space.sample(2, seed=1), dtype=torch.float32)
    loss = trainer.loss(model, x, x, p)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.decoder.net[1].weight.grad is not None and model.decoder.net[1].weight.grad.abs().sum() > 0


def test_training_uses_the_fused_adamw_on_the_cpu(small_phantom) -> None:
    from xctreg.train import TrainState, quick_test_config

    st = TrainState.new(quick_test_config(), torch.device("cpu"))
    assert st.opt.defaults["fused"] is True
