"""Adam for refinement's few pose parameters, without ``torch.optim``.

Refinement steps six parameters (degrees and mm). ``torch.optim.Adam``'s constructor imports
``torch._dynamo``, which took 1.2–1.9 s of a fresh ``xctreg register`` process on 2 cores
(issue #13: a cold start within 3 s). This is the same update (Kingma & Ba, 2015, with bias
correction, no weight decay, no amsgrad) in a few lines of tensor arithmetic; a test checks that
it follows ``torch.optim.Adam`` step for step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Adam:
    """Adam over groups of tensors, each group with its own learning rate.

    ``groups``: (tensors, lr) pairs; the tensors are leaves with ``requires_grad``. ``step``
    reads their ``.grad`` (a missing grad counts as zero) and updates them in place.
    """

    def __init__(self, groups: Sequence[tuple[Sequence[torch.Tensor], float]], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.groups = [(list(ts), float(lr)) for ts, lr in groups]
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.t = 0
        self.m = [[torch.zeros_like(x) for x in ts] for ts, _ in self.groups]
        self.v = [[torch.zeros_like(x) for x in ts] for ts, _ in self.groups]

    def zero_grad(self) -> None:
        for ts, _ in self.groups:
            for x in ts:
                x.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1, c2 = 1.0 - self.b1**self.t, 1.0 - self.b2**self.t
        for (ts, lr), ms, vs in zip(self.groups, self.m, self.v, strict=True):
            for x, m, v in zip(ts, ms, vs, strict=True):
                g = torch.zeros_like(x) if x.grad is None else x.grad
                m.mul_(self.b1).add_(g, alpha=1.0 - self.b1)
                v.mul_(self.b2).addcmul_(g, g, value=1.0 - self.b2)
                x.sub_(lr * (m / c1) / ((v / c2).sqrt() + self.eps))
