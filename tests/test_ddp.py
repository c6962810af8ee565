"""Multi-process (DDP) training under torchrun, on the CPU with the Gloo backend."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from xctreg.train import load_checkpoint

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    from pathlib import Path
    from xctreg.data.phantom import PhantomConfig, make_phantom
    from xctreg.train import Trainer, quick_test_config

    vol = make_phantom(PhantomConfig(size=(64, 64, 64), spacing_mm=(6.0, 6.0, 6.0)))
    res = Trainer(vol, sys.argv[1], quick_test_config(steps=4), log=print).fit()
    # one marker file per rank: the ranks share stdout, where their lines can interleave
    Path(sys.argv[2], f"rank{os.environ['RANK']}.done").write_text(str(res.step))
    """
)


def test_torchrun_two_processes(tmp_path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path / "m"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    # both ranks ran every step
    assert [(tmp_path / f"rank{r}.done").read_text() for r in (0, 1)] == ["4", "4"]
    state = load_checkpoint(tmp_path / "m" / "last.pt")
    assert state["step"] == 4
    # the ranks drew different batches (seeded by rank); DDP averaged their gradients, so the
    # weights differ from a single-process run with the same seed
    from xctreg.data.phantom import PhantomConfig, make_phantom
    from xctreg.train import Trainer, quick_test_config

    vol = make_phantom(PhantomConfig(size=(64, 64, 64), spacing_mm=(6.0, 6.0, 6.0)))
    Trainer(vol, tmp_path / "single", quick_test_config(steps=4), log=lambda s: None).fit()
    single = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    assert any(not torch.equal(state["model"][k], single[k]) for k in single)
    assert (tmp_path / "m" / "best.pt").is_file()


def test_single_process_fallback(tmp_path, small_phantom, monkeypatch) -> None:
    from xctreg.train import Trainer, init_distributed, quick_test_config

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() == (0, 1, 0)
    res = Trainer(small_phantom, tmp_path / "m", quick_test_config(steps=2), log=lambda s: None).fit()
    assert res.step == 2
