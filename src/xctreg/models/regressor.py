"""Pose regressor: (A) EfficientNet-B0, (B) regularised autoencoder, (C) self-attention.

Input: X-ray images (B, 1, S, S) in [0, 1]; each image is standardised inside
the network (zero mean, unit variance), so train and eval behave alike.
Output: the 6 pose parameters normalised to the sampling ranges by
``geometry.PoseSpace.normalize`` (the training range maps to [−1, 1]).

* (A) EfficientNet-B0 features from scratch (``models.efficientnet``: MONAI's
  ``EfficientNetBNFeatures("efficientnet-b0")`` rebuilt without importing MONAI,
  same weights and state-dict keys), one input channel, GroupNorm by default
  (identical in train and eval mode; the default BatchNorm is selectable). Its
  stride-16 feature map (112 channels) is projected to ``embed_dim`` tokens: the
  shared latent.
* (B) A decoder reconstructs the clean DRR from the latent; the regulariser
  is an L2 penalty on the latent (a "regularised autoencoder", RAE), which
  keeps it small and smooth without the sampling noise of a VAE's KL term.
* (C) A pre-norm transformer block (multi-head self-attention + MLP) over the
  latent tokens with a learnable 2D positional embedding (one vector per
  row plus one per column).
* Head: mean-pooled tokens (or the pooled last feature map without C) -> MLP -> 6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xctreg.errors import XctregError
from xctreg.geometry import PARAM_NAMES
from xctreg.models.efficientnet import EfficientNetB0Features, NormSpec

VARIANTS = ("A", "A+B", "A+C", "A+B+C")


@dataclass(frozen=True)
class ModelConfig:
    """Network shape. ``variant`` picks the branches: A, A+B, A+C or A+B+C."""

    variant: str = "A+B+C"
    input_size: int = 64
    embed_dim: int = 128
    heads: int = 4
    norm: str = "group"
    dropout: float = 0.1
    #: side of (B)'s reconstruction: input_size / 2, / 4 or / 8 (fewer decoder stages), None = input_size
    recon_size: int | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise XctregError(f"model variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.input_size % 32:
            raise XctregError(f"input_size must be a multiple of 32, got {self.input_size}")
        if self.recon_size is not None and self.recon_size not in [self.input_size >> k for k in range(4)]:
            raise XctregError(f"recon_size must be input_size / 1, 2, 4 or 8, got {self.recon_size} for input_size {self.input_size}")

    @property
    def decoder_stages(self) -> int:
        """Upsampling stages of (B): from the stride-16 latent to ``recon_size``."""
        return int(math.log2((self.recon_size or self.input_size) // (self.input_size // 16)))

    @property
    def use_ae(self) -> bool:
        return "B" in self.variant

    @property
    def use_attention(self) -> bool:
        return "C" in self.variant


def _norm(kind: str) -> NormSpec:
    if kind == "group":
        return ("group", {"num_groups": 8})
    if kind == "batch":
        return ("batch", {"eps": 1e-3, "momentum": 0.01})
    raise XctregError(f"norm must be group or batch, got {kind!r}")


class PositionalEmbedding2D(nn.Module):
    """Learnable 2D positional embedding: row and column vectors summed, (1, H*W, D)."""

    def __init__(self, h: int, w: int, dim: int) -> None:
        super().__init__()
        self.row = nn.Parameter(torch.randn(h, 1, dim) * 0.02)
        self.col = nn.Parameter(torch.randn(1, w, dim) * 0.02)

    def forward(self) -> torch.Tensor:
        return (self.row + self.col).reshape(1, -1, self.row.shape[-1])


class AttentionBlock(nn.Module):
    """Pre-norm transformer block that also returns the attention weights (B, N, N)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.n1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.n2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.n1(x)
        a, w = self.attn(h, h, h, need_weights=True, average_attn_weights=True)
        x = x + a
        return x + self.mlp(self.n2(x)), w


class Decoder(nn.Module):
    """Latent tokens (B, D, S/16, S/16) -> image (B, 1, R, R) in [0, 1], R = S/16 x 2^stages."""

    def __init__(self, dim: int, stages: int = 4) -> None:
        super().__init__()
        chans = [dim, 64, 32, 16, 8][: stages + 1]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1), nn.GroupNorm(4, b), nn.GELU()]
        layers += [nn.Conv2d(chans[-1], 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


class PoseRegressor(nn.Module):
    """The pose network; ``forward`` returns a dict with ``params`` (B, 6) and, per variant,
    ``recon`` (B, 1, R, R) (R = ``recon_size``), ``latent`` (B, D, S/16, S/16) and ``attention`` (B, N, N)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        self.backbone = EfficientNetB0Features(in_channels=1, norm=_norm(cfg.norm))
        g = cfg.input_size // 16
        self.proj = nn.Conv2d(112, cfg.embed_dim, 1)
        self.pool_proj = nn.Linear(320, cfg.embed_dim)
        if cfg.use_attention:
            self.pos = PositionalEmbedding2D(g, g, cfg.embed_dim)
            self.block = AttentionBlock(cfg.embed_dim, cfg.heads, cfg.dropout)
            self.out_norm = nn.LayerNorm(cfg.embed_dim)
        if cfg.use_ae:
            self.decoder = Decoder(cfg.embed_dim, cfg.decoder_stages)
        self.head = nn.Sequential(
            nn.Linear(cfg.embed_dim, 256), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(256, len(PARAM_NAMES))
        )

    @staticmethod
    def standardize(x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(-2, -1), keepdim=True)
        s = x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-4)
        return (x - m) / s

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        if x.shape[-2:] != (cfg.input_size, cfg.input_size):
            x = F.interpolate(x, size=(cfg.input_size, cfg.input_size), mode="area")
        # the attention variants read only the stride-16 map: the stride-32 stacks are skipped
        feats = self.backbone(self.standardize(x), levels=4 if cfg.use_attention else None)
        z = self.proj(feats[3])  # (B, D, S/16, S/16): the shared latent
        out: dict[str, torch.Tensor] = {"latent": z}
        if cfg.use_attention:
            tokens = z.flatten(2).transpose(1, 2) + self.pos()
            tokens, w = self.block(tokens)
            out["attention"] = w
            pooled = self.out_norm(tokens).mean(1)
        else:
            pooled = self.pool_proj(feats[-1].mean(dim=(-2, -1)))
        out["params"] = self.head(pooled)
        if cfg.use_ae:
            out["recon"] = self.decoder(z)
        return out


def attention_map(out: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Attention each token receives, averaged over queries, as (B, 1, size, size) in [0, 1]."""
    if "attention" not in out:
        raise XctregError("this model has no attention branch (variant without C)")
    w = out["attention"].mean(1)  # (B, N)
    g = int(round(w.shape[-1] ** 0.5))
    m = w.reshape(-1, 1, g, g)
    m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    lo, hi = m.amin(dim=(-2, -1), keepdim=True), m.amax(dim=(-2, -1), keepdim=True)
    return (m - lo) / (hi - lo).clamp_min(1e-12)
