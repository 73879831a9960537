"""The run directory: where each stage reads its input and writes its output.

``runs/<name>/`` holds ``config.json``, ``answers.sqlite``, ``checkpoints/``, ``metrics.csv``,
``copycat.safetensors`` + ``copycat.json``, ``eval.json`` and the report. Any stage can be re-run
or resumed alone from what the earlier ones left here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from copycat import __version__
from copycat.config import TrainConfig
from copycat.errors import CheckpointError, CopycatError
from copycat.models import Classifier, build_model, init_model
from copycat.store import AnswerStore
from copycat.train import FitResult, StepFn, fit, load_checkpoint, write_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunDir:
    """Paths of one run directory."""

    root: Path

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        return cls(Path(path))

    @property
    def store(self) -> Path:
        return self.root / "answers.sqlite"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def copycat_weights(self) -> Path:
        return self.root / "copycat.safetensors"

    @property
    def copycat_card(self) -> Path:
        return self.root / "copycat.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def eval_json(self) -> Path:
        return self.root / "eval.json"

    def record(self, stage: str, config: Any, command: str | None = None) -> None:
        """Merge ``stage``'s resolved configuration (and command line) into ``config.json``."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "config.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        data["version"] = __version__
        data[stage] = config
        if command:
            data.setdefault("commands", {})[stage] = command
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")

    def read_config(self) -> dict[str, Any]:
        path = self.root / "config.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def train_copycat(run: RunDir, *, config: TrainConfig, on_step: StepFn | None = None) -> FitResult:
    """Train a copycat on the run's fake dataset and save it beside the store.

    A held-out share (``config.val_fraction``) of the answers scores agreement each epoch; the
    best epoch is the copycat kept. Soft labels are used when ``labels`` is ``soft``, or
    ``auto`` and every answer carried probabilities.
    """
    if not run.store.is_file():
        raise CopycatError(f"no answers in {run.root}; run `copycat steal --run-dir {run.root}`")
    with AnswerStore(run.store) as store:
        data = store.load()
        num_classes = int(store.meta()["num_classes"])
    if config.labels == "soft" and data.probs is None:
        raise CopycatError("labels='soft' but the oracle gave labels only; use --labels hard")
    soft = data.probs is not None and config.labels in ("auto", "soft")
    gen = torch.Generator().manual_seed(config.seed)
    perm = torch.randperm(len(data), generator=gen)
    n_val = int(len(data) * config.val_fraction)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    targets = data.probs[tr_idx] if soft and data.probs is not None else data.labels[tr_idx]
    shape = tuple(data.images.shape[1:])
    model = init_model(config.arch, data.images, num_classes=num_classes, seed=config.seed)
    log.info(
        "training %s on %d answers (%s labels), %d held out",
        config.arch,
        len(tr_idx),
        "soft" if soft else "hard",
        n_val,
    )
    result = fit(
        model,
        data.images[tr_idx],
        targets,
        config=config,
        val=(data.images[val_idx], data.labels[val_idx]) if n_val else None,
        checkpoint_dir=run.checkpoints,
        on_step=on_step,
    )
    best = load_checkpoint(run.checkpoints / "best.pt")
    save_file({k: v.contiguous() for k, v in best["model"].items()}, str(run.copycat_weights))
    card = {
        "arch": config.arch,
        "input_shape": list(shape),
        "num_classes": num_classes,
        "mean": model.normalize.mean.flatten().tolist(),
        "std": model.normalize.std.flatten().tolist(),
        "labels": "soft" if soft else "hard",
        "best_epoch": int(best["epoch"]) + 1,
        "train_samples": len(tr_idx),
        "val_agreement": result.best_val_agreement,
        "samples_per_s": result.samples_per_s,
        "train_seconds": result.seconds,
    }
    run.copycat_card.write_text(json.dumps(card, indent=2) + "\n")
    write_metrics(run.metrics, result.history)
    run.record("train", asdict(config))
    return result


def load_copycat(run: RunDir) -> Classifier:
    """The trained copycat of a run (weights only; no code is loaded)."""
    if not run.copycat_weights.is_file() or not run.copycat_card.is_file():
        raise CheckpointError(f"no copycat in {run.root}; run `copycat train --run-dir {run.root}`")
    card = json.loads(run.copycat_card.read_text())
    model = build_model(
        card["arch"],
        in_channels=card["input_shape"][0],
        num_classes=card["num_classes"],
        input_size=card["input_shape"][1],
        mean=card["mean"],
        std=card["std"],
    )
    try:
        model.load_state_dict(load_file(str(run.copycat_weights)))
    except (RuntimeError, OSError, SafetensorError) as exc:
        raise CheckpointError(
            f"{run.copycat_weights} is corrupt or does not fit {card['arch']} "
            f"({exc}); retrain with `copycat train --run-dir {run.root}`"
        ) from exc
    return model.eval()
