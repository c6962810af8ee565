"""Registering X-ray files: one or many with one loaded model, their outputs and a summary CSV.

``find_xrays`` turns a file, a folder or a glob into a sorted list of X-ray
files; ``write_outputs`` writes a ``Result``'s JSON, overlay PNG and
trajectory GIF; ``register_files`` runs a list through one ``Registrar`` and
writes ``summary.csv`` (one row per X-ray, failures included); with ``resume`` it
skips the X-rays whose outputs an earlier, interrupted run already wrote.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xctreg._fs import atomic_path, write_json
from xctreg.errors import XctregError
from xctreg.geometry import PARAM_NAMES

XRAY_SUFFIXES = (".npy", ".png", ".tif", ".tiff", ".dcm", ".dicom")


def find_xrays(spec: str | os.PathLike[str]) -> list[Path]:
    """The X-ray files named by ``spec``: a file, a folder (its X-ray files, not recursive) or a glob."""
    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if _is_xray_name(f))
        if not files:
            raise XctregError(f"no X-ray files (.npy, .png, .tif, .dcm) in {p}")
        return files
    if glob.has_magic(str(spec)):
        files = sorted(Path(f) for f in glob.glob(str(spec)) if _is_xray_name(Path(f)))
        if not files:
            raise XctregError(f"no X-ray files match {spec}")
        return files
    raise XctregError(f"X-ray not found: {p}")


def _is_xray_name(f: Path) -> bool:
    """A visible file with an X-ray suffix, or none (DICOM files often have none)."""
    return f.is_file() and not f.name.startswith(".") and (f.suffix.lower() in XRAY_SUFFIXES or not f.suffix)


def _stem(path: Path) -> str:
    return path.name.split(".")[0] or path.name


@dataclass(frozen=True)
class Outputs:
    """Where one X-ray's outputs go (None = not written)."""

    result: Path
    overlay: Path | None = None
    animation: Path | None = None


def write_outputs(result: Any, registrar: Any, outputs: Outputs, title: str = "", frames: int = 40) -> None:
    """Write a ``Result``'s JSON and, if asked, its overlay PNG (DRR edges at the initial and final
    pose) and its animated GIF (DRR edges along the refinement trajectory, up to ``frames``)."""
    write_json(outputs.result, result.to_dict())
    write_figures(result, registrar, outputs.overlay, outputs.animation, title, frames)


def write_figures(result: Any, registrar: Any, overlay: Path | None, animation: Path | None, title: str = "", frames: int = 40) -> None:
    """A ``Result``'s overlay PNG and animated GIF (see ``write_outputs``; None = not written)."""
    from xctreg.viz import registration_animation, registration_overlay

    if overlay is None and animation is None:
        return
    r = registrar.renderer(result.camera)
    start = result.initial.params
    if overlay is not None:
        with torch.no_grad():
            pair = r(torch.as_tensor(np.stack([start, result.params]), dtype=torch.float32))[:, 0].cpu().numpy()
        registration_overlay(result.image, pair[0], pair[1], overlay, title=f"{title}: initial (red), final (green)")
    if animation is not None:
        traj = np.concatenate([start[None], result.trajectory, result.params[None]])
        pick = np.unique(np.linspace(0, len(traj) - 1, min(frames, len(traj))).round().astype(int))
        with torch.no_grad():
            drrs = torch.cat([r(torch.as_tensor(traj[pick[i : i + 16]], dtype=torch.float32)) for i in range(0, len(pick), 16)])
        labels = ["regressor" if k == 0 else ("final" if k == len(traj) - 1 else f"step {k}") for k in pick]
        registration_animation(result.image, list(drrs[:, 0].cpu().numpy()), labels, animation)


SUMMARY_FIELDS = (
    "xray", "status", "rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm",
    "ncc", "ssim", "css", "iterations", "seconds", "result", "error",
)  # fmt: skip


# Rough upper bounds of one X-ray's outputs (bytes), for the free-space check before a run.
OUTPUT_BYTES = {"result": 100_000, "overlay": 2_000_000, "animation": 8_000_000}


def summary_row(path: Path, result: Any = None, out: Path | None = None, error: str = "") -> dict[str, Any]:
    """One row of summary.csv for an X-ray: its pose and similarity, or its error."""
    if result is None:
        row: dict[str, Any] = {k: "" for k in SUMMARY_FIELDS}
        row.update(xray=str(path), status="error", error=error)
        return row
    return _ok_row(path, result.to_dict(), out)


def _ok_row(path: Path, d: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """The summary row of a register result JSON (params, similarity, timing_s, ...) as a dict;
    KeyError/TypeError/ValueError when malformed."""
    row: dict[str, Any] = {k: "" for k in SUMMARY_FIELDS}
    row.update(xray=str(path), status="ok", result=str(out or ""))
    row.update({k: f"{float(d['params'][k]):.6g}" for k in PARAM_NAMES})
    row.update({k: f"{float(v):.4f}" for k, v in d.get("similarity", {}).items() if k in SUMMARY_FIELDS})
    row.update(iterations=d.get("iterations", ""))
    if "total" in d.get("timing_s", {}):
        row["seconds"] = f"{float(d['timing_s']['total']):.3f}"
    return row


def resumed_row(path: Path, outputs: Outputs) -> dict[str, Any] | None:
    """The summary row of an X-ray whose outputs an earlier run wrote (a readable result JSON
    with all six ``params``, and the overlay/GIF when asked for); None when it must be redone."""
    if any(p is not None and not p.is_file() for p in (outputs.overlay, outputs.animation)):
        return None
    try:
        return _ok_row(path, json.loads(outputs.result.read_text(encoding="utf-8")), outputs.result)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # missing, partial or not a result
        return None


def write_summary(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Write summary.csv atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS)
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def register_files(
    registrar: Any,
    files: list[Path],
    out_dir: Path,
    overlay_dir: Path | None = None,
    animate_dir: Path | None = None,
    on_done: Callable[[Path, dict[str, Any]], None] | None = None,
    resume: bool = False,
    on_skip: Callable[[Path], None] | None = None,
    **register_kwargs: Any,
) -> list[dict[str, Any]]:
    """Register each file; write ``<stem>.result.json`` and ``summary.csv`` in ``out_dir`` (and
    ``<stem>.overlay.png`` in ``overlay_dir``, ``<stem>.gif`` in ``animate_dir`` when given).
    A file that fails is reported in its row; the others go on. With ``resume``, a file whose
    outputs exist (``resumed_row``) is not registered again: its row is read from its JSON and
    ``on_skip`` is called. ``on_done`` is called for every file."""
    rows: list[dict[str, Any]] = []
    for f, outs in zip(files, plan_outputs(files, out_dir, overlay_dir, animate_dir), strict=True):
        row = resumed_row(f, outs) if resume else None
        if row is not None:
            if on_skip is not None:
                on_skip(f)
        else:
            row = _register_one(registrar, f, outs, register_kwargs)
        rows.append(row)
        if on_done is not None:
            on_done(f, row)
    write_summary(out_dir / "summary.csv", rows)
    return rows


def plan_outputs(files: list[Path], out_dir: Path, overlay_dir: Path | None = None,
                 animate_dir: Path | None = None) -> list[Outputs]:  # fmt: skip
    """Each file's outputs: ``<stem>.result.json`` etc., or ``<name_with_underscores>.*`` when stems clash."""
    stems = [_stem(f) for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    plan = []
    for f, stem in zip(files, stems, strict=True):
        name = f.name.replace(".", "_") if stem in dup else stem
        plan.append(Outputs(out_dir / f"{name}.result.json", overlay_dir / f"{name}.overlay.png" if overlay_dir else None,
                            animate_dir / f"{name}.gif" if animate_dir else None))  # fmt: skip
    return plan


def _register_one(registrar: Any, f: Path, outs: Outputs, register_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Register one file and write its outputs; its summary row (an error row on XctregError)."""
    try:
        res = registrar.register(f, **register_kwargs)
        write_outputs(res, registrar, outs, title=f.name)
        return summary_row(f, res, outs.result)
    except XctregError as exc:
        return summary_row(f, error=str(exc).splitlines()[0])
