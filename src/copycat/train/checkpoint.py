"""Checkpoints and the metrics log: plain dicts of tensors and numbers, written atomically and
loaded with ``weights_only=True`` (no code is ever unpickled)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from copycat.errors import CheckpointError
from copycat.runs import RunDir, read_json, save_atomic, write_atomic
from copycat.train.models import Classifier, Ensemble, build_model

_MEMBER_KEY = re.compile(r"members\.(\d+)\.")
METRIC_FIELDS = ("epoch", "train_loss", "train_agreement", "val_agreement", "lr", "seconds")


def save_checkpoint(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(obj, tmp)
        tmp.replace(path)  # atomic: a kill mid-save never leaves a truncated checkpoint
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write checkpoint {path} ({exc}); free disk space and "
            "run the same command again: training resumes from the last "
            "checkpoint"
        ) from exc


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({exc}); delete it to start training afresh"
        ) from exc


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """``state`` as safetensors at ``path``, written atomically (the old file or the new one)."""
    data = save({k: v.detach().cpu().contiguous() for k, v in state.items()})
    save_atomic(path, lambda f: f.write(data))


def write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=METRIC_FIELDS)
    w.writeheader()
    w.writerows(history)
    write_atomic(path, text.getvalue())


def load_copycat(run: RunDir) -> Classifier | Ensemble:
    """The trained copycat of a run (weights only; no code is loaded): one classifier, or the
    ensemble of the card's ``members`` (copycat.train.copies), as many as the weights hold."""
    if not run.copycat_weights.is_file() or not run.copycat_card.is_file():
        raise CheckpointError(f"no copycat in {run.root}; run `copycat train --run-dir {run.root}`")
    card = read_json(run.copycat_card)
    retrain = f"retrain with `copycat train --run-dir {run.root}`"
    try:
        state = load_file(str(run.copycat_weights))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{run.copycat_weights} is corrupt ({exc}); {retrain}") from exc
    # the weights say how many copies they hold (keys members.<i>. of an ensemble)
    held = 1 + max((int(m[1]) for k in state if (m := _MEMBER_KEY.match(k))), default=0)
    count = card.get("members", 1)
    if count != held:
        raise CheckpointError(
            f"{run.copycat_card} names {count!r} copies but {run.copycat_weights} holds "
            f"{held}; {retrain}"
        )
    members = [
        build_model(
            card["arch"],
            in_channels=card["input_shape"][0],
            num_classes=card["num_classes"],
            input_size=card["input_shape"][1],
            mean=card["mean"],
            std=card["std"],
        )
        for _ in range(held)
    ]
    model = members[0] if held == 1 else Ensemble(members)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        what = card["arch"] if held == 1 else f"{held} {card['arch']} copies"
        raise CheckpointError(
            f"{run.copycat_weights} does not fit {what} ({exc}); {retrain}"
        ) from exc
    return model.eval()
