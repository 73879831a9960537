"""The ``copycat`` application: the top-level options and the command table.

Commands live one group per module (:mod:`.stages`, :mod:`.target`, :mod:`.serve`); their
options are declared once in :mod:`.options`. Nothing here imports torch, so ``--help`` is quick.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler

from copycat.cli.common import console
from copycat.cli.curve import curve_cmd
from copycat.cli.serve import serve_cmd
from copycat.cli.stages import evaluate_cmd, report_cmd, run_cmd, steal_cmd, train_cmd
from copycat.cli.target import target_app

app = typer.Typer(
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
app.command("curve")(curve_cmd)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )


if __name__ == "__main__":  # pragma: no cover
    app()
