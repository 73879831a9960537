"""Training and publishing a target: the model owner's side, used to make victims to audit.

A target folder holds ``model.safetensors`` (weights only: loading runs no code), ``card.json``
(architecture, class names, input shape, normalisation, test metrics) and ``model.onnx``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from copycat.config import TrainConfig
from copycat.data.datasets import LabelledSet, folder_split, load_labelled
from copycat.devices import resolve_device
from copycat.evaluate.metrics import classification_metrics
from copycat.oracles.local import ONNX_NAME, WEIGHTS_NAME, TargetCard
from copycat.train.checkpoint import save_weights
from copycat.train.fit import StepFn, fit, predict
from copycat.train.models import init_model

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TargetResult:
    folder: Path
    card: TargetCard
    seconds: float


def export_onnx(model: torch.nn.Module, shape: tuple[int, int, int], path: Path) -> None:
    """Export ``model`` (CPU, eval) to ONNX with a dynamic batch dimension, through a temporary
    file, so that a kill mid-export never leaves a truncated ``path``."""
    model = model.cpu().eval()
    dummy = torch.rand(2, *shape)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def train_target(
    train_set: LabelledSet,
    test_set: LabelledSet,
    *,
    out: str | Path,
    config: TrainConfig,
    on_step: StepFn | None = None,
) -> TargetResult:
    """Train a classifier on ``train_set``, score it on ``test_set`` and publish it to ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    shape = tuple(train_set.images.shape[1:])
    if len(train_set) < config.batch_size:  # a small folder: one batch of every image
        config = dataclasses.replace(config, batch_size=max(1, len(train_set)))
    model = init_model(
        config.arch, train_set.images, num_classes=len(train_set.class_names), seed=config.seed
    )
    result = fit(
        model, train_set.images, train_set.labels, config=config, on_step=on_step, metric="accuracy"
    )
    device = resolve_device(config.device)
    pred = predict(model, test_set.images, device=device).argmax(1)
    m = classification_metrics(test_set.labels, pred, num_classes=len(train_set.class_names))
    card = TargetCard(
        name=folder.name,
        arch=config.arch,
        class_names=train_set.class_names,
        input_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        mean=tuple(model.normalize.mean.flatten().tolist()),
        std=tuple(model.normalize.std.flatten().tolist()),
        dataset=train_set.name,
        test_accuracy=m.accuracy,
        test_macro_f1=m.macro_f1,
        extra={
            "epochs": config.epochs,
            "seed": config.seed,
            "train_seconds": round(result.seconds, 1),
        },
    )
    model = model.cpu().eval()
    save_weights(folder / WEIGHTS_NAME, model.state_dict())
    card.save(folder)
    try:
        export_onnx(model, card.input_shape, folder / ONNX_NAME)
    except (RuntimeError, ValueError, OSError) as exc:  # torch.onnx's derive from RuntimeError
        # The torch: oracle needs only the safetensors and the card; onnx: is a convenience
        # (a full disk here leaves no model.onnx, never half of one).
        # The exporter's message goes on to print the whole graph: its first line says why.
        why = next(iter(str(exc).splitlines()), type(exc).__name__)
        log.warning("no ONNX export of %s (%s); serve it as torch:%s", folder, why, folder)
    log.info("target %s: test accuracy %.4f, macro-F1 %.4f", folder, m.accuracy, m.macro_f1)
    return TargetResult(folder=folder, card=card, seconds=result.seconds)


# A user's ImageFolder tree has no input shape of its own; this is what it is resized to.
FOLDER_SHAPE = (3, 32, 32)


def train_target_on(
    dataset: str,
    *,
    out: str | Path,
    config: TrainConfig,
    on_step: StepFn | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> TargetResult:
    """``train_target`` on a named set's train split, scored on its test split (``NAME``), or on
    a user's ImageFolder tree (``folder:PATH``: seeded 70% train, 10% val, 20% test, resized
    to ``input_shape``, (3, 32, 32) by default)."""
    if dataset.startswith("folder:"):
        shape = input_shape or FOLDER_SHAPE
        path = dataset.removeprefix("folder:")
        train = folder_split(path, "train", input_shape=shape)
        test = folder_split(path, "test", input_shape=shape)
    else:
        train, test = load_labelled(f"{dataset}:train"), load_labelled(f"{dataset}:test")
    return train_target(train, test, out=out, config=config, on_step=on_step)
