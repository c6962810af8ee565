"""Pose estimation for X-rays with a trained MODEL_DIR: the regressor's automatic initial pose.

``Registrar(model_dir).regress(image)`` returns the pose of an X-ray in the
model's camera (SPEC §3-5): no manual start pose. Refinement by
differentiable rendering builds on this (issue 7).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xctreg.errors import XctregError
from xctreg.geometry import Camera, Pose, PoseReference, params_to_matrix
from xctreg.io.volume import Volume, read_volume, sha256_file
from xctreg.train import ParamNormalizer, load_model


@dataclass
class Regression:
    """The regressor's answer: the pose and the seconds it took."""

    pose: Pose
    params: np.ndarray
    seconds: float


def normalize_image(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W) attenuation image (bone bright, any linear scale) -> (1, 1, H, W) in [0, 1]."""
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if x.ndim != 2:
        raise XctregError(f"expected a 2D X-ray, got shape {tuple(x.shape)}")
    lo, hi = x.min(), x.max()
    if not torch.isfinite(lo + hi) or float(hi - lo) <= 1e-8 * max(1.0, abs(float(hi))):
        raise XctregError("the X-ray is blank (constant) or has non-finite pixels")
    return ((x - lo) / (hi - lo))[None, None]


class Registrar:
    """A trained patient-specific model, loaded once, for many X-rays."""

    def __init__(self, model_dir: str | Path, device: torch.device | str = "cpu", strict: bool = False, ct: Volume | None = None) -> None:
        self.dir = Path(model_dir)
        self.device = torch.device(device)
        self.model, self.cfg, self.meta = load_model(self.dir, device=self.device)
        self.camera = Camera.from_dict(self.meta["camera"])
        self.reference = PoseReference.from_dict(self.meta["reference"])
        self.norm = ParamNormalizer(self.cfg.ranges)
        self._ct = ct
        self.strict = strict

    def ct(self) -> Volume:
        """The CT the model was trained on (read from config.json's path; SHA-256 checked)."""
        if self._ct is None:
            path = self.meta.get("ct_path")
            if not path or not Path(path).exists():
                raise XctregError(f"the CT of {self.dir} ({path}) is not available")
            want = self.meta.get("ct_sha256")
            if want and sha256_file(path) != want:
                msg = f"the CT at {path} is not the one {self.dir} was trained on (SHA-256 differs)"
                if self.strict:
                    raise XctregError(msg)
                warnings.warn(msg, stacklevel=2)
            self._ct = read_volume(path, force=True)
        return self._ct

    @torch.no_grad()
    def attention(self, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """Self-attention map of the model for one X-ray, (H, W) in [0, 1] at the image size."""
        from xctreg.models import attention_map

        self.camera.check_image(tuple(np.shape(image)), name="X-ray")
        x = normalize_image(image)
        out = self.model(x.to(self.device))
        amap = attention_map(out, self.cfg.model.input_size)
        amap = F.interpolate(amap, size=(self.camera.height, self.camera.width), mode="bilinear", align_corners=False)
        return amap[0, 0].clamp(0, 1).float().cpu().numpy()

    @torch.no_grad()
    def regress(self, image: np.ndarray | torch.Tensor, camera: Camera | None = None) -> Regression:
        """Predict the pose of one X-ray (H, W), bone bright, in the model's camera geometry."""
        t0 = time.perf_counter()
        cam = camera or self.camera
        cam.check_image(tuple(np.shape(image)), name="X-ray")
        mine, theirs = self.camera, cam
        same = all(
            math.isclose(a, b, rel_tol=1e-6)
            for a, b in [
                (mine.sdd_mm, theirs.sdd_mm),
                (mine.pixel_spacing_mm[0] * mine.height, theirs.pixel_spacing_mm[0] * theirs.height),
                (mine.pixel_spacing_mm[1] * mine.width, theirs.pixel_spacing_mm[1] * theirs.width),
                ((mine.cx + 0.5) / mine.width, (theirs.cx + 0.5) / theirs.width),
                ((mine.cy + 0.5) / mine.height, (theirs.cy + 0.5) / theirs.height),
            ]
        )
        if not same:
            raise XctregError("the X-ray's geometry (sdd, detector size or principal point) differs from the model's; not supported yet")
        x = normalize_image(image)
        if x.shape[-2:] != (self.camera.height, self.camera.width):
            x = F.interpolate(x, size=(self.camera.height, self.camera.width), mode="area")
        q = self.model(x.to(self.device))["params"].float().cpu()
        p = self.norm.denorm(q)[0].double()
        T = params_to_matrix(p, self.reference).numpy()
        return Regression(Pose(T, self.reference), p.numpy(), time.perf_counter() - t0)
