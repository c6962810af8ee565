"""The GPU path, end to end: skipped where CUDA is not available (CI); run by scripts/gpu_check.sh.

Each test compares the CUDA result with the CPU one from the same inputs and seeds, so a
device bug shows as a mismatch, not only as a crash.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xctreg.physics import DetectorConfig
from xctreg.render import RenderConfig, Renderer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
CUDA = torch.device("cuda")


def _pose(reg, seed: int = 3) -> np.ndarray:
    return reg.space.sample(1, seed=seed)[0]


def test_noise_from_a_cpu_generator_on_a_cuda_renderer(small_phantom) -> None:
    """``xctreg simulate --device cuda --photons``: the CPU generator draws the noise, the same as on the CPU."""
    from xctreg.geometry import Camera, sample_params

    cam = Camera(1020.0, 48, 48, (6.0, 6.0))
    cfg = RenderConfig(backend="torch", detector=DetectorConfig(photons=1e4, blur_px=0.5, scatter_fraction=0.1))
    p = torch.tensor(sample_params(2, seed=1), dtype=torch.float32)
    imgs = []
    for dev in ("cpu", "cuda"):
        with torch.no_grad():
            img = Renderer(small_phantom, cam, cfg, device=dev)(p, generator=torch.Generator().manual_seed(0))
        assert img.device.type == dev
        imgs.append(img.cpu())
    assert torch.isfinite(imgs[1]).all()
    assert (imgs[0] - imgs[1]).abs().median() < 1e-3 * imgs[0].abs().mean()


def test_augmentation_on_cuda_matches_cpu(model_dir, small_phantom) -> None:
    """Trainer.make_batch augments on the trainer's device; the CPU generator makes the draws identical."""
    from xctreg.io import read_volume
    from xctreg.train import Trainer, quick_test_config

    vol = read_volume(model_dir / "ct.nii.gz")
    cfg = quick_test_config(steps=2)
    out = []
    for dev in ("cpu", "cuda"):
        tr = Trainer(vol, model_dir / f"aug_{dev}", cfg, ct_path=model_dir / "ct.nii.gz", device=dev, log=lambda s: None)
        r = Renderer(vol, cfg.camera, reference=tr.ref)
        p = torch.as_tensor(tr.space.sample(4, seed=5), dtype=torch.float32)
        with torch.no_grad():
            L = r.line_integrals(p)
        x, clean = tr.make_batch(L, p, 1.0, torch.Generator().manual_seed(9))
        assert x.device.type == dev and clean.device.type == dev
        out.append((x.cpu(), clean.cpu()))
    assert torch.allclose(out[0][1], out[1][1], atol=1e-4)
    assert (out[0][0] - out[1][0]).abs().mean() < 1e-2


def test_registrar_refines_on_cuda_like_on_cpu(model_dir, small_phantom) -> None:
    """Registrar(device='cuda') renders refinement on the GPU (torch backend) and lands where the CPU (numba) does."""
    from xctreg.register import RefineConfig, Registrar

    cpu = Registrar(model_dir / "m", ct=small_phantom)
    gpu = Registrar(model_dir / "m", device="cuda", ct=small_phantom)
    p = _pose(cpu)
    with torch.no_grad():
        img = Renderer(small_phantom, cpu.camera, reference=cpu.reference)(torch.as_tensor(p[None], dtype=torch.float32))[0, 0].numpy()
    cfg = RefineConfig(restarts=0)
    a, b = cpu.register(img, config=cfg), gpu.register(img, config=cfg)
    assert {r.backend for r in gpu._renderers.values()} == {"torch"}
    assert all(r.device.type == "cuda" for r in gpu._renderers.values())
    assert np.allclose(a.initial.params, b.initial.params, atol=1e-2)
    assert np.abs(a.params - b.params)[:3].max() < 0.5 and np.abs(a.params - b.params)[3:].max() < 2.0
    assert abs(a.similarity["ncc"] - b.similarity["ncc"]) < 0.02


def test_evaluate_and_demo_fast_on_cuda(tmp_path) -> None:
    """The demo's smoke run (train, simulate, evaluate, register, report) with --device cuda."""
    from xctreg.demo import DemoConfig, run_demo

    res = run_demo(DemoConfig(out=tmp_path / "demo", fast=True, n_eval=2, device="cuda"), log=lambda s: None)
    assert res.report.is_file()
    assert "device cuda" in res.report.read_text(encoding="utf-8")


def test_warp_kernels_on_cuda_match_numba_on_the_cpu(small_phantom) -> None:
    """The fused Warp kernels on the GPU: images and pose gradients as numba's on the CPU."""
    pytest.importorskip("warp", reason="NVIDIA Warp (warp-lang) is not installed")
    from xctreg.geometry import Camera, sample_params

    cam = Camera(1020.0, 48, 48, (6.0, 6.0))
    p = torch.tensor(sample_params(2, seed=5), dtype=torch.float64)
    w = torch.randn(2, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    out = []
    for dev, backend in (("cpu", "numba"), ("cuda", "warp")):
        r = Renderer(small_phantom, cam, RenderConfig(backend=backend), device=dev)
        q = p.clone().requires_grad_(True)
        img = r(q)
        assert img.device.type == dev
        (img.cpu() * w).sum().backward()
        out.append((img.detach().cpu(), q.grad.clone()))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-3, atol=1e-3 * float(out[0][1].abs().max()))
