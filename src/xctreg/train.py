"""Patient-specific training of the pose regressor: ``xctreg train``.

Stages of the incremental curriculum (*) each have their own cached dataset
of poses drawn from a *scaled* copy of the sampling ranges and an
augmentation strength; a stage trains on its own data plus a rehearsal share
of the earlier stages. With ``curriculum=False`` one stage covers the full
range at full strength with the same total data (the quick preset's choice).

MODEL_DIR holds: ``config.json`` (everything needed to rebuild and run the
model: camera, reference, ranges, model config, CT path and SHA-256),
``last.pt`` / ``best.pt`` (atomic checkpoints), ``train_log.csv`` and
``val_metrics.json``; the cached datasets live in ``MODEL_DIR/data/``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from xctreg._fs import atomic_path, read_json, sha256_file, write_json
from xctreg.data.augment import AugmentConfig, augment, clean_image, warm_spectra
from xctreg.data.dataset import DataConfig, ShardDataset, generate
from xctreg.data.poses import SplitConfig
from xctreg.errors import XctregError
from xctreg.geometry import DEFAULT_SDD_MM, DEFAULT_SID_MM, PRESET_CAMERAS, Camera, PoseRanges, PoseReference, PoseSpace, euler_to_rotmat, parse_view, view_name
from xctreg.io.volume import Volume
from xctreg.metrics import mtre, target_points
from xctreg.models import ModelConfig, PoseRegressor
from xctreg.models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from xctreg.render.drr import RenderConfig, auto_voxel_mm


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: range scale (0..1], augmentation strength, share of steps and of data."""

    range_scale: float
    aug_strength: float
    step_share: float
    n_train: int


@dataclass(frozen=True)
class TrainConfig:
    """One typed config for a training run (see the presets)."""

    camera: Camera = field(default_factory=lambda: PRESET_CAMERAS["quick"])
    model: ModelConfig = field(default_factory=ModelConfig)
    ranges: PoseRanges = field(default_factory=PoseRanges)
    sid_mm: float = DEFAULT_SID_MM
    view_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    stages: tuple[Stage, ...] = (Stage(0.35, 0.3, 0.2, 1500), Stage(0.7, 0.7, 0.3, 2500), Stage(1.0, 1.0, 0.5, 6000))
    curriculum: bool = True
    rehearsal: float = 0.25
    n_val: int = 200
    batch: int = 32
    steps: int = 4000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 150
    clip_norm: float = 1.0
    loss: Literal["tre", "geodesic"] = "tre"
    w_param: float = 1.0
    w_point: float = 1.0
    point_scale_mm: float = 20.0
    w_recon: float = 1.0
    w_latent: float = 1e-3
    val_every: int = 250
    ckpt_every: int = 250
    patience: int = 6
    seed: int = 0
    amp: bool = True
    #: render the cached DRRs at the network's input size (from the detector's own volume level)
    #: instead of the detector's and averaging: 2.3x faster data at 64² from 128². On in the
    #: quick preset; off by default, so that a saved config from before resumes with its own
    #: data (docs/model.md, "A 15-minute build: what was tried")
    data_at_input: bool = False

    def effective_stages(self) -> tuple[Stage, ...]:
        if self.curriculum:
            return self.stages
        return (Stage(1.0, 1.0, 1.0, sum(s.n_train for s in self.stages)),)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["camera"] = self.camera.to_dict()
        d["ranges"] = self.ranges.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["camera"] = Camera.from_dict(d["camera"])
        d["model"] = ModelConfig(**d["model"])
        d["ranges"] = PoseRanges.from_dict(d["ranges"])
        d["stages"] = tuple(Stage(**s) for s in d["stages"])
        d["view_deg"] = parse_view(d.get("view_deg", (0.0, 0.0, 0.0)))  # models before views were AP
        d.setdefault("data_at_input", False)  # runs before 2026-12-07 rendered their data at the detector's size
        return cls(**d)

    def space(self, volume: Volume) -> PoseSpace:
        """The pose parameterisation of this model: the CT's centre, sid, view and ranges."""
        return PoseSpace(PoseReference.centred_on(volume, self.sid_mm, self.view_deg), self.ranges)


def preset(name: str) -> TrainConfig:
    """``quick``: CPU, 128² X-rays, 64² network input, 4000 steps in one stage at the full pose
    range and augmentation, about 14 min on 2 cores (data included). One stage, not the
    method's curriculum: at this budget the curriculum's narrow early stages cost the
    full-range stage steps. Its training DRRs are rendered at the input size
    (``data_at_input``) and (B) reconstructs at 32² (``ModelConfig.recon_size``): 4.5–5 min
    faster than 128² DRRs and the full decoder, and as accurate (three builds against two on 120
    independent X-rays, paired: realistic +0.04 ± 0.19 mm, clean −0.03 ± 0.10; docs/model.md).
    The curriculum against one stage on the chest CT at 4000 steps (regressor alone on
    independent DiffDRR X-rays, ``bench/realism.py``'s tuning split, seed 1234, 20 per set,
    median mTRE): clean 4.99 → 3.74 mm, an iris 7.18 → 6.02, realistic 7.16 → 5.08 (p95
    12.31 → 8.71), every effect 7.28 → 6.38; the ablation (docs/model.md) agrees at 2000 steps.
    ``paper``: GPU, 256² X-rays and input, the full schedule with the method's curriculum."""
    if name == "quick":
        return TrainConfig(curriculum=False, data_at_input=True, model=ModelConfig(recon_size=32))
    if name == "paper":
        return TrainConfig(
            camera=PRESET_CAMERAS["paper"],
            model=ModelConfig(input_size=256, embed_dim=256, heads=8),
            stages=(Stage(0.35, 0.3, 0.2, 8000), Stage(0.7, 0.7, 0.3, 12000), Stage(1.0, 1.0, 0.5, 30000)),
            batch=64,
            steps=30000,
            warmup_steps=1000,
            val_every=1000,
            ckpt_every=1000,
            n_val=500,
        )
    raise XctregError(f"unknown preset {name!r}; use quick or paper")


# ------------------------------------------------------------------ loss
def pose_loss(q_pred: torch.Tensor, p_true: torch.Tensor, space: PoseSpace, points: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The training loss of (B, 6) normalised predictions against (B, 6) true parameters (deg, mm).

    ``cfg.loss`` "tre" (the default): L1 on normalised parameters + mean point distance
    (mm / point_scale_mm) over target points. "geodesic" (the baseline after Salehi et al., TMI
    2018): the geodesic angle between predicted and true rotations (rad, over the rotation
    ranges' mean half-width) + L1 on the normalised translations; no point term."""
    if cfg.loss == "geodesic":
        return geodesic_loss(q_pred, p_true, space)
    l_param = F.smooth_l1_loss(q_pred, space.normalize(p_true), beta=0.05)
    p_pred = space.denormalize(q_pred)
    Tp = space.to_matrix(p_pred.double()).float()
    Tt = space.to_matrix(p_true.double()).float()
    l_point = mtre(Tp, Tt, points).mean() / cfg.point_scale_mm
    return cfg.w_param * l_param + cfg.w_point * l_point


def geodesic_loss(q_pred: torch.Tensor, p_true: torch.Tensor, space: PoseSpace) -> torch.Tensor:
    """Geodesic rotation loss + L1 translation loss (``pose_loss`` with ``loss="geodesic"``)."""
    import roma

    p_pred = space.denormalize(q_pred)
    R_pred = euler_to_rotmat(p_pred[:, :3].double())
    R_true = euler_to_rotmat(p_true[:, :3].double())
    lo, hi = space.ranges.bounds()
    scale = float(np.radians(np.mean((hi[:3] - lo[:3]) / 2)))
    l_rot = (roma.rotmat_geodesic_distance(R_pred, R_true) / scale).mean().float()
    l_trans = F.smooth_l1_loss(q_pred[:, 3:], space.normalize(p_true)[:, 3:], beta=0.05)
    return l_rot + l_trans


# ------------------------------------------------------------------ training
@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    step: int
    best_val_median_mtre_mm: float
    val: dict[str, float]
    seconds: float


def init_distributed(device: torch.device | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank). Under ``torchrun`` (WORLD_SIZE > 1) this joins the process
    group (NCCL for a CUDA device, else Gloo); a plain run is the single-process case (0, 1, 0)."""
    import datetime
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    dist = torch.distributed
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        # rank 0 renders the training data while the others wait: allow hours, not the 10 min default
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=6))
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def stage_at(step: int, cfg: TrainConfig) -> int:
    """The curriculum stage of ``step``: stages take ``step_share`` of ``cfg.steps`` each, in order."""
    stages = cfg.effective_stages()
    acc = 0.0
    for k, s in enumerate(stages):
        acc += s.step_share / sum(x.step_share for x in stages)
        if step < acc * cfg.steps:
            return k
    return len(stages) - 1


def warmup_cosine(step: int, cfg: TrainConfig) -> float:
    """The learning rate of ``step``: linear warm-up over ``cfg.warmup_steps``, then a cosine
    decay from ``cfg.lr`` to 0 at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class CurriculumSampler:
    """Which cached images make up a step's batch: ``cfg.batch`` images of the step's stage,
    each replaced with probability ``cfg.rehearsal`` by one of an earlier stage (so the wide
    stages do not make the network forget the narrow ones). Draws come from ``g``."""

    def __init__(self, stage_sets: list[ShardDataset], cfg: TrainConfig, g: torch.Generator) -> None:
        self.sets, self.cfg, self.g = stage_sets, cfg, g

    def __call__(self, step: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(stage, line integrals (B, 3, H, W) g/cm², parameters (B, 6) deg/mm)."""
        k, g = stage_at(step, self.cfg), self.g
        picks = []
        for _ in range(self.cfg.batch):
            src = k
            if k > 0 and float(torch.rand((), generator=g)) < self.cfg.rehearsal:
                src = int(torch.randint(0, k, (), generator=g))
            picks.append(self.sets[src][int(torch.randint(0, len(self.sets[src]), (), generator=g))])
        return k, torch.stack([a for a, _ in picks]), torch.stack([b for _, b in picks])


@dataclass
class TrainState:
    """Everything a checkpoint holds and a resumed run restores: the model, optimiser and AMP
    scaler, the data and augmentation generators, and the step, best validation median
    mTRE (mm), checks without improvement and validation history."""

    model: PoseRegressor
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    g_data: torch.Generator
    g_aug: torch.Generator
    step: int = 0
    best: float = float("inf")
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def new(cls, cfg: TrainConfig, device: torch.device, rank: int = 0) -> TrainState:
        """A fresh run: the seeded model (channels-last: about 20 % faster convolutions on the CPU,
        and on GPUs with AMP), AdamW, and generators seeded per rank (each draws its own batches)."""
        torch.manual_seed(cfg.seed)
        model = PoseRegressor(cfg.model).to(device, memory_format=torch.channels_last)
        fused = device.type in ("cpu", "cuda")  # one kernel for all parameters: 7.6 -> 2.8 ms a step on 2 cores
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
        g_data = torch.Generator().manual_seed(cfg.seed + 7919 * rank)
        g_aug = torch.Generator().manual_seed(cfg.seed + 1 + 7919 * rank)
        return cls(model, opt, scaler, g_data, g_aug)

    def state_dict(self, cfg: TrainConfig) -> dict[str, Any]:
        dev = next(self.model.parameters()).device
        extra = {"cuda_rng": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {}
        return {
            **extra,
            "scaler": self.scaler.state_dict(),
            "history": json.dumps(self.history),
            "format": CHECKPOINT_FORMAT,
            "config": json.dumps(cfg.to_dict()),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "g_data": self.g_data.get_state(),
            "g_aug": self.g_aug.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, st: dict[str, Any], cfg: TrainConfig, rank: int = 0, world: int = 1) -> None:
        """Restore a checkpoint. One process continues exactly (generators and torch's RNG);
        with several ranks each reseeds its generators from (seed, rank, step)."""
        try:
            self.model.load_state_dict(st["model"])
            self.opt.load_state_dict(st["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:  # e.g. a run begun while the backbone was MONAI's
            reason = str(exc).splitlines()[0][:120]
            raise XctregError(f"the checkpoint was written by another xctreg version or model ({reason}); "
                              "start the run again in a new folder") from None  # fmt: skip
        self.step, self.best, self.bad_epochs = int(st["step"]), float(st["best"]), int(st["bad_epochs"])
        self.history = json.loads(st.get("history", "[]"))
        if "scaler" in st and self.scaler.is_enabled():
            self.scaler.load_state_dict(st["scaler"])
        dev = next(self.model.parameters()).device
        if world == 1:
            if dev.type == "cuda" and "cuda_rng" in st:
                torch.cuda.set_rng_state(st["cuda_rng"], dev)
            self.g_data.set_state(st["g_data"])
            self.g_aug.set_state(st["g_aug"])
            torch.set_rng_state(st["torch_rng"])
        else:
            self.g_data.manual_seed(cfg.seed + 7919 * rank + 104729 * self.step)
            self.g_aug.manual_seed(cfg.seed + 1 + 7919 * rank + 104729 * self.step)

    def record(self, row: dict[str, float]) -> bool:
        """Add a validation row; True when it is the best so far (it then resets the patience)."""
        self.history.append({"step": self.step, **row})
        if row["median_mtre_mm"] < self.best:
            self.best, self.bad_epochs = row["median_mtre_mm"], 0
            return True
        self.bad_epochs += 1
        return False


class TrainLog:
    """Where training reports: the progress callback, MODEL_DIR/train_log.csv (every 25 steps
    and at each validation), the console line per validation and, optionally, TensorBoard."""

    HEADER = "step,stage,lr,loss,val_median_mtre_mm,val_sr_10mm,seconds\n"

    def __init__(self, folder: Path, cfg: TrainConfig, log: Callable[[str], None], progress: Callable[[str, int, int], None] | None,
                 writer: Any = None, fresh: bool = True) -> None:  # fmt: skip
        self.cfg, self.log, self.progress, self.writer = cfg, log, progress, writer
        self.path, self.running, self.t0 = folder / "train_log.csv", [], time.perf_counter()
        if fresh or not self.path.exists():
            with atomic_path(self.path) as tmp:
                tmp.write_text(self.HEADER, encoding="utf-8")

    def step(self, step: int, stage: int, loss: float, val: dict[str, float] | None) -> None:
        """After ``step`` steps: its loss, and the validation row if one was computed."""
        self.running.append(loss)
        if self.progress is not None:
            self.progress("train", step, self.cfg.steps)
        lr = warmup_cosine(step - 1, self.cfg)
        if val is not None:
            self.log(f"step {step}: loss {np.mean(self.running):.4f}, val median mTRE {val['median_mtre_mm']:.2f} mm, SR@10 {val['sr_10mm']:.2%}")
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            for key, v in (val or {}).items():
                self.writer.add_scalar(f"val/{key}", v, step)
        if step % 25 == 0 or val is not None:
            with open(self.path, "a", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow([step, stage, f"{lr:.3g}", f"{np.mean(self.running):.5f}",
                                         val and f"{val['median_mtre_mm']:.3f}", val and f"{val['sr_10mm']:.4f}",
                                         f"{time.perf_counter() - self.t0:.1f}"])  # fmt: skip
            self.running = []

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Trainer:
    """Builds data, model and optimiser for MODEL_DIR and runs (or resumes) training."""

    def __init__(
        self,
        volume: Volume,
        model_dir: str | Path,
        cfg: TrainConfig,
        ct_path: str | Path | None = None,
        device: torch.device | str = "cpu",
        log: Callable[[str], None] = print,
    ) -> None:
        self.volume, self.dir, self.cfg, self.device, self.log = volume, Path(model_dir), cfg, torch.device(device), log
        self.ct_path = Path(ct_path) if ct_path is not None else None
        self.space = cfg.space(volume)
        self.ref = self.space.reference
        pts = target_points(volume, n=64, seed=cfg.seed)
        self.points = torch.as_tensor(pts, dtype=torch.float32)
        self.val_points = torch.as_tensor(target_points(volume, n=1000, seed=0), dtype=torch.float32)
        ext = np.ptp(volume.corners_world(), axis=0) / 2.0
        self.iso = torch.tensor(self.ref.isocenter_mm, dtype=torch.float32)
        self.half = torch.tensor(ext, dtype=torch.float32)

    # -------------------------------------------------------------- set-up
    def write_config(self) -> None:
        sha = sha256_file(self.ct_path) if self.ct_path is not None else None
        write_json(
            self.dir / "config.json",
            {
                "format": "xctreg-model-1",
                "train": self.cfg.to_dict(),
                "camera": self.cfg.camera.to_dict(),
                **self.space.to_dict(),  # "reference" (isocenter, sid, view) and "ranges"
                "view": view_name(self.ref.view_deg),
                "ct_path": str(self.ct_path.resolve()) if self.ct_path else None,
                "ct_sha256": sha,
            },
        )
        write_json(self.dir / "geometry.json", self.cfg.camera.to_dict())

    def datasets(self, progress: Callable[[str, int, int], None] | None = None) -> tuple[list[ShardDataset], ShardDataset]:
        """Generate (or resume) the per-stage cached datasets and the validation set."""
        cfg = self.cfg
        out = []
        for k, st in enumerate(cfg.effective_stages()):
            ranges = cfg.ranges.scaled(st.range_scale)
            n_val = cfg.n_val if k == len(cfg.effective_stages()) - 1 else 0
            dcfg = DataConfig(camera=self.data_camera, splits=SplitConfig(st.n_train, n_val, 0, ranges, "uniform", cfg.seed + 1000 * k),
                              render=self.data_render, sid_mm=cfg.sid_mm, view_deg=cfg.view_deg)  # fmt: skip
            generate(self.volume, self.dir / "data" / f"stage{k}", dcfg, self.ct_path, self.device,
                     progress=(lambda d, t, k=k: progress(f"data stage {k}", d, t)) if progress else None)  # fmt: skip
            out.append(ShardDataset(self.dir / "data" / f"stage{k}", "train"))
        val = ShardDataset(self.dir / "data" / f"stage{len(out) - 1}", "val")
        return out, val

    @property
    def data_camera(self) -> Camera:
        """The camera of the cached DRRs: the detector's field of view at the network's input
        size when ``cfg.data_at_input`` and the input is coarser, else the detector itself."""
        cam, S = self.cfg.camera, self.cfg.model.input_size
        if self.cfg.data_at_input and S * S < cam.height * cam.width:
            return cam.resized(S, S)
        return cam

    @property
    def data_render(self) -> RenderConfig:
        """How the cached DRRs are rendered: from the volume level the detector's pixels resolve
        (``auto_voxel_mm``), whatever ``data_camera``'s size."""
        if self.data_camera == self.cfg.camera:
            return RenderConfig()
        return RenderConfig(voxel_mm=auto_voxel_mm(self.cfg.camera, self.cfg.sid_mm))

    # -------------------------------------------------------------- one batch
    def make_batch(self, L: torch.Tensor, p: torch.Tensor, strength: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented network input (B, 1, S, S) and the clean target image (B, 1, S, S), on the
        trainer's device (the augmentation runs there; its random draws come from ``g``, on the CPU).
        The line integrals are averaged to S once, for both; ``augment`` draws the objects at the
        detector's size and averages them to S, and runs the rest of the augmentation at S."""
        S = self.cfg.model.input_size
        L = L.to(self.device).float()
        if L.shape[-2:] != (S, S):
            L = F.interpolate(L, size=(S, S), mode="area")
        T = self.space.to_matrix(p.double()).to(self.device)
        x = augment(L, AugmentConfig().scaled(strength), g, T, self.cfg.camera, self.iso, self.half)
        return x, clean_image(L)

    def loss(self, model: torch.nn.Module, x: torch.Tensor, clean: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        out = model(x)
        with torch.autocast(device_type=x.device.type, enabled=False):  # poses in mm need float32 at least
            loss = pose_loss(out["params"].float(), p, self.space, self.points.to(x.device), self.cfg)
        if "recon" in out:
            if clean.shape[-2:] != out["recon"].shape[-2:]:  # a decoder of fewer stages (ModelConfig.recon_size)
                clean = F.interpolate(clean, size=out["recon"].shape[-2:], mode="area")
            loss = loss + self.cfg.w_recon * F.l1_loss(out["recon"].float(), clean)
            loss = loss + self.cfg.w_latent * out["latent"].float().pow(2).mean()
        return loss

    @torch.no_grad()
    def validate(self, model: PoseRegressor, val: ShardDataset) -> dict[str, float]:
        """Median/mean mTRE (mm) and SR on the validation set, augmented at full strength with a fixed seed."""
        model.eval()
        g = torch.Generator().manual_seed(12345)
        errs = []
        for s in range(0, len(val), 64):
            items = [val[i] for i in range(s, min(len(val), s + 64))]
            L = torch.stack([a for a, _ in items])
            p = torch.stack([b for _, b in items])
            x, _ = self.make_batch(L, p, 1.0, g)
            q = model(x.to(self.device))["params"].float().cpu()
            Tp = self.space.to_matrix(self.space.denormalize(q).double())
            Tt = self.space.to_matrix(p.double())
            errs.append(mtre(Tp, Tt, self.val_points.double()).numpy())
        model.train()
        e = np.concatenate(errs)
        return {
            "median_mtre_mm": float(np.median(e)),
            "mean_mtre_mm": float(np.mean(e)),
            "sr_10mm": float(np.mean(e < 10)),
            "sr_20mm": float(np.mean(e < 20)),
        }

    # -------------------------------------------------------------- the loop
    def fit(
        self,
        resume: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
        max_steps: int | None = None,
        tensorboard: bool = False,
    ) -> TrainResult:
        """Train (or resume) until ``cfg.steps``, early stopping, or ``max_steps`` (for tests/interrupts).

        ``tensorboard``: also log loss, learning rate and validation to MODEL_DIR/tensorboard
        (needs the ``tensorboard`` package)."""
        joined = torch.distributed.is_available() and torch.distributed.is_initialized()
        try:
            return self._fit(resume, progress, max_steps, tensorboard)
        finally:
            # leave the process group that fit joined, so that no rank exits while a peer's Gloo
            # connection is still open (an unclean exit can abort the slower rank)
            if not joined and torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    def _fit(self, resume: bool, progress: Callable[[str, int, int], None] | None, max_steps: int | None,
             tensorboard: bool) -> TrainResult:  # fmt: skip
        cfg = self.cfg
        rank, world, local = init_distributed(self.device)
        if world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        main = rank == 0
        if not main:
            self.log = lambda s: None
            progress = None
        board = self._tensorboard() if tensorboard and main else None  # checked before hours of data rendering
        last = self._check_run(resume)
        stage_sets, val = self._data(main, world, progress)
        warm_spectra()
        state = TrainState.new(cfg, self.device, rank)
        if resume:
            try:
                state.load_state_dict(load_checkpoint(last), cfg, rank, world)
            except XctregError as exc:
                raise XctregError(f"cannot resume {last}: {exc}") from None
            self.log(f"resuming at step {state.step}")
        net = self._parallel(state.model, world, local)
        t0 = time.perf_counter()
        writer = board(str(self.dir / "tensorboard")) if board is not None else None
        logs = TrainLog(self.dir, cfg, self.log, progress, writer, fresh=not resume) if main else None
        sample = CurriculumSampler(stage_sets, cfg, state.g_data)
        stop_at = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
        try:
            self._loop(state, net, sample, val, logs, stop_at, world)
        finally:
            if logs is not None:
                logs.close()
        if world > 1:
            torch.distributed.barrier()
        if main:
            self._store_levels()
        return TrainResult(state.step, state.best, state.history[-1] if state.history else {}, time.perf_counter() - t0)

    def _loop(self, state: TrainState, net: torch.nn.Module, sample: CurriculumSampler, val: ShardDataset,
              logs: TrainLog | None, stop_at: int, world: int) -> None:  # fmt: skip
        """The algorithm: draw and augment a batch, take a step, validate, checkpoint, stop early."""
        cfg, main = self.cfg, logs is not None
        state.model.train()
        while state.step < stop_at:
            stage, L, p = sample(state.step)
            x, clean = self.make_batch(L, p, cfg.effective_stages()[stage].aug_strength, state.g_aug)
            loss = self._step(state, net, x, clean, p)
            state.step += 1
            row = None
            if main and (state.step % cfg.val_every == 0 or state.step == cfg.steps):
                row = self.validate(state.model, val)
                if state.record(row):
                    save_checkpoint(self.dir / "best.pt", state.state_dict(cfg))
                write_json(self.dir / "val_metrics.json", {"best_median_mtre_mm": state.best, "history": state.history})
            if logs is not None:
                logs.step(state.step, stage, loss, row)
            if main and (state.step % cfg.ckpt_every == 0 or state.step == stop_at):
                save_checkpoint(self.dir / "last.pt", state.state_dict(cfg))
            if self._stop_early(state, world):
                self.log(f"early stop at step {state.step}: no validation improvement in {cfg.patience} checks")
                if main:
                    save_checkpoint(self.dir / "last.pt", state.state_dict(cfg))
                return

    def _step(self, state: TrainState, net: torch.nn.Module, x: torch.Tensor, clean: torch.Tensor, p: torch.Tensor) -> float:
        """One optimiser step at the scheduled learning rate (AMP on CUDA, clipped gradients); the loss."""
        for group in state.opt.param_groups:
            group["lr"] = warmup_cosine(state.step, self.cfg)
        with torch.autocast(device_type=self.device.type, enabled=state.scaler.is_enabled()):
            loss = self.loss(net, x.to(self.device), clean.to(self.device), p.to(self.device))
        if not torch.isfinite(loss):
            raise XctregError(f"training diverged at step {state.step} (loss {float(loss)}); try a lower learning rate")
        state.opt.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.opt)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), self.cfg.clip_norm)
        state.scaler.step(state.opt)
        state.scaler.update()
        return float(loss.detach())

    def _stop_early(self, state: TrainState, world: int) -> bool:
        """No validation improvement in ``cfg.patience`` checks; rank 0 decides for every rank."""
        stop = state.bad_epochs >= self.cfg.patience
        if world > 1:
            flag = torch.tensor([float(stop)], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    @staticmethod
    def _tensorboard() -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise XctregError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter

    def _check_run(self, resume: bool) -> Path:
        """MODEL_DIR/last.pt, after checking that a new run does not clobber one and that a
        resumed run has one, trained with this configuration."""
        self.dir.mkdir(parents=True, exist_ok=True)
        last = self.dir / "last.pt"
        if not resume and last.exists():
            raise XctregError(f"{self.dir} already holds a training run; pass --resume to continue it or use a new folder")
        if resume and not last.exists():
            raise XctregError(f"nothing to resume in {self.dir} (no last.pt)")
        if resume:
            saved = read_json(self.dir / "config.json", "model config").get("train")
            try:  # through TrainConfig, so that fields added since (with their defaults) compare equal
                saved = json.loads(json.dumps(TrainConfig.from_dict(saved).to_dict()))
            except (KeyError, TypeError, ValueError, XctregError):
                saved = None
            if saved != json.loads(json.dumps(self.cfg.to_dict())):
                raise XctregError(f"{self.dir} was trained with another configuration; resume with the same preset/seed")
        return last

    def _data(self, main: bool, world: int, progress: Callable[[str, int, int], None] | None) -> tuple[list[ShardDataset], ShardDataset]:
        """The stages' training sets and the validation set: rank 0 writes the config and renders
        (or resumes) the cached data; the other ranks wait for it, then read it."""
        if main:
            self.write_config()
            stage_sets, val = self.datasets(progress)
        if world > 1:
            torch.distributed.barrier()
        if not main:
            n_stages = len(self.cfg.effective_stages())
            stage_sets = [ShardDataset(self.dir / "data" / f"stage{k}", "train") for k in range(n_stages)]
            val = ShardDataset(self.dir / "data" / f"stage{n_stages - 1}", "val")
        return stage_sets, val

    def _parallel(self, model: torch.nn.Module, world: int, local: int) -> torch.nn.Module:
        """The model, wrapped in DistributedDataParallel under torchrun."""
        if world == 1:
            return model
        # every variant leaves some backbone/projection weights unused (e.g. A+C never reads the stride-32 stage)
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local] if self.device.type == "cuda" else None, find_unused_parameters=True
        )

    def _store_levels(self) -> None:
        """Store the CT levels that ``register`` renders from in the model folder, so that a fresh
        ``xctreg register`` process loads them instead of downsampling the CT (render.levels)."""
        from xctreg.register import Registrar

        if self.ct_path is None:
            return
        paths = Registrar(self.dir).precompute()  # read back from ct_path: the CT whose SHA-256 config.json holds
        self.log(f"stored {len(paths)} CT levels for registration in {self.dir / 'levels'}")


def quick_test_config(**changes: Any) -> TrainConfig:
    """A tiny configuration for tests: 32² X-rays, 32² input, few steps."""
    base = TrainConfig(
        camera=Camera(DEFAULT_SDD_MM, 32, 32, (12.8, 12.8)),
        model=ModelConfig(input_size=32, embed_dim=32, heads=2, dropout=0.0),
        stages=(Stage(0.5, 0.0, 0.5, 24), Stage(1.0, 0.0, 0.5, 24)),
        n_val=8,
        batch=4,
        steps=6,
        warmup_steps=2,
        val_every=3,
        ckpt_every=3,
    )
    return replace(base, **changes)
