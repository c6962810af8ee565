"""Multi-process (DDP) training under torchrun, on the CPU with the Gloo backend."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from xctreg.models.checkpoint import load_checkpoint

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
    import torch.distributed as dist
    left = "left" if not dist.is_initialized() else "still joined"  # fit leaves the group it joined
    Path(sys.argv[2], f"rank{os.environ['RANK']}.done").write_text(f"{res.step} {left}")
    """
)


def _rank_logs(logs) -> str:  # noqa: ANN001
    """Each rank's own stdout/stderr (torchrun's summary hides why a rank died)."""
    parts = [f"--- {f.relative_to(logs)}\n{f.read_text(errors='replace')[-1500:]}" for f in sorted(logs.rglob("*.log"))]
    return "\n".join(parts) + "\n"


def test_torchrun_two_processes(tmp_path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--log-dir", str(logs), "--redirects", "3", str(script), str(tmp_path / "m"), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, _rank_logs(logs) + proc.stderr[-1500:]
    # both ranks ran every step
    assert [(tmp_path / f"rank{r}.done").read_text() for r in (0, 1)] == ["4 left", "4 left"]
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


def test_fit_keeps_a_process_group_it_did_not_join(tmp_path, small_phantom, monkeypatch) -> None:
    import torch.distributed as dist

    from xctreg.train import Trainer, quick_test_config

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        Trainer(small_phantom, tmp_path / "m", quick_test_config(steps=1), log=lambda s: None).fit()
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()
