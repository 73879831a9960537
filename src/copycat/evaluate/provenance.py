"""Which oracle an evaluation may score against, and whether its inputs fit it.

A copycat is compared with the oracle it was stolen from: ``evaluate`` defaults to the oracle
recorded in the run's ``config.json``, refuses another one unless asked to, and refuses an oracle
whose fingerprint differs from the one bound to ``answers.sqlite`` (the target changed since the
steal). Test sets and copycats that do not fit the oracle are refused with a clear message
before any query is paid for.
"""

from __future__ import annotations

import logging

from copycat.data.datasets import LabelledSet
from copycat.errors import ConfigError, DataError, StoreMismatchError
from copycat.redact import MASK, redact_text

log = logging.getLogger(__name__)


def base_fingerprint(fingerprint: str) -> str:
    """The target's own fingerprint, without output-restriction tags (``...|label``): the
    evaluation always reads top-1 labels, whatever the steal was allowed to see."""
    return fingerprint.split("|", 1)[0]


def choose_oracle(given: str | None, recorded: str | None, *, run: str, allow_other: bool) -> str:
    """The oracle spec to evaluate against: ``given`` if any, else the one the run recorded.

    A ``given`` spec other than the recorded one is refused unless ``allow_other``.
    """
    if not given:
        if not recorded:
            raise ConfigError(f"{run} records no oracle (no steal ran there); pass --oracle SPEC")
        if MASK in recorded:
            raise ConfigError(
                f"{run} records its oracle with the credentials masked ({recorded}); pass the "
                "full URL with --oracle (or name the key with --api-key-env)"
            )
        return recorded
    # config.json keeps URLs with their credentials masked: compare the masked forms
    if recorded and redact_text(given) != recorded and not allow_other:
        raise ConfigError(
            f"{run} was stolen from {recorded!r}, not {redact_text(given)!r}; drop --oracle to "
            "use the recorded one, or pass --allow-other-oracle to score against another target"
        )
    return given


def check_fingerprint(
    current: str, stored: str | None, *, spec: str, store: str, allow_other: bool
) -> bool:
    """Whether ``current`` is the oracle whose answers ``store`` holds (``stored``); a mismatch
    is refused unless ``allow_other`` (then logged and reported in ``eval.json``)."""
    if stored is None or base_fingerprint(current) == base_fingerprint(stored):
        return True
    if not allow_other:
        raise StoreMismatchError(
            f"oracle {spec!r} has fingerprint {base_fingerprint(current)}, but {store} holds "
            f"answers of {base_fingerprint(stored)}: the target changed since the steal (or, "
            "for a plain JSON endpoint, is read with other --response-format, --label-map or "
            "--input-shape options). Evaluate against the exact target you stole from, with "
            "the steal's options, or pass --allow-other-oracle to score against this one anyway"
        )
    log.warning(
        "oracle %s is not the one the answers came from (%s vs %s); scoring anyway",
        spec,
        base_fingerprint(current),
        base_fingerprint(stored),
    )
    return False


def check_test_set(
    test: LabelledSet,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    copycat_shape: tuple[int, ...] | None = None,
    copycat_classes: int | None = None,
) -> None:
    """Refuse a test set (or copycat) that does not fit the oracle, naming the fix."""
    if len(test) == 0:
        raise DataError(f"test set {test.name} holds no images; pass a test set with images")
    shape = tuple(int(d) for d in test.images.shape[1:])
    if shape != tuple(input_shape):
        raise DataError(
            f"test set {test.name} holds images of shape {shape}, the oracle takes "
            f"{tuple(input_shape)}; use the test set of the oracle's task, or folder:PATH "
            "(its images are resized to the oracle's input)"
        )
    if len(test.class_names) != num_classes:
        raise DataError(
            f"test set {test.name} has {len(test.class_names)} classes, the oracle "
            f"{num_classes}; use the test set of the oracle's task"
        )
    labels = test.labels
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"test set {test.name} has labels outside 0..{num_classes - 1}; "
            "re-create it with one class per index"
        )
    if copycat_shape is not None and tuple(copycat_shape) != shape:
        raise DataError(
            f"the copycat takes inputs of shape {tuple(copycat_shape)}, the test set {shape}; "
            "retrain the copycat on answers of this oracle (`copycat train`)"
        )
    if copycat_classes is not None and copycat_classes != num_classes:
        raise DataError(
            f"the copycat predicts {copycat_classes} classes, the oracle {num_classes}; "
            "evaluate against the oracle it was stolen from"
        )


def ledger_dict(oracle: object) -> dict[str, float | int] | None:
    """The HTTP cost ledger of ``oracle`` (queries, attempts, billed images, cost), if any."""
    ledger = getattr(oracle, "ledger", None)
    if ledger is None:
        return None
    data = ledger.as_dict()
    return {str(k): v for k, v in data.items()}
