"""What every command shares: the console, one-line errors, progress bars and result tables.

Progress bars and colour live in the CLI only; the library logs.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from copycat.config import TrainConfig
from copycat.errors import CopycatError
from copycat.redact import redact_text

# emoji=False: names such as "emoji:train:" are data, not ":train:" codes to draw
console = Console(stderr=True, emoji=False)


def command_line(ctx: typer.Context) -> str:
    """The running command with every option spelled out, defaults included: reproducible."""
    parts = ["copycat", *ctx.command_path.split()[1:]]
    for name, value in ctx.params.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list | tuple):  # a repeatable option
            for item in value:
                parts += [flag, shlex.quote(str(item))]
        elif value is not None:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


@contextmanager
def errors() -> Iterator[None]:
    """Print copycat's errors as one clear line instead of a traceback."""
    try:
        yield
    except CopycatError as exc:
        text = escape(redact_text(str(exc)))  # an oracle URL may carry a key
        if isinstance(exc.__cause__, KeyboardInterrupt):  # answers paid so far were committed
            console.print(
                f"[yellow]interrupted:[/] {text}; run the same command again to resume",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(130) from exc
        console.print(
            f"[bold red]error:[/] {escape(redact_text(str(exc)))}", soft_wrap=True, highlight=False
        )
        raise typer.Exit(2) from exc
    except KeyboardInterrupt as exc:
        console.print(
            "[yellow]interrupted:[/] every committed answer and checkpoint is kept; "
            "run the same command again to resume"
        )
        raise typer.Exit(130) from exc


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
    )


def step_bar(
    bar: Progress, train: TrainConfig, label: str, *, metric: str = "agreement"
) -> Callable[..., None]:
    """A training progress callback (epoch, step, steps, loss, agreement) drawing on ``bar``
    for training with ``train`` (its epochs raised to its min_steps, as the copycat's are);
    ``metric`` names the match with the training labels (``accuracy`` on true labels)."""
    task = bar.add_task(label, total=None, info="")

    def on_step(epoch: int, step: int, steps: int, loss: float, agree: float) -> None:
        epochs = train.epochs_at(steps)
        bar.update(
            task,
            total=epochs * steps,
            completed=epoch * steps + step,
            info=f"epoch {epoch + 1}/{epochs} loss {loss:.3f} {metric} {agree:.3f}",
        )

    return on_step


def table(title: str, rows: list[tuple[str, Any]]) -> None:
    """Print ``rows`` as they are: no markup, emoji codes or highlighting read into them."""
    t = Table(title=Text(title), show_header=False, highlight=False)
    for k, v in rows:
        t.add_row(Text(k), Text(f"{v:.4f}" if isinstance(v, float) else str(v)))
    Console(emoji=False).print(t)
