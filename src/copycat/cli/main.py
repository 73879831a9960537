"""The ``copycat`` application: the top-level options and the command table.

Commands live one group per module (:mod:`.stages`, :mod:`.target`, :mod:`.serve`); their
options are declared once in :mod:`.options`. Nothing here imports torch, so ``--help`` is quick.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from typer.core import TyperGroup

from copycat.allocator import tune_allocator
from copycat.cli.common import console
from copycat.cli.curve import curve_cmd
from copycat.cli.defences import audit_cmd, verify_cmd
from copycat.cli.serve import serve_cmd
from copycat.cli.stages import evaluate_cmd, report_cmd, run_cmd, steal_cmd, train_cmd
from copycat.cli.status import status_cmd
from copycat.cli.target import target_app

VERBOSE_FLAGS = ("-v", "--verbose")


class VerboseAnywhere(TyperGroup):
    """Accepts ``-v/--verbose`` after the subcommand too (``copycat steal ... -v``): the flag is
    moved in front of the subcommand, where the top-level option reads it."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer vendors click
        if "--" in args:
            head, tail = args[: args.index("--")], args[args.index("--") :]
        else:
            head, tail = args, []
        flags = [a for a in head if a in VERBOSE_FLAGS]
        rest = [a for a in head if a not in VERBOSE_FLAGS]
        return super().parse_args(ctx, [*flags[:1], *rest, *tail])


def _version(value: bool) -> None:
    if value:
        from copycat import __version__

        typer.echo(f"copycat {__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=VerboseAnywhere,
    help="Measure how easily an image classifier can be stolen (Copycat CNN).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(target_app, name="target")
app.command("steal")(steal_cmd)
app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("report")(report_cmd)
app.command("run")(run_cmd)
app.command("serve")(serve_cmd)
app.command("status")(status_cmd)
app.command("verify")(verify_cmd)
app.command("audit")(audit_cmd)
app.command("curve")(curve_cmd)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging (before or after the command).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    tune_allocator()  # training's memory kept for reuse (copycat.allocator)


if __name__ == "__main__":  # pragma: no cover
    app()
