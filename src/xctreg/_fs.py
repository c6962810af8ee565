"""Atomic file output: write to a temporary file beside the target, then rename; and a check
that an output folder can be written before any long work starts."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path with the same suffixes as ``path``; on success it
    replaces ``path`` atomically, on failure it is removed (no partial output)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    _remove_stale_temps(target, suffix)


def _remove_stale_temps(target: Path, suffix: str, age_s: float = 60.0) -> None:
    """Remove the temporary files of earlier writes of ``target`` that were killed before they
    could clean up (``kill -9``, power loss), once they are ``age_s`` seconds old (a writer still
    at work is younger)."""
    now = time.time()
    for old in target.parent.glob(f".{glob.escape(target.name)}.*.tmp{glob.escape(suffix)}"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > age_s:
                old.unlink()


MIN_FREE_BYTES = 64_000_000
"""Free bytes an output folder needs at least (checkpoints, images, JSON) for the CLI to start."""


def check_writable(folder: str | os.PathLike[str], need_bytes: int = 0) -> None:
    """Refuse an output folder that cannot be written, before any long work: create it if
    needed, create and delete a temporary file in it, and require ``need_bytes`` bytes free
    (``shutil.disk_usage``). Raises an XctregError naming the folder and the reason."""
    from xctreg.errors import XctregError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".xctreg-write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise XctregError(f"cannot write to {folder}: {_write_failure(folder, exc)}") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise XctregError(
            f"cannot write to {folder}: only {free / 1e6:.0f} MB free, about {need_bytes / 1e6:.0f} MB needed"
        )


def _write_failure(folder: Path, exc: OSError) -> str:
    """Why ``folder`` could not be created or written, in a few words."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None or exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"{blocker or folder} is not a folder"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"it is read-only ({exc.strerror})"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full ({exc.strerror})"
    return f"cannot create or write it ({exc.strerror or type(exc).__name__})"


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically. Floats keep full precision."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Read a JSON file, turning a missing or malformed file into an XctregError."""
    from xctreg.errors import XctregError

    p = Path(path)
    if not p.is_file():
        raise XctregError(f"{what} not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise XctregError(f"{what} {p} is not valid JSON: {exc}") from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file (for a directory: of its sorted files' contents)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """The xctreg user cache: ``$XCTREG_CACHE_DIR`` or the platform user cache's ``xctreg/data``."""
    env = os.environ.get("XCTREG_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return platformdirs.user_cache_path("xctreg") / "data"


def cached_arrays(
    path: Path,
    compute: Callable[[], dict[str, np.ndarray]],
    valid: Callable[[dict[str, np.ndarray]], bool] = lambda arrays: True,
) -> dict[str, np.ndarray]:
    """Float64 arrays from the .npz at ``path`` (loaded with ``allow_pickle=False``) when they
    are all finite and ``valid``; else ``compute()``'s, written there atomically. A damaged or
    invalid file is recomputed and replaced; a read-only cache only loses the speed-up. For
    values that are slow to compute or to import the library for (spekpy's spectra, xraydb's
    attenuation), so that a fresh process reads them instead."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            got = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
        if got and all(np.all(np.isfinite(v)) for v in got.values()) and valid(got):
            return got
    except Exception:  # noqa: BLE001, S110 - absent or damaged: computed again below
        pass
    out = {k: np.asarray(v, dtype=np.float64) for k, v in compute().items()}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **out)
    except OSError:
        pass
    return out
