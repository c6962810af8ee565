"""Patient-specific DRR datasets: cached shards (resumable) or rendered on the fly.

What is stored is the renderer's expensive, pose-dependent part: the material
line integrals L (3, H, W) in g/cm² (air, soft tissue, bone), float16. The
physics and image augmentations (data.augment) are applied when a sample is
drawn, so every epoch sees new kVp, noise, objects and artefacts.

Layout of a dataset folder::

    meta.json                 what was generated (and must match to resume)
    poses_{split}.npy         (N, 6) parameters rx ry rz tx ty tz, deg and mm, relative to the reference view
    {split}/shard_00000.npy   (n, 3, H, W) float16, memory-mapped on load
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xctreg._fs import atomic_path, read_json, sha256_file, write_json
from xctreg.data.poses import SplitConfig, make_splits
from xctreg.errors import XctregError
from xctreg.geometry import DEFAULT_SID_MM, PRESET_CAMERAS, Camera, PoseReference
from xctreg.io.volume import Volume
from xctreg.render import RenderConfig, Renderer

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataConfig:
    """A cached dataset: camera, pose splits, render settings and shard layout."""

    camera: Camera = field(default_factory=lambda: PRESET_CAMERAS["quick"])
    splits: SplitConfig = field(default_factory=SplitConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    sid_mm: float = DEFAULT_SID_MM
    view_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    shard_size: int = 256
    batch: int = 16

    def reference(self, volume: Volume) -> PoseReference:
        """The reference view of the poses: the CT's centre, ``sid_mm`` and ``view_deg`` (the C-arm direction)."""
        return PoseReference.centred_on(volume, self.sid_mm, self.view_deg)

    def bytes_per_sample(self) -> int:
        return 3 * self.camera.height * self.camera.width * 2


def _meta(cfg: DataConfig, volume: Volume, ct_sha256: str | None) -> dict[str, Any]:
    sp = cfg.splits
    r = cfg.render
    return {
        "format_version": FORMAT_VERSION,
        "ct_sha256": ct_sha256,
        "camera": cfg.camera.to_dict(),
        "reference": cfg.reference(volume).to_dict(),
        "splits": {"n_train": sp.n_train, "n_val": sp.n_val, "n_test": sp.n_test, "method": sp.method, "seed": sp.seed},
        "ranges": sp.ranges.to_dict(),
        "render": {"decomposition": asdict(r.decomposition), "step_mm": r.step_mm, "step_factor": r.step_factor,
                   "voxel_mm": r.voxel_mm},  # fmt: skip
        "shard_size": cfg.shard_size,
        "dtype": "float16",
        "sample_shape": [3, cfg.camera.height, cfg.camera.width],
        "units": "g/cm^2 line integrals of (air, soft_tissue, bone)",
    }


@dataclass
class Estimate:
    """Disk (bytes) and time (s) a generation will take."""

    n: int
    bytes: int
    seconds: float
    free_bytes: int


def _shard_path(root: Path, split: str, k: int) -> Path:
    return root / split / f"shard_{k:05d}.npy"


def _open_shard(path: Path, n: int, shape: list[int]) -> np.ndarray:
    """Memory-map a shard, checking it holds ``n`` float16 samples of ``shape``."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise XctregError(f"corrupt shard {path}: {str(exc).splitlines()[0][:120]}") from None
    if arr.shape != (n, *shape) or arr.dtype != np.float16:
        raise XctregError(f"corrupt shard {path}: shape {arr.shape} {arr.dtype}, expected {(n, *shape)} float16")
    return arr


def _shard_ok(path: Path, n: int, shape: list[int]) -> bool:
    try:
        _open_shard(path, n, shape)
    except XctregError:
        return False
    return True


def generate(
    volume: Volume,
    out_dir: str | Path,
    cfg: DataConfig,
    ct_path: str | Path | None = None,
    device: torch.device | str = "cpu",
    on_estimate: Callable[[Estimate], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render (or resume rendering) the cached dataset into ``out_dir``; returns it.

    The poses come from ``cfg.splits`` (seeded), so an interrupted run resumed
    later produces exactly the same files. Before any writing, the disk and
    time needs are estimated (``on_estimate``) and a dataset that would not fit
    on the disk is refused. A folder holding a different dataset is refused.
    ``progress(done, total)`` is called after every shard.
    """
    out = Path(out_dir)
    if cfg.shard_size < 1 or cfg.batch < 1:
        raise XctregError(f"shard size and batch must be >= 1, got {cfg.shard_size} and {cfg.batch}")
    sha = sha256_file(ct_path) if ct_path is not None else None
    meta = _meta(cfg, volume, sha)
    if (out / "meta.json").is_file():
        old = read_json(out / "meta.json", "dataset meta")
        old.pop("complete", None)
        if isinstance(old.get("reference"), dict):  # datasets written before views existed were AP
            old["reference"].setdefault("view_deg", [0.0, 0.0, 0.0])
        if old != meta:
            raise XctregError(f"{out} holds a different dataset (other CT, camera, poses or settings); use a new folder")
    elif out.exists() and any(out.iterdir()):
        raise XctregError(f"{out} exists and is not an xctreg dataset; use a new folder")

    splits = make_splits(cfg.splits)
    shape = meta["sample_shape"]
    todo: list[tuple[str, int, np.ndarray]] = []
    for split in SPLITS:
        params = splits[split]
        for k in range(math.ceil(len(params) / cfg.shard_size)):
            chunk = params[k * cfg.shard_size : (k + 1) * cfg.shard_size]
            if not _shard_ok(_shard_path(out, split, k), len(chunk), shape):
                todo.append((split, k, chunk))
    n_todo = sum(len(c) for _, _, c in todo)

    renderer = Renderer(volume, cfg.camera, cfg.render, device=device, reference=cfg.reference(volume))
    probe = torch.as_tensor(make_splits(SplitConfig(4, 0, 0, seed=cfg.splits.seed))["train"], dtype=torch.float32)
    with torch.no_grad():
        renderer.line_integrals(probe[:1])  # warm-up: kernel compilation, caches
        t = time.perf_counter()
        renderer.line_integrals(probe)
    per = (time.perf_counter() - t) / len(probe) * 1.15  # + writing
    existing = out if out.exists() else out.parent
    while not existing.exists():
        existing = existing.parent
    est = Estimate(n_todo, n_todo * cfg.bytes_per_sample(), n_todo * per, shutil.disk_usage(existing).free)
    if on_estimate is not None:
        on_estimate(est)
    if est.bytes > est.free_bytes:
        raise XctregError(
            f"the dataset needs {est.bytes / 1e9:.2f} GB but only {est.free_bytes / 1e9:.2f} GB are free at {existing}"
        )

    out.mkdir(parents=True, exist_ok=True)
    if not (out / "meta.json").is_file():
        write_json(out / "meta.json", meta)
    for split in SPLITS:
        path = out / f"poses_{split}.npy"
        if not path.is_file():
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, splits[split])
    done = 0
    for split, k, chunk in todo:
        imgs = np.empty((len(chunk), *shape), dtype=np.float16)
        for s in range(0, len(chunk), cfg.batch):
            p = torch.as_tensor(chunk[s : s + cfg.batch], dtype=torch.float32)
            with torch.no_grad():
                imgs[s : s + len(p)] = renderer.line_integrals(p).float().cpu().numpy().astype(np.float16)
        path = _shard_path(out, split, k)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, imgs)
        done += len(chunk)
        if progress is not None:
            progress(done, n_todo)
    write_json(out / "meta.json", {**meta, "complete": True})
    return out


class ShardDataset(torch.utils.data.Dataset):
    """One split of a cached dataset: items are (L (3, H, W) float32 g/cm², params (6,) float32)."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise XctregError(f"{self.root} is not an xctreg dataset (no meta.json)")
        self.meta = read_json(meta_path, "dataset meta")
        if not self.meta.get("complete"):
            raise XctregError(f"dataset {self.root} is incomplete; run the generation again to resume it")
        if split not in SPLITS:
            raise XctregError(f"unknown split {split!r}")
        try:
            self.params = np.load(self.root / f"poses_{split}.npy")
        except (OSError, ValueError):
            raise XctregError(f"pose table of split {split} in {self.root} is missing or corrupt") from None
        shape = self.meta["sample_shape"]
        size = int(self.meta["shard_size"])
        self.shards = []
        for k in range(math.ceil(len(self.params) / size)):
            n = min(size, len(self.params) - k * size)
            self.shards.append(_open_shard(_shard_path(self.root, split, k), n, shape))
        self.shard_size = size
        self.camera = Camera.from_dict(self.meta["camera"])
        self.reference = PoseReference.from_dict(self.meta["reference"])

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        arr = self.shards[i // self.shard_size][i % self.shard_size]
        return torch.from_numpy(np.asarray(arr, dtype=np.float32)), torch.as_tensor(self.params[i], dtype=torch.float32)


class OnTheFlyDataset(torch.utils.data.IterableDataset):
    """Endless batches rendered in the loop: (L (B, 3, H, W) g/cm², params (B, 6)).

    Poses are drawn fresh from ``sampler(n, generator)`` (CPU or CUDA renderer).
    """

    def __init__(self, renderer: Renderer, sampler: Callable[[int, np.random.Generator], np.ndarray], batch: int, seed: int = 0) -> None:
        self.renderer, self.sampler, self.batch, self.seed = renderer, sampler, batch, seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(self.seed)
        while True:
            p = torch.as_tensor(self.sampler(self.batch, rng), dtype=torch.float32)
            with torch.no_grad():
                L = self.renderer.line_integrals(p.to(self.renderer.device))
            yield L, p
