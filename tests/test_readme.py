"""The README's set-up commands stay in sync with CI and the CLI.

The set-up commands are the README's ```bash blocks (exactly two); usage examples
are ```shell blocks, and every ``xctreg`` subcommand they name must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_cmd = [ln for ln in ci.splitlines() if "pytest" in ln and not ln.startswith("#")]
    assert len(ci_cmd) == 1
    blocks = _bash_blocks(readme)
    assert len(blocks) == 2, "the README keeps exactly two set-up commands"
    assert blocks[1].endswith(ci_cmd[0].strip())


def test_main_job_uses_registered_commands(cli) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    main_job = _bash_blocks(readme)[0]
    help_text = cli("--help").out + cli("data", "--help").out
    for sub in re.findall(r"xctreg ([a-z-]+)", main_job):
        assert sub in help_text


def test_usage_examples_use_registered_commands(cli) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```shell\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README shows at least one usage example"
    help_text = cli("--help").out
    for sub in re.findall(r"^xctreg ([a-z-]+)", "\n".join(blocks), flags=re.M):
        assert f" {sub} " in help_text, sub
