"""Shared fixtures: a small phantom and an in-process CLI runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from xctreg.data.phantom import PhantomConfig, make_phantom
from xctreg.io import Volume


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def small_phantom() -> Volume:
    """64³ voxels at 6 mm: the same anatomy as the default phantom, 8x fewer voxels."""
    return make_phantom(PhantomConfig(size=(64, 64, 64), spacing_mm=(6.0, 6.0, 6.0)))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, small_phantom):
    """A tiny trained model (2 steps, 32² AP) of the small phantom: ``model_dir / "m"``, CT at ``model_dir / "ct.nii.gz"``."""
    from xctreg.io import write_volume
    from xctreg.train import Trainer, quick_test_config

    d = tmp_path_factory.mktemp("reg")
    ct = write_volume(small_phantom, d / "ct.nii.gz")
    Trainer(small_phantom, d / "m", quick_test_config(steps=2), ct_path=ct, log=lambda s: None).fit()
    return d


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``xctreg ARGS...`` in process; returns exit code, stdout and stderr."""
    from xctreg.cli import run

    def _run(*args: str) -> CliResult:
        capsys.readouterr()
        code = run([str(a) for a in args])
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return _run


def assert_one_line_error(res: CliResult, fragment: str) -> None:
    """The CLI contract for bad input: exit != 0 and exactly one 'error:' line."""
    assert res.code != 0, res
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert lines[0].startswith("error: "), res.err
    assert fragment.lower() in lines[0].lower(), res.err
    assert "Traceback" not in res.err
