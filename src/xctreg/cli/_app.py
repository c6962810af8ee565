"""The typer applications and the state the root options set."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="xctreg",
    help="Automatic, patient-specific X-ray/CT registration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Example data: the embedded phantom and the example chest CT.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        from xctreg import __version__

        typer.echo(f"xctreg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug
