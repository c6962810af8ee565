"""Refinement's own Adam follows torch.optim.Adam step for step."""

from __future__ import annotations

import torch

from xctreg.optim import Adam


def _run(make_opt, steps: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    rot = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    tr = torch.tensor([[4.0, -3.0, 9.0]], dtype=torch.float64, requires_grad=True)
    opt = make_opt(rot, tr)
    w = torch.tensor([1.0, 3.0, 0.2], dtype=torch.float64)
    for _ in range(steps):
        loss = (w * rot**2).sum() + (w * (tr - 1.0) ** 4).sum() + (rot * tr).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return rot.detach(), tr.detach()


def test_adam_matches_torch_adam_with_two_learning_rates() -> None:
    ours = _run(lambda r, t: Adam([([r], 0.3), ([t], 1.0)]))
    ref = _run(lambda r, t: torch.optim.Adam([{"params": [r], "lr": 0.3}, {"params": [t], "lr": 1.0}]))
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert not torch.equal(ours[0], torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64))  # it moved


def test_adam_without_a_gradient_keeps_the_tensor() -> None:
    x = torch.ones(3, requires_grad=True)
    opt = Adam([([x], 0.5)])
    opt.step()
    assert torch.equal(x.detach(), torch.ones(3))
