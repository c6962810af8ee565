"""Simulated X-rays (DRRs) of a CT at given or random poses, written to disk (.npy, 16-bit .png, .tiff or .dcm)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from xctreg._fs import write_json
from xctreg.geometry import DEFAULT_SID_MM, Camera, Pose, PoseRanges, PoseReference, PoseSpace, rotation_to_positioner
from xctreg.io.volume import Volume
from xctreg.io.xray import XRAY_SUFFIXES, write_xray
from xctreg.render import RenderConfig, Renderer
from xctreg.errors import XctregError



@dataclass(frozen=True)
class SimulateConfig:
    """What to render: the renderer config, the source-isocenter distance and the seed."""

    render: RenderConfig = field(default_factory=RenderConfig)
    sid_mm: float = DEFAULT_SID_MM
    seed: int = 0
    sop: str = "dx"
    view_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sid_mm) and self.sid_mm > 0):
            raise XctregError(f"sid_mm (--sid-mm) must be positive, got {self.sid_mm:g}")

    def reference(self, volume: Volume) -> PoseReference:
        """The reference view of the parameters: the CT's centre, ``sid_mm`` and ``view_deg`` (the C-arm direction)."""
        return PoseReference.centred_on(volume, self.sid_mm, self.view_deg)


def pose_json_path(image_path: Path) -> Path:
    """``drr.png`` -> ``drr.pose.json`` (beside the image)."""
    name = image_path.name
    for s in XRAY_SUFFIXES:
        if name.lower().endswith(s):
            name = name[: -len(s)]
            break
    return image_path.with_name(name + ".pose.json")


def simulate_one(
    volume: Volume,
    camera: Camera,
    pose: Pose,
    out: str | os.PathLike[str],
    config: SimulateConfig | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Path, Path]:
    """Render one DRR at ``pose``; write the image and its pose JSON; return both paths."""
    cfg = config or SimulateConfig()
    out = Path(out)
    reference = pose.reference or cfg.reference(volume)
    pose = Pose(pose.T_cam_from_world, reference)
    r = Renderer(volume, camera, cfg.render, device=device, reference=reference)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    with torch.no_grad():
        img = r(torch.as_tensor(pose.T_cam_from_world, dtype=torch.float32)[None], generator=g)[0, 0]
    write_xray(out, img.float().cpu().numpy(), camera=camera, sop=cfg.sop, sid_mm=reference.sid_mm,
               positioner_deg=rotation_to_positioner(pose.T_cam_from_world[:3, :3]))  # fmt: skip
    pj = pose_json_path(out)
    write_json(pj, pose.to_dict())
    return out, pj


def simulate_random(
    volume: Volume,
    camera: Camera,
    n: int,
    out_dir: str | os.PathLike[str],
    fmt: str = ".png",
    ranges: PoseRanges | None = None,
    config: SimulateConfig | None = None,
    device: torch.device | str = "cpu",
    batch: int = 8,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Render ``n`` DRRs at uniform random poses into ``out_dir`` with poses.json and geometry.json.

    Returns the poses.json path. Images are named drr_0000<fmt>, ...
    """
    cfg = config or SimulateConfig()
    if n < 1:
        raise XctregError(f"--random needs N >= 1, got {n}")
    fmt = fmt if fmt.startswith(".") else "." + fmt
    if fmt not in XRAY_SUFFIXES:
        raise XctregError(f"unsupported image format {fmt}; use one of {', '.join(XRAY_SUFFIXES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    space = PoseSpace(cfg.reference(volume), ranges or PoseRanges())
    reference = space.reference
    params = space.sample(n, seed=cfg.seed)
    r = Renderer(volume, camera, cfg.render, device=device, reference=reference)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    entries = []
    for s in range(0, n, batch):
        p = torch.as_tensor(params[s : s + batch], dtype=torch.float32)
        with torch.no_grad():
            imgs = r(p, generator=g).float().cpu().numpy()
        for i, img in enumerate(imgs):
            k = s + i
            name = f"drr_{k:04d}{fmt}"
            pose = space.pose(params[k])
            write_xray(out_dir / name, img[0], camera=camera, sop=cfg.sop, sid_mm=cfg.sid_mm,
                       positioner_deg=rotation_to_positioner(pose.T_cam_from_world[:3, :3]))  # fmt: skip
            entries.append({"file": name, **pose.to_dict()})
        if progress is not None:
            progress(len(imgs))
    write_json(out_dir / "geometry.json", camera.to_dict())
    write_json(out_dir / "poses.json", {"geometry": camera.to_dict(), "reference": reference.to_dict(),
                                        "ranges": space.ranges.to_dict(), "poses": entries})  # fmt: skip
    return out_dir / "poses.json"



def simulate_views(
    volume: Volume,
    camera: Camera,
    views_deg: Sequence[tuple[float, float, float]],
    names: Sequence[str],
    out_dir: str | os.PathLike[str],
    config: SimulateConfig | None = None,
    pose: str | os.PathLike[str] | Pose | None = None,
    ranges: PoseRanges | None = None,
    models: Sequence[str] | None = None,
    fmt: str = ".png",
    device: torch.device | str = "cpu",
) -> Path:
    """Render one patient pose from several C-arm views about the CT's centre (multi-view).

    The pose is the first view's (``pose``, a pose JSON or ``Pose``; default: random, seeded
    by ``config.seed``, within ``ranges`` around every view). View k's camera is the first's
    moved as the reference views differ (``T_cam_from_first`` = view k's reference pose times
    the inverse of the first's; a C-arm turned about the isocentre). Writes ``view{k}_{name}<fmt>``
    with its pose JSON per view, ``session.json`` (``models`` as the views' models, when given)
    and ``truth.json`` (the first view's pose and every view's). Returns session.json's path.
    """
    from xctreg.geometry import read_pose
    from xctreg.multiview import rig_between, sample_session_poses

    cfg = config or SimulateConfig()
    if fmt not in XRAY_SUFFIXES:
        raise XctregError(f"unsupported image format {fmt}; use one of {', '.join(XRAY_SUFFIXES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = [PoseReference.centred_on(volume, cfg.sid_mm, v) for v in views_deg]
    spaces = [PoseSpace(ref, ranges or PoseRanges()) for ref in refs]
    if pose is None:  # within every view's ranges, as each view's model was trained
        first = spaces[0].pose(sample_session_poses(spaces, [rig_between(refs[0], r) for r in refs], 1, cfg.seed)[0][0])
    else:
        first = pose if isinstance(pose, Pose) else read_pose(pose, reference=refs[0])
    views, truth = [], []
    for k, (ref, name) in enumerate(zip(refs, names, strict=True)):
        rig = rig_between(refs[0], ref)
        p = Pose(rig @ first.T_cam_from_world, ref)
        img, _ = simulate_one(volume, camera, p, out_dir / f"view{k}_{name}{fmt}", replace(cfg, seed=cfg.seed + k), device)
        entry: dict[str, object] = {"xray": img.name, "geometry": "geometry.json", "T_cam_from_first": rig.tolist()}
        if models is not None:
            entry = {"model": str(Path(models[k]).resolve()), **entry}
        views.append(entry)
        truth.append(p.to_dict())
    write_json(out_dir / "geometry.json", camera.to_dict())
    write_json(out_dir / "truth.json", {"first": Pose(first.T_cam_from_world, refs[0]).to_dict(), "views": truth})
    write_json(out_dir / "session.json", {"views": views})
    return out_dir / "session.json"
