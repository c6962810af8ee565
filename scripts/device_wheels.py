"""Build .whl/: the wheels that the GPU machine (Python 3.12, x86-64, no internet) lacks.

    python3 scripts/device_wheels.py            # download, trim and recompress into .whl/
    python3 scripts/device_wheels.py --check    # list what is there and the total size

The device image has torch, numpy, scipy, matplotlib, numba, typer, rich, pillow,
... but not SimpleITK, pydicom, roma, xraydb (+ SQLAlchemy), spekpy, kornia
(+ kornia_rs), monai or platformdirs. Their plain wheels are ~230 MB together
(spekpy 164 MB, SimpleITK 53 MB), far over what a device call can carry
(64 MiB for the whole tree), so this script

* trims spekpy to the data its default physics model reads for a tungsten anode
  at 50-125 kVp (xctreg's default 90 kVp, the 70-120 kVp augmentation grid and
  the 70/90/120 kVp tests): the other anodes, the other electron-energy tables
  and the 91 MB "kqp" model table are dropped (other kVp raise FileNotFoundError
  there). RECORD is rewritten to match.
* empties spekpy's pe.dat grid (37 MB of JSON, read at start-up but used only by
  the legacy 'spekcalc'/'spekpy-v1' physics models, which then raise IndexError);
* drops pydicom's own test DICOMs (pydicom/data/test_files, used only by
  pydicom.data.get_testdata_file; xctreg never calls it);
* adds nanodrr and what it needs beyond the device image (torchio, nibabel,
  Deprecated): the test-only speed reference of bench/nanodrr_speed.py;
* takes SQLAlchemy's pure-Python wheel (xraydb needs it; C speed-ups not needed);
* recompresses every wheel's members with LZMA (ZIP method 14, which pip's
  zipfile extraction reads); RECORD hashes are of the uncompressed content, so
  they stay valid.

Versions are those of the development venv. Needs pip and internet access here.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import lzma
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / ".whl"

#: (requirement, pure-python?) — pure wheels are fetched with --platform any.
PINS: list[tuple[str, bool]] = [
    ("simpleitk==2.5.7", False),
    ("pydicom==3.0.2", True),
    ("roma==1.8.0", True),
    ("xraydb==4.5.8", True),
    ("SQLAlchemy==2.1.9", True),  # xraydb -> sqlalchemy>=2.0.1 (typing-extensions is on the device)
    ("spekpy==2.5.4", True),  # -> matplotlib, scipy (on the device)
    ("kornia==0.9.0", True),  # -> kornia-rs, numpy, torch
    ("kornia_rs==0.2.0", False),
    ("monai==1.6.1", True),  # -> numpy, torch
    ("platformdirs==4.14.8", True),
    # test-only references for bench/nanodrr_speed.py (never runtime dependencies of xctreg)
    ("nanodrr==0.1.7", True),  # -> jaxtyping, roma, platformdirs, torch, torchio
    ("torchio==1.2.1", True),  # -> deprecated, nibabel; einops, humanize, rich, tqdm, typer are on the device
    ("nibabel==5.4.2", True),
    ("Deprecated==1.3.1", True),  # -> wrapt (on the device)
]

PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]

#: spekpy data kept under spekpy/data/tables/advanced/ (tungsten, E0 tables 7-9 = 50-125 kV).
SPEKPY_ADVANCED_KEEP = {
    "CSDA.npz", "NIST.npz", "FluorescenceZ74.npz", "MassAttCoeff_Z74.npz", "MassAttCoeff_Z74_woRa.npz",
    "Z74_E0sim.npz", "Z74ch.npz", "Z74_7.npz", "Z74_8.npz", "Z74_9.npz",
}  # fmt: skip
MARK = "xctreg-device-repacked"  # written into the zip comment of a processed wheel


class _LZMA9:
    """zipfile's LZMA compressor at preset 9 (bigger dictionary); same on-disk format."""

    def __init__(self) -> None:
        self._comp = None

    def _init(self) -> bytes:
        f = {"id": lzma.FILTER_LZMA1, "preset": 9}
        props = lzma._encode_filter_properties(f)  # noqa: SLF001
        self._comp = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=[lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)])  # noqa: SLF001
        return struct.pack("<BBH", 9, 4, len(props)) + props

    def compress(self, data: bytes) -> bytes:
        head = self._init() if self._comp is None else b""
        return head + self._comp.compress(data)

    def flush(self) -> bytes:
        head = self._init() if self._comp is None else b""
        return head + self._comp.flush()


def _download(req: str, pure: bool) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "-d", str(DEST), "--disable-pip-version-check"]  # fmt: skip
    if pure:
        cmd += ["--implementation", "py", "--platform", "any"]
    else:
        cmd += ["--implementation", "cp"] + [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run(cmd + [req], check=True)


def _record_row(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def _keep(wheel: str, name: str) -> bool:
    if wheel.startswith("spekpy-"):
        pre = "spekpy/data/tables/advanced/"
        if name.startswith(pre) and name[len(pre):] not in SPEKPY_ADVANCED_KEEP:
            return False
    if wheel.startswith("pydicom-") and name.startswith("pydicom/data/test_files/"):
        return False
    return True


def _transform(wheel: str, name: str, data: bytes) -> bytes:
    if wheel.startswith("spekpy-") and name == "spekpy/data/tables/pe.dat":
        d = json.loads(data)
        d["pe"] = []
        d["comment"] += " [grid removed for the xctreg device run: only the legacy physics models read it]"
        return json.dumps(d).encode()
    return data


def repack(path: Path) -> None:
    """Trim (spekpy) and recompress ``path`` in place with LZMA."""
    with zipfile.ZipFile(path) as zin:
        if zin.comment == MARK.encode():
            return
        infos = zin.infolist()
        record = next(i.filename for i in infos if i.filename.endswith(".dist-info/RECORD"))
        kept = [i for i in infos if _keep(path.name, i.filename)]
        tmp = path.with_suffix(".tmp")
        zipfile.LZMACompressor = _LZMA9  # type: ignore[misc] - module-level hook zipfile uses
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as zout:
            rows = []
            for info in kept:
                if info.filename == record or info.is_dir():
                    continue
                data = _transform(path.name, info.filename, zin.read(info))
                zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                zi.external_attr = info.external_attr
                zi.compress_type = zipfile.ZIP_LZMA
                zout.writestr(zi, data)
                rows.append(_record_row(info.filename, data))
            rows.append([record, "", ""])
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(rows)  # quotes names with commas
            zi = zipfile.ZipInfo(record, date_time=(2020, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_LZMA
            zout.writestr(zi, buf.getvalue())
            zout.comment = MARK.encode()
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only list the wheels and their total size")
    args = ap.parse_args()
    DEST.mkdir(exist_ok=True)
    if not args.check:
        for req, pure in PINS:
            name = req.split("==")[0].lower().replace("-", "_")
            if not any(p.name.lower().startswith(name + "-") for p in DEST.glob("*.whl")):
                _download(req, pure)
        for p in sorted(DEST.glob("*.whl")):
            print(f"repacking {p.name} ...", flush=True)
            repack(p)
    total = 0
    for p in sorted(DEST.glob("*.whl")):
        total += p.stat().st_size
        print(f"{p.stat().st_size / 2**20:8.2f} MiB  {p.name}")
    print(f"{total / 2**20:8.2f} MiB  total ({len(list(DEST.glob('*.whl')))} wheels)")


if __name__ == "__main__":
    main()
