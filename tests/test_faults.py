"""Faults (issue #14): a folder run killed halfway resumes with --resume; an output folder that
is read-only, full or under a file is refused with one line before any long work starts."""

from __future__ import annotations

import csv
import errno
import json
import shutil
import tempfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error
from xctreg._fs import check_writable
from xctreg.errors import XctregError


@pytest.fixture(scope="module")
def xray_folder(model_dir, tmp_path_factory) -> Path:
    """Three simulated X-rays (PNG) in the model's geometry, in a folder of their own."""
    from xctreg.cli import run

    xr = tmp_path_factory.mktemp("faults") / "xrays"
    m = model_dir / "m"
    code = run(["simulate", str(model_dir / "ct.nii.gz"), "--geometry", str(m / "geometry.json"), "--random", "3",
                "--out", str(xr), "--mode", "line", "--seed", "5"])  # fmt: skip
    assert code == 0
    for extra in ("poses.json", "geometry.json"):
        (xr / extra).unlink(missing_ok=True)
    return xr


@pytest.fixture
def count_registrations(monkeypatch) -> list[Path]:
    """The X-rays Registrar.register is called on, in order."""
    from xctreg.register import Registrar

    calls: list[Path] = []
    original = Registrar.register

    def counting(self, xray, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(Path(xray))
        return original(self, xray, *args, **kwargs)

    monkeypatch.setattr(Registrar, "register", counting)
    return calls


def _register_folder(cli, model_dir, xrays: Path, *extra: str):  # noqa: ANN001, ANN202
    res = cli("register", model_dir / "m", xrays, "--no-refine", *extra)
    assert res.code == 0, res.err
    return res


def _summary(xrays: Path) -> list[dict[str, str]]:
    with (xrays / "results" / "summary.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_register_folder_resume_skips_finished_xrays(cli, model_dir, xray_folder, tmp_path, count_registrations) -> None:
    xr = tmp_path / "xrays"
    shutil.copytree(xray_folder, xr)
    _register_folder(cli, model_dir, xr)
    assert len(count_registrations) == 3
    results = sorted((xr / "results").glob("*.result.json"))
    assert len(results) == 3
    first = _summary(xr)
    results[0].unlink()  # killed before its JSON was written
    text = results[1].read_text()
    results[1].write_text(text[: len(text) // 2])  # a partial file, as if not written atomically
    kept = results[2].stat().st_mtime_ns
    count_registrations.clear()
    res = _register_folder(cli, model_dir, xr, "--resume")
    redone = [r.name.replace(".result.json", ".png") for r in results[:2]]
    assert [p.name for p in count_registrations] == redone  # exactly the deleted and the partial one
    assert "skipped 1 of 3 X-rays" in res.out
    assert results[2].stat().st_mtime_ns == kept  # not rewritten
    rows = _summary(xr)
    assert [r["xray"] for r in rows] == [r["xray"] for r in first] and all(r["status"] == "ok" for r in rows)
    assert rows[2] == first[2]  # rebuilt from its JSON: the same row
    for r in rows:
        assert json.loads(Path(r["result"]).read_text())["params"]["rx_deg"] == pytest.approx(float(r["rx_deg"]), rel=1e-5, abs=1e-9)
    count_registrations.clear()
    res = _register_folder(cli, model_dir, xr)  # without --resume: all redone
    assert len(count_registrations) == 3 and "skipped" not in res.out


def test_register_resume_redoes_a_result_without_its_overlay(cli, model_dir, xray_folder, tmp_path, count_registrations) -> None:
    xr = tmp_path / "xrays"
    xr.mkdir()
    shutil.copy(sorted(xray_folder.glob("*.png"))[0], xr)  # a folder of one: still a folder run
    _register_folder(cli, model_dir, xr)
    count_registrations.clear()
    res = _register_folder(cli, model_dir, xr, "--resume", "--overlay", tmp_path / "ov")
    assert len(count_registrations) == 1 and "skipped 0 of 1" in res.out
    assert len(list((tmp_path / "ov").glob("*.overlay.png"))) == 1
    res = _register_folder(cli, model_dir, xr, "--resume", "--overlay", tmp_path / "ov")
    assert len(count_registrations) == 1 and "skipped 1 of 1" in res.out


def test_register_single_resume_skips_without_loading_the_model(cli, model_dir, xray_folder, tmp_path, monkeypatch) -> None:
    one = sorted(xray_folder.glob("*.png"))[0]
    out = tmp_path / "one.json"
    assert cli("register", model_dir / "m", one, "--out", out, "--no-refine").code == 0
    before = out.read_bytes()
    _forbid_long_work(monkeypatch)
    res = cli("register", model_dir / "m", one, "--out", out, "--no-refine", "--resume")
    assert res.code == 0 and "skipped 1 of 1" in res.out and out.read_bytes() == before
    out.write_text(before.decode()[:40])  # partial: redone, so the model is loaded
    res = cli("register", model_dir / "m", one, "--out", out, "--no-refine", "--resume")
    assert res.code == 1 and "long work started" in res.err


def _forbid_long_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading a model or a CT, or starting a training, fail loudly."""
    from xctreg.register import Registrar
    from xctreg.train import Trainer

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("long work started before the output folder was checked")

    monkeypatch.setattr(Registrar, "__init__", boom)
    monkeypatch.setattr(Trainer, "__init__", boom)
    monkeypatch.setattr("xctreg.io.read_volume", boom)


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, chmod does not stop writes: a read-only file system is simulated instead."""

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def _full(monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))


FAULTS = {"read-only": (_read_only, "read-only"), "full": (_full, "only 0 MB free"), "under-a-file": (None, "is not a folder")}


def _command(name: str, model_dir: Path, tmp: Path, dest: Path) -> list[object]:
    """The arguments of command ``name`` writing into the folder ``dest``."""
    ct, m = model_dir / "ct.nii.gz", model_dir / "m"
    (tmp / "xr").mkdir(exist_ok=True)
    np.save(tmp / "xr" / "a.npy", np.ones((32, 32), np.float32))
    (tmp / "pose.json").write_text(json.dumps({"params": dict.fromkeys(("rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm"), 0)}))
    return {
        "register-folder": ["register", m, tmp / "xr", "--out", dest, "--no-refine"],
        "register-one": ["register", m, tmp / "xr" / "a.npy", "--out", dest / "a.json", "--no-refine"],
        "register-overlay": ["register", m, tmp / "xr" / "a.npy", "--out", tmp / "a.json", "--overlay", dest / "a.png"],
        "train": ["train", ct, "--out", dest, "--steps", "1"],
        "simulate": ["simulate", ct, "--pose", tmp / "pose.json", "--out", dest / "x.png"],
        "simulate-random": ["simulate", ct, "--random", "2", "--out", dest],
        "data-generate": ["data", "generate", ct, "--out", dest, "--n-train", "4", "--n-val", "0", "--n-test", "0"],
    }[name]


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize(
    "command", ["register-folder", "register-one", "register-overlay", "train", "simulate", "simulate-random", "data-generate"]
)
def test_unwritable_output_refused_before_long_work(cli, model_dir, tmp_path, monkeypatch, command, fault) -> None:
    dest = tmp_path / "out"
    if fault == "under-a-file":
        (tmp_path / "a-file").write_text("not a folder")
        dest = tmp_path / "a-file" / "out"
    args = _command(command, model_dir, tmp_path, dest)
    setup, message = FAULTS[fault]
    if setup is not None:
        setup(monkeypatch)
    _forbid_long_work(monkeypatch)
    res = cli(*args)
    assert_one_line_error(res, message)
    assert "cannot write to" in res.err and str(tmp_path) in res.err


def test_check_writable(tmp_path, monkeypatch) -> None:
    deep = tmp_path / "a" / "b"
    check_writable(deep, need_bytes=1)
    assert deep.is_dir() and list(deep.iterdir()) == []  # created; the probe file is gone
    (tmp_path / "f").write_text("")
    with pytest.raises(XctregError, match=r"f is not a folder"):
        check_writable(tmp_path / "f" / "g")
    with pytest.raises(XctregError, match=r"f is not a folder"):
        check_writable(tmp_path / "f")
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(XctregError, match=r"only \d+ MB free"):
        check_writable(tmp_path, need_bytes=free + 10**12)
    _read_only(monkeypatch)
    with pytest.raises(XctregError, match=f"cannot write to {tmp_path}: it is read-only"):
        check_writable(tmp_path)


def test_dicom_without_geometry_falls_back_clearly(cli, model_dir, tmp_path) -> None:
    """A DICOM X-ray without DistanceSourceToDetector / ImagerPixelSpacing: --geometry is used
    when given; else the model's detector is assumed with a warning when the sizes agree, and
    one error line asks for --geometry when they do not."""
    import numpy as np

    from xctreg.io import write_xray

    m = model_dir / "m"
    rng = np.random.default_rng(0)
    write_xray(tmp_path / "same.dcm", rng.random((32, 32)).astype(np.float32))
    write_xray(tmp_path / "other.dcm", rng.random((40, 48)).astype(np.float32))
    res = cli("register", m, tmp_path / "same.dcm", "--no-refine", "--out", tmp_path / "a.json")
    assert res.code == 0 and "no geometry tags" in res.err and "--geometry" in res.err, res.err
    assert_one_line_error(cli("register", m, tmp_path / "other.dcm", "--no-refine"), "no geometry tags")
    geo = tmp_path / "g.json"
    geo.write_text('{"sdd_mm": 1020, "height": 40, "width": 48, "pixel_spacing_mm": [10.24, 10.24]}')
    res = cli("register", m, tmp_path / "other.dcm", "--no-refine", "--geometry", geo, "--out", tmp_path / "b.json")
    assert res.code == 0 and "no geometry tags" not in res.err, res.err


def test_kill_during_a_write_leaves_no_partial_output(tmp_path) -> None:
    """A process killed with SIGKILL in the middle of writing an output leaves the old file (or
    none), never a partial one; the next write of that output removes the killed writer's
    temporary file once it is stale."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from xctreg._fs import write_json

    target = tmp_path / "result.json"
    code = (
        "import sys, time\n"
        "from xctreg._fs import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('{\"partial\": ')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not target.exists()
    temps = list(tmp_path.glob(".result.json.*.tmp.json"))
    assert len(temps) == 1  # the killed writer could not clean up
    old = time.time() - 120
    os.utime(temps[0], (old, old))
    write_json(target, {"params": 1})
    assert json.loads(target.read_text()) == {"params": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
