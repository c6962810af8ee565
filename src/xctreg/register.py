"""Pose estimation for X-rays with a trained MODEL_DIR: regression, then refinement.

``Registrar(model_dir).register(image)`` gives the pose of an X-ray in the
model's camera (SPEC §3-5) with no manual start pose: the regressor's
estimate, refined by gradient descent on the 6 parameters through the
differentiable renderer (coarse to fine, NCC + gradient NCC, Adam with
separate rotation and translation learning rates, best pose kept, plateau
stop). ``refine`` can also be used alone from any start pose.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xctreg.errors import XctregError
from xctreg.geometry import Camera, Pose, PoseReference, params_to_matrix
from xctreg._fs import sha256_file
from xctreg.io.volume import Volume, read_volume
from xctreg.metrics import ncc, similarity
from xctreg.render import RenderConfig, Renderer
from xctreg.train import ParamNormalizer, load_model


@dataclass
class Regression:
    """The regressor's answer: the pose and the seconds it took."""

    pose: Pose
    params: np.ndarray
    seconds: float


@dataclass(frozen=True)
class RefineConfig:
    """Coarse-to-fine refinement: image sizes (px, longest side), iterations per level,
    Adam learning rates (degrees and mm per step), plateau patience and the render mode."""

    sizes: tuple[int, ...] = (32, 64, 128)
    iterations: tuple[int, ...] = (60, 50, 40)
    lr_rot_deg: float = 0.3
    lr_trans_mm: float = 1.0
    patience: int = 12
    min_gain: float = 1e-4
    restarts: int = 3
    restart_below: float = 0.6
    restart_spread: tuple[float, float] = (4.0, 8.0)
    render: RenderConfig = field(default_factory=RenderConfig)


@dataclass
class Refinement:
    """The refined parameters (deg, mm), the final similarity and the iterations used."""

    params: np.ndarray
    similarity: float
    iterations: int
    seconds: float


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gx = x[..., :-1, 1:] - x[..., :-1, :-1]
    gy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return gx, gy


def ncc_gradncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(NCC + mean of the two gradient NCCs) / 2, in [-1, 1]; the default refinement similarity."""
    ax, ay = _gradients(a)
    bx, by = _gradients(b)
    m = None if mask is None else mask[..., :-1, :-1]
    return 0.5 * ncc(a, b, mask) + 0.25 * (ncc(ax, bx, m) + ncc(ay, by, m))


def refine(
    volume: Volume,
    image: np.ndarray | torch.Tensor,
    camera: Camera,
    reference: PoseReference,
    start_params: np.ndarray,
    config: RefineConfig | None = None,
    mask: np.ndarray | None = None,
) -> Refinement:
    """Refine pose parameters (deg, mm) so that the DRR matches ``image`` (H, W, bone bright).

    ``mask`` (H, W, 1 = use) excludes pixels (e.g. collimated borders) from the similarity.
    """
    cfg = config or RefineConfig()
    t0 = time.perf_counter()
    target = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    m_full = None if mask is None else torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    p = torch.as_tensor(np.asarray(start_params, dtype=np.float64)).reshape(1, 6)
    best_s, total = -2.0, 0
    for size, iters in zip(cfg.sizes, cfg.iterations, strict=True):
        scale = min(1.0, size / max(camera.height, camera.width))
        h, w = max(8, round(camera.height * scale)), max(8, round(camera.width * scale))
        cam = camera.resized(h, w)
        r = Renderer(volume, cam, cfg.render, reference=reference)
        y = F.interpolate(target, size=(h, w), mode="area")[0, 0]
        mk = None if m_full is None else (F.interpolate(m_full, size=(h, w), mode="area")[0, 0] > 0.999).float()
        rot = p[:, :3].clone().requires_grad_(True)
        tr = p[:, 3:].clone().requires_grad_(True)
        opt = torch.optim.Adam([{"params": [rot], "lr": cfg.lr_rot_deg}, {"params": [tr], "lr": cfg.lr_trans_mm}])
        best_s, best_p, stale = -2.0, p.clone(), 0
        for _ in range(iters):
            q = torch.cat([rot, tr], 1)
            s = ncc_gradncc(r(q.float())[0, 0], y, mk)
            total += 1
            if float(s.detach()) > best_s + cfg.min_gain:
                best_s, best_p, stale = float(s.detach()), q.detach().clone(), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
            opt.zero_grad()
            (-s).backward()
            opt.step()
        p = best_p
    return Refinement(p[0].numpy(), best_s, total, time.perf_counter() - t0)


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

    def register(
        self,
        image: np.ndarray | torch.Tensor,
        camera: Camera | None = None,
        refine_pose: bool = True,
        config: RefineConfig | None = None,
        mask: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Regress, then (by default) refine; returns the SPEC §5 result object (pose JSON + extras)."""
        t0 = time.perf_counter()
        reg = self.regress(image, camera)
        cam = camera or self.camera
        params, iters, t_ref = reg.params, 0, 0.0
        if refine_pose:
            cfg = config or RefineConfig()
            ref = refine(self.ct(), image, cam, self.reference, reg.params, cfg, mask)
            rng = np.random.default_rng(0)
            k = 0
            while ref.similarity < cfg.restart_below and k < cfg.restarts:  # low similarity: try around the start
                d = rng.uniform(-1, 1, 6) * np.repeat(cfg.restart_spread, 3)
                alt = refine(self.ct(), image, cam, self.reference, reg.params + d, cfg, mask)
                alt.iterations += ref.iterations
                alt.seconds += ref.seconds
                ref = alt if alt.similarity > ref.similarity else Refinement(ref.params, ref.similarity, alt.iterations, alt.seconds)
                k += 1
            params, iters, t_ref = ref.params, ref.iterations, ref.seconds
        pose = Pose.from_params(params, self.reference)
        with torch.no_grad():
            drr = Renderer(self.ct(), cam, reference=self.reference)(torch.as_tensor(params, dtype=torch.float32)[None])[0, 0]
        sim = similarity(torch.as_tensor(np.asarray(image, dtype=np.float32)), drr)
        return {
            **pose.to_dict(),
            "initial": reg.pose.to_dict(),
            "similarity": sim,
            "timing_s": {"regress": reg.seconds, "refine": t_ref, "total": time.perf_counter() - t0},
            "iterations": iters,
        }
