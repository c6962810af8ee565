"""The ``xctreg`` command line (typer + rich): one module per command.

Every command prints a one-line summary. Bad input exits 1 with a one-line
``error: ...`` on stderr; ``--debug`` shows the traceback instead. The command modules
import their heavy dependencies inside the command, so ``xctreg register`` loads no
training or plotting code.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from xctreg.cli import (  # noqa: F401 - importing a command module registers its command
    check,
    simulate,
    data,
    augment_preview,
    train,
    evaluate,
    attention,
    register,
    multiview,
    project,
    export,
    demo,
)
from xctreg.cli._app import _state, app
from xctreg.cli._common import _view_from_xray  # noqa: F401 - used by tests
from xctreg.errors import XctregError


def run(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (no ``sys.exit``)."""
    _state["debug"] = False
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="xctreg")  # standalone: handles usage errors, raises SystemExit
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except XctregError as exc:
        if _state["debug"] or "--debug" in args:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line, the traceback with --debug
        if _state["debug"] or "--debug" in args:
            raise
        msg = str(exc).splitlines()[0][:300] if str(exc) else ""
        print(f"error: internal {type(exc).__name__}: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    """Console-script entry point."""
    _exit_now(run())


def _exit_now(code: int) -> NoReturn:
    """End the process with ``code`` without tearing the interpreter down.

    Every command has written and closed its outputs (atomically) when ``run`` returns,
    but a normal exit then spends 0.4–0.7 s freeing the objects of torch's and numba's
    thousands of modules and joining numba's thread pool: a sixth of a cold
    ``xctreg register`` (issue #13). So flush the console streams and leave with
    ``os._exit``. Under coverage, whose data is written at exit, exit normally.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if "coverage" in sys.modules:
        sys.exit(code)
    os._exit(code)
