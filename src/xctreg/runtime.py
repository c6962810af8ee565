"""Runtime helpers: device selection and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from xctreg.errors import XctregError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu'; 'cuda' or 'cuda:N' (checked)."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise XctregError(f"--device {name} requested but CUDA is not available; use --device cpu or auto")
        return torch.device(name)
    raise XctregError(f"unknown device {name!r}; use auto, cpu or cuda")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch Generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
