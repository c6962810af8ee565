"""`xctreg demo`: the whole pipeline on the phantom, and its HTML report."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import report_browser  # noqa: E402

pytestmark = pytest.mark.slow


def test_demo_fast_end_to_end_and_rerun(cli, tmp_path) -> None:
    out = tmp_path / "demo"
    res = cli("demo", "--out", out, "--fast", "--n", "2", "--device", "cpu")
    assert res.code == 0, res.err
    assert "demo done" in res.out and "report.html" in res.out
    html = (out / "report.html").read_text()
    assert "Held-out simulated X-rays (2)" in html
    assert html.count("data:image/gif;base64,") == 3 and html.count("data:image/png;base64,") >= 7
    rows = list(csv.DictReader((out / "results" / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok"] * 3
    for k in range(3):
        r = json.loads((out / "results" / f"xray_{k}.result.json").read_text())
        assert r["iterations"] > 0 and set(r["similarity"]) == {"ncc", "ssim", "css"}
        assert (out / "xrays" / f"xray_{k}.pose.json").is_file()
    m = json.loads((out / "eval" / "metrics.json").read_text())
    assert m["n"] == 2 and m["refine"] is True
    # a second run in the same folder continues the finished training instead of refusing it
    res = cli("demo", "--out", out, "--fast", "--n", "1", "--device", "cpu")
    assert res.code == 0, res.err
    assert json.loads((out / "eval" / "metrics.json").read_text())["n"] == 1
    assert "continuing the training run" in res.out
    check_in_browser(out / "report.html", tmp_path / "report.png")  # last: it skips where Chromium is missing


def check_in_browser(report: Path, screenshot: Path) -> None:
    """The report as headless Chromium shows it 1280 px wide: every image loaded and of a
    visible size, every table filled, and nothing running off the right edge."""
    why = report_browser.missing()
    if why is not None:
        pytest.skip(f"browser check: {why}")
    info = report_browser.inspect(report, 1280, screenshot)
    assert info["images"] and info["tables"]
    for img in info["images"]:
        assert img["loaded"], f"broken image {img['alt']}"
        assert img["width"] > 50 and img["height"] > 50, img
        assert img["right"] <= info["window_width"] + 1, f"{img['alt']} runs off the page: {img}"
    assert all(t["rows"] > 1 and t["right"] <= info["window_width"] + 1 for t in info["tables"]), info["tables"]
    assert info["scroll_width"] <= info["window_width"], "the page scrolls sideways"
    assert screenshot.stat().st_size > 10_000
