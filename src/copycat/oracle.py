"""Oracles: black-box classifiers that copycat may only query.

A backend owns its preprocessing (the target's normalisation travels inside its weights), takes
float images in [0, 1] of shape (N, C, H, W) and answers with labels and, unless restricted,
probabilities. Output restrictions are wrappers (:class:`LabelOnly`, :class:`TopK`,
:class:`Rounded`); :func:`parse_oracle_spec` builds the right stack from a ``scheme:id`` string.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from copycat.errors import ConfigError, OracleError

log = logging.getLogger(__name__)

CARD_NAME = "card.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the oracle said about a batch. labels always; probs only if the target exposes them."""

    labels: torch.Tensor  # (N,) int64
    probs: torch.Tensor | None = None  # (N, K) float32, rows sum to 1


@runtime_checkable
class Oracle(Protocol):
    """A black-box classifier that we may only query."""

    @property
    def num_classes(self) -> int: ...
    @property
    def input_shape(self) -> tuple[int, int, int]: ...  # (C, H, W) the target expects
    @property
    def fingerprint(self) -> str: ...  # resume refuses another oracle
    def query(self, images: torch.Tensor) -> Answer: ...  # (N, C, H, W) float in [0, 1]


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
        (folder / CARD_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")

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


def check_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Validate a query batch and resize it to ``shape``; returns float32 (N, C, H, W)."""
    if images.ndim != 4:
        raise OracleError(f"query images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] != shape[0]:
        raise OracleError(
            f"the oracle takes {shape[0]}-channel images, got {images.shape[1]}; "
            "let the pool convert channels to the oracle's input shape"
        )
    images = images.float()
    if images.shape[-2:] != shape[1:]:
        images = F.interpolate(
            images, size=shape[1:], mode="bilinear", antialias=True, align_corners=False
        )
    return images.clamp_(0.0, 1.0)


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

            from copycat.models import build_model

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


class OracleWrapper:
    """Base of oracles that wrap another: delegates everything but ``query``. ``tag`` names
    what the wrapper changes in the answers and joins the fingerprint; ``None`` (a wrapper
    that only observes, e.g. one that counts queries) keeps the inner fingerprint."""

    tag: str | None = None

    def __init__(self, inner: Oracle) -> None:
        self.inner = inner

    @property
    def num_classes(self) -> int:
        return self.inner.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.inner.input_shape

    @property
    def fingerprint(self) -> str:
        inner = self.inner.fingerprint
        return inner if self.tag is None else f"{inner}|{self.tag}"

    def query(self, images: torch.Tensor) -> Answer:
        return self.inner.query(images)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class LabelOnly(OracleWrapper):
    """Only the top-1 label: the paper's threat model."""

    tag = "label"

    def query(self, images: torch.Tensor) -> Answer:
        return Answer(labels=self.inner.query(images).labels)


class TopK(OracleWrapper):
    """The top-k probabilities, renormalised; the rest are zero."""

    def __init__(self, inner: Oracle, k: int) -> None:
        super().__init__(inner)
        if k < 1:
            raise ConfigError(f"topk k={k} is invalid; accepted: an integer >= 1")
        self.k = k
        self.tag = f"topk{k}"

    def query(self, images: torch.Tensor) -> Answer:
        ans = self.inner.query(images)
        if ans.probs is None:
            return ans
        top = ans.probs.topk(min(self.k, ans.probs.shape[1]), dim=1)
        probs = torch.zeros_like(ans.probs).scatter_(1, top.indices, top.values)
        return Answer(labels=ans.labels, probs=probs / probs.sum(1, keepdim=True))


class Rounded(OracleWrapper):
    """Probabilities rounded to ``decimals`` places (a common output defence)."""

    def __init__(self, inner: Oracle, decimals: int) -> None:
        super().__init__(inner)
        if not 0 <= decimals <= 8:
            raise ConfigError(f"rounded decimals={decimals} is invalid; accepted: 0..8")
        self.decimals = decimals
        self.tag = f"round{decimals}"

    def query(self, images: torch.Tensor) -> Answer:
        ans = self.inner.query(images)
        if ans.probs is None:
            return ans
        return Answer(labels=ans.labels, probs=torch.round(ans.probs, decimals=self.decimals))


def restrict(oracle: Oracle, output: str) -> Oracle:
    """Apply an output restriction: ``label``, ``probs``, ``topk:K`` or ``rounded:D``."""
    kind, _, arg = output.partition(":")
    try:
        if kind == "label" and not arg:
            return LabelOnly(oracle)
        if kind == "probs" and not arg:
            return oracle
        if kind == "topk":
            return TopK(oracle, int(arg))
        if kind == "rounded":
            return Rounded(oracle, int(arg))
    except ValueError:
        pass
    raise ConfigError(f"unknown output {output!r}; use label, probs, topk:K or rounded:D")


def parse_oracle_spec(
    spec: str, *, output: str = "label", device: str = "cpu", **http_options: Any
) -> Oracle:
    """Build an oracle from ``torch:DIR``, ``onnx:FILE``, ``oip+http(s)://...`` or
    ``http(s)://...``, restricted to ``output`` (top-1 label by default)."""
    scheme, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(
            f"oracle {spec!r} has no scheme; use torch:DIR, onnx:FILE, "
            "oip+http://HOST/v2/models/NAME or http(s)://HOST/PATH"
        )
    inner: Oracle
    if scheme == "torch":
        inner = TorchOracle(rest, device=device)
    elif scheme == "onnx":
        inner = OnnxOracle(rest)
    elif scheme in ("http", "https", "oip+http", "oip+https"):
        from copycat.http_oracle import build_http_oracle

        inner = build_http_oracle(spec, **http_options)
    else:
        raise ConfigError(
            f"unknown oracle scheme {scheme!r}; use torch:, onnx:, oip+http(s):// or http(s)://"
        )
    return restrict(inner, output)
