"""Local oracles: a target folder (safetensors + card, run by torch) or an ONNX file.

``copycat target train`` publishes such a folder; the card says what a model owner would
publish beside the weights (architecture, classes, input shape, normalisation).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from copycat.errors import OracleError
from copycat.oracles.base import Answer, check_images
from copycat.runs import write_atomic

log = logging.getLogger(__name__)

CARD_NAME = "card.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetCard:
    """What a model owner publishes beside the weights: enough to serve it, nothing to train."""

    name: str
    arch: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str = ""
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def save(self, folder: Path) -> None:
        write_atomic(folder / CARD_NAME, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> TargetCard:
        path = folder / CARD_NAME
        if not path.is_file():
            raise OracleError(
                f"no {CARD_NAME} in {folder}; point to a folder made by "
                "`copycat target train` (model.safetensors + card.json)"
            )
        try:
            data = json.loads(path.read_text())
            data["class_names"] = tuple(data["class_names"])
            data["input_shape"] = tuple(data["input_shape"])
            data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
            return cls(**data)
        except (KeyError, TypeError, ValueError) as exc:
            raise OracleError(
                f"{path} is not a valid target card ({exc}); re-create it with "
                "`copycat target train`"
            ) from exc


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TorchOracle:
    """A target saved by ``copycat target train``: safetensors weights plus a JSON card."""

    def __init__(self, folder: str | Path, *, device: str = "cpu", batch_size: int = 1024) -> None:
        self.folder = Path(folder)
        self.device = device
        self.batch_size = batch_size
        self._card: TargetCard | None = None
        self._model: torch.nn.Module | None = None

    @property
    def card(self) -> TargetCard:
        if self._card is None:
            if not self.folder.is_dir():
                raise OracleError(
                    f"target folder {self.folder} does not exist; train one with "
                    f"`copycat target train --out {self.folder}`"
                )
            self._card = TargetCard.load(self.folder)
        return self._card

    @property
    def num_classes(self) -> int:
        return self.card.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.card.input_shape

    @property
    def fingerprint(self) -> str:
        return "torch:" + file_digest(self.folder / WEIGHTS_NAME)[:16]

    def model(self) -> torch.nn.Module:
        if self._model is None:
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            from copycat.train.models import build_model

            card = self.card
            weights = self.folder / WEIGHTS_NAME
            if not weights.is_file():
                raise OracleError(f"{weights} is missing; re-create the target")
            m = build_model(
                card.arch,
                in_channels=card.input_shape[0],
                num_classes=card.num_classes,
                input_size=card.input_shape[1],
                mean=card.mean,
                std=card.std,
            )
            try:
                m.load_state_dict(load_file(str(weights)))
            except (RuntimeError, OSError, SafetensorError) as exc:
                raise OracleError(
                    f"{weights} is corrupt or does not fit {card.arch} ({exc}); "
                    "re-create the target"
                ) from exc
            self._model = m.to(self.device).eval()
        return self._model

    @torch.inference_mode()
    def query(self, images: torch.Tensor) -> Answer:
        x = check_images(images, self.input_shape)
        model = self.model()
        probs = torch.cat(
            [
                torch.softmax(model(chunk.to(self.device)), dim=1).float().cpu()
                for chunk in x.split(self.batch_size)
            ]
        )
        return Answer(labels=probs.argmax(1), probs=probs)


class OnnxOracle:
    """An ONNX classifier run by onnxruntime; the model must take [0, 1] images."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._session: Any = None

    def session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            if not self.path.is_file():
                raise OracleError(
                    f"ONNX model {self.path} not found; export one with "
                    "`copycat target train` (it writes model.onnx)"
                )
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(
                    str(self.path), opts, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise OracleError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        return self._session

    @property
    def input_shape(self) -> tuple[int, int, int]:
        dims = self.session().get_inputs()[0].shape[1:]
        if len(dims) != 3 or not all(isinstance(d, int) for d in dims):
            raise OracleError(f"{self.path} has input dims {dims}; need fixed (C, H, W)")
        return (int(dims[0]), int(dims[1]), int(dims[2]))

    @property
    def num_classes(self) -> int:
        k = self.session().get_outputs()[0].shape[-1]
        if not isinstance(k, int):
            raise OracleError(f"{self.path} has a dynamic class dimension; need a fixed one")
        return k

    @property
    def fingerprint(self) -> str:
        return "onnx:" + file_digest(self.path)[:16]

    def query(self, images: torch.Tensor) -> Answer:
        x = check_images(images, self.input_shape).numpy()
        sess = self.session()
        logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        probs = torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), dim=1)
        return Answer(labels=probs.argmax(1), probs=probs)


def build_torch(spec: str, *, device: str = "cpu", **_: Any) -> TorchOracle:
    """``torch:DIR``: a target folder made by ``copycat target train``."""
    return TorchOracle(spec.partition(":")[2], device=device)


def build_onnx(spec: str, **_: Any) -> OnnxOracle:
    """``onnx:FILE``: an ONNX classifier taking [0, 1] images."""
    return OnnxOracle(spec.partition(":")[2])
