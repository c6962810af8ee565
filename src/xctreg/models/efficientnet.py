"""EfficientNet-B0 feature extractor (2D), without MONAI.

Why it exists: ``import monai`` costs ~3 s of a cold start (it imports scipy.signal,
matplotlib, pandas, ...), while a cold ``xctreg register`` must finish in under 3 s.
This module rebuilds only what the pose regressor uses of MONAI's
``EfficientNetBNFeatures("efficientnet-b0")``: the stem and the 16 MBConv blocks,
not the classifier head (1x1 conv to 1280 channels + linear layer, ~1.7 M unused
parameters). MONAI's network remains the test reference: the state-dict keys equal
its keys minus the head, the feature maps are numerically identical for the same
weights (also in training mode under the same seed: drop-connect draws the same
random numbers), and a seeded construction draws the same random numbers in the same
order, so it gives the same initial weights and leaves the RNG in the same state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

NOMINAL_SIZE = 224  # px: the input size B0's "same" paddings are computed for, once
STEM_CHANNELS = 32
SE_RATIO = 0.25  # squeeze width = SE_RATIO * the block's input channels
DROP_CONNECT_RATE = 0.2  # of the last block; block i uses rate * i / number of blocks
# (repeats, kernel, stride, expand ratio, input channels, output channels), one row per stack
B0_STACKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# MONAI's unused head, only to consume the same random numbers: 1x1 conv 320 -> 1280, linear 1280 -> 1000
_HEAD_CONV_WEIGHTS = 320 * 1280
_HEAD_FC_WEIGHTS, _HEAD_FC_BIASES = 1280 * 1000, 1000

NormSpec = str | tuple[str, dict[str, Any]]


def make_norm(norm: NormSpec, channels: int) -> nn.Module:
    """``("group", {"num_groups": G})`` -> GroupNorm(G, channels); ``("batch", {...})`` or
    ``"batch"`` -> BatchNorm2d(channels, ...); other keywords go to the torch class."""
    name, kwargs = (norm, {}) if isinstance(norm, str) else norm
    if name == "group":
        return nn.GroupNorm(num_channels=channels, **kwargs)
    if name == "batch":
        return nn.BatchNorm2d(num_features=channels, **kwargs)
    raise ValueError(f"norm must be 'group' or 'batch', got {name!r}")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TF "same" padding of a square (size, size) input, as F.pad's (left, right, top, bottom);
    the odd pixel goes right/bottom."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    lo, hi = total // 2, total - total // 2
    return (lo, hi, lo, hi)


def drop_connect(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth on a residual branch (B, C, H, W): in training, zero each sample with
    probability ``p`` and scale the kept ones by 1 / (1 - p); identity otherwise."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop-connect rate must be in [0, 1], got {p}")
    if not training:
        return x
    keep = 1.0 - p
    mask = torch.floor(torch.rand([x.shape[0], 1] + [1] * (x.dim() - 2), dtype=x.dtype, device=x.device) + keep)
    return x / keep * mask


def _pad(x: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    return F.pad(x, padding) if any(padding) else x


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation: (B, C_in, H, W) -> (B, C_out, H/s, W/s).

    ``size`` (px) is the nominal input size the depthwise conv's "same" padding is computed for.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, expand: int, size: int, norm: NormSpec, drop_rate: float
    ) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = make_norm(norm, mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self.depthwise_padding = same_padding(size, kernel, stride)
        self._bn1 = make_norm(norm, mid)
        squeezed = max(1, int(c_in * SE_RATIO))
        self._se_reduce = nn.Conv2d(mid, squeezed, 1)
        self._se_expand = nn.Conv2d(squeezed, mid, 1)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = make_norm(norm, c_out)
        self.residual = stride == 1 and c_in == c_out
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        h = F.silu(self._bn0(self._expand_conv(x)), inplace=True) if self.expand else x
        h = F.silu(self._bn1(self._depthwise_conv(_pad(h, self.depthwise_padding))), inplace=True)
        s = self._se_expand(F.silu(self._se_reduce(F.adaptive_avg_pool2d(h, 1)), inplace=True))
        h = self._bn2(self._project_conv(torch.sigmoid(s) * h))
        if not self.residual:
            return h
        if self.drop_rate:
            h = drop_connect(h, self.drop_rate, self.training)
        return h + x


class EfficientNetB0Features(nn.Module):
    """EfficientNet-B0 trunk returning the last feature map of each resolution.

    ``forward``: (B, in_channels, H, W) -> [(B, 16, H/2, W/2), (B, 24, H/4, W/4), (B, 40, H/8, W/8),
    (B, 112, H/16, W/16), (B, 320, H/32, W/32)] for H, W multiples of 32 (other sizes get the
    fixed paddings computed for 224 px), like MONAI's ``EfficientNetBNFeatures("efficientnet-b0",
    spatial_dims=2)``.
    """

    def __init__(self, in_channels: int = 1, norm: NormSpec = ("batch", {"eps": 1e-3, "momentum": 0.01})) -> None:
        super().__init__()
        size = NOMINAL_SIZE
        self._conv_stem = nn.Conv2d(in_channels, STEM_CHANNELS, 3, stride=2, bias=False)
        self.stem_padding = same_padding(size, 3, 2)
        self._bn0 = make_norm(norm, STEM_CHANNELS)
        size = math.ceil(size / 2)
        self._blocks = nn.Sequential()
        n_blocks = sum(stack[0] for stack in B0_STACKS)
        idx = 0
        for s, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(B0_STACKS):
            stack = nn.Sequential()
            for r in range(repeats):
                rate = DROP_CONNECT_RATE * (float(idx) / n_blocks)
                block = MBConv(c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1, expand, size, norm, rate)
                stack.add_module(str(idx), block)
                size = math.ceil(size / (stride if r == 0 else 1))
                idx += 1
            self._blocks.add_module(str(s), stack)
        # a feature map is taken before each stride-2 stack and at the end
        self.extract_after = [s for s in range(len(B0_STACKS)) if s + 1 == len(B0_STACKS) or B0_STACKS[s + 1][2] > 1]
        _consume_head_rng(initialising=False)
        self._initialize_weights()
        _consume_head_rng(initialising=True)

    def _initialize_weights(self) -> None:
        """TF EfficientNet init, in module order: conv weights ~ N(0, 2 / (k*k*C_out)), conv biases 0,
        BatchNorm 1 / 0; GroupNorm keeps torch's 1 / 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, levels: int | None = None) -> list[torch.Tensor]:
        """(B, in_channels, H, W) -> five feature maps, strides 2 to 32 (see the class docstring),
        or only the first ``levels`` of them: the stacks after the last one asked for are not run."""
        x = F.silu(self._bn0(self._conv_stem(_pad(x, self.stem_padding))))
        feats: list[torch.Tensor] = []
        for s, stack in enumerate(self._blocks):
            x = stack(x)
            if s in self.extract_after:
                feats.append(x)
                if levels is not None and len(feats) >= levels:
                    break
        return feats


def _consume_head_rng(initialising: bool) -> None:
    """Draw, and discard, the random numbers MONAI's unused head takes from the default
    generator: at construction (uniform weights of the conv and linear layer, linear bias)
    and at initialisation (normal conv weights, uniform linear weights). This keeps a seeded
    model, and everything built after it, identical to the MONAI-built one."""
    if initialising:
        torch.empty(_HEAD_CONV_WEIGHTS).normal_()
        torch.empty(_HEAD_FC_WEIGHTS).uniform_()
    else:
        for n in (_HEAD_CONV_WEIGHTS, _HEAD_FC_WEIGHTS, _HEAD_FC_BIASES):
            torch.empty(n).uniform_()
