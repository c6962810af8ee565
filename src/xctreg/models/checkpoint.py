"""Checkpoints and trained models on disk: save, load, rebuild (inference needs nothing from training).

A checkpoint is a ``torch.save`` dict with ``"format": CHECKPOINT_FORMAT`` and tensors
only; it is always loaded with ``weights_only=True``, so a file that carries a pickled
object is refused without running anything. A MODEL_DIR's ``config.json`` holds the
model's configuration under ``train.model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xctreg._fs import atomic_path, read_json
from xctreg.errors import XctregError
from xctreg.models.regressor import ModelConfig, PoseRegressor

CHECKPOINT_FORMAT = "xctreg-checkpoint-1"
# Keys of MONAI's EfficientNet classifier head, which checkpoints written while the backbone was
# MONAI's still carry; the network never used them (the blocks' own ``_bn1`` live under ``backbone._blocks.``)
LEGACY_HEAD_PREFIXES = ("backbone._conv_head.", "backbone._bn1.", "backbone._fc.")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temp file + rename (never a half-written checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; clear error if corrupt or foreign."""
    if not path.is_file():
        raise XctregError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        if "weights only load failed" in str(exc).lower() and "unsupported global" in str(exc).lower():
            raise XctregError(f"checkpoint {path} holds pickled Python objects; refused: xctreg never runs code from a data file") from None
        raise XctregError(f"checkpoint {path} is corrupt or not a torch file: {str(exc).splitlines()[0][:150]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise XctregError(f"{path} is not an xctreg checkpoint")
    return state


def drop_legacy_head(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model state dict without the unused MONAI head keys (``LEGACY_HEAD_PREFIXES``)."""
    return {k: v for k, v in state_dict.items() if not k.startswith(LEGACY_HEAD_PREFIXES)}


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    """MODEL_DIR/config.json as a dict (one-line error when missing or unreadable)."""
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        raise XctregError(f"{Path(model_dir)} is not an xctreg model directory (no config.json)")
    return read_json(cfg_path, "model config")


def load_model(model_dir: str | Path, which: str = "best", device: torch.device | str = "cpu") -> tuple[PoseRegressor, ModelConfig, dict[str, Any]]:
    """Rebuild a trained regressor from MODEL_DIR (config.json + best.pt, else last.pt), in eval
    mode on ``device``; returns it, its ModelConfig and config.json as a dict."""
    d = Path(model_dir)
    meta = read_model_config(d)
    try:
        mcfg = ModelConfig(**meta["train"]["model"])
    except (KeyError, TypeError, ValueError):
        raise XctregError(f"{d / 'config.json'} is not a valid xctreg model config") from None
    path = d / f"{which}.pt"
    if which == "best" and not path.exists():
        path = d / "last.pt"
    st = load_checkpoint(path)
    model = PoseRegressor(mcfg)
    try:
        model.load_state_dict(drop_legacy_head(st["model"]))
    except (RuntimeError, KeyError) as exc:
        raise XctregError(f"checkpoint {path} does not fit the model in config.json: {str(exc).splitlines()[0][:150]}") from None
    return model.to(device).eval(), mcfg, meta
