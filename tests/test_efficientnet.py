"""Our EfficientNet-B0 features against MONAI's EfficientNetBNFeatures (the reference), old checkpoints, cold imports."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

from xctreg.models import ModelConfig, PoseRegressor
from xctreg.models.checkpoint import CHECKPOINT_FORMAT, LEGACY_HEAD_PREFIXES, drop_legacy_head, load_model
from xctreg.models.efficientnet import EfficientNetB0Features

NORMS = {"group": ("group", {"num_groups": 8}), "batch": ("batch", {"eps": 1e-3, "momentum": 0.01})}
HEAD = ("_conv_head.", "_bn1.", "_fc.")  # MONAI's classifier head, at the network's top level


def monai_b0(norm: tuple) -> torch.nn.Module:
    from monai.networks.nets import EfficientNetBNFeatures

    return EfficientNetBNFeatures("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=1, norm=norm)


def without_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(HEAD)}


def randomized(net: torch.nn.Module) -> torch.nn.Module:
    """Perturb every weight and norm statistic, so that no default (GroupNorm's 1 / 0, BatchNorm's
    running 0 / 1) hides a layer that is skipped or swapped."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape, generator=g))
    return net


def pair(norm: str) -> tuple[torch.nn.Module, EfficientNetB0Features]:
    """MONAI's network with random weights, and ours with the same weights."""
    ref = randomized(monai_b0(NORMS[norm]))
    ours = EfficientNetB0Features(in_channels=1, norm=NORMS[norm])
    ours.load_state_dict(without_head(ref.state_dict()))  # strict
    return ref, ours


@pytest.mark.parametrize("norm", NORMS)
def test_state_dict_keys_are_monais_minus_the_head(norm) -> None:
    ref, ours = monai_b0(NORMS[norm]), EfficientNetB0Features(in_channels=1, norm=NORMS[norm])
    ref_keys = list(ref.state_dict())
    assert list(ours.state_dict()) == [k for k in ref_keys if not k.startswith(HEAD)]
    assert any(k.startswith("_blocks.6.15._bn1.") for k in ref_keys)  # the blocks' _bn1 stay
    n_head = sum(p.numel() for n, p in ref.named_parameters() if n.startswith(HEAD))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) - n_head
    assert n_head > 1_600_000


@pytest.mark.parametrize("norm", NORMS)
def test_features_equal_monais_in_eval_mode(norm) -> None:
    ref, ours = pair(norm)
    ref.eval()
    ours.eval()
    for shape in [(2, 1, 64, 64), (2, 1, 96, 96), (2, 1, 64, 96), (1, 1, 50, 70)]:
        x = torch.randn(shape)
        with torch.no_grad():
            want, got = ref(x), ours(x)
        assert [t.shape[1] for t in got] == [16, 24, 40, 112, 320]
        if shape[2] % 32 == 0 and shape[3] % 32 == 0:
            assert got[-2].shape[-2:] == (shape[2] // 16, shape[3] // 16)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_train_mode_equals_monais_under_the_same_seed(norm) -> None:
    """Drop-connect draws the same random numbers per sample; gradients and BatchNorm statistics agree."""
    ref, ours = pair(norm)
    ref.train()
    ours.train()
    x = torch.randn(8, 1, 64, 64)
    outs, grads = [], []
    for net in (ref, ours):
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(5)
        feats = net(xi)
        sum((f * f).mean() for f in feats).backward()
        outs.append(feats)
        grads.append(xi.grad)
    for a, b in zip(outs[1], outs[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.state_dict(), without_head(ref.state_dict()), rtol=1e-6, atol=1e-6)
    ours.eval()
    with torch.no_grad():
        eval_out = ours(x)
    if norm == "group":  # the same normalisation in both modes: only drop-connect tells them apart
        assert not torch.allclose(eval_out[-1], outs[1][-1].detach())


@pytest.mark.parametrize("norm", NORMS)
def test_seeded_construction_equals_monais(norm) -> None:
    """Same random draws in the same order: identical initial weights, and the same RNG state after."""
    torch.manual_seed(7)
    ref = monai_b0(NORMS[norm])
    after_ref = torch.rand(4)
    torch.manual_seed(7)
    ours = EfficientNetB0Features(in_channels=1, norm=NORMS[norm])
    after_ours = torch.rand(4)
    torch.testing.assert_close(ours.state_dict(), without_head(ref.state_dict()), rtol=0, atol=0)
    assert torch.equal(after_ours, after_ref)


def test_checkpoint_with_the_old_monai_head_loads(tmp_path) -> None:
    cfg = ModelConfig(input_size=32, embed_dim=32, heads=2)
    model = PoseRegressor(cfg).eval()
    head = {f"backbone.{k}": v for k, v in monai_b0(NORMS["group"]).state_dict().items() if k.startswith(HEAD)}
    assert {k.split(".")[1] for k in head} == {"_conv_head", "_bn1", "_fc"}
    (tmp_path / "config.json").write_text(json.dumps({"train": {"model": asdict(cfg)}}))
    torch.save({"format": CHECKPOINT_FORMAT, "model": {**model.state_dict(), **head}}, tmp_path / "best.pt")
    loaded, _, _ = load_model(tmp_path)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["params"], model(x)["params"], rtol=0, atol=0)


def test_only_the_head_prefixes_are_dropped() -> None:
    state = {k: torch.zeros(1) for k in ["backbone._bn1.weight", "backbone._fc.bias", "backbone._conv_head.weight",
                                         "backbone._blocks.0.0._bn1.weight", "backbone._bn0.weight", "head.0.weight"]}
    assert list(drop_legacy_head(state)) == ["backbone._blocks.0.0._bn1.weight", "backbone._bn0.weight", "head.0.weight"]
    assert LEGACY_HEAD_PREFIXES == tuple(f"backbone.{p}" for p in HEAD)


def test_inference_does_not_import_monai() -> None:
    """``import monai`` costs ~3 s of a cold start: the register path and the network must not need it."""
    code = "import sys, xctreg.register\nfrom xctreg.models import PoseRegressor\nPoseRegressor()\nprint('monai' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
