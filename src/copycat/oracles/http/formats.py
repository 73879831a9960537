"""Reading what HTTP targets say: plain JSON reply formats and the options that describe them.

Plain JSON endpoints do not publish their classes or input shape, so the user gives them
(``--label-map``, ``--input-shape``) and picks how replies are read (``--response-format``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from copycat.errors import ConfigError, OracleError
from copycat.oracles.base import Answer


def probs_from(values: np.ndarray) -> torch.Tensor:
    """(N, K) scores as probabilities; values outside [0, 1] are logits and get a softmax."""
    t = torch.from_numpy(values.astype(np.float32))
    if t.numel() and (t.min() < 0 or t.max() > 1.0 + 1e-4):
        t = torch.softmax(t, dim=1)
    return t


def _label_index(value: Any, index: dict[str, int], num_classes: int) -> int:
    if isinstance(value, bool):
        raise OracleError(f"label {value!r} is not a class name or index")
    if isinstance(value, int):
        i = value
    elif isinstance(value, str) and value in index:
        i = index[value]
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and not index:
        i = int(value)
    else:
        hint = "add it to --label-map" if index else "pass --label-map with the class names"
        raise OracleError(f"the reply has label {value!r}, which maps to no class index; {hint}")
    if not 0 <= i < num_classes:
        raise OracleError(f"the reply has label index {i}, outside 0..{num_classes - 1}")
    return i


def parse_plain_reply(
    body: Any, *, n: int, fmt: str, num_classes: int, index: dict[str, int]
) -> Answer:
    """Read a plain JSON reply for ``n`` images; the top level is a list, one entry per image.

    - ``label-score``: each entry is a list of ``{"label": L, "score": S}`` (Hugging Face style,
      what ``copycat serve``'s ``/predict`` returns); scores of unlisted classes are 0. For one
      image the bare list of dicts is accepted too. Entries without scores give labels only.
    - ``label``: each entry is a label, or ``{"label": L}``.
    - ``probs``: each entry is a list of K scores.

    A label ``L`` is a class name from the label map or an integer class index.
    """
    one = fmt == "label-score" and n == 1 and isinstance(body, list) and body
    if one and all(isinstance(e, dict) for e in body):
        body = [body]
    if not isinstance(body, list) or len(body) != n:
        got = f"a list of {len(body)}" if isinstance(body, list) else type(body).__name__
        raise OracleError(
            f"expected a JSON list with one entry per image ({n}) for --response-format {fmt}, "
            f"got {got}: {str(body)[:200]}"
        )
    try:
        if fmt == "probs":
            arr = np.asarray(body, dtype=np.float32)
            if arr.shape != (n, num_classes):
                raise OracleError(f"expected {n}x{num_classes} scores, got shape {arr.shape}")
            probs = probs_from(arr)
            return Answer(labels=probs.argmax(1), probs=probs)
        if fmt == "label":
            vals = [e["label"] if isinstance(e, dict) else e for e in body]
            idx = [_label_index(v, index, num_classes) for v in vals]
            return Answer(labels=torch.tensor(idx, dtype=torch.int64))
        labels: list[int] = []
        rows: list[list[float]] = []
        scored = True
        for entry in body:
            items = [entry] if isinstance(entry, dict) else entry
            row = [0.0] * num_classes
            best, best_score = None, -1.0
            for item in items:
                i = _label_index(item["label"], index, num_classes)
                score = item.get("score")
                if score is None:
                    scored = False
                    score = 1.0 if best is None else 0.0
                row[i] = float(score)
                if float(score) > best_score:
                    best, best_score = i, float(score)
            if best is None:
                raise OracleError("an entry of the reply lists no labels")
            labels.append(best)
            rows.append(row)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise OracleError(
            f"the reply does not fit --response-format {fmt} ({type(exc).__name__}: {exc}); "
            "see docs/http.md for the formats"
        ) from exc
    lab = torch.tensor(labels, dtype=torch.int64)
    if not scored:
        return Answer(labels=lab)
    p = torch.tensor(rows, dtype=torch.float32)
    sums = p.sum(1, keepdim=True)
    return Answer(labels=lab, probs=torch.where(sums > 0, p / sums.clamp(min=1e-12), p))


def load_label_map(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """Class names in index order: a sequence, a JSON list, a JSON object name -> index, or a
    path to a file holding either (or one name per line)."""
    if value is None or value == "":
        return ()
    if not isinstance(value, str):
        return tuple(str(v) for v in value)
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1:
            return tuple(lines)
        data = [s.strip() for s in text.split(",")]
    if isinstance(data, dict):
        if sorted(data.values()) != list(range(len(data))):
            raise ConfigError("label_map as an object must map names to indices 0..K-1")
        return tuple(sorted(data, key=lambda k: data[k]))
    if isinstance(data, list) and all(isinstance(s, str) for s in data):
        return tuple(data)
    raise ConfigError(
        f"label_map {value[:80]!r} is invalid; accepted: a JSON list of class names in index "
        "order, a JSON object name -> index, a comma-separated list, or a file holding one"
    )


def parse_shape(value: str | tuple[int, ...] | list[int] | None) -> tuple[int, int, int] | None:
    if value is None or value == "":
        return None
    try:
        dims = [int(d) for d in value.split(",")] if isinstance(value, str) else list(value)
    except ValueError as exc:
        raise ConfigError(f"input_shape={value!r} is invalid; accepted: C,H,W") from exc
    if len(dims) != 3:
        raise ConfigError(f"input_shape={value!r} is invalid; accepted: C,H,W")
    return (dims[0], dims[1], dims[2])
