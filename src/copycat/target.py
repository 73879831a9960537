"""Training and publishing a target: the model owner's side, used to make victims to audit.

A target folder holds ``model.safetensors`` (weights only: loading runs no code), ``card.json``
(architecture, class names, input shape, normalisation, test metrics) and ``model.onnx``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from copycat.config import TrainConfig
from copycat.datasets import LabelledSet, load_labelled
from copycat.metrics import classification_metrics
from copycat.models import build_model
from copycat.oracle import ONNX_NAME, WEIGHTS_NAME, TargetCard
from copycat.train import StepFn, fit, predict, resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TargetResult:
    folder: Path
    card: TargetCard
    seconds: float


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    x = images[:20_000].float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
    return mean.tolist(), std.tolist()


def export_onnx(model: torch.nn.Module, shape: tuple[int, int, int], path: Path) -> None:
    """Export ``model`` (CPU, eval) to ONNX with a dynamic batch dimension."""
    model = model.cpu().eval()
    dummy = torch.rand(2, *shape)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


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
    mean, std = channel_stats(train_set.images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(
            config.arch,
            in_channels=shape[0],
            num_classes=len(train_set.class_names),
            input_size=shape[1],
            mean=mean,
            std=std,
        )
    result = fit(model, train_set.images, train_set.labels, config=config, on_step=on_step)
    device = resolve_device(config.device)
    pred = predict(model, test_set.images, device=device).argmax(1)
    m = classification_metrics(test_set.labels, pred, num_classes=len(train_set.class_names))
    card = TargetCard(
        name=folder.name,
        arch=config.arch,
        class_names=train_set.class_names,
        input_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        mean=tuple(mean),
        std=tuple(std),
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
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_NAME)
    )
    card.save(folder)
    export_onnx(model, card.input_shape, folder / ONNX_NAME)
    log.info("target %s: test accuracy %.4f, macro-F1 %.4f", folder, m.accuracy, m.macro_f1)
    return TargetResult(folder=folder, card=card, seconds=result.seconds)


def train_target_on(
    dataset: str, *, out: str | Path, config: TrainConfig, on_step: StepFn | None = None
) -> TargetResult:
    """``train_target`` on a named dataset (``fashion-mnist``)."""
    return train_target(
        load_labelled(f"{dataset}:train"),
        load_labelled(f"{dataset}:test"),
        out=out,
        config=config,
        on_step=on_step,
    )
