"""``copycat verify``: does a suspect model reproduce a target's watermark?

The suspect is a copycat run directory (``copycat.safetensors``) or a target folder
(``card.json``). The queries tested are the ones the watermarked target answered: a run
directory's ``answers.sqlite`` (by default the suspect's own, when it is a run directory), whose
oracle fingerprint also names the watermark's rate and key variable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from copycat.defences.watermark import WatermarkVerdict, read_key, watermark_test
from copycat.errors import CopycatError
from copycat.oracles.base import Oracle
from copycat.oracles.local import TorchOracle
from copycat.oracles.registry import ORACLES, parse_oracle_spec
from copycat.runs import RunDir
from copycat.steal.store import AnswerStore
from copycat.train.checkpoint import load_copycat
from copycat.train.fit import predict

LabelFn = Callable[[torch.Tensor], torch.Tensor]  # uint8 (N, C, H, W) -> labels (N,) int64


def suspect_labels(path: str | Path, *, device: str = "cpu") -> LabelFn:
    """The top-1 labels of the model in ``path`` (a copycat run directory or a target folder)."""
    p = Path(path)
    if RunDir.at(p).copycat_weights.is_file():
        model = load_copycat(RunDir.at(p))
        dev = torch.device(device)
        return lambda x: predict(model.to(dev), x, device=dev).argmax(1)
    if (p / "card.json").is_file():
        return oracle_labels_fn(TorchOracle(p, device=device))
    raise CopycatError(
        f"suspect {p} is neither a copycat run directory (copycat.safetensors) nor a target "
        "folder (card.json); point --suspect to one"
    )


def oracle_labels_fn(oracle: object, batch_size: int = 512) -> LabelFn:
    def labels(x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                oracle.query(c.float().div(255.0)).labels  # type: ignore[attr-defined]
                for c in x.split(batch_size)
            ]
        )

    return labels


def open_target(target: str | Path, *, device: str = "cpu") -> Oracle:
    """The undefended target: a target folder, or a ``torch:`` / ``onnx:`` spec."""
    text = str(target)
    scheme = text.split(":", 1)[0]
    if ":" in text and scheme in ORACLES:
        return parse_oracle_spec(text, output="probs", device=device)
    return TorchOracle(text, device=device)


def load_queries(path: str | Path) -> tuple[torch.Tensor, str]:
    """The images (uint8 (N, C, H, W)) and oracle fingerprint of a run's answer store."""
    p = Path(path)
    store_path = p if p.suffix == ".sqlite" else RunDir.at(p).store
    if not store_path.is_file():
        raise CopycatError(
            f"no answer store at {store_path}; pass --queries a run directory whose "
            "answers came from the watermarked target"
        )
    with AnswerStore(store_path) as store:
        return store.load().images, store.meta().get("fingerprint", "")


def watermark_from_fingerprint(fingerprint: str) -> tuple[float, str] | None:
    """(rate, key_env) of a watermark named in an oracle fingerprint, if any."""
    m = re.search(r"watermark:rate=([0-9.eE+-]+),key_env=([A-Za-z0-9_]+)", fingerprint)
    return (float(m.group(1)), m.group(2)) if m else None


def verify(
    suspect: str | Path,
    *,
    target: str | Path,
    key_env: str | None = None,
    queries: str | Path | None = None,
    rate: float | None = None,
    alpha: float = 0.01,
    device: str = "cpu",
) -> WatermarkVerdict:
    """Test ``suspect`` for the watermark the target put on ``queries``' answers."""
    source = queries if queries is not None else suspect
    images, fingerprint = load_queries(source)
    named = watermark_from_fingerprint(fingerprint)
    if rate is None or key_env is None:
        if named is None:
            raise CopycatError(
                f"the answers in {source} were not watermarked (fingerprint {fingerprint!r}); "
                "pass --rate and --key-env, or --queries a run made against the watermark"
            )
        rate = named[0] if rate is None else rate
        key_env = named[1] if key_env is None else key_env
    oracle = open_target(target, device=device)
    truth = oracle_labels_fn(oracle)(images)
    num_classes = oracle.num_classes
    return watermark_test(
        images,
        target_labels=truth,
        suspect_labels=suspect_labels(suspect, device=device)(images),
        key=read_key(key_env),
        rate=rate,
        num_classes=num_classes,
        alpha=alpha,
    )
