"""bench/nanodrr_speed.py runs on the CPU (--quick): every cell times, and xctreg and nanodrr render the same scene."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("nanodrr")
pytest.importorskip("torchio")

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import nanodrr_speed  # noqa: E402


def test_nanodrr_speed_quick_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.jsonl"
    assert nanodrr_speed.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    printed = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    written = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert printed == written

    sanity = [r for r in printed if r.get("kind") == "sanity"]
    assert len(sanity) == 1 and sanity[0]["status"] == "PASS", sanity
    assert sanity[0]["ncc_min"] > 0.9
    assert sanity[0]["torch"]["rel_l1"] < 0.05  # same density volume, same geometry: same integral

    cells = [r for r in printed if r.get("kind") == "cell"]
    # xctreg line + poly, nanodrr torch at matched and default n_samples; 2 batches x 2 passes
    assert len(cells) == 4 * 2 * 2
    for c in cells:
        assert c["status"] == "PASS", c
        assert math.isfinite(c["ms_per_drr"]) and c["ms_per_drr"] > 0, c
        assert c["samples_per_ray"] >= 2
    assert {c["renderer"] for c in cells} == {"xctreg", "nanodrr"}

    summary = printed[-1]
    assert summary["summary"] == "DONE" and summary["sanity_ran"] and not summary["failed"]
    ratios = summary["ratios_nanodrr_over_xctreg"]
    assert len(ratios) == 2 * 2 * 2 * 2  # 2 nanodrr variants x 2 xctreg modes x 2 batches x 2 passes
    assert all(math.isfinite(v) and v > 0 for v in ratios.values())
