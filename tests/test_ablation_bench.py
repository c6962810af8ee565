"""bench/ablation.py's Table 2 (refinement methods from the same starts) is formatted from evaluate's baselines rows."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from ablation import AUTHORS_TABLE2, table2  # noqa: E402


def _row(median: float, seconds: float) -> dict:
    return {"median_mtre_mm": median, "mean_mtre_mm": median + 0.1, "std_mtre_mm": 0.05, "sr_10mm": 1.0, "ncc": 0.99, "ssim": 0.95,
            "css": 0.96, "seconds_per_xray": seconds, "mtre_each": [median] * 3}


def test_table2_has_every_method_and_the_authors() -> None:
    lines = table2({"register": _row(0.2, 1.5), "powell, equal time": _row(0.9, 1.4)})
    text = "\n".join(lines)
    assert "3 X-rays" in text
    assert "| register | 0.20 | 0.30 ± 0.05 | 100% | 0.9900 | 0.9500 | 0.9600 | 1.5 |" in text
    assert "| powell, equal time | 0.90 |" in text
    for name, (ncc, _, _) in AUTHORS_TABLE2.items():
        assert f"authors: {name}" in text and f"{ncc:.4f}" in text


def test_table2_empty_without_baselines() -> None:
    assert table2({}) == []
